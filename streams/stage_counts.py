"""Scans counted per stage: the first end-to-end slice of the stack.

The count lives in a faust table keyed by stage (the stream is re-keyed by
stage first, so each stage's count has one owner partition); its changelog
topic `<app_id>-stage-counts-changelog` is the durable, queryable result.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import faust

from streams.topics import SCANS, TopicNames


def _stage_of(raw: bytes) -> str | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    stage = value.get("stage") if isinstance(value, dict) else None
    return stage if isinstance(stage, str) else None


def register_stage_counts(app: faust.App, names: TopicNames) -> Any:
    scans = app.topic(names(SCANS), key_type=bytes, value_type=bytes, value_serializer="raw")
    by_stage = app.topic(
        f"{app.conf.id}-scans-by-stage",
        key_type=str,
        value_type=bytes,
        value_serializer="raw",
        key_serializer="raw",
        internal=True,
    )
    counts = app.Table("stage-counts", default=int, key_type=str, value_type=int)

    @app.agent(scans, name="stage-rekey")
    async def rekey(stream: faust.StreamT[Any]) -> AsyncIterator[None]:
        async for raw in stream:
            stage = _stage_of(raw)
            if stage is not None:
                await by_stage.send(key=stage.encode(), value=raw)
            yield None

    @app.agent(by_stage, name="stage-count", concurrency=1)
    async def count(stream: faust.StreamT[Any]) -> AsyncIterator[None]:
        async for event in stream.events():
            key = event.key.decode() if isinstance(event.key, bytes) else str(event.key)
            counts[key] += 1
            yield None

    return counts
