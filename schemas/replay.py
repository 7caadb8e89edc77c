"""Scenario files for `chainwatch replay` (CONTRACT.md, replay files).

Each NDJSON line is one record to publish, in file order. The line is checked
here (and a key it writes twice by `decode_replay_line`); its `value` is not: a
value that is not a valid record (or not even an object) is published as it is
and becomes a dead letter *for the consumer*, so that replay exercises exactly
the path production input takes.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from schemas.json_skip import single_value_pattern
from schemas.topics import InputTopic


class ReplayLine(BaseModel):
    """One scenario line: `{"topic": ..., "key": ..., "value": ...}`; `value` is required."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    topic: InputTopic
    key: Annotated[str, Field(max_length=1024)] | None = None
    value: JsonValue = Field(
        description="Published as the line writes it; null = a Kafka null value (tombstone)."
    )

    def key_bytes(self) -> bytes | None:
        return None if self.key is None else self.key.encode()

    def value_bytes(self) -> bytes | None:
        """The Kafka value: compact JSON, or None (a real null, so compaction deletes)."""
        if self.value is None:
            return None
        return json.dumps(self.value, separators=(",", ":"), ensure_ascii=False).encode()

    def value_as_written(self, line: bytes) -> bytes | None:
        """The Kafka value as `line` (the line this was parsed from) writes it.

        What `chainwatch replay` publishes, so that the worker decodes the very
        bytes of the file as it decodes a live record's. `value_bytes` re-serialises
        what the line parser made of them: `1e400` became `Infinity` (no JSON at
        all), of two equal keys one vanished, and a value the worker refuses could
        turn into one it takes. None for a null value, as `value_bytes`.
        """
        if self.value is None:
            return None
        written = _value_text(line)
        return self.value_bytes() if written is None else written


_BLANK: Final = re.compile(r"[ \t\n\r]*")
#: Finds where a JSON value ends without converting it (no int() of 5,000 digits).
_SKIPPER: Final = json.JSONDecoder(parse_int=len, parse_float=len, parse_constant=len)

VALUE_LEVELS: Final = 64
"""Nesting a line's `value` may have to be found by `value_spans` in one regex step (a
contract record nests a few levels; the line parser refuses over 200). A line with a
deeper value is read by the JSON parser instead, as before."""

_VALUE: Final = single_value_pattern(VALUE_LEVELS)
_NAME: Final = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_VALUE_NAME: Final = rb'"(?:v|\\u0076)(?:a|\\u0061)(?:l|\\u006[cC])(?:u|\\u0075)(?:e|\\u0065)"'
"""`"value"` as JSON may write it: each letter as itself or as its escape."""
_SPACE: Final = rb"[ \t\n\r]*+"
_OTHER_MEMBERS: Final = re.compile(
    rb"(?:(?!" + _VALUE_NAME + rb")" + _NAME + _SPACE + rb":" + _SPACE + _VALUE.pattern
    + _SPACE + rb"," + _SPACE + rb")*+",
    re.DOTALL,
)  # fmt: skip
"""Members not named `value` that a `,` follows, as many as there are, in one C-level step:
a Python step per member took ~2 us, seconds for a hostile line of 700,000 members."""
_MEMBER: Final = re.compile(rb"(" + _NAME + rb")" + _SPACE + rb":" + _SPACE, re.DOTALL)
_IS_VALUE_NAME: Final = re.compile(_VALUE_NAME)
_BLANK_BYTES: Final = re.compile(_SPACE)
_WHITESPACE: Final = b" \t\n\r"


def value_spans(line: bytes) -> list[tuple[int, int]] | None:
    """Where the bytes of each `value` member of the object `line` writes start and end,
    found without parsing any value (no Python object is built of one, however large:
    one regex step each, and one for all the other members between two). None when the
    line is no object this scan can follow (broken structure, a member's value nested
    deeper than `VALUE_LEVELS`); the structure is checked, not that the values or the
    names are JSON."""
    spans: list[tuple[int, int]] = []
    try:
        at = _blank(line, 0)
        if line[at] != ord("{"):
            return None
        at = _blank(line, at + 1)
        if line[at] == ord("}"):
            return spans if not line[at + 1 :].strip(_WHITESPACE) else None
        while True:
            at = _skipped(_OTHER_MEMBERS.match(line, at), at)
            member = _MEMBER.match(line, at)
            if member is None:
                return None
            start = member.end()
            value = _VALUE.match(line, start)
            if value is None:
                return None
            end = value.end()
            at = _blank(line, end)
            if _IS_VALUE_NAME.fullmatch(member.group(1)):
                spans.append((start, end))
            if line[at] == ord(","):
                at = _blank(line, at + 1)
                continue
            if line[at] == ord("}") and not line[at + 1 :].strip(_WHITESPACE):
                return spans
            return None
    except IndexError:  # the line ends early
        return None


def _skipped(match: re.Match[bytes] | None, at: int) -> int:
    return at if match is None else match.end()


def _blank(line: bytes, at: int) -> int:
    return _skipped(_BLANK_BYTES.match(line, at), at)


def _value_text(line: bytes) -> bytes | None:
    """The bytes of the top-level object's member `value`, or None when the line is no
    object the scan can follow (a line that writes it twice is refused before:
    `decode_replay_line`). Found by `value_spans`, without parsing the value: parsing
    it built a hostile value's every object once more."""
    spans = value_spans(line)
    if spans is not None:
        return line[spans[-1][0] : spans[-1][1]] if spans else None
    return _member_text_parsed(line, "value")


def _member_text_parsed(line: bytes, name: str) -> bytes | None:
    """The bytes of the member `name` by the JSON parser, for a line `value_spans` cannot
    follow."""
    text = line.decode("utf-8", "surrogateescape")
    found: tuple[int, int] | None = None

    def blank(at: int) -> int:
        match = _BLANK.match(text, at)
        return at if match is None else match.end()

    try:
        at = blank(0)
        if text[at] != "{":
            return None
        at = blank(at + 1)
        while text[at] == '"':
            key, at = _SKIPPER.raw_decode(text, at)
            at = blank(at)
            if text[at] != ":":
                return None
            start = blank(at + 1)
            _, end = _SKIPPER.raw_decode(text, start)
            if key == name:
                found = (start, end)
            at = blank(end)
            if text[at] != ",":
                break
            at = blank(at + 1)
    except (ValueError, IndexError, RecursionError):
        return None
    if found is None:
        return None
    return text[found[0] : found[1]].encode("utf-8", "surrogateescape")
