"""EPCIS 2.0 documents shaped like the standard's examples, through the example mapping of
deploy/gateway/ (pure: mapping and validation, no Kafka).

Hash ids, events without `eventID`, all five event types, the `@context` variants,
`eventTime` without an offset, and the property that every event of a posted
document ends as a scan or as a dead letter with a reason.
"""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from epcis_knitwear import CONTEXTS, HASH_ID, KNITWEAR
from fuzz_budget import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.common import IDENTIFIER_PATTERN
from schemas.dead_letter import ReasonCode
from schemas.epcis import load_epcis_mapping
from schemas.epcis_hash import contract_event_id, event_hash
from schemas.plan import load_plan
from streams.ingest.batch import ENDPOINTS, judge_epcis
from streams.ingest.epcis_map import EPCIS_ID_ATTRIBUTE, Unmappable, map_event

ROOT = Path(__file__).resolve().parents[2]
MAPPING = load_epcis_mapping(ROOT / "deploy" / "gateway" / "epcis-mapping.example.yaml")
PLAN = load_plan(None)
EXPECTED = [
    (
        "dyeing",
        "completed",
        contract_event_id(HASH_ID),
        "2027-04-01T08:00:00.000+05:30",
        78.5,
        "kg",
    ),
    ("knitting", "started", None, "2027-04-02T09:30:00.000+01:00", 78.5, "kg"),
    ("packaging", "completed", None, "2027-04-05T10:00:00Z", 24, "pcs"),
    (
        "packaging",
        "started",
        "urn:uuid:2b0f2d1e-4c2b-4f4e-9a51-7c8d9e0f1a23",
        "2027-04-05T10:05:00+00:00",
        24,
        "pcs",
    ),
    ("shipping", "completed", "ni-sha256-" + "ab" * 27, "2027-04-06T16:00:00.000-05:00", 24, "pcs"),
]


def _document(events: list[Any], context: Any = CONTEXTS[0]) -> dict[str, Any]:
    return {
        "@context": context,
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2027-04-06T16:30:00Z",
        "epcisBody": {"eventList": events},
    }


def _judge(document: Any) -> Any:
    body = json.dumps(document).encode()
    return judge_epcis(
        body, MAPPING, ENDPOINTS["epcis"], PLAN, 500, 64 * 1024, max_skew=timedelta(days=36500)
    )


def test_all_five_event_types_of_a_knitwear_chain_become_scans() -> None:
    scans = [map_event(copy.deepcopy(e), MAPPING, CONTEXTS[2]) for e in KNITWEAR]
    got = [
        (s["stage"], s["action"], s["event_id"], s["event_time"], s.get("quantity"), s.get("uom"))
        for s in scans
    ]
    derived = [event_hash(KNITWEAR[i], CONTEXTS[2]) for i in (1, 2)]
    expected = list(EXPECTED)
    for i, ni in zip((1, 2), derived, strict=True):
        expected[i] = (*expected[i][:2], contract_event_id(ni), *expected[i][3:])
    assert got == expected
    assert {s["order_id"] for s in scans} == {"PO-7001"}
    assert scans[0]["attributes"] == {EPCIS_ID_ATTRIBUTE: HASH_ID}
    assert scans[1]["attributes"] == {EPCIS_ID_ATTRIBUTE: derived[0]}
    assert "attributes" not in scans[3]  # a urn:uuid id is kept as it is


def test_the_whole_document_is_accepted_and_reposting_gives_the_same_ids() -> None:
    first = _judge(_document(copy.deepcopy(KNITWEAR)))
    assert first.document_error is None
    assert [v.reason_code for v in first.verdicts] == [None] * 5, [v.errors for v in first.verdicts]
    again = _judge(_document(copy.deepcopy(KNITWEAR)))
    ids = [json.loads(v.value)["event_id"] for v in first.verdicts]
    assert [json.loads(v.value)["event_id"] for v in again.verdicts] == ids
    assert len(set(ids)) == 5


@pytest.mark.parametrize("context", CONTEXTS)
def test_context_variants_map_alike(context: Any) -> None:
    """Without extension fields the derived id does not depend on the @context form."""
    event = {k: v for k, v in KNITWEAR[2].items()}
    result = _judge(_document([event], context))
    baseline = _judge(_document([event], CONTEXTS[0]))
    assert result.verdicts[0].accepted
    assert result.verdicts[0].value == baseline.verdicts[0].value


def test_extension_namespaces_from_the_context_change_the_derived_id() -> None:
    event = KNITWEAR[1]
    a = map_event(copy.deepcopy(event), MAPPING, [{"example": "https://ns.example.com/a/"}])
    b = map_event(copy.deepcopy(event), MAPPING, [{"example": "https://ns.example.com/b/"}])
    assert a["event_id"] != b["event_id"]


def test_a_time_without_offset_takes_event_time_zone_offset() -> None:
    scan = map_event(copy.deepcopy(KNITWEAR[1]), MAPPING)
    assert scan["event_time"] == "2027-04-02T09:30:00.000+01:00"
    no_offset = copy.deepcopy(KNITWEAR[1])
    no_offset.pop("eventTimeZoneOffset")
    verdict = _judge(_document([no_offset])).verdicts[0]
    assert verdict.reason_code is not None  # still no offset: validation says why
    assert verdict.errors


