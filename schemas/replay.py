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

from schemas.json_skip import value_pattern
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
        written = _member_text(line, "value")
        return self.value_bytes() if written is None else written


_BLANK: Final = re.compile(r"[ \t\n\r]*")
#: Finds where a JSON value ends without converting it (no int() of 5,000 digits).
_SKIPPER: Final = json.JSONDecoder(parse_int=len, parse_float=len, parse_constant=len)

VALUE_LEVELS: Final = 64
"""Nesting a line's member value may have to be found by `line_members` in one regex step
(a contract record nests a few levels; the line parser refuses over 200). A line with a
deeper value is read by the JSON parser instead, as before."""

_VALUE: Final = value_pattern(VALUE_LEVELS)
_STRING: Final = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
_BLANK_BYTES: Final = re.compile(rb"[ \t\n\r]*+")
_WHITESPACE: Final = b" \t\n\r"


def line_members(line: bytes) -> list[tuple[str, int, int]] | None:
    """The top-level members of the object `line` writes: each name, and where its value's
    bytes start and end, found without parsing any value (no Python object is built of
    one, however large: one regex step each). None when the line is no object this scan
    can follow (broken structure, a value nested deeper than `VALUE_LEVELS`); the
    structure is checked, not that the values are JSON."""
    members: list[tuple[str, int, int]] = []
    try:
        at = _blank(line, 0)
        if line[at] != ord("{"):
            return None
        at = _blank(line, at + 1)
        if line[at] == ord("}"):
            return members if not line[at + 1 :].strip(_WHITESPACE) else None
        while True:
            name = _STRING.match(line, at)
            if name is None:
                return None
            at = _blank(line, name.end())
            if line[at] != ord(":"):
                return None
            start = _blank(line, at + 1)
            value = _VALUE.match(line, start)
            at = start if value is None else value.end()
            end = start + len(line[start:at].rstrip(_WHITESPACE))
            if end == start:
                return None
            members.append((json.loads(name.group().decode()), start, end))
            if line[at] == ord(","):
                at = _blank(line, at + 1)
                continue
            if line[at] == ord("}") and not line[at + 1 :].strip(_WHITESPACE):
                return members
            return None
    except (IndexError, ValueError):  # the line ends early; a name JSON cannot read
        return None


def _blank(line: bytes, at: int) -> int:
    match = _BLANK_BYTES.match(line, at)
    return at if match is None else match.end()


def _member_text(line: bytes, name: str) -> bytes | None:
    """The bytes of the top-level object's member `name`, or None when the line is no
    object the scan can follow (a line that writes `name` twice is refused before:
    `decode_replay_line`). Found by `line_members`, without parsing the value: parsing
    it built a hostile value's every object once more."""
    members = line_members(line)
    if members is not None:
        found = [(start, end) for key, start, end in members if key == name]
        return line[found[-1][0] : found[-1][1]] if found else None
    return _member_text_parsed(line, name)


def _member_text_parsed(line: bytes, name: str) -> bytes | None:
    """`_member_text` by the JSON parser, for a line `line_members` cannot follow."""
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
