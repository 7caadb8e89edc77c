"""Request bodies -> items: one object, a JSON array, or NDJSON, within limits.

Items are **counted before anything is parsed**, and every item leaves here as
the bytes it was sent as: an NDJSON line, an element of a JSON array (found by
a structural scan that builds no Python objects), or the one object of a
single-object body. So `decode_input` judges the very same bytes whatever the
framing - `NaN`, a lone surrogate or nesting beyond the parser's limit get the
same answer in an array as on an NDJSON line - and a body of a million tiny
items is refused (413) after reading a few thousand of them, with no more
memory than the body itself.

The scan's cost is bounded whatever the body: an element (or a value beside
the path) nested at most `LEVELS` deep is skipped in one C-level regex step,
deeper structure is read a token at a time, at most `SCAN_STEPS` of them
(beyond, 413).

A body whose structure does not hold together (unbalanced brackets, an
unterminated string, text after the array) is one item, so `decode_input`
classifies it (`not_json`) exactly as it would a bad Kafka record, and partial
mode dead-letters it like any other unusable input.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import pydantic_core
from starlette.requests import Request

from schemas.json_blank import JSON_WHITESPACE
from schemas.json_skip import value_pattern

# A string (with its escapes; group 1 set when it is an object key), else one structural
# character; a lone `"` only matches when its string never ends.
_TOKEN: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"(\s*:)?|[\[\]{},"]', re.DOTALL)
_QUOTE, _COMMA = ord('"'), ord(",")
_OPEN: Final = {ord("["): ord("]"), ord("{"): ord("}")}
_CLOSE: Final = frozenset(_OPEN.values())
_DELIMITERS: Final = frozenset(b",]}")

Body = bytes | bytearray


class BodyTooLarge(Exception):
    """More bytes or items than the gateway accepts in one request (413)."""


class BodyTimeout(Exception):
    """The body did not arrive in full within the gateway's `body_timeout_s` (408)."""


class BodyTooSlow(Exception):
    """The body arrived slower than the gateway's minimum data rate, after its grace (408)."""

    def __init__(self, received: int, elapsed_s: float, min_rate: MinRate) -> None:
        self.received, self.elapsed_s = received, elapsed_s
        super().__init__(
            f"the body arrived at {received / elapsed_s:.0f} bytes/s ({received} bytes in "
            f"{elapsed_s:.1f} s), below the gateway's minimum of {min_rate.bytes_per_s} bytes/s "
            f"after {min_rate.grace_s:g} s; nothing was published"
        )


@dataclass(frozen=True, slots=True)
class MinRate:
    """The least a body must average, in bytes a second since its read began, once
    `grace_s` passed (Kestrel's `MinRequestBodyDataRate`): a request holds one of the
    gateway's few slots while its body arrives, so without it a client sending a byte a
    second held its slot for all of `body_timeout_s`. An average, not a rate between
    reads: a body that arrived quickly may then stall (a slow link's retransmits) for as
    long as the bytes it sent pay for, up to `body_timeout_s`."""

    bytes_per_s: int
    grace_s: float

    def due_s(self, received: int) -> float:
        """Seconds after the read began by which more than `received` bytes must be in."""
        return max(self.grace_s, received / self.bytes_per_s)


class _BodyClock:
    """When the next chunk of a body is due: before the whole body's deadline and, with a
    `MinRate`, before its bytes so far fall below that rate; and which one passed."""

    def __init__(self, timeout_s: float | None, min_rate: MinRate | None) -> None:
        self.loop = asyncio.get_running_loop()
        self.began = self.loop.time()
        self.whole = None if timeout_s is None else self.began + timeout_s
        self.min_rate = min_rate
        self.received = 0

    def _rate_due(self) -> float | None:
        return None if self.min_rate is None else self.began + self.min_rate.due_s(self.received)

    def next_due(self) -> float | None:
        return min((d for d in (self.whole, self._rate_due()) if d is not None), default=None)

    def expired(self, timeout_s: float | None) -> BodyTimeout | BodyTooSlow:
        rate = self.min_rate
        if rate is None or (
            self.whole is not None and self.whole <= self.began + rate.due_s(self.received)
        ):
            return BodyTimeout(f"the body did not arrive in full within {timeout_s:g} s")
        return BodyTooSlow(self.received, self.loop.time() - self.began, rate)


class Unstructured(Exception):
    """The body's brackets or strings do not hold together: it is not JSON."""


