"""An item whose check raises inside the gateway (a bug of its own: an `OverflowError` of
the EPCIS hash was one) is refused `processing_error` and the request goes on; it is
counted in `chainwatch_gateway_item_faults_total`, which ChainwatchGatewayFaults reads
(real broker; the bug injected into the check)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import structlog
from gateway_harness import gateways, metric
from samples import fresh_scan as scan
from structlog.testing import capture_logs

from streams.ingest import batch as batch_module

pytestmark = pytest.mark.integration

FAULTS = "chainwatch_gateway_item_faults_total"
MARK = "bug-me"


def test_an_item_whose_check_raises_is_counted_as_the_gateways_fault(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the item was answered 422 `invalid_items` (or dead-lettered in partial
    mode), the client's fault, and only a log line told of the gateway's bug: no series
    counted it, so no alert fired."""
    _check_raises_on_mark(monkeypatch)
    with gateways(kafka_bootstrap) as make:
        gw = make()
        assert metric(gw.base_url, FAULTS, endpoint="scans") == 0  # there from the start
        assert metric(gw.base_url, FAULTS, endpoint="epcis") == 0
        bad = scan(event_id=MARK)
        strict = gw.post("/v1/scans", [scan(), bad])
        assert strict.status_code == 422, strict.text
        [refused] = strict.json()["items"]
        assert refused["reason_code"] == "processing_error"
        partial = gw.post("/v1/scans", [scan(), bad, scan()], params={"partial": "true"})
        assert partial.status_code == 202, partial.text
        assert [i["status"] for i in partial.json()["items"]] == [
            "accepted", "dead_lettered", "accepted",
        ]  # fmt: skip
        letters = [json.loads(value) for _, value in gw.read_all("dead-letter") if value]
        assert [d["reason_code"] for d in letters] == ["processing_error"]
        assert metric(gw.base_url, FAULTS, endpoint="scans") == 2
        assert metric(gw.base_url, FAULTS, endpoint="orders") == 0


def test_the_item_fault_log_line_names_the_request_that_failed(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: `item processing failed` had the item's `index` and no `request_id`, so an
    operator following a failed post's id (ChainwatchGatewayFaults) could not tell which
    post a traceback was of among concurrent ones: items are judged on the executor's
    threads, and the post's `ingest` line need not be the next line."""
    _check_raises_on_mark(monkeypatch)
    with gateways(kafka_bootstrap) as make:
        gw = make()
        # as the production set-up (chainwatch.logs), each line merges the bound context
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            named = gw.post(
                "/v1/scans", [scan(), scan(event_id=MARK)], headers={"X-Request-ID": "post-one"}
            )
            unnamed = gw.post("/v1/scans", [scan(event_id=MARK)])
    assert [named.status_code, unnamed.status_code] == [422, 422], (named.text, unnamed.text)
    ids = [named.json()["request_id"], unnamed.json()["request_id"]]
    assert ids[0] == "post-one"
    assert ids[1] != ids[0]
    faults = [e for e in logs if e["event"] == "item processing failed"]
    assert [(e.get("request_id"), e.get("endpoint"), e["index"]) for e in faults] == [
        (ids[0], "scans", 1),
        (ids[1], "scans", 0),
    ], faults


def _check_raises_on_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    """The contract's check of an item raises (a bug of ours) for an item holding `MARK`."""
    decode = batch_module.decode_input

    def buggy(topic: str, value: bytes, **kwargs: Any) -> Any:
        if MARK.encode() in value:
            raise OverflowError("a check's bug")
        return decode(topic, value, **kwargs)

    monkeypatch.setattr(batch_module, "decode_input", buggy)
