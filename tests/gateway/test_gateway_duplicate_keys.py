"""A key written twice in one item: 422 (or a dead letter in partial mode) on every route.

An item was published as sent, both values in its bytes: the gateway judged the
last, a consumer keeping the first read another record. Each role and framing
now gets the same answer the engine gives such a record read from Kafka.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from gateway_harness import Harness
from samples import fresh_customer, fresh_order, fresh_scan, fresh_unit_status


def _twice(record: dict[str, Any], key: str, first: Any) -> str:
    text = json.dumps(record)
    return text.replace(f'"{key}": ', f'"{key}": {json.dumps(first)}, "{key}": ', 1)


CASES = [
    pytest.param("/v1/scans", "unit-dye", lambda: _twice(fresh_scan(), "quantity", 1), "quantity",
                 id="unit-scans"),
    pytest.param("/v1/unit-status", "unit-dye",
                 lambda: _twice(fresh_unit_status(), "status", "up"), "status", id="unit-status"),
    pytest.param("/v1/orders", "orders", lambda: _twice(fresh_order(), "quantity", 7), "quantity",
                 id="orders"),
    pytest.param("/v1/customers", "crm", lambda: _twice(fresh_customer(), "tier", "gold"), "tier",
                 id="crm"),
    pytest.param("/v1/scans", "admin", lambda: _twice(fresh_scan(), "unit_id", "KNIT-02"),
                 "unit_id", id="admin-scans"),
    pytest.param("/v1/scans", "admin", lambda: _twice(fresh_scan(attributes={"a": 1}), "a", 2),
                 "attributes.a", id="admin-attributes"),
]  # fmt: skip


@pytest.mark.integration
@pytest.mark.parametrize(("path", "token", "item", "loc"), CASES)
@pytest.mark.parametrize("framing", ["array", "ndjson"])
def test_an_item_writing_a_key_twice_is_refused_on_every_route(
    gateway: Harness, path: str, token: str, item: Any, loc: str, framing: str
) -> None:
    text = item()
    if framing == "array":
        body, kind = f"[{text}]".encode(), "application/json"
    else:
        body, kind = f"{text}\n".encode(), "application/x-ndjson"
    response = gateway.post(path, content=body, token=token, content_type=kind)
    assert response.status_code == 422, response.text
    (rejected,) = response.json()["items"]
    assert rejected["reason_code"] == "validation_failed"
    assert [(e["loc"], e["type"]) for e in rejected["errors"]] == [(loc, "duplicate_key")]

    partial = gateway.post(
        path, content=body, token=token, content_type=kind, params={"partial": "true"}
    )
    assert partial.status_code == 202, partial.text
    (result,) = partial.json()["items"]
    assert result["status"] == "dead_lettered"
    letters = [json.loads(v) for _, v in gateway.read_all("dead-letter") if v]
    (letter,) = [d for d in letters if d["dead_letter_id"] == result["dead_letter_id"]]
    assert letter["errors"][0]["type"] == "duplicate_key"
