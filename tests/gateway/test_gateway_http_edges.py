"""The HTTP around the operations: paths that are not the gateway's, probes, encodings.

Each case was found by a hostile-input probe of a running gateway; the answer
is always a 4xx in the documented error shape (docs/ingest.md), never a
redirect, a 5xx or silence.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import Harness
from samples import fresh_scan as scan

pytestmark = pytest.mark.integration


def _documented_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    assert body["request_id"] == response.headers["x-request-id"]
    return body


@pytest.mark.parametrize("path", ["/v1/scans/", "/v1/partial/scans/", "/v1/nowhere/"])
def test_a_trailing_slash_is_not_found_not_a_redirect(gateway: Harness, path: str) -> None:
    response = gateway.post(path, [scan()], headers={"Host": "attacker.example"})
    assert "location" not in response.headers
    _documented_error(response, 404, "not_found")


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_may_ask_with_head(gateway: Harness, path: str) -> None:
    get = gateway.client.get(path)
    head = gateway.client.head(path)
    assert head.status_code == get.status_code == 200, head.text
    assert head.content == b""
    assert head.headers["content-type"] == "application/json"
    assert head.headers["x-request-id"]
