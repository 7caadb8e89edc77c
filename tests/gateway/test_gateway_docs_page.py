"""`/docs` works on a network without internet: a page of the gateway's own, from its
OpenAPI document, with nothing loaded from another host.

FastAPI's Swagger UI loaded its script and stylesheet from a CDN: on a plant network
the page was blank.
"""

from __future__ import annotations

import asyncio
import html
import re
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from gateway_harness import make_registry

from chainwatch.settings import Settings
from streams.ingest.app import create_gateway_app
from streams.ingest.docs_page import render_docs_page, schema_name

BASE = "http://gateway.plant.local:8088"


def _get(*paths: str) -> list[httpx.Response]:
    """The gateway's answers to GETs of `paths` (in process, without its lifespan: no Kafka)."""
    transport = httpx.ASGITransport(app=create_gateway_app(Settings(), make_registry()))

    async def ask() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            return [await client.get(path) for path in paths]

    return asyncio.run(ask())


@pytest.fixture(scope="module")
def page_and_spec() -> tuple[str, dict[str, Any]]:
    page, spec = _get("/docs", "/openapi.json")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    return page.text, spec.json()


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, methods in spec["paths"].items() for m, op in methods.items()]


def test_every_operation_is_on_the_page_with_its_body_schema_and_answers(
    page_and_spec: tuple[str, dict[str, Any]],
) -> None:
    page, spec = page_and_spec
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    sections = re.split(r"(?=<h2[ >])", page)[1:]
    assert len(sections) == len(_operations(spec)) > 0
    for (method, path, operation), section in zip(_operations(spec), sections, strict=True):
        plain = html.unescape(re.sub(r"<[^>]+>", "", section))
        assert plain.startswith(f"{method.upper()} {path}"), plain[:80]
        assert operation["summary"].replace("`", "") in plain
        for code, answer in operation["responses"].items():
            assert f"{code}{answer['description'].replace('`', '')}" in plain, (path, code)
        for media, body in operation.get("requestBody", {}).get("content", {}).items():
            assert f"{media}{schema_name(body['schema'])}" in plain, (path, media)
    assert "ScanEvent or array of ScanEvent" in text  # a body's schema, by name
    assert "EpcisDocument" in text


def test_the_page_loads_nothing_from_another_host_and_links_the_document(
    page_and_spec: tuple[str, dict[str, Any]],
) -> None:
    page, _ = page_and_spec
    assert "<script" not in page.lower()
    targets = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, re.IGNORECASE)
    assert targets
    for target in targets:
        assert urlsplit(urljoin(f"{BASE}/docs", target)).netloc == urlsplit(BASE).netloc, target
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", page, re.IGNORECASE)
    assert urljoin(f"{BASE}/docs", "openapi.json") in {urljoin(f"{BASE}/docs", t) for t in targets}
    assert "@import" not in page  # nor from a stylesheet
    assert "url(" not in page


def test_redoc_is_not_served_either() -> None:
    """ReDoc, FastAPI's other page, loads its script from a CDN too."""
    assert [r.status_code for r in _get("/redoc")] == [404]


def test_the_body_schema_names() -> None:
    ref = {"$ref": "#/components/schemas/ScanEvent"}
    assert schema_name(ref) == "ScanEvent"
    assert schema_name({"oneOf": [ref, {"type": "array", "items": ref}]}) == (
        "ScanEvent or array of ScanEvent"
    )
    assert schema_name({"type": "string"}) == "string"
    assert schema_name({"not": {"type": "array", "maxItems": 0}}) == "any JSON"


def test_only_a_path_items_operations_are_rendered_and_nothing_unescaped() -> None:
    """A path item may also hold `parameters`, `summary` and `description` (OpenAPI 3):
    read as operations, a path-level `summary` crashed the gateway at start, and a key
    that is no method went onto the page as it was, markup included."""
    spec = {
        "paths": {
            "/v1/things/{id}": {
                "summary": "things",
                "description": "what a thing is",
                "parameters": [{"name": "id", "in": "path", "required": True}],
                "get": {"summary": "Get a thing", "responses": {"200": {"description": "it"}}},
                "<img src=x onerror=alert(1)>": {"summary": "not a method", "responses": {}},
            }
        }
    }
    page = render_docs_page(spec)
    assert re.findall(r"<h2[ >]", page) == ["<h2 "]
    assert "Get a thing" in page
    assert "<img" not in page