def test_an_aggregation_delete_is_not_a_packing() -> None:
    event = copy.deepcopy(KNITWEAR[2])
    event["action"] = "DELETE"
    with pytest.raises(Unmappable) as info:
        map_event(event, MAPPING)
    assert [e.type for e in info.value.errors] == ["epcis_no_action_rule"]


def test_a_non_string_event_id_is_a_reason_not_a_guess() -> None:
    event = copy.deepcopy(KNITWEAR[3])
    event["eventID"] = 12345
    verdict = _judge(_document([event])).verdicts[0]
    assert verdict.reason_code is not None
    assert any("event_id" in e.loc for e in verdict.errors or [])


def test_every_derived_id_is_a_contract_identifier() -> None:
    import re

    for event in KNITWEAR:
        scan = map_event(copy.deepcopy(event), MAPPING)
        assert re.fullmatch(IDENTIFIER_PATTERN, scan["event_id"])


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_FIELDS = sorted({k for e in KNITWEAR for k in e})
_EXTENSIONS = ["ex:x", "ext1:y", "urn:z", "id", "@id", "rdfs:comment"]


@st.composite
def _events(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(_json)
    event = copy.deepcopy(draw(st.sampled_from(KNITWEAR)))
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(_FIELDS))
        if draw(st.booleans()):
            event.pop(key, None)
        else:
            event[key] = draw(_json)
    for where in ("readPoint", "bizLocation"):  # extensions of a location the mapping knows
        if isinstance(event.get(where), dict) and draw(st.integers(0, 3)) == 0:
            event[where] = {**event[where], draw(st.sampled_from(_EXTENSIONS)): draw(_json)}
    return event


@pytest.mark.slow
@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_events(), min_size=1, max_size=8), st.sampled_from(CONTEXTS))
def test_every_event_is_a_scan_or_a_dead_letter_with_a_reason(
    events: list[Any], context: Any
) -> None:
    result = _judge(_document(events, context))
    assert result.document_error is None
    assert [v.index for v in result.verdicts] == list(range(len(events)))
    for verdict in result.verdicts:
        if verdict.accepted:
            scan = json.loads(verdict.value)
            assert scan["order_id"] == "PO-7001"
            assert verdict.key == b"PO-7001"
        else:
            assert verdict.reason_code is not None
            # a reason of the sender's, not a bug of ours met on the way (the event
            # hash raising on a value it was not written for is `processing_error`)
            assert verdict.reason_code != ReasonCode.PROCESSING_ERROR, verdict.errors
            assert verdict.errors, verdict
            assert all(e.msg for e in verdict.errors)
    again = _judge(_document(events, context))
    assert [v.value for v in again.verdicts] == [v.value for v in result.verdicts]


@pytest.mark.parametrize(
    "extension",
    [
        pytest.param(2**60, id="2^60"),
        pytest.param(10**400, id="10^400"),
        pytest.param(-(2**53) - 1, id="-2^53-1"),
    ],
)
@pytest.mark.parametrize("with_id", [True, False], ids=["with-eventID", "hashed"])
def test_a_number_a_float_cannot_hold_is_refused_in_an_event_as_in_a_scan(
    extension: int, with_id: bool
) -> None:
    """CONTRACT v1.2: invalid wherever it appears. In an extension field it was accepted
    (an event with `eventID`), or broke the event hash (`OverflowError`, a
    `processing_error` with a traceback in the log) of an event without one."""
    event = copy.deepcopy(KNITWEAR[1 if not with_id else 3])
    assert ("eventID" in event) is with_id
    event["example:batchCount"] = extension
    verdict = _judge(_document([event], CONTEXTS[2])).verdicts[0]
    assert verdict.reason_code is not None
    assert verdict.reason_code.value == "validation_failed"
    assert [(e.loc, e.type) for e in verdict.errors or []] == [
        ("example:batchCount", "unsafe_integer")
    ]
    assert verdict.unit_id is not None  # still named for a unit token's bounds


def test_an_event_time_beyond_the_calendar_in_utc_is_a_reason_not_a_failure() -> None:
    event = copy.deepcopy(KNITWEAR[1])  # no eventID: its hash reads the time
    event["eventTime"] = "0001-01-01T00:00:00.000+01:00"
    verdict = _judge(_document([event])).verdicts[0]
    assert verdict.reason_code is not None
    assert verdict.reason_code.value == "validation_failed", verdict.errors
    assert [e.loc for e in verdict.errors or []] == ["event_time"]


