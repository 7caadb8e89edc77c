"""Scenario files for `chainwatch replay` (CONTRACT.md, replay files).

Each NDJSON line is one record to publish, in file order. The line is checked
here; its `value` is not: a value that is not a valid record (or not even an
object) is published as it is and becomes a dead letter *for the consumer*, so
that replay exercises exactly the path production input takes.
"""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from schemas.topics import InputTopic


class ReplayLine(BaseModel):
    """One scenario line: `{"topic": ..., "key": ..., "value": ...}`; `value` is required."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    topic: InputTopic
    key: Annotated[str, Field(max_length=1024)] | None = None
    value: JsonValue = Field(
        description="Published serialised as JSON; null = a Kafka null value (tombstone)."
    )

    def key_bytes(self) -> bytes | None:
        return None if self.key is None else self.key.encode()

    def value_bytes(self) -> bytes | None:
        """The Kafka value: compact JSON, or None (a real null, so compaction deletes)."""
        if self.value is None:
            return None
        return json.dumps(self.value, separators=(",", ":"), ensure_ascii=False).encode()
