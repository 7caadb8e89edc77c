"""docs/ingest.md's status codes per endpoint are the OpenAPI document's."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import make_registry

from chainwatch.settings import Settings
from streams.ingest.app import create_gateway_app

DOC = Path(__file__).resolve().parents[2] / "docs" / "ingest.md"


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