class Truncated(Exception):
    """A prefix of a body ends before its structure does (`locate_array(complete=False)`)."""


class DuplicateKey(Exception):
    """A key on the path to the items appears twice (parsers disagree on which one wins)."""

    def __init__(self, path: tuple[str, ...]) -> None:
        self.path = path
        super().__init__(f"{'.'.join(path)}: the key appears more than once")


@dataclass(frozen=True, slots=True)
class RawItem:
    index: int
    value: bytes


@dataclass(frozen=True, slots=True)
class Located:
    """The elements of the array at a path: `(start, end)` byte ranges, and the array's own."""

    items: list[tuple[int, int]]
    start: int
    end: int


_CHECKPOINTS: Final = (64 * 1024, 512 * 1024)


async def read_body(
    request: Request,
    max_bytes: int,
    precheck: Callable[[bytes], None] | None = None,
    timeout_s: float | None = None,
    min_rate: MinRate | None = None,
) -> bytearray:
    """The body, refusing early (by `Content-Length`) or as soon as it grows past the limit.

    One buffer of the declared size (no copies, no over-allocation; pages not
    yet received are not even resident). `precheck` sees the part read so far
    at two checkpoints (64 KiB, 512 KiB) and may refuse it
    (`BodyTooLarge`): a body of a million tiny items is answered after its
    first few thousand, without waiting for - or storing - the rest.

    The whole body must arrive within `timeout_s` (`BodyTimeout`): a client that
    declares a length and stops sending would otherwise hold its connection
    slot, and a graceful shutdown, for as long as it likes. With `min_rate`, a body
    slower than that is refused sooner (`BodyTooSlow`): one trickling a byte a second
    arrives within any deadline's letter, yet holds its request slot all that time.
    """
    clock = _BodyClock(timeout_s, min_rate)
    try:
        async with asyncio.timeout_at(clock.next_due()) as timer:

            def arrived(received: int) -> None:
                clock.received = received
                timer.reschedule(clock.next_due())

            return await _read_body(request, max_bytes, precheck, arrived)
    except TimeoutError:
        raise clock.expired(timeout_s) from None


async def _read_body(
    request: Request,
    max_bytes: int,
    precheck: Callable[[bytes], None] | None,
    arrived: Callable[[int], None],
) -> bytearray:
    declared = request.headers.get("content-length")
    size = int(declared) if declared is not None and declared.isdigit() else None
    if size is not None and size > max_bytes:
        raise BodyTooLarge(f"body of {size} bytes exceeds the limit of {max_bytes} bytes")
    buffer = bytearray(size or 0)
    filled = 0
    checkpoints = list(_CHECKPOINTS) if precheck is not None else []
    async for chunk in request.stream():
        end = filled + len(chunk)
        if end > max_bytes:
            raise BodyTooLarge(f"body exceeds the limit of {max_bytes} bytes")
        if end <= len(buffer):
            buffer[filled:end] = chunk
        else:
            del buffer[filled:]
            buffer += chunk
        filled = end
        arrived(filled)
        if checkpoints and filled >= checkpoints[0] and precheck is not None:
            while checkpoints and filled >= checkpoints[0]:
                checkpoints.pop(0)
            precheck(memoryview(buffer)[:filled].tobytes())
    del buffer[filled:]
    return buffer


LEVELS: Final = 16
"""Nesting an element (or a value beside the path) may have to be skipped in one C-level
regex step; deeper ones are read token by token, within `SCAN_STEPS`."""

SCAN_STEPS: Final = 32_768
"""Tokens (brackets, commas, strings) `locate_array` reads one at a time, at most: a
Python step each (~1 us), so the scan of any body stays within tens of milliseconds.
Beyond, the body is refused (`BodyTooLarge`): an 8 MiB `[[[...]]]` took 6-11 s of CPU
here, partly on the event loop (`precheck_array`), before its 413."""

_ITEM: Final = value_pattern(LEVELS)


@functools.lru_cache(maxsize=8)
def _more_than(max_items: int) -> re.Pattern[bytes]:
    """Matches at the start of an array's elements when it has more than `max_items` of
    them: the count of a hostile array in one C-level step, before any per-element work."""
    return re.compile(
        rb"(?:" + _ITEM.pattern + rb",){" + str(max_items).encode() + rb"}", re.DOTALL
    )


