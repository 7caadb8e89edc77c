"""docs/ingest.md's status codes per endpoint are the OpenAPI document's, and its
error codes the ones the gateway answers with."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from gateway_harness import make_registry

from chainwatch.gateway_protocol import BAD_REQUEST, HEADERS_TOO_LARGE, TOO_MANY_CONNECTIONS
from chainwatch.settings import Settings
from streams.ingest.app import _ERROR_NAMES, create_gateway_app

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ingest.md"


def _documented() -> dict[str, list[str]]:
    text = DOC.read_text()
    block = text.split("<!-- status-codes", 1)[1].split("<!-- /status-codes -->", 1)[0]
    rows = re.findall(r"^\| `([A-Z]+ [^`]+)` \| ([^|]+) \|$", block, re.MULTILINE)
    return {op: re.findall(r"\b\d{3}\b", codes) for op, codes in rows}


def test_the_status_codes_in_the_docs_are_the_openapi_documents() -> None:
    spec = create_gateway_app(Settings(), make_registry()).openapi()
    from_spec = {
        f"{method.upper()} {path}": sorted(operation["responses"])
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    }
    assert {op: sorted(codes) for op, codes in _documented().items()} == from_spec


def test_every_error_response_has_the_one_documented_shape() -> None:
    spec = create_gateway_app(Settings(), make_registry()).openapi()
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")) and not (path == "/readyz" and code == "503"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/GatewayError"}, (
                        method,
                        path,
                        code,
                    )


def _raised_codes() -> set[str]:
    """Every `error` code the gateway's code can answer with: the literal code of each
    `HttpError(...)`, the names of the framework's own refusals and their fallback."""
    codes: set[str] = set()
    for path in (ROOT / "streams" / "ingest").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "HttpError"
            ):
                code = node.args[1]
                assert isinstance(code, ast.Constant), f"{path.name}:{node.lineno}"
                codes.add(code.value)
    # and the ones the HTTP protocol answers before the app sees a request
    before_the_app = {HEADERS_TOO_LARGE, TOO_MANY_CONNECTIONS, BAD_REQUEST}
    return codes | set(_ERROR_NAMES.values()) | {"http_error"} | before_the_app


_UNANSWERED = {"client_disconnected"}
"""A client gone mid-body gets no answer: its code is only logged and counted."""


def test_the_docs_list_every_error_code_the_gateway_answers_with() -> None:
    text = DOC.read_text()
    sentence = text.split("`error` is a stable code (", 1)[1].split(");", 1)[0]
    assert set(re.findall(r"`([a-z_]+)`", sentence)) == _raised_codes() - _UNANSWERED
    assert all(f"`{code}`" in text for code in _UNANSWERED)


def test_the_openapi_document_lists_every_error_code_the_gateway_answers_with() -> None:
    """docs/ingest.md says it does; it lacked the HTTP layer's three."""
    spec = create_gateway_app(Settings(), make_registry()).openapi()
    error = spec["components"]["schemas"]["GatewayError"]["properties"]["error"]
    assert set(re.findall(r"`([a-z_]+)`", error["description"])) == _raised_codes() - _UNANSWERED
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            answer = operation["responses"].get("503", {}).get("description", "")
            if path.startswith("/v1/"):  # the ops paths are served beyond the limit
                assert "`too_many_connections`" in answer, (method, path)
