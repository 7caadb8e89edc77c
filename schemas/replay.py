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

from schemas.replay_scan import last_value
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


def _value_text(line: bytes) -> bytes | None:
    """The bytes of the top-level object's member `value` (a line that writes it twice is
    refused before: `decode_replay_line`). Found by `last_value`, without parsing the
    value: parsing it built a hostile value's every object once more."""
    found = last_value(line)
    return _member_text_parsed(line, "value") if found is None else line[found.start : found.end]


def _member_text_parsed(line: bytes, name: str) -> bytes | None:
    """The bytes of the member `name` by the JSON parser, for a line `last_value` cannot
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