def locate_array(  # noqa: C901 - one scanner loop; a call per token would slow ingest
    body: Body,
    path: tuple[str, ...],
    max_items: int,
    max_item_bytes: int,
    *,
    complete: bool = True,
) -> Located | None:
    """The elements of the array at `path` (`()`: the body itself), without parsing them.

    None when there is no array there. `BodyTooLarge` as soon as the array has
    more than `max_items` elements or one element is longer than
    `max_item_bytes`; `Unstructured` when brackets or strings do not balance;
    `DuplicateKey` when a key of `path` repeats. Elements are skipped one regex
    step each; elsewhere it costs one step per string and bracket. With
    `complete=False`, `body` is the part of a body read so far: `Truncated` when
    it ends before the structure does (`BodyTooLarge` can come before that).
    """
    target = len(path)
    stack: list[int] = []  # closing bracket expected at each depth
    keys: list[str | None] = []  # the current key of each enclosing object (None in arrays)
    seen: list[set[str]] = []  # keys of `path` met so far, per enclosing object
    found: Located | None = None
    inside = False
    items: list[tuple[int, int]] = []
    item_start = array_start = last_end = pos = 0
    steps = 0
    while (match := _TOKEN.search(body, pos)) is not None:
        steps += 1
        if steps > SCAN_STEPS:
            raise BodyTooLarge(
                f"the body's structure is more than the gateway reads: over {SCAN_STEPS} "
                f"brackets, commas and strings nested deeper than {LEVELS} levels or around "
                "its items (a record of the contract nests a few levels)"
            )
        at, pos = match.start(), match.end()
        char = body[at]
        depth = len(stack)
        if char == _QUOTE:
            if pos - at == 1:
                raise Unstructured("a string is not terminated") if complete else Truncated()
            if match.group(1) is not None and 0 < depth <= target and stack[-1] == ord("}"):
                key = _key(body[at:pos].rstrip(b": \t\r\n"))
                keys[-1] = key
                if key is not None and key == path[depth - 1]:
                    if key in seen[-1]:
                        raise DuplicateKey(path[:depth])
                    seen[-1].add(key)
                else:  # a value off the path: skipped in one step when it is shallow
                    pos = _value_end(body, pos, complete) or pos
            continue
        if char in _OPEN:
            if depth == 0 and body[:at].strip(JSON_WHITESPACE):
                raise Unstructured("text before the first bracket")
            if (
                depth == target
                and char == ord("[")
                and found is None
                and all(k == p for k, p in zip(keys, path, strict=True))
            ):
                fast = _elements(body, at + 1, max_items, max_item_bytes, complete)
                if fast is not None:
                    found, pos = Located(fast[0], at, fast[1] + 1), fast[1] + 1
                    if not stack:
                        last_end = pos
                        break
                    continue
                inside, items, item_start, array_start = True, [], at + 1, at
            stack.append(_OPEN[char])
            keys.append(None)
            seen.append(set())
            if char == ord("[") and ((inside and depth + 1 == target + 1) or depth + 1 <= target):
                pos = _value_end(body, pos, complete) or pos  # its first element
            continue
        if char in _CLOSE:
            if not stack or stack.pop() != char:
                raise Unstructured("brackets do not balance")
            keys.pop()
            seen.pop()
            if inside and len(stack) == target:
                _end_item(body, items, item_start, at, max_items, max_item_bytes, closing=True)
                found, inside = Located(items, array_start, at + 1), False
            if not stack:
                last_end = pos
                break
            continue
        if char == _COMMA and inside and depth == target + 1:
            _end_item(body, items, item_start, at, max_items, max_item_bytes, closing=False)
            item_start = pos
            pos = _value_end(body, pos, complete) or pos
        elif char == _COMMA and 0 < depth <= target and stack[-1] == ord("]"):
            pos = _value_end(body, pos, complete) or pos  # an array off the path
    return _located(body, stack, found, last_end, complete)


def _located(
    body: Body, stack: list[int], found: Located | None, last_end: int, complete: bool
) -> Located | None:
    if stack:
        raise Unstructured("brackets do not balance") if complete else Truncated()
    if last_end == 0 or body[last_end:].strip(JSON_WHITESPACE):
        raise Unstructured("text after the end of the document")
    return found


def _value_end(body: Body, pos: int, complete: bool) -> int | None:
    """Where the value (or array element) at `pos` ends - the `,`, `]` or `}` after it - when
    it nests at most `LEVELS` deep: found in one regex step. None otherwise (the caller
    reads it token by token); `Truncated` when a prefix of a body ends inside it."""
    match = _ITEM.match(body, pos)
    after = _next_token(body, match.end() if match is not None else pos, complete)
    return after if after is not None and body[after] in _DELIMITERS else None


