"""The scan of a scenario line (`schemas.replay_scan`) against the line parser and Python's.

The scan decides what the replay publishes (a line's value as written), what it refuses
from its length alone, and what of a line its own keys are checked in, all without
parsing a value: on any line the parser takes it must find the very bytes the parser's
walk finds, and follow no line nested deeper than the parser takes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Final

from fuzz_budget import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.json_keys import repeated_keys
from schemas.replay import ReplayLine
from schemas.replay_scan import (
    PARSER_DEPTH,
    container_spans,
    last_value,
    value_spans,
    values_blanked,
    values_cut,
)

VALUE_NAMES = [b'"value"', b'"v\\u0061lue"', b'"va\\u006Cue"', b'"\\u0076\\u0061\\u006c\\u0075e"']


def _parser_says(line: bytes) -> str | None:
    """None when the line parser takes `line` as JSON (its record may still be invalid),
    else its words."""
    try:
        ReplayLine.model_validate_json(line)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "json_invalid":
            return str(error["msg"])
    return None


def _walk(line: bytes) -> list[tuple[str, int, int]] | None:
    """Each member of the object `line` writes, its name and where its value starts and
    ends in bytes, by Python's parser (None when it reads no object)."""
    text = line.decode("utf-8", "surrogateescape")
    decoder = json.JSONDecoder(parse_constant=str)
    blank = " \t\n\r"
    members: list[tuple[str, int, int]] = []

    def skip(at: int) -> int:
        while at < len(text) and text[at] in blank:
            at += 1
        return at

    def byte(at: int) -> int:
        return len(text[:at].encode("utf-8", "surrogateescape"))

    at = skip(0)
    if text[at : at + 1] != "{":
        return None
    at = skip(at + 1)
    if text[at] == "}":
        return members
    while True:
        name, at = decoder.raw_decode(text, at)
        at = skip(skip(at) + 1)  # the `:`
        _, end = decoder.raw_decode(text, at)
        members.append((name, byte(at), byte(end)))
        at = skip(end)
        if text[at] == "}":
            return members
        at = skip(at + 1)  # the `,`


def _nested(levels: int, value: bytes, brackets: str) -> bytes:
    opening = {"[": b"[", "{": b'{"k": '}[brackets]
    closing = {"[": b"]", "{": b"}"}[brackets]
    return opening * levels + value + closing * levels


spaces = st.sampled_from([b"", b"", b" ", b"\n", b"\t \r\n"])
_WRITTEN: Final = [
    b"a", b'\\"', b"\\\\", b"\\ud800\\udc00", "ä€😀".encode(), b"]", b"}", b"[", b"{", b",",
    b":", b"\\u0022", b" ", b"\\n", b"value", b"\\/", b"\\u005d",
]  # fmt: skip
"""What strings write, escapes included; a lone surrogate (no JSON to the parser) rarely."""
strings = st.lists(st.sampled_from([*_WRITTEN * 4, b"\\ud800", b"\\udc00"]), max_size=5).map(
    lambda parts: b'"' + b"".join(parts) + b'"'
)
scalars = strings | st.sampled_from(
    [b"0", b"-1.5E-3", b"1e400", b"true", b"false", b"null", b"1234567890123456789012345"]
)
names = st.sampled_from([*VALUE_NAMES, b'"topic"', b'"key"', b'"x"', b'"values"', b'"\\"value\\""'])


def _joined(parts: list[tuple[bytes, bytes]], opening: bytes, closing: bytes) -> bytes:
    return opening + b",".join(before + part for before, part in parts) + closing


values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(st.tuples(spaces, inner), max_size=3).map(lambda items: _joined(items, b"[", b"]"))
        | st.lists(st.tuples(st.tuples(names | strings, spaces), inner), max_size=3).map(
            lambda members: b"{" + b",".join(n + s + b":" + v for (n, s), v in members) + b"}"
        )
    ),
    max_leaves=8,
)
deep_values = st.builds(
    _nested,
    st.sampled_from([0, 1, 63, 64, 65, PARSER_DEPTH - 3, PARSER_DEPTH - 2, PARSER_DEPTH - 1])
    | st.sampled_from([PARSER_DEPTH, PARSER_DEPTH + 1, 1000])
    | st.integers(0, PARSER_DEPTH + 10),
    values | st.sampled_from([b"[]", b"{ }", b"[\n]"]),
    st.sampled_from(["[", "{"]),
)
members = st.tuples(names | strings, spaces, spaces, values | deep_values, spaces)
lines = st.builds(
    lambda before, written, after: before + _joined(written, b"{", b"}") + after,
    spaces,
    st.lists(members.map(lambda m: (m[1], m[0] + m[2] + b":" + m[2] + m[3] + m[4])), max_size=5),
    spaces,
)


