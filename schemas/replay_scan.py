"""Where the members of a scenario line's object write their values, found without parsing one.

A line whose record Kafka cannot take is refused from its `value`'s length
(`schemas.validation.decode_replay_line`), a line's own keys are checked with its values
left out, and a record is published with its value as the line writes it
(`schemas.replay.ReplayLine.value_as_written`): each finds the values here, in C-level
regex steps whatever they hold, never building a Python object of them. Parsing a
hostile line of megabytes built millions of objects, and Python's parser took 10-25 s
and 1.1 GB for 8 MiB of arrays nested 65-150 deep, deeper than the scan then followed.

The scan follows a value as deep as the line parser takes one (`PARSER_DEPTH`), so the
members of any line the parser takes; a line nested deeper it leaves to the parser, which
refuses it (`not_json`, "recursion limit exceeded at line 1 column N") at that level,
with no Python object built (its own walk to there: ~0.3 s and 100 MB for 8 MiB of small
objects before it). It checks the structure (strings end, brackets pair up, members are
`"name": value` with a `,` between two), not that the values or the names are JSON.
"""

from __future__ import annotations

import functools
import operator
import re
from array import array
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import chain, repeat
from typing import Any, Final, NamedTuple

from schemas.json_skip import SCALAR_SOURCE, container_source

PARSER_DEPTH: Final = 200
"""Arrays and objects with something in them that the line parser (pydantic-core's, jiter)
takes one inside another, the line's own object the first: a line nested deeper is
`not_json` ("recursion limit exceeded"); empty brackets one level deeper it takes. A test
holds this to the parser."""


class Spans:
    """Where values of a line start and end (each value's first byte, and the byte after
    it), in one array: 16 bytes a value, where a list of pairs took ~110 (100 MB for a
    hostile line of 900,000 of them)."""

    __slots__ = ("_flat",)

    def __init__(self, flat: Iterable[int]) -> None:
        self._flat = array("q", flat)  # start, end, start, end, ...

    @property
    def starts(self) -> array[int]:
        return self._flat[0::2]

    @property
    def ends(self) -> array[int]:
        return self._flat[1::2]

    def __len__(self) -> int:
        return len(self._flat) // 2

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self.starts, self.ends, strict=True)

    def last(self) -> tuple[int, int]:
        """The last value's span (the one the line parser keeps)."""
        return self._flat[-2], self._flat[-1]


_SPACE: Final = rb"[ \t\n\r]*+"
_NAME: Final = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_VALUE_NAME: Final = rb'"(?:v|\\u0076)(?:a|\\u0061)(?:l|\\u006[cC])(?:u|\\u0075)(?:e|\\u0065)"'
"""`"value"` as JSON may write it: each letter as itself or as its escape."""
_NEXT: Final = rb"(?:," + _SPACE + rb'(?=")|(?=\}))'
"""What follows a member's value and the whitespace after it: a `,` before the next
member's name, or the end of the object."""


_CONTAINER: Final = container_source(PARSER_DEPTH - 1, empty_below=True)
"""A member's array or object, nested no deeper than the parser takes it (one level down)."""
_VALUE: Final = rb"(?:" + SCALAR_SOURCE + rb"|" + _CONTAINER + rb")"
_OTHER: Final = rb"(?!" + _VALUE_NAME + rb")" + _NAME + _SPACE + rb":" + _SPACE + _VALUE
"""A member not named `value`."""
_SCALAR: Final = _NAME + _SPACE + rb":" + _SPACE + SCALAR_SOURCE
"""A member whose value is a string or a word."""


def _to_end(member: bytes) -> bytes:
    """Members to the object's end, a `,` between two: then the `}` and whitespace."""
    return rb"(?:" + member + _SPACE + _NEXT + rb")*+\}" + _SPACE


def _step(before: bytes, name: bytes, value: bytes) -> bytes:
    """The members `before` up to the next named `name`, and that one: its value is group
    1, and the match ends where the next member's name starts, or at the `}`."""
    run = rb"(?:" + before + _SPACE + rb"," + _SPACE + rb")*+"
    return run + name + _SPACE + rb":" + _SPACE + rb"(" + value + rb")" + _SPACE + _NEXT


def _compiled(source: bytes) -> Callable[[], re.Pattern[bytes]]:
    """`source` compiled at its first use: a value as deep as the parser takes one is a
    regex of 15 kB, each of these 20-40 ms to compile, and only the replay and its
    oracle scan lines. Compiling one recurses ~800 Python frames deep, so it runs on a
    thread of its own: a first scan called with a few hundred frames on the caller's
    stack raised RecursionError, which is no `RecordRejected`."""
    return functools.cache(lambda: _on_fresh_stack(lambda: re.compile(source, re.DOTALL)))


def _on_fresh_stack(build: Callable[[], re.Pattern[bytes]]) -> re.Pattern[bytes]:
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="replay-scan-compile") as pool:
        return pool.submit(build).result()  # its exception, if any, raised here


