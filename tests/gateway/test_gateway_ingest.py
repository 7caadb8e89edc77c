"""Through the running gateway to the real broker: topics, keys, bodies, batches, limits."""

from __future__ import annotations

import json
from base64 import b64decode
from collections.abc import Callable
from typing import Any

import pytest
from gateway_harness import Harness, metric
from samples import fresh_customer as customer
from samples import fresh_order as order
from samples import fresh_scan as scan
from samples import fresh_unit_status as unit_status

pytestmark = pytest.mark.integration


def _accepted(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 202, response.text
    return [i for i in response.json()["items"] if i["status"] == "accepted"]


@pytest.mark.parametrize(
    ("path", "topic", "make", "key_field"),
    [
        ("/v1/scans", "scans", scan, "order_id"),
        ("/v1/unit-status", "unit-status", unit_status, "unit_id"),
        ("/v1/orders", "orders", order, "order_id"),
        ("/v1/customers", "crm.customers", customer, "customer_id"),
    ],
)
def test_a_batch_lands_on_its_topic_keyed_by_the_contract_key(
    gateway: Harness, path: str, topic: str, make: Callable[[], dict[str, Any]], key_field: str
) -> None:
    batch = [make() for _ in range(5)]
    response = gateway.post(path, batch)
    placed = _accepted(response)
    assert [i["index"] for i in placed] == list(range(5))
    assert response.json()["topic"] == gateway.topics(topic)

    stored = gateway.read_at(topic, placed)
    assert [(k.decode(), json.loads(v)) for k, v in stored] == [(r[key_field], r) for r in batch]


def test_ndjson_array_and_single_object_bodies_are_equivalent(gateway: Harness) -> None:
    records = [scan() for _ in range(3)]
    ndjson = b"\n".join(json.dumps(r).encode() for r in records[:2]) + b"\n\n"
    as_ndjson = gateway.post("/v1/scans", content=ndjson, content_type="application/x-ndjson")
    as_object = gateway.post("/v1/scans", records[2])

    placed = _accepted(as_ndjson) + _accepted(as_object)
    assert len(placed) == 3
    values = [json.loads(v) for _, v in gateway.read_at("scans", placed)]
    assert values == records


def test_unknown_fields_survive_for_downstream(gateway: Harness) -> None:
    record = customer(crm_segment="wholesale", nested={"a": [1, 2]})
    stored = gateway.read_at("crm.customers", _accepted(gateway.post("/v1/customers", record)))
    assert json.loads(stored[0][1]) == record


def test_one_invalid_item_rejects_the_whole_batch_and_publishes_nothing(gateway: Harness) -> None:
    good = [scan() for _ in range(3)]
    bad = scan(event_time="2026-11-22T14:05:00")  # no offset
    response = gateway.post("/v1/scans", [*good, bad])

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_items"
    assert [(i["index"], i["reason_code"]) for i in body["items"]] == [(3, "validation_failed")]
    assert body["items"][0]["errors"][0]["loc"] == "event_time"
    ids = {r["event_id"] for r in [*good, bad]}
    published = {json.loads(v)["event_id"] for _, v in gateway.read_all("scans") if v}
    assert not ids & published
    dead = [json.loads(v) for _, v in gateway.read_all("dead-letter") if v]
    assert all(d["source"]["request_id"] != body["request_id"] for d in dead)


def test_partial_mode_publishes_the_valid_and_dead_letters_the_rest(gateway: Harness) -> None:
    good = [scan(), scan()]
    rejected_at_dyeing = scan(action="rejected")
    items = [good[0], rejected_at_dyeing, good[1]]
    ndjson = b"\n".join(json.dumps(i).encode() for i in items) + b"\n{not json\n"
    response = gateway.post(
        "/v1/scans",
        content=ndjson,
        content_type="application/x-ndjson",
        params={"partial": "true"},
        headers={"X-Request-ID": "req-partial-1"},
    )

    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["x-request-id"] == body["request_id"] == "req-partial-1"
    assert (body["accepted"], body["rejected"]) == (2, 2)
    outcome = {i["index"]: i for i in body["items"]}
    assert outcome[1]["reason_code"] == "validation_failed"
    assert outcome[3]["reason_code"] == "not_json"
    assert [json.loads(v) for _, v in gateway.read_at("scans", _accepted(response))] == good

    dead = {
        d["dead_letter_id"]: d
        for d in (json.loads(v) for _, v in gateway.read_all("dead-letter") if v)
        if d["source"]["request_id"] == "req-partial-1"
    }
    assert set(dead) == {outcome[1]["dead_letter_id"], outcome[3]["dead_letter_id"]}
    by_index = {d["source"]["index"]: d for d in dead.values()}
    assert by_index[1]["source"]["kind"] == "http"
    assert by_index[1]["errors"][0]["loc"] == "action"
    assert by_index[3]["reason_code"] == "not_json"
    assert b64decode(by_index[3]["value_b64"]) == b"{not json"


def test_the_partial_operation_is_partial_mode_and_still_refuses_no_items(
    gateway: Harness,
) -> None:
    """`POST /v1/partial/scans` is `?partial=true`: a body that is not JSON at all is one
    dead-lettered item, an empty batch is still refused, `?partial=false` changes nothing."""
    good = scan()
    mixed = gateway.post(
        "/v1/partial/scans",
        content=f"[{json.dumps(good)}, NaN]".encode(),
        params={"partial": "false"},
    )
    assert mixed.status_code == 202, mixed.text
    outcome = {i["index"]: i for i in mixed.json()["items"]}
    assert (outcome[0]["status"], outcome[1]["status"]) == ("accepted", "dead_lettered")
    assert [json.loads(v) for _, v in gateway.read_at("scans", _accepted(mixed))] == [good]

    garbage = gateway.post("/v1/partial/orders", content=b"\x0f\x04")
    assert garbage.status_code == 202, garbage.text
    assert garbage.json()["items"][0]["reason_code"] == "not_json"

    for body in (b"[]", b""):
        empty = gateway.post("/v1/partial/scans", content=body)
        assert (empty.status_code, empty.json()["error"]) == (422, "empty")
    no_events = {"type": "EPCISDocument", "epcisBody": {"eventList": []}}
    no_items = gateway.post("/v1/partial/epcis/capture", no_events)
    assert (no_items.status_code, no_items.json()["error"]) == (422, "empty")


def test_limits_answer_413_and_publish_nothing(gateway: Harness) -> None:
    too_many = [scan() for _ in range(51)]
    assert gateway.post("/v1/scans", too_many).status_code == 413
    huge = scan(attributes={f"k{i}": "x" * 250 for i in range(30)})
    huge_items = [huge] * 10  # each item fits, the body does not
    assert gateway.post("/v1/scans", huge_items).status_code == 413
    big_customer = customer(notes="x" * 9000)
    assert gateway.post("/v1/customers", big_customer).status_code == 413
    published = {json.loads(v)["event_id"] for _, v in gateway.read_all("scans") if v}
    assert not {r["event_id"] for r in too_many} & published


def test_other_media_types_are_refused(gateway: Harness) -> None:
    response = gateway.post("/v1/scans", content=b"a,b", content_type="text/csv")
    assert response.status_code == 415


def test_empty_batches_are_unprocessable(gateway: Harness) -> None:
    assert gateway.post("/v1/scans", []).status_code == 422
    empty = gateway.post("/v1/scans", content=b"\n", content_type="application/x-ndjson")
    assert empty.status_code == 422


def test_a_customer_delete_is_a_tombstone(gateway: Harness) -> None:
    response = gateway.client.delete(
        "/v1/customers/C-gone-1", headers={"Authorization": "Bearer secret-token-of-crm"}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    placed = [{"partition": body["partition"], "offset": body["offset"]}]
    assert gateway.read_at("crm.customers", placed) == [(b"C-gone-1", None)]


def test_health_readiness_metrics_and_docs(gateway: Harness) -> None:
    # its own scan: with `-n 2` the module's other tests may run in the other session
    assert len(_accepted(gateway.post("/v1/scans", [scan()]))) == 1
    assert gateway.client.get("/healthz").status_code == 200
    ready = gateway.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    metrics = gateway.client.get("/metrics").text
    accepted = {"endpoint": "scans", "outcome": "accepted"}  # the series is there from the start
    assert metric(gateway.base_url, "chainwatch_gateway_items_total", **accepted) >= 1
    assert "chainwatch_gateway_publish_seconds_bucket" in metrics
    spec = gateway.client.get("/openapi.json").json()
    assert "application/x-ndjson" in spec["paths"]["/v1/scans"]["post"]["requestBody"]["content"]
    assert gateway.client.get("/docs").status_code == 200
    assert gateway.client.get("/healthz").headers["x-request-id"]


def test_an_oversized_invalid_item_is_dead_lettered_truncated_not_503(
    gateway_factory: Callable[..., Harness],
) -> None:
    roomy = gateway_factory(max_item_bytes=900_000, max_body_bytes=2 * 1024 * 1024)
    big = scan(attributes={"notes": "x" * 800_000})  # invalid: attribute text too long
    response = roomy.post(
        "/v1/scans",
        [scan(), big],
        params={"partial": "true"},
        headers={"X-Request-ID": "oversized-dead-letter-1"},
    )
    assert response.status_code == 202, response.text[:500]
    assert (response.json()["accepted"], response.json()["rejected"]) == (1, 1)
    dead = [
        v for _, v in roomy.read_all("dead-letter") if v and b"oversized-dead-letter-1" in v[:2000]
    ]
    assert len(dead) == 1
    letter = json.loads(dead[0])
    assert len(dead[0]) <= 1_048_576
    assert letter["truncated"] is True
    assert letter["original_size"] > 800_000


def test_event_times_too_far_ahead_are_invalid(gateway: Harness) -> None:
    from datetime import UTC, datetime, timedelta

    def at(ahead: timedelta) -> str:
        return (datetime.now(UTC) + ahead).isoformat()

    soon = gateway.post("/v1/scans", [scan(event_time=at(timedelta(hours=1)))])
    assert soon.status_code == 202, soon.text
    later = gateway.post("/v1/scans", [scan(event_time=at(timedelta(hours=49)))])
    assert later.status_code == 422
    assert later.json()["items"][0]["errors"][0]["type"] == "timestamp_future"
