"""Keys written twice in one JSON object: refused on every input path alike.

RFC 8259 (section 4) leaves an object whose names repeat to the parser:
pydantic-core and Python's `json` keep the last value, other parsers the
first, some refuse it. The gateway publishes an item as sent, so a scan with
`"quantity": 1, "quantity": 2` was judged on one value and could be read with
the other downstream, and an importer or EPCIS mapping silently kept one of
them. Every path therefore asks this module and refuses such a record
(`validation_failed`, error type `duplicate_key`, `loc` the repeated key).

The check parses the bytes once more with Python's C parser: about 2.5 µs for a
simulated record, half again `decode_input`'s 5 µs (no parser this project uses
reports repeated keys, and a regex tokenizer was slower). Only when a key
repeats is the value parsed a third time, to name where.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from itertools import islice
from operator import itemgetter
from typing import Any, Final

from schemas.dead_letter import MAX_ERRORS, ErrorDetail

DUPLICATE_KEY: Final = "duplicate_key"
"""The error type of a key written twice (`ErrorDetail.type`)."""

SEND_ONCE: Final = "send it once"
"""The fix said of a record sent (an HTTP item, a Kafka record): its producer's to make."""
WRITE_ONCE: Final = "write it once"
"""The fix said of text someone wrote (a line of a file, a cell): "send it once" read as if
the file had been sent somewhere."""


class _Repeated(Exception):
    """Raised by the fast pass at the first object whose keys repeat."""


def _strict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise _Repeated
    return value


class _Marked(dict[str, Any]):
    """A parsed object; `repeated` holds its keys written more than once, with counts."""

    repeated: tuple[tuple[str, int], ...] = ()


def _marking(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = _Marked(pairs)
    if len(value) != len(pairs):
        value.repeated = tuple((k, n) for k, n in Counter(k for k, _ in pairs).items() if n > 1)
    return value


def _no_number(_text: str) -> None:
    return None


_FAST: Final = json.JSONDecoder(object_pairs_hook=_strict)
# Values do not matter here: numbers are not converted (an integer of 5,000 digits
# would stop Python's `int()`), `NaN` is taken (the contract checks numbers elsewhere).
_TOLERANT: Final = json.JSONDecoder(
    object_pairs_hook=_strict, parse_int=_no_number, parse_float=_no_number,
    parse_constant=_no_number,
)  # fmt: skip
_LOCATING: Final = json.JSONDecoder(
    object_pairs_hook=_marking, parse_int=_no_number, parse_float=_no_number,
    parse_constant=_no_number,
)  # fmt: skip
# Every object as its list of pairs: no Python hook per object, none of them counted.
_OWN_PAIRS: Final = json.JSONDecoder(object_pairs_hook=list)
_PAIRS: Final = json.JSONDecoder(
    object_pairs_hook=list, parse_int=_no_number, parse_float=_no_number,
    parse_constant=_no_number,
)  # fmt: skip


def repeated_keys(
    raw: bytes | bytearray | str, *, nested: bool = True, fix: str = SEND_ONCE
) -> list[ErrorDetail]:
    """One `duplicate_key` error per key written twice in one object, in document order,
    the first `MAX_ERRORS` of them (as a dead letter keeps): an item of 64,000 objects that
    each repeat a key made 64,000 errors, 12 MB of a 422 answer built in seconds.

    With `nested=False` only the keys of the outermost object count: a replay line's
    envelope is replay's to refuse, what its `value` repeats the engine's (published as
    written, it is dead-lettered as a live record would be).

    `fix` ends each message: `SEND_ONCE` for a record, `WRITE_ONCE` for a line or a cell.

    Empty when no object of `raw` repeats a key. `ValueError` (a `UnicodeDecodeError`
    included) or `RecursionError` when `raw` is not JSON Python can read: the caller
    decides what that means on its path.
    """
    text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8")
    if not nested:  # one parse, none to learn first whether any object repeats a key
        own = _own_repeats(text)
        return [duplicate_key_error(path, count, fix) for path, count in own[:MAX_ERRORS]]
    try:
        _FAST.decode(text)
        return []
    except _Repeated:
        pass
    except ValueError:  # maybe only a number Python does not convert: read it without them
        try:
            _TOLERANT.decode(text)
            return []
        except _Repeated:
            pass
    # an object repeats a key (or a number stopped `_FAST`): the outer one, or where?
    found = _repeats(_LOCATING.decode(text))
    return [duplicate_key_error(path, count, fix) for path, count in islice(found, MAX_ERRORS)]


_Link = tuple["_Link", str | int] | None
"""A path as its parent's link and its last part: a whole path per node held on the walk's
stack cost its depth each (one 870 kB item, 190 deep, took 560 MB and 1.7 s)."""


def _path(link: _Link) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    while link is not None:
        link, part = link
        parts.append(part)
    return tuple(reversed(parts))


def _repeats(value: Any) -> Iterable[tuple[tuple[str | int, ...], int]]:
    stack: list[tuple[_Link, Any]] = [(None, value)]
    while stack:
        link, item = stack.pop()
        if isinstance(item, _Marked):
            for key, count in item.repeated:
                yield (*_path(link), key), count
            stack.extend(((link, k), v) for k, v in reversed(item.items()) if _nests(v))
        elif isinstance(item, list):
            stack.extend(((link, i), v) for i, v in reversed(list(enumerate(item))) if _nests(v))


def _own_repeats(text: str) -> list[tuple[tuple[str | int, ...], int]]:
    """The keys the outermost object of `text` repeats (none when it is no object), with
    their counts: one parse with no Python hook, whatever its members repeat (`_FAST`
    stopped at a key a nested object repeats, and `_LOCATING` then marked and counted
    every object of the line; `_FAST`'s parse first, to learn that no object repeats a
    key, took 0.1 s more of a line of 900,000 members)."""
    try:
        pairs = _OWN_PAIRS.decode(text)
    except ValueError:  # maybe only a number Python does not convert: read it without them
        pairs = _PAIRS.decode(text)
    if text.lstrip(" \t\n\r")[:1] != "{":  # an array parses to a list too
        return []
    if len(set(map(_KEY, pairs))) == len(pairs):
        return []
    return [((key,), count) for key, count in Counter(map(_KEY, pairs)).items() if count > 1]


_KEY: Final = itemgetter(0)


def _nests(value: Any) -> bool:
    return isinstance(value, dict | list)


def duplicate_key_error(
    path: tuple[str | int, ...], count: int = 2, fix: str = SEND_ONCE
) -> ErrorDetail:
    """The error for the key at `path` (its last part) written `count` times."""
    times = "twice" if count == 2 else f"{count} times"
    return ErrorDetail(
        loc=".".join(str(part) for part in path)[:500],
        msg=f"the key {str(path[-1])[:80]!r} is written {times} in one object; JSON parsers "
        f"disagree on which value counts (the first or the last), so {fix}",
        type=DUPLICATE_KEY,
    )
