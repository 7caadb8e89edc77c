"""Request bodies -> items: one object, a JSON array, or NDJSON, within limits.

Every item leaves here as bytes: an NDJSON line as sent, an array element
re-serialised compactly (unknown fields kept, so CRM extras survive), or -
when a body does not parse - the body as sent, so `decode_input` classifies
it (`not_json`) exactly as it would a bad Kafka record. A body that does not
parse at all is one item for the same reason: it is rejected per item, and
dead-lettered in partial mode, instead of failing the request with another
kind of error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import orjson
from starlette.requests import Request

NDJSON_TYPES: Final = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)
UNPARSED: Final = object()
"""`RawItem.parsed` of an item that is not JSON."""
LAZY: Final = object()
"""`RawItem.parsed` of an NDJSON line not parsed yet: see `RawItem.json()`."""


class BodyTooLarge(Exception):
    """More bytes or items than the gateway accepts in one request (413)."""


class UnsupportedMediaType(Exception):
    """Neither JSON nor NDJSON (415)."""


@dataclass(frozen=True, slots=True)
class RawItem:
    index: int
    value: bytes
    parsed: Any

    def json(self) -> Any:
        """The parsed item (`UNPARSED` if it is not JSON)."""
        return _loads(self.value) if self.parsed is LAZY else self.parsed


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refusing early (by `Content-Length`) or as soon as it grows past the limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge(f"body of {declared} bytes exceeds the limit of {max_bytes} bytes")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise BodyTooLarge(f"body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(content_type: str | None) -> str:
    """`json` or `ndjson`; a missing type is read as JSON, anything else is refused."""
    if not content_type:
        return "json"
    main = content_type.split(";", 1)[0].strip().lower()
    if main in NDJSON_TYPES:
        return "ndjson"
    if main in ("application/json", "text/json", "*/*") or main.endswith("+json"):
        return "json"
    raise UnsupportedMediaType(
        f"unsupported content type {main!r}: send application/json or application/x-ndjson"
    )


def _loads(data: bytes) -> Any:
    """orjson first (fast); the stdlib for what orjson refuses but JSON allows (huge ints)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            return UNPARSED


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def parse_document(body: bytes) -> Any:
    """The parsed JSON body, or `UNPARSED`."""
    return _loads(body)


def item(index: int, parsed: Any, raw: bytes) -> RawItem:
    """An item from its parsed JSON (normalised bytes) or its raw bytes when unparsed."""
    if parsed is UNPARSED:
        return RawItem(index, raw, UNPARSED)
    return RawItem(index, _dumps(parsed), parsed)


def split_items(body: bytes, kind: str, max_items: int) -> list[RawItem]:
    """The items of a body (see module doc); `BodyTooLarge` beyond `max_items`."""
    if kind == "ndjson":
        lines = [line for line in body.split(b"\n") if line.strip()]
        if len(lines) > max_items:
            raise BodyTooLarge(f"{len(lines)} items exceed the limit of {max_items} per request")
        # A line is already one item's JSON: it goes out as sent (no re-serialising),
        # and is only parsed here when a unit's own-id check or an error needs it.
        return [RawItem(i, line.strip(), LAZY) for i, line in enumerate(lines)]
    parsed = _loads(body)
    if isinstance(parsed, list):
        if len(parsed) > max_items:
            raise BodyTooLarge(f"{len(parsed)} items exceed the limit of {max_items} per request")
        return [RawItem(i, _dumps(value), value) for i, value in enumerate(parsed)]
    return [item(0, parsed, body)]