_OPENING: Final = re.compile(_SPACE + rb"\{" + _SPACE)
_AFTER_VALUE: Final = re.compile(_SPACE + _NEXT)
_LAST_VALUE: Final = _compiled(
    _SPACE + rb"\{" + _SPACE + rb"(?:(?:" + _OTHER + rb"|" + _VALUE_NAME + _SPACE + rb":" + _SPACE
    + rb"(?(2)())(" + _VALUE + rb"))" + _SPACE + _NEXT + rb")*+\}" + _SPACE
)  # fmt: skip
"""The line's object whole: group 2 is the value of its last member named `value` (a
capture in a repetition keeps its last), group 1 matched when one came before it (the
condition is met before the capture of the member's value)."""
_VALUE_STEP: Final = _compiled(_step(_OTHER, _VALUE_NAME, _VALUE))
_OTHERS_TO_END: Final = _compiled(_to_end(_OTHER))
_CONTAINER_STEP: Final = _compiled(_step(_SCALAR, _NAME, _CONTAINER))
_SCALARS_TO_END: Final = _compiled(_to_end(_SCALAR))


class LastValue(NamedTuple):
    """Where the last `value` member of a line writes its value (the one the line parser
    keeps), and whether one came before it."""

    start: int
    end: int
    several: bool


def last_value(line: bytes) -> LastValue | None:
    """The last `value` member of the object `line` writes, in one regex step whatever the
    line holds. None when it writes none, or is no object this scan can follow (broken
    structure, a member nested deeper than `PARSER_DEPTH`)."""
    found = _LAST_VALUE().fullmatch(line)
    if found is None or found.start(2) < 0:
        return None
    return LastValue(found.start(2), found.end(2), several=found.start(1) >= 0)


def value_spans(line: bytes) -> Spans | None:
    """Where the bytes of each `value` member of the object `line` writes start and end.

    None when the line is no object this scan can follow (broken structure, a member
    nested deeper than `PARSER_DEPTH`). One regex step for each `value` with the members
    before it, one for the members after the last, taken in C: a Python step a member
    took seconds for a hostile line of 700,000 members, or of 900,000 `value`s."""
    return _spans(line, _VALUE_STEP(), _OTHERS_TO_END())


def container_spans(line: bytes) -> Spans | None:
    """`value_spans` for each member of the object `line` writes whose value is an array or
    an object, whatever its name: the line's own keys are checked with them cut. The
    members with a string or a word between two are taken in the same step."""
    return _spans(line, _CONTAINER_STEP(), _SCALARS_TO_END())


_GROUP_SPAN: Final = operator.methodcaller("span", 1)


def _spans(line: bytes, step: re.Pattern[bytes], rest: re.Pattern[bytes]) -> Spans | None:
    opening = _OPENING.match(line)
    if opening is None:
        return None
    first = step.match(line, opening.end())
    if first is None:
        return Spans(()) if rest.fullmatch(line, opening.end()) else None
    if rest.fullmatch(line, first.end()):
        return Spans(first.span(1))  # the line's only one: no more steps to take
    steps = _one_after_another(step, line, first.end())
    spans = Spans(chain(first.span(1), chain.from_iterable(map(_GROUP_SPAN, steps))))
    if len(spans) == 1:
        return None  # what follows the one is neither another nor the rest of the line
    end = spans.last()[1]
    after = _AFTER_VALUE.match(line, end)  # the last step matched it
    return spans if rest.fullmatch(line, end if after is None else after.end()) else None


def _one_after_another(
    pattern: re.Pattern[bytes], line: bytes, at: int
) -> Iterator[re.Match[bytes]]:
    """`pattern` matched at `at`, then where each match ends, until it does not match: the
    matches taken in C, with no Python step each (`Pattern.scanner`, on which the
    standard library's own `re.Scanner` is built; typeshed does not list it)."""
    scanner: Any = pattern.scanner(line, at)  # type: ignore[attr-defined]
    return iter(scanner.match, None)


def values_cut(line: bytes, spans: Spans) -> bytes:
    """`line` with the value at each of `spans` written `0`: the rest of the line, to be
    judged without parsing them. Joined in C, however many there are."""
    kept = map(slice, chain((0,), spans.ends), chain(spans.starts, (None,)))
    return b"0".join(map(line.__getitem__, kept))


_BLANKED: Final = bytes(byte if byte in b"\r\n" else ord(" ") for byte in range(256))
"""Each byte a space, but for the line ends (JSON whitespace, which places count by)."""
_BLANK: Final = operator.methodcaller("translate", _BLANKED)


def values_blanked(line: bytes, spans: Spans) -> bytes:
    """`values_cut` with blanks after each `0` to the value's length, so that a fault of
    the rest of the line is at its own place: the cut moved it, and a line that has it at
    column 1,048,620 was said to have it at column 39. Joined in C, each value copied
    blank once (the values' bytes once more, transiently, beside the line made)."""
    starts, ends = spans.starts, spans.ends
    kept = map(line.__getitem__, map(slice, chain((0,), ends), starts))
    after_zero = map(operator.add, starts, repeat(1))
    blanks = map(_BLANK, map(line.__getitem__, map(slice, after_zero, ends)))
    rest = line[ends[-1] :] if spans else line
    return b"".join(chain(chain.from_iterable(zip(kept, repeat(b"0"), blanks)), (rest,)))
