"""A scenario line's value found without parsing it (`schemas.replay_scan`), and a
line whose value Kafka cannot take refused from its length (`decode_replay_line`).

Parsing the line built every object of a hostile value of megabytes, for a record that is
a dead letter whatever it holds; the scan must find the very bytes the parser ends the
value at, and the rest of such a line is still judged as any line's.
"""

from __future__ import annotations

import gc
import json
import re
import sys
from collections.abc import Callable

import pytest
from memory_peak import peak_memory
from pydantic import ValidationError
from samples import EXAMPLES, padded_value, scan

from schemas.dead_letter import ReasonCode
from schemas.kafka_size import MAX_REQUEST_BYTES
from schemas.replay import ReplayLine, _member_text_parsed, _value_text
from schemas.replay_scan import PARSER_DEPTH, value_spans
from schemas.validation import RecordRejected, decode_replay_line

TRICKY = [
    b'{"topic": "scans", "value": {"a": "x\\"]}[{,", "b": [1, [2, {"c": null}]]}}',
    b'{"value":"\\\\","topic":"scans"}',
    b'{ "va\\u006cue" :\t[ 1e400 , -0 , true , false , null ]\r\n, "topic" : "orders" }  ',
    b'{"topic": "scans", "key": "K", "value": {"n\\u00e4me": "\xc3\xa4\xe2\x82\xac", "q": -1E-3}}',
    b'{"topic": "scans", "value": [], "x": {"value": 1}, "y": "}"}',
    b'{"topic": "crm.customers", "key": "C-1", "value": null}',
    b'{"topic": "scans", "value": "' + b"\\u0022" * 3 + b'" }',
    b'{"\\u0076\\u0061\\u006C\\u0075\\u0065": {"x": 1}, "valu": [], "values": 1, "topic": "scans"}',
    b'{"topic": "scans", "\\"value\\"": 2, "va\\u006cues": {"value": 3}, "value": 4, "z": 5}',
]


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


EXAMPLE_LINES = [
    line
    for path in sorted(EXAMPLES.glob("example_*.ndjson"))
    for line in path.read_bytes().splitlines()
    if line.startswith(b'{"topic"') and _parses(line)  # not the bad-input example's cut line
]


def test_the_scan_finds_each_value_where_the_json_parser_ends_it() -> None:
    assert len(EXAMPLE_LINES) > 80
    for line in TRICKY + EXAMPLE_LINES:
        spans = value_spans(line)

        assert spans is not None, line
        names = [name for name, _ in json.loads(line, object_pairs_hook=lambda pairs: pairs)]
        assert len(spans) == names.count("value") == 1, line
        assert _value_text(line) == _member_text_parsed(line, "value"), line


def _line(value: bytes, *, key: str | None = "PO-1", topic: str = "scans") -> bytes:
    written_key = b"" if key is None else b'"key": "' + key.encode() + b'", '
    return b'{"topic": "' + topic.encode() + b'", ' + written_key + b'"value": ' + value + b"}"


def _refusal(line: bytes) -> RecordRejected:
    with pytest.raises(RecordRejected) as refused:
        decode_replay_line(line)
    return refused.value


def test_a_line_whose_value_kafka_cannot_take_is_refused_without_parsing_it() -> None:
    """Before: the line was parsed whole, its value built as Python objects, ~49 times
    the line's bytes at peak for a value of `{}` items (the record then refused)."""
    record = scan(event_id="e-1", order_id="PO-1")
    over = _line(padded_value(record, b"PO-1", MAX_REQUEST_BYTES + 1, inner="{}"))

    with peak_memory() as peak:
        refused = _refusal(over)

    assert refused.reason_code is ReasonCode.PROCESSING_ERROR
    assert [e.type for e in refused.errors] == ["too_large"]
    assert f"{MAX_REQUEST_BYTES + 1:,} bytes" in refused.errors[0].msg  # with the line's key
    assert peak.bytes < 2 * len(over), (peak.bytes, len(over))
    at_limit = _line(padded_value(record, b"PO-1", MAX_REQUEST_BYTES))
    assert decode_replay_line(at_limit).key == "PO-1"
    keyless = padded_value(record, None, MAX_REQUEST_BYTES + 1)  # sized without a key
    assert _refusal(_line(keyless, key=None)).reason_code is ReasonCode.PROCESSING_ERROR
    assert decode_replay_line(_line(padded_value(record, None, MAX_REQUEST_BYTES), key=None))


