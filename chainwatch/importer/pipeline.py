"""Rows -> contract records or rejections, through the one contract validation.

Each row is mapped (`RowMapper`), given a derived `event_id` when its kind
has one and the file does not, serialised, and validated by
`schemas.validation.decode_input` - the same call every other input path
makes - on the very bytes that are then written or published. A row that
fails anywhere becomes a `Rejected` with its file, row number, reason and
original text; nothing is skipped without a trace (blank rows are counted).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from chainwatch.importer.errors import one_line
from chainwatch.importer.mapper import RowMapper, derive_event_id, encode
from chainwatch.importer.tables import Row, Table, error_value_problem, unsaved_problem
from schemas.dead_letter import DeadLetter, DeadLetterSource, ErrorDetail, ReasonCode, summarise
from schemas.import_mapping import DERIVED_ID_FIELD, KEY_FIELD_BY_KIND
from schemas.plan import SlaPlan
from schemas.validation import RecordRejected, decode_input


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid record: `value` are the exact bytes that were validated."""

    file: str
    row: int
    topic: str
    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
    """A bad row: where it is, why, and its original text."""

    file: str
    row: int
    raw: bytes
    reason_code: ReasonCode
    errors: list[ErrorDetail]
    key: str | None = None
    #: (size, SHA-256) of the whole row when `raw` is only its start (`Row.whole`).
    whole: tuple[int, str] | None = None

    @property
    def reason(self) -> str:
        return summarise(self.reason_code, self.errors)

    def dead_letter(self, now: datetime) -> DeadLetter:
        """The envelope; its id hashes (file name, row), so a re-import yields the same id."""
        return DeadLetter.build(
            self.raw,
            DeadLetterSource(kind="import", file=self.file, line=self.row),
            self.errors,
            self.reason_code,
            now,
            key=None if self.key is None else self.key.encode(),
            original=self.whole,
        )


Outcome = Accepted | Rejected


@dataclass
class FileSummary:
    file: str
    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    derived_ids: int = 0


@dataclass
class ImportSummary:
    """What an import did, per file and in total, and why rows were rejected."""

    files: list[FileSummary] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    repeated_ids: int = 0

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def accepted(self) -> int:
        return sum(f.accepted for f in self.files)

    @property
    def rejected(self) -> int:
        return sum(f.rejected for f in self.files)


