"""EPCIS 2.0 capture: the example document yields exactly the expected scans; the rest is
reported per event."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gateway_harness import EPCIS_EXAMPLE, Harness

from schemas.epcis import EpcisMappingError, OrderIdRule, cbv_name, load_epcis_mapping
from streams.ingest.epcis_map import Unmappable, map_event

MAPPING = load_epcis_mapping(EPCIS_EXAMPLE / "mapping.yaml")
DOCUMENT: dict[str, Any] = json.loads((EPCIS_EXAMPLE / "capture.jsonld").read_text())
EXPECTED = [
    json.loads(line) for line in (EPCIS_EXAMPLE / "expected_scans.ndjson").read_text().splitlines()
]


def _events() -> list[dict[str, Any]]:
    return copy.deepcopy(DOCUMENT["epcisBody"]["eventList"])


def _document(events: list[Any]) -> dict[str, Any]:
    doc = copy.deepcopy(DOCUMENT)
    doc["epcisBody"]["eventList"] = events
    return doc


def test_the_example_document_maps_to_the_expected_scans() -> None:
    assert [map_event(event, MAPPING) for event in _events()] == EXPECTED


def test_full_cbv_forms_read_as_bare_names() -> None:
    assert cbv_name("bizStep", "https://ref.gs1.org/cbv/BizStep-arriving") == "arriving"
    assert cbv_name("bizStep", "urn:epcglobal:cbv:bizstep:arriving") == "arriving"
    assert cbv_name("disposition", "urn:epcglobal:cbv:disp:in_progress") == "in_progress"
    event = _events()[1]
    event["bizStep"] = "urn:epcglobal:cbv:bizstep:arriving"
    event["disposition"] = "https://ref.gs1.org/cbv/Disp-in_progress"
    event["bizTransactionList"][0]["type"] = "urn:epcglobal:cbv:btt:po"
    assert map_event(event, MAPPING) == EXPECTED[1]


def test_unknown_uom_yields_no_quantity() -> None:
    event = _events()[1]
    event["quantityList"][0]["uom"] = "LTR"
    scan = map_event(event, MAPPING)
    assert "quantity" not in scan
    assert "uom" not in scan


def test_a_quantity_list_that_is_no_array_of_objects_is_unmappable_not_dropped() -> None:
    """An object in place of `quantityList` gave a scan without its quantity, silently:
    a quantity loss at that stage would then go unseen."""
    for broken in ({"quantity": 5, "uom": "KGM"}, [5], "5"):
        event = _events()[1]
        event["quantityList"] = broken
        with pytest.raises(Unmappable) as caught:
            map_event(event, MAPPING)
        assert [e.type for e in caught.value.errors] == ["epcis_quantity"]
        assert caught.value.unit_id == EXPECTED[1]["unit_id"]  # still named for the token
    event = _events()[1]
    event["quantityList"] = []
    assert "quantity" not in map_event(event, MAPPING)


@pytest.mark.parametrize(
    ("change", "types"),
    [
        (lambda e: e.update(type="SensorEvent"), ["epcis_event_type"]),
        (lambda e: e.update(type="AggregationEvent"), ["epcis_no_action_rule"]),
        (
            lambda e: e.update(readPoint={"id": "urn:epc:id:sgln:0.0.0"}),
            ["epcis_unknown_read_point"],
        ),
        (lambda e: e.pop("readPoint"), ["epcis_no_read_point"]),
        (lambda e: e.update(bizStep="shipping"), ["epcis_no_action_rule"]),
        (lambda e: e.update(bizTransactionList=[]), ["epcis_no_order_id"]),
        (
            lambda e: e.update(readPoint={"id": "x"}, bizStep="x", bizTransactionList=None),
            ["epcis_unknown_read_point", "epcis_no_action_rule", "epcis_no_order_id"],
        ),
    ],
)
def test_unmappable_events_say_every_reason(change: Any, types: list[str]) -> None:
    event = _events()[1]
    change(event)
    with pytest.raises(Unmappable) as info:
        map_event(event, MAPPING)
    assert [e.type for e in info.value.errors] == types


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("type", lambda e, v: e.update(type=v)),
        ("readPoint.id", lambda e, v: e.update(readPoint={"id": v})),
        ("bizStep", lambda e, v: e.update(bizStep=v)),
        ("bizStep", lambda e, v: e.update(bizStep="x", disposition=v)),
        ("bizStep", lambda e, v: e.update(bizStep="x", action=v)),
    ],
)
def test_a_reason_repeats_at_most_the_start_of_an_events_value(field: str, change: Any) -> None:
    """A megabyte read point id was repeated whole in its reason: in the 422 answer, the
    dead letter and the log line of every such event."""
    event = _events()[1]
    change(event, "urn:x:" + "9" * 1_000_000)
    with pytest.raises(Unmappable) as info:
        map_event(event, MAPPING)
    [reason] = [e for e in info.value.errors if e.loc == field]
    assert "'urn:x:9999" in reason.msg
    assert "(1,000,006 characters)" in reason.msg
    assert len(reason.msg) < 300


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("read_points: {}\nactions: []\norder_id: {pattern: '(?P<order_id>.*)'}\n", "read_points"),
        (
            "read_points: {a: {unit_id: U, stage: dyeing}}\nactions: [{action: started}]\n"
            "order_id: {pattern: '(.*)'}\n",
            "order_id",
        ),
        (
            "read_points: {a: {unit_id: U, stage: dyeing}}\nactions: [{action: paused}]\n"
            "order_id: {pattern: '(?P<order_id>.*)'}\n",
            "actions.0.action",
        ),
        (
            "read_points: {a: {unit_id: U, stage: dyeing}}\nactions: [{action: started}]\n"
            "order_id: {pattern: '(?P<order_id>.*)'}\nsurprise: 1\n",
            "surprise",
        ),
    ],
)
def test_bad_mapping_files_name_the_key(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(text)
    with pytest.raises(EpcisMappingError, match=complaint):
        load_epcis_mapping(path)


@pytest.mark.parametrize(
    "pattern",
    [r"(?=PO-)(?P<order_id>.+)", r"(?<!x)(?P<order_id>.+)", r"(?P<order_id>.+)-\1"],
)
def test_lookaround_and_backreferences_are_refused_at_load(tmp_path: Path, pattern: str) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(
        "read_points: {a: {unit_id: U, stage: dyeing}}\nactions: [{action: started}]\n"
        f"order_id: {{pattern: '{pattern}'}}\n"
    )
    with pytest.raises(
        EpcisMappingError,
        match=r"key 'order_id\.pattern': .*lookaround and backreferences are not supported: "
        r"patterns are matched in linear time",
    ):
        load_epcis_mapping(path)


@pytest.mark.timeout(10)  # with `re` this pattern backtracked for minutes on 30 characters
def test_a_backtracking_pattern_answers_a_hostile_biz_transaction_at_once() -> None:
    mapping = MAPPING.model_copy(update={"order_id": OrderIdRule(pattern=r"^(?P<order_id>(a+)+)$")})
    event = _events()[1]
    event["bizTransactionList"][0]["bizTransaction"] = "a" * 39 + "!"
    with pytest.raises(Unmappable) as info:
        map_event(event, mapping)
    assert [e.type for e in info.value.errors] == ["epcis_no_order_id"]
    event["bizTransactionList"][0]["bizTransaction"] = "a" * 40
    assert map_event(event, mapping)["order_id"] == "a" * 40


@pytest.fixture(scope="module")
def gateway(gateway_factory: Callable[..., Harness]) -> Harness:
    """The example capture is dated 2027: a clock skew that lets it in."""
    return gateway_factory(
        max_items=50, max_body_bytes=64 * 1024, max_item_bytes=8192, max_clock_skew_s=1e9
    )


@pytest.mark.integration
class TestCapture:
    def test_capture_publishes_the_expected_scans(self, gateway: Harness) -> None:
        response = gateway.post(
            "/v1/epcis/capture", DOCUMENT, content_type="application/ld+json", token="admin"
        )
        assert response.status_code == 202, response.text
        placed = response.json()["items"]
        stored = gateway.read_at("scans", placed)
        assert [(k.decode(), json.loads(v)) for k, v in stored] == [
            (scan["order_id"], scan) for scan in EXPECTED
        ]

    def test_unmappable_events_are_reported_per_event(self, gateway: Harness) -> None:
        events = _events()
        events[0]["type"] = "AggregationEvent"
        events[2]["readPoint"] = {"id": "urn:epc:id:sgln:9.9.9"}
        response = gateway.post("/v1/epcis/capture", _document(events))
        assert response.status_code == 422
        assert [(i["index"], i["reason_code"]) for i in response.json()["items"]] == [
            (0, "unmappable_epcis"),
            (2, "unmappable_epcis"),
        ]

        events[1]["eventID"] = "urn:uuid:partial-capture-1"
        partial = gateway.post(
            "/v1/epcis/capture",
            _document(events),
            params={"partial": "true"},
            headers={"X-Request-ID": "epcis-partial-1"},
        )
        assert partial.status_code == 202, partial.text
        items = partial.json()["items"]
        assert [i["status"] for i in items] == ["dead_lettered", "accepted", "dead_lettered"]
        dead = [
            json.loads(v)
            for _, v in gateway.read_all("dead-letter")
            if v and json.loads(v)["source"]["request_id"] == "epcis-partial-1"
        ]
        assert sorted((d["source"]["index"], d["reason_code"]) for d in dead) == [
            (0, "unmappable_epcis"),
            (2, "unmappable_epcis"),
        ]
        import base64

        originals = {
            d["source"]["index"]: json.loads(base64.b64decode(d["value_b64"])) for d in dead
        }
        assert originals[2] == events[2]

    def test_a_unit_captures_only_its_own_read_points(self, gateway: Harness) -> None:
        own = gateway.post("/v1/epcis/capture", _document(_events()[2:]), token="unit-qc")
        assert own.status_code == 202, own.text
        foreign = gateway.post("/v1/epcis/capture", _document(_events()), token="unit-qc")
        assert foreign.status_code == 403
        # an event of another unit's read point that maps to no scan is no dead letter
        # of this token's either (it was, in partial mode: the unit was known only for
        # a mapped event)
        (other,) = _events()[:1]
        other["bizStep"] = "bogus"
        for event in (other, json.dumps(other).replace('"bogus"', "NaN")):
            content = json.dumps(_document(["EVENT"])).replace('"EVENT"', event if isinstance(
                event, str) else json.dumps(event)).encode()  # fmt: skip
            unmapped = gateway.post("/v1/epcis/capture", content=content, token="unit-qc",
                                    params={"partial": "true"})  # fmt: skip
            assert unmapped.status_code == 403, unmapped.text

    def test_not_an_epcis_document(self, gateway: Harness) -> None:
        response = gateway.post("/v1/epcis/capture", {"type": "Nope"})
        assert response.status_code == 422
        assert response.json()["items"][0]["reason_code"] == "validation_failed"
        assert gateway.post("/v1/epcis/capture", _document([])).status_code == 422
        # JSON but no object: it said "the body is not JSON: text after the end of the
        # document"
        for body, shown in ((b"null", "null"), (b"3", "a number"), (b'"x"', "a string")):
            scalar = gateway.post("/v1/epcis/capture", content=body)
            assert scalar.status_code == 422
            (item,) = scalar.json()["items"]
            assert item["reason_code"] == "not_object"
            assert item["errors"][0]["msg"] == f"an EPCISDocument is a JSON object, not {shown}"

    def test_a_body_of_whitespace_json_does_not_know_is_not_json_like_any_text(
        self, gateway: Harness
    ) -> None:
        """A form feed, a vertical tab, U+00A0 (UTF-8 or Latin-1) or NUL is no JSON: it was
        422 `empty` (`bytes.strip()` took it for nothing), and partial mode published no
        dead letter of it; it is answered as the body `x` is. JSON whitespace is empty."""

        def outcome(body: bytes, partial: bool, request_id: str) -> Any:
            answer = gateway.post(
                "/v1/epcis/capture",
                content=body,
                params={"partial": str(partial).lower()},
                headers={"X-Request-ID": request_id},
            )
            shown = answer.json()
            items = [(i["index"], i["status"], i["reason_code"]) for i in shown.get("items", [])]
            return answer.status_code, shown.get("error"), items

        bodies = [b"x", b"\x0c", b"\x0b", b"\xa0", b"\xc2\xa0", b"\x00", b"\r\n\x0c\t"]
        for partial in (False, True):
            answers = {b: outcome(b, partial, f"ws-{partial}-{b.hex()}") for b in bodies}
            assert answers[b"x"] == (
                (202, None, [(0, "dead_lettered", "not_json")])
                if partial
                else (422, "invalid_items", [(0, "rejected", "not_json")])
            )
            assert answers == dict.fromkeys(bodies, answers[b"x"])
            for blank in (b"", b" \t\r\n"):
                assert outcome(blank, partial, f"blank-{partial}-{blank.hex()}") == (
                    422, "empty", []
                )  # fmt: skip
        dead = {
            (d["source"]["request_id"], base64.b64decode(d["value_b64"]), d["reason_code"])
            for _, v in gateway.read_all("dead-letter")
            if v and (d := json.loads(v))["source"]["request_id"].startswith(("ws-", "blank-"))
        }
        assert dead == {(f"ws-True-{b.hex()}", b, "not_json") for b in bodies}

    def test_hash_ids_and_missing_ids_publish_the_same_ids_when_posted_again(
        self, gateway: Harness
    ) -> None:
        """issue 15: a CBV 2.0 hash id (84 chars) and an event without eventID both become
        contract ids; posting the document again publishes exactly the same scans."""
        events = _events()
        hash_id = "ni:///sha-256;" + "c0ffee00" * 8 + "?ver=CBV2.0"
        events[0]["eventID"] = hash_id
        del events[1]["eventID"]
        stored = []
        for _ in range(2):
            response = gateway.post("/v1/epcis/capture", _document(events), token="admin")
            assert response.status_code == 202, response.text
            placed = response.json()["items"]
            stored.append([json.loads(v) for _, v in gateway.read_at("scans", placed)])
        assert stored[0] == stored[1]
        first, second, third = stored[0]
        assert first["event_id"] == "ni-sha256-" + ("c0ffee00" * 8)[:54]
        assert first["attributes"] == {"epcis_event_id": hash_id}
        assert second["event_id"].startswith("ni-sha256-")
        assert second["attributes"]["epcis_event_id"].startswith("ni:///sha-256;")
        assert third["event_id"] == EXPECTED[2]["event_id"]