def test_the_rest_of_such_a_line_is_judged_first_as_any_lines() -> None:
    """Its own keys written twice, its topic and its key are the line's faults, named as
    before; its value is told from its length only, so a value that is no JSON is
    `too_large` too, and one nested deeper than the parser takes is the parser's `not_json`."""
    big = b"[" + b"0," * (MAX_REQUEST_BYTES // 2) + b"0]"
    twice = _line(big)[:-1] + b', "value": ' + big + b"}"
    assert [(e.loc, e.type) for e in _refusal(twice).errors] == [("value", "duplicate_key")]
    assert _refusal(_line(big, topic="alerts")).errors[0].loc == "topic"
    assert _refusal(_line(big).replace(b'"PO-1"', b"7", 1)).errors[0].loc == "key"
    not_json = _line(big.replace(b"0,", b"0 ", 1))
    assert _refusal(not_json).errors[0].type == "too_large"
    unterminated = _line(big[:-1] + b'"]')
    assert _refusal(unterminated).reason_code is ReasonCode.NOT_JSON
    deep = b"[" * (PARSER_DEPTH + 1) + big + b"]" * (PARSER_DEPTH + 1)
    assert value_spans(_line(deep)) is None
    assert _refusal(_line(deep)).errors[0].msg == json_fault(_line(deep))


def test_a_fault_beside_such_a_value_is_named_where_the_line_has_it() -> None:
    """The rest of the line is judged with the value blanked, not cut to `0`: a line
    whose JSON breaks after a 1 MiB value was told to look at column 39, the place of
    the fault in what was left of the line, not at its own (column 1,048,6xx)."""
    big = b"[" + b"0," * (MAX_REQUEST_BYTES // 2) + b"0]"
    for written in [b'"key": tru', b'"key": "K", "x": [1,]']:
        line = b'{"topic": "scans",\r"value": ' + big + b", " + written + b"}"
        whole = json_fault(line)

        refused = _refusal(line)

        assert refused.reason_code is ReasonCode.NOT_JSON
        assert _column(whole) > len(big), whole  # the parser's own place: past the value
        assert refused.errors[0].msg == whole, (refused.errors[0].msg, whole)


def _column(message: str) -> int:
    found = re.search(r"line 1 column (\d+)", message)
    assert found is not None, message
    return int(found[1])


def json_fault(line: bytes) -> str:
    """What the line parser says of `line` as a whole (its value and all)."""
    try:
        ReplayLine.model_validate_json(line)
    except ValidationError as exc:
        return str(exc.errors()[0]["msg"])
    raise AssertionError("the line parses")


def _c_calls(line: bytes, call: Callable[[bytes], object] = value_spans) -> int:
    """The calls into C (a regex step, a slice, a comparison) `call` makes for `line` (by
    default `value_spans`'s): what it costs, however loaded the machine. The collector
    is held off (finalizers of earlier tests' garbage made calls of their own)."""
    calls = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        calls += event == "c_call"

    gc.collect()
    gc.disable()
    sys.setprofile(count)
    try:
        call(line)
    except RecordRejected:
        pass
    finally:
        sys.setprofile(None)
        gc.enable()
    return calls


def test_the_members_beside_the_value_cost_no_python_step_each() -> None:
    """Each member took a few Python steps (~2 us): an 8 MiB line of 700,000 members beside
    a small value took 4.9 s to publish (1.8 s before the scan, which ran twice, for the
    line's length and for its value), and an ordinary line 10 us where the JSON parser's
    walk took 7. A name that may be `value` (an escape in it) is still looked at."""

    def line(members: int) -> bytes:
        others = b"".join(b'"m\\u00e4%d": [%d, {"v": "}"}], ' % (i, i) for i in range(members))
        return b'{"topic": "scans", ' + others + b'"v\\u0061lue": {"a": 1}, "key": "K"}'

    for members in (10, 1000):
        spans = value_spans(line(members))
        assert spans is not None
        assert [line(members)[start:end] for start, end in spans] == [b'{"a": 1}']
    assert _c_calls(line(1000)) == _c_calls(line(10))


def test_what_follows_the_value_without_a_comma_is_no_part_of_it() -> None:
    """The scan took all up to the next `,` or `}` for the value: a line that forgot the
    comma after its 1 MiB value was a `bad_replay_line` with its `topic` missing though
    it writes one, or `too_large` sized without the key it writes, its key's own fault
    unsaid. The line is no JSON: the parser says where."""
    big = b"[" + b"0," * (MAX_REQUEST_BYTES // 2) + b"0]"
    for before, after in [
        (b'"key": "PO-1"', b'"topic": "scans"'),
        (b'"topic": "scans"', b'"key": 7'),
    ]:
        line = b"{" + before + b', "value": ' + big + b" " + after + b"}"

        refused = _refusal(line)

        assert value_spans(line) is None
        assert refused.reason_code is ReasonCode.NOT_JSON
        assert refused.errors[0].msg == json_fault(line)


def _nested_units(levels: int, size: int) -> bytes:
    """An array of arrays nested `levels` deep (one more with it), of about `size` bytes."""
    unit = b"[" * levels + b"0" + b"]" * levels
    return b"[" + b",".join([unit] * (size // (len(unit) + 1) + 1)) + b"]"


@pytest.mark.parametrize("levels", [65, 198, 199, 200, 1000, 1100])
def test_a_deep_value_is_refused_as_the_parser_says_without_being_parsed(levels: int) -> None:
    """The scan followed 64 levels, the parser 200 (the line's own object one of them): a
    value nested 65-199 deep was parsed whole, 8 MiB of it 10-25 s and 1.1 GB to publish,
    to be refused as `too_large` in the end. Any value the parser takes is now found by
    the scan (`too_large`, from its length), and a deeper one is the parser's `not_json`,
    its words and its place: the work is the same, C calls, however long the line."""
    line = _line(_nested_units(levels, MAX_REQUEST_BYTES))
    longer = _line(_nested_units(levels, 2 * MAX_REQUEST_BYTES))
    try:
        ReplayLine.model_validate_json(line)
        said = None
    except ValidationError as exc:
        said = str(exc.errors()[0]["msg"])

    with peak_memory() as peak:
        refused = _refusal(line)

    if said is None:
        assert levels + 1 < PARSER_DEPTH
        assert refused.reason_code is ReasonCode.PROCESSING_ERROR
        assert [e.type for e in refused.errors] == ["too_large"]
    else:
        assert levels + 1 >= PARSER_DEPTH
        assert refused.reason_code is ReasonCode.NOT_JSON
        assert [e.msg for e in refused.errors] == [said]
    assert peak.bytes < 2 * len(line), (peak.bytes, len(line))
    assert _c_calls(longer, decode_replay_line) == _c_calls(line, decode_replay_line)


def _values(times: int, last: bytes = b"1", after: bytes = b"") -> bytes:
    return (
        b'{"topic": "scans", "key": "K", ' + b'"value":[0],' * times + b'"value": ' + last
        + after + b"}"
    )  # fmt: skip


def test_a_line_writing_its_value_many_times_costs_no_python_step_each() -> None:
    """Each `value` of a line too long for Kafka was found by a Python step (~1.4 us): a
    line of 900,000 of them took 1.7 s to refuse. Now in C, as the cut of each before
    the rest of the line is judged: the count of the key written so many times, or the
    parser's words for a fault of the line, are said as before."""
    times = MAX_REQUEST_BYTES // 12 + 1
    big = b"[" + b"0," * (MAX_REQUEST_BYTES // 2) + b"0]"
    for last, after in [(b"1", b""), (big, b""), (big, b', "x": tru')]:
        line, longer = _values(times, last, after), _values(2 * times, last, after)

        refused = _refusal(line)

        if after:
            assert refused.reason_code is ReasonCode.NOT_JSON
            assert [e.msg for e in refused.errors] == [json_fault(line)]
        else:
            assert refused.reason_code is ReasonCode.BAD_REPLAY_LINE
            assert [(e.loc, e.type) for e in refused.errors] == [("value", "duplicate_key")]
            assert f"written {times + 1} times" in refused.errors[0].msg
        assert _c_calls(longer, decode_replay_line) == _c_calls(line, decode_replay_line)


def test_a_long_lines_own_keys_are_checked_without_parsing_what_it_holds() -> None:
    """A line checked its own keys in Python's parse of it all: 8 MiB of arrays nested 150
    deep in a member the line ignores took 2 s and 750 MB, its small value then published.
    Its members' arrays and objects are cut first; a key it writes twice is still found."""
    ignored = _nested_units(150, MAX_REQUEST_BYTES)
    line = b'{"topic": "scans", "key": "PO-1", "x": ' + ignored + b', "value": {"a": 1}}'

    with peak_memory() as peak:
        replay = decode_replay_line(line)

    assert replay.value_as_written(line) == b'{"a": 1}'
    assert peak.bytes < len(line), (peak.bytes, len(line))
    twice = line.replace(b', "value"', b', "key": "PO-1", "value"', 1)
    assert [(e.loc, e.type) for e in _refusal(twice).errors] == [("key", "duplicate_key")]
