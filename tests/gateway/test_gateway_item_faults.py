"""An item whose check raises inside the gateway (a bug of its own: an `OverflowError` of
the EPCIS hash was one) is refused `processing_error` and the request goes on; it is
counted in `chainwatch_gateway_item_faults_total`, which ChainwatchGatewayFaults reads
(real broker; the bug injected into the check)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from gateway_harness import gateways, metric
from samples import fresh_scan as scan

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
    decode = batch_module.decode_input

    def buggy(topic: str, value: bytes, **kwargs: Any) -> Any:
        if MARK.encode() in value:
            raise OverflowError("a check's bug")
        return decode(topic, value, **kwargs)

    monkeypatch.setattr(batch_module, "decode_input", buggy)
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
