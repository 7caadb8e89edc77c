"""A line longer than any record can be: a bad row with its size and SHA-256, read in
bounded memory, and the import goes on with the next line."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from import_outcomes import import_outcomes
from memory_peak import peak_memory

from chainwatch.importer.pipeline import Accepted, Rejected
from chainwatch.importer.tables import MAX_LINE_BYTES
from chainwatch.long_lines import LongLine, binary_lines, too_long
from schemas.dead_letter import MAX_DEAD_LETTER_BYTES
from schemas.plan import load_plan

PLAN = load_plan()
UNIT = b'{"unit_id": "U-%d", "status": "up", "event_time": "2026-11-23T09:30:00Z"}'
HUGE = 24 * MAX_LINE_BYTES + 12_345


def run(kind: str, path: Path) -> tuple[list[Accepted | Rejected], int]:
    """The outcomes of importing `path`, and the peak of memory allocated meanwhile."""
    with peak_memory() as peak:
        outcomes = import_outcomes(kind, path)
    return outcomes, peak.bytes


def write_huge(path: Path, before: bytes, filler: bytes, after: bytes, ending: bytes) -> str:
    """A file with one line of `HUGE` bytes between two others; the long line's SHA-256."""
    line = b'{"unit_id": "' + filler * (HUGE - 14) + b'"'
    assert len(line) == HUGE
    path.write_bytes(before + ending + line + ending + after + ending)
    return hashlib.sha256(line).hexdigest()


def assert_long_line_letter(bad: Accepted | Rejected, row: int, sha: str) -> None:
    assert isinstance(bad, Rejected), bad
    assert bad.row == row
    assert bad.errors[0].type == "import_line_too_long"
    assert f"{HUGE:,} bytes" in bad.reason
    letter = bad.dead_letter(datetime(2026, 11, 30, tzinfo=UTC))
    assert letter.truncated
    assert (letter.original_size, letter.original_sha256) == (HUGE, sha)
    assert len(letter.encode()) <= MAX_DEAD_LETTER_BYTES
    kept = letter.raw_value()
    assert kept is not None
    assert kept.startswith(b'{"unit_id": "xx')


CSV_HEAD = b"unit_id,status,event_time\nU-1,up,2026-11-23T09:30:00Z"
CSV_U3 = b"U-3,up,2026-11-23T09:30:00Z"


@pytest.mark.parametrize(
    ("name", "before", "after", "ending", "first_row"),
    [
        ("units.ndjson", UNIT % 1, UNIT % 3, b"\n", 1),
        ("units.ndjson", UNIT % 1, UNIT % 3, b"\r\n", 1),
        ("units.csv", CSV_HEAD, CSV_U3, b"\r\n", 2),  # the header is line 1
    ],
    ids=["ndjson-lf", "ndjson-crlf", "csv-crlf"],
)
def test_a_line_of_megabytes_is_a_bad_row_read_in_bounded_memory(
    tmp_path: Path, name: str, before: bytes, after: bytes, ending: bytes, first_row: int
) -> None:
    path = tmp_path / name
    sha = write_huge(path, before, b"x", after, ending)
    outcomes, peak = run("unit-status", path)
    first, bad, last = outcomes
    assert isinstance(first, Accepted)
    assert isinstance(last, Accepted)
    assert (first.row, last.row) == (first_row, first_row + 2)
    assert_long_line_letter(bad, first_row + 1, sha)
    assert peak < 8 * MAX_LINE_BYTES, f"{peak:,} bytes held for a {HUGE:,}-byte line"


def test_a_long_last_line_without_an_ending_is_measured_to_the_end_of_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "units.ndjson"
    line = b"y" * (MAX_LINE_BYTES + 1)
    path.write_bytes(UNIT % 1 + b"\n" + line)
    (first, bad), _ = run("unit-status", path)
    assert isinstance(first, Accepted)
    assert isinstance(bad, Rejected)
    assert bad.whole == (len(line), hashlib.sha256(line).hexdigest())


def test_a_line_at_the_limit_is_read_as_any_other(tmp_path: Path) -> None:
    """The limit is on the line's text; its ending does not count."""
    path = tmp_path / "units.ndjson"
    line = UNIT % 1
    padded = line[:-1] + b" " * (MAX_LINE_BYTES - len(line)) + b"}"
    assert len(padded) == MAX_LINE_BYTES
    path.write_bytes(padded + b"\r\n" + UNIT % 2 + b"\n")
    (one, two), _ = run("unit-status", path)
    assert isinstance(one, Accepted), one
    assert isinstance(two, Accepted)


@pytest.mark.parametrize(
    ("text", "long"),
    [
        (b"a" * 10 + b"\r\n", False),  # at the limit, CR LF
        (b"a" * 10 + b"\n", False),
        (b"a" * 9 + b"\r\r\n", False),  # at the limit: its last byte a CR
        (b"a" * 10 + b"\r\r\n", True),  # one over, its first read ending in CR CR
        (b"a" * 10 + b"\r\ryyy\n", True),
        (b"a" * 11 + b"\n", True),
    ],
)
def test_a_line_is_too_long_by_its_text_with_exactly_one_ending_left_out(
    text: bytes, long: bool
) -> None:
    """Before: `rstrip` took every trailing CR, so a first read ending in CR CR counted as
    short, and a line over the limit was split in two (two `not_json` dead letters, every
    later line number off by one)."""
    lines = list(binary_lines(io.BytesIO(text + b"next\n"), 10))
    assert [n for n, _ in lines] == [1, 2]
    first, second = lines[0][1], lines[1][1]
    assert isinstance(first, LongLine) is long
    if isinstance(first, LongLine):
        assert first.size == len(text.removesuffix(b"\n").removesuffix(b"\r"))
    else:
        assert first == text
    assert second == b"next\n"
    assert too_long(text.decode()[:12], 10) is long  # the CSV reader's text lines alike


def test_a_blank_ndjson_line_of_megabytes_is_skipped(tmp_path: Path) -> None:
    """Whitespace over the limit is a blank line, not an `import_line_too_long` bad row."""
    path = tmp_path / "units.ndjson"
    path.write_bytes(UNIT % 1 + b"\n" + b" " * (3 * MAX_LINE_BYTES) + b"\n" + UNIT % 2 + b"\n")
    outcomes, _ = run("unit-status", path)
    assert [type(o) for o in outcomes] == [Accepted, Accepted]


def test_an_ndjson_line_of_whitespace_json_does_not_know_is_a_bad_row(tmp_path: Path) -> None:
    """A line of a form feed or a vertical tab (long or not) was skipped as blank
    (`bytes.strip()`), never reported, though it is no JSON; a line of JSON whitespace
    (a CRLF ending too) still is blank."""
    path = tmp_path / "units.ndjson"
    path.write_bytes(
        UNIT % 1 + b"\r\n"
        + b"\x0b\n\x0c\r\n \t\r\n\n"
        + b"\x0c" * (3 * MAX_LINE_BYTES) + b"\n"
        + b"\xc2\xa0\n"
        + UNIT % 2 + b"\n"
    )  # fmt: skip
    outcomes, _ = run("unit-status", path)
    rows = [(type(o), o.row) for o in outcomes]
    assert rows == [(Accepted, 1), (Rejected, 2), (Rejected, 3), (Rejected, 6), (Rejected, 7),
                    (Accepted, 8)]  # fmt: skip
    bad = [o for o in outcomes if isinstance(o, Rejected)]
    assert [o.errors[0].type for o in bad] == [
        "json_invalid", "json_invalid", "import_line_too_long", "json_invalid",
    ]  # fmt: skip