@pytest.mark.parametrize(
    "header",
    [
        pytest.param('{"n": 1152921504606846976}', id="2^60"),
        pytest.param('{"n": NaN}', id="NaN"),
        pytest.param('{"n": [1e400]}', id="1e400"),
    ],
)
def test_a_number_a_float_cannot_hold_in_the_envelope_refuses_the_document(header: str) -> None:
    """The model ignores `epcisHeader` and extensions: such a document was accepted."""
    body = json.dumps(_document([copy.deepcopy(KNITWEAR[3])])).encode()
    body = body.replace(
        b'"type": "EPCISDocument"', b'"epcisHeader": %s, "type": "EPCISDocument"' % header.encode()
    )
    result = judge_epcis(body, MAPPING, ENDPOINTS["epcis"], PLAN, 500, 64 * 1024)
    assert result.document_error is not None
    assert result.document_error.reason_code is not None
    assert result.document_error.reason_code.value == "validation_failed"
    locs = [e.loc for e in result.document_error.errors or []]
    assert locs in (["epcisHeader.n"], ["epcisHeader.n.0"]), locs


def test_an_envelope_nested_beyond_the_parsers_limit_is_not_json() -> None:
    """As a body that is not JSON, and as a scan nested so deep: it was `validation_failed`
    (pydantic's `json_invalid`, recursion limit exceeded)."""
    body = json.dumps(_document([copy.deepcopy(KNITWEAR[3])])).encode()
    nested = b"[" * 3000 + b"]" * 3000
    body = body.replace(
        b'"type": "EPCISDocument"', b'"epcisHeader": %s, "type": "EPCISDocument"' % nested
    )
    result = judge_epcis(body, MAPPING, ENDPOINTS["epcis"], PLAN, 500, 64 * 1024)
    assert result.document_error is not None
    assert result.document_error.reason_code is not None
    assert result.document_error.reason_code.value == "not_json", result.document_error
    assert [e.type for e in result.document_error.errors or []] == ["json_invalid"]


def _judged_text(event_text: str) -> Any:
    body = json.dumps(_document(["EVENT"], CONTEXTS[2])).replace('"EVENT"', event_text)
    return judge_epcis(
        body.encode(), MAPPING, ENDPOINTS["epcis"], PLAN, 500, 64 * 1024,
        max_skew=timedelta(days=36500),
    ).verdicts[0]  # fmt: skip


@pytest.mark.parametrize(
    ("before", "after", "loc"),
    [
        pytest.param('"bizStep": ', '"bizStep": "shipping", "bizStep": ', "bizStep", id="top"),
        pytest.param(
            '"quantity": 24',
            '"quantity": 1, "quantity": 24',
            "childQuantityList.0.quantity",
            id="in-a-list",
        ),
        pytest.param('"id": ', '"id": "urn:x", "id": ', "readPoint.id", id="read-point"),
    ],
)
def test_an_event_that_writes_a_key_twice_is_refused_at_that_key(
    before: str, after: str, loc: str
) -> None:
    """The mapping read the last value (pydantic-core keeps it); a reader keeping the
    first maps another scan from the dead letter or the sender's copy. Refused, as a
    scan writing a key twice is."""
    text = json.dumps(KNITWEAR[3])
    assert _judged_text(text).accepted
    verdict = _judged_text(text.replace(before, after, 1))
    assert verdict.reason_code is not None
    assert verdict.reason_code.value == "validation_failed", verdict.errors
    assert [(e.loc, e.type) for e in verdict.errors or []] == [(loc, "duplicate_key")]
    assert verdict.unit_id is not None  # still named for a unit token's bounds


def test_an_envelope_that_writes_a_key_twice_refuses_the_document() -> None:
    body = json.dumps(_document([copy.deepcopy(KNITWEAR[3])], CONTEXTS[2]))
    twice = body.replace('"schemaVersion": ', '"schemaVersion": "1.2", "schemaVersion": ', 1)
    result = judge_epcis(twice.encode(), MAPPING, ENDPOINTS["epcis"], PLAN, 500, 64 * 1024)
    assert result.verdicts == []
    assert result.document_error is not None
    errors = result.document_error.errors or []
    assert [(e.loc, e.type) for e in errors] == [("schemaVersion", "duplicate_key")]


def test_an_event_with_an_unsafe_number_lists_its_other_errors_too() -> None:
    """A scan with `quantity` 2^64 and a bad time gets both errors; such an event got only
    the number's, then the next post the next error."""
    event = copy.deepcopy(KNITWEAR[1])  # no eventID: its hash must not meet the number
    assert "eventID" not in event
    event["example:batchCount"] = 2**64
    event["readPoint"] = {"id": "urn:epc:id:sgln:0000000.00000.0"}
    verdict = _judge(_document([event], CONTEXTS[2])).verdicts[0]
    assert verdict.reason_code is not None
    assert verdict.reason_code.value == "validation_failed"
    assert [(e.loc, e.type) for e in verdict.errors or []] == [
        ("example:batchCount", "unsafe_integer"),
        ("readPoint.id", "epcis_unknown_read_point"),
    ]
    event = copy.deepcopy(KNITWEAR[3])
    event["childQuantityList"][0]["quantity"] = 2**64
    event["eventTime"] = "2027-04-05T10:05:00"
    del event["eventTimeZoneOffset"]
    verdict = _judge(_document([event], CONTEXTS[2])).verdicts[0]
    assert [(e.loc, e.type) for e in verdict.errors or []] == [
        ("childQuantityList.0.quantity", "unsafe_integer"),
        ("event_time", "timestamp_no_offset"),
    ]