def _next_token(body: Body, pos: int, complete: bool) -> int | None:
    """The first position at or after `pos` that is not whitespace; None at the end of
    a whole body, `Truncated` at the end of a prefix of one."""
    while pos < len(body) and body[pos] in JSON_WHITESPACE:
        pos += 1
    if pos == len(body):
        if complete:
            return None
        raise Truncated()
    return pos


def _elements(
    body: Body, first: int, max_items: int, max_item_bytes: int, complete: bool
) -> tuple[list[tuple[int, int]], int] | None:
    """The fast path of `locate_array`: each element one regex step; the element ranges
    and the position of the closing `]`, or None (deeper nesting, or broken structure:
    the token-by-token path decides)."""
    if _more_than(max_items).match(body, first) is not None:
        raise BodyTooLarge(f"more than {max_items} items in one request (the limit)")
    items: list[tuple[int, int]] = []
    pos = first
    while True:
        match = _ITEM.match(body, pos)
        end = match.end() if match is not None else pos
        after = _next_token(body, end, complete)
        if after is None:
            return None
        char = body[after]
        if char == _COMMA:
            _end_item(body, items, pos, end, max_items, max_item_bytes, closing=False)
            pos = after + 1
        elif char == ord("]"):
            _end_item(body, items, pos, end, max_items, max_item_bytes, closing=True)
            return items, after
        else:
            return None


def _end_item(
    body: Body,
    items: list[tuple[int, int]],
    start: int,
    end: int,
    max_items: int,
    max_item_bytes: int,
    *,
    closing: bool,
) -> None:
    start, end = _trim(body, start, end)
    if closing and start == end and not items:
        return  # `[]`
    _check_size(len(items), end - start, max_item_bytes)
    items.append((start, end))
    if len(items) > max_items:
        raise BodyTooLarge(f"more than {max_items} items in one request (the limit)")


def _key(token: Body) -> str | None:
    if b"\\" not in token:
        return bytes(token[1:-1]).decode("utf-8", "replace")
    try:
        value = pydantic_core.from_json(token)
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def precheck_array(
    path: tuple[str, ...], max_items: int, max_item_bytes: int
) -> Callable[[bytes], None]:
    """A `read_body` precheck: `BodyTooLarge` once the array at `path` is known to be too long."""

    def check(prefix: bytes) -> None:
        with contextlib.suppress(Truncated, Unstructured, DuplicateKey):
            locate_array(prefix, path, max_items, max_item_bytes, complete=False)

    return check


def split_items(body: Body, kind: str, max_items: int, max_item_bytes: int) -> list[RawItem]:
    """The items of a body (see module doc); `BodyTooLarge` beyond the limits."""
    view = memoryview(body)
    if kind == "ndjson":
        items: list[RawItem] = []
        start = 0
        while start < len(body):
            end = body.find(b"\n", start)
            end = len(body) if end < 0 else end
            first, last = _trim(body, start, end)
            start = end + 1
            if first == last:
                continue
            if len(items) == max_items:
                raise BodyTooLarge(f"more than {max_items} items in one request (the limit)")
            _check_size(len(items), last - first, max_item_bytes)
            items.append(RawItem(len(items), view[first:last].tobytes()))
        return items
    first, last = _trim(body, 0, len(body))
    if first == last:
        return []
    if body[first] == ord("["):
        try:
            located = locate_array(body, (), max_items, max_item_bytes)
        except (Unstructured, DuplicateKey):
            located = None
        if located is not None:
            return [RawItem(i, view[s:e].tobytes()) for i, (s, e) in enumerate(located.items)]
    _check_size(0, last - first, max_item_bytes)
    return [RawItem(0, view[first:last].tobytes())]


def _trim(body: Body, start: int, end: int) -> tuple[int, int]:
    """`start` and `end` moved past whitespace at both ends."""
    while start < end and body[start] in JSON_WHITESPACE:
        start += 1
    while end > start and body[end - 1] in JSON_WHITESPACE:
        end -= 1
    return start, end


def _check_size(index: int, size: int, max_item_bytes: int) -> None:
    if size > max_item_bytes:
        raise BodyTooLarge(
            f"item {index} has {size} bytes, more than the limit of {max_item_bytes}"
        )