def _cut(line: bytes, spans: list[tuple[int, int]], blank: bool = False) -> bytes:
    out, at = b"", 0
    for start, end in spans:
        written = line[start + 1 : end]
        filler = bytes(c if c in b"\r\n" else 32 for c in written) if blank else b""
        out += line[at:start] + b"0" + filler
        at = end
    return out + line[at:]


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=examples(800))
@given(line=lines)
def test_the_scan_finds_what_the_parser_finds_and_follows_no_deeper(line: bytes) -> None:
    """On random lines (strings escaping quotes and brackets, lone surrogates, names that
    spell `value` with escapes or repeat, whitespace, values nested up to past the
    parser's limit): the scan finds each value where Python's parser ends it, the line's
    last `value` is what is published, and a line the parser refuses as nested too deep
    the scan does not follow (the parser's words are then the replay's)."""
    said = _parser_says(line)
    walked = _walk(line) if said is None else None
    found, containers = value_spans(line), container_spans(line)

    if said is not None and "recursion limit exceeded" in said:
        assert (found, containers, last_value(line)) == (None, None, None)
        return
    if walked is None:
        return  # no JSON, or no object: whatever the scan says, the parser says first
    expected = [(start, end) for name, start, end in walked if name == "value"]
    assert found is not None
    assert containers is not None
    assert list(found) == expected
    last = last_value(line)
    assert (last and (last.start, last.end, last.several)) == (
        (*expected[-1], len(expected) > 1) if expected else None
    )
    assert list(containers) == [(s, e) for _, s, e in walked if line[s : s + 1] in b"[{"]
    assert values_cut(line, found) == _cut(line, expected)
    assert values_blanked(line, found) == _cut(line, expected, blank=True)
    own = values_cut(line, containers)  # the text the line's own keys are checked in
    assert repeated_keys(own, nested=False) == repeated_keys(line, nested=False)


def test_the_scan_follows_a_line_exactly_as_deep_as_the_parser_takes_one() -> None:
    """`PARSER_DEPTH` is the parser's: it takes a line whose non-empty arrays and objects
    nest 200 deep, its own object one of them, and empty ones below them; the scan follows
    just those, in the value or in a member beside it."""
    taken: dict[bool, int] = {True: 0, False: 0}
    for levels in range(PARSER_DEPTH - 3, PARSER_DEPTH + 2):
        for inner in [b"0", b'"]"', b"[]", b"{ }", b"[0]"]:
            for brackets in "[{":
                value = _nested(levels, inner, brackets)
                for line in [
                    b'{"topic": "scans", "value": ' + value + b"}",
                    b'{"x": ' + value + b', "value": 1, "topic": "scans"}',
                ]:
                    takes = _parser_says(line) is None
                    taken[takes] += 1

                    assert (value_spans(line) is not None) is takes, (levels, inner, line[-9:])
                    assert (container_spans(line) is not None) is takes
                    assert (last_value(line) is not None) is takes
    assert taken[True] > 0  # both sides of the limit were tried
    assert taken[False] > 0


def test_the_first_scan_of_a_process_works_from_deep_in_a_caller_s_stack() -> None:
    """The scan's regexes compile at their first use, which recurses ~800 frames: called
    first from 200 frames deep under the default limit it raised RecursionError, no
    `RecordRejected` (a line too large for Kafka is scanned, not parsed)."""
    code = (
        "import sys\n"
        "from schemas.validation import decode_replay_line\n"
        "from schemas.validation import RecordRejected\n"
        "sys.setrecursionlimit(1000)\n"
        "line = b'{\"topic\": \"scans\", \"value\": [' + b'1,' * 700000 + b'1]}'\n"
        "def deep(n):\n"
        "    if n:\n"
        "        return deep(n - 1)\n"
        "    try:\n"
        "        decode_replay_line(line)\n"
        "    except RecordRejected as exc:\n"
        "        return exc\n"
        "print(deep(200))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Kafka refuses it" in done.stdout, done.stdout