class Importer:
    """Turns the rows of tables into outcomes; one instance per import (it counts)."""

    def __init__(self, mapper: RowMapper, plan: SlaPlan) -> None:
        self.mapper = mapper
        self.plan = plan
        self.summary = ImportSummary()
        self._key_field = KEY_FIELD_BY_KIND[mapper.kind]
        self._seen_ids: set[str] = set()

    def outcomes(
        self, table: Table, progress: Callable[[Table], None] | None = None
    ) -> Iterator[Outcome]:
        """Every non-blank row of `table`, in file order, as `Accepted` or `Rejected`."""
        counts = FileSummary(table.name)
        self.summary.files.append(counts)
        table.on_progress = progress
        for n, row in enumerate(table.rows(), start=1):
            if row.blank and row.problem is None and not self._reads_any(row.unsaved):
                continue  # blank but for formulas without values in columns not read
            outcome = self.one_safely(table.name, row, counts)
            counts.rows += 1
            if isinstance(outcome, Accepted):
                counts.accepted += 1
            else:
                counts.rejected += 1
                first = outcome.errors[0] if outcome.errors else None
                where = f"{first.loc or '<row>'} ({first.type})" if first else ""
                self.summary.reasons[f"{outcome.reason_code.value}: {where}".rstrip(": ")] += 1
            if progress is not None and n % 500 == 0:
                progress(table)
            yield outcome
        if progress is not None:
            progress(table)

    def _reads_any(self, columns: Iterable[str]) -> bool:
        return any(self.mapper.reads(name) for name in columns)

    def one_safely(self, file: str, row: Row, counts: FileSummary | None = None) -> Outcome:
        """`one`, but a row whose processing fails for any reason is a `processing_error`
        (CONTRACT.md: nothing is dropped, also on failure) and the import goes on."""
        try:
            return self.one(file, row, counts)
        except RecursionError:
            detail = ErrorDetail(loc="", msg="a value is nested too deeply", type="import_depth")
            return Rejected(file, row.number, row.raw, ReasonCode.VALIDATION_FAILED, [detail])
        except Exception as exc:  # the row, not the import, has failed
            detail = ErrorDetail(loc="", msg=one_line(exc), type="processing_error")
            return Rejected(file, row.number, row.raw, ReasonCode.PROCESSING_ERROR, [detail])

    def one(self, file: str, row: Row, counts: FileSummary | None = None) -> Outcome:
        if row.problem is not None:
            code, detail = row.problem
            return Rejected(file, row.number, row.raw, code, [detail], whole=row.whole)
        unread = [column for name, column in row.unsaved.items() if self.mapper.reads(name)]
        if unread:  # an empty cell in its place would be mapped as if it were one
            code, detail = unsaved_problem(min(unread), row.number)
            return Rejected(file, row.number, row.raw, code, [detail])
        erred = [(column, name) for name, column in row.failed.items() if self.mapper.reads(name)]
        if erred:  # the error's text (`#N/A`) would be mapped as if it were the value
            column, name = min(erred)
            code, detail = error_value_problem(column, row.number, row.cells.get(name))
            return Rejected(file, row.number, row.raw, code, [detail])
        record, problems = self.mapper.map(row.cells, typed=row.typed)
        key = record.get(self._key_field)
        key_text = key if isinstance(key, str) else None
        if problems:
            errors = [ErrorDetail(loc=p.field, msg=p.message, type=p.type) for p in problems]
            code = ReasonCode.VALIDATION_FAILED
            return Rejected(file, row.number, row.raw, code, errors, key_text)
        derived = self.mapper.derives_id and not record.get(DERIVED_ID_FIELD)
        try:
            if derived:
                record[DERIVED_ID_FIELD] = derive_event_id(self.mapper.topic, record)
            value = encode(record)
        except UnicodeEncodeError as exc:  # NDJSON's `"\ud800"`: not_json, as on every path
            bad = exc.object[exc.start : exc.end] if isinstance(exc.object, str) else ""
            shown = bad.encode("unicode_escape").decode() or "?"
            msg = f"a string holds a lone surrogate ({shown}), which is not Unicode text"
            detail = ErrorDetail(loc="", msg=msg, type="json_invalid")
            return Rejected(file, row.number, row.raw, ReasonCode.NOT_JSON, [detail], key_text)
        except ValueError as exc:
            detail = ErrorDetail(loc="", msg=str(exc), type="import_json")
            return Rejected(
                file, row.number, row.raw, ReasonCode.VALIDATION_FAILED, [detail], key_text
            )
        try:
            self.validate(value, key_text)
        except RecordRejected as exc:
            return Rejected(file, row.number, row.raw, exc.reason_code, exc.errors, key_text)
        if derived and counts is not None:
            counts.derived_ids += 1
        event_id = record.get(DERIVED_ID_FIELD)
        if isinstance(event_id, str):
            if event_id in self._seen_ids:
                self.summary.repeated_ids += 1
            else:
                self._seen_ids.add(event_id)
        if key_text is None:  # the contract requires the key field; never reached
            detail = ErrorDetail(loc=self._key_field, msg="no key", type="missing")
            return Rejected(file, row.number, row.raw, ReasonCode.VALIDATION_FAILED, [detail])
        return Accepted(file, row.number, self.mapper.topic, key_text, value)

    def validate(self, value: bytes, key: str | None) -> None:
        """The contract validation every input path shares (`RecordRejected` if bad)."""
        raw_key = None if key is None else key.encode()
        decode_input(self.mapper.topic, value, plan=self.plan, key=raw_key)
