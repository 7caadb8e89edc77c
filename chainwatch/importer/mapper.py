"""One row of a file -> one contract record (a dict), by a mapping. Pure: no I/O.

Conversions are lenient where spreadsheets are (`212,5`, `22.11.2026 14:05`
in Europe/Berlin, `Färberei`, ids that Excel stored as numbers) and report a
`Problem` where guessing would change the data (a local time the clocks skip
or pass twice, a number with the wrong decimal separator). Everything the
mapping does not decide is left to the contract validation that follows.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Final
from zoneinfo import ZoneInfo

from chainwatch.importer.blank import blank_cell, invisible_cell
from schemas.common import MAX_SAFE_INTEGER, MAX_TIME, MIN_TIME, format_utc
from schemas.import_mapping import (
    BUILTIN_DEFAULTS,
    DERIVED_ID_FIELD,
    FIELDS_BY_KIND,
    LIST_FIELDS,
    MODEL_BY_KIND,
    NUMBER_FIELDS,
    OBJECT_FIELDS,
    TIME_FIELDS,
    TOPIC_BY_KIND,
    ImportMapping,
)
from schemas.json_keys import WRITE_ONCE, repeated_keys
from schemas.text import capped

DERIVED_ID_PREFIX: Final = "imp-"
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_LIST_SPLIT = re.compile(r"[,;|>\s]+")
_BLANKS = str.maketrans("", "", " \u00a0\u202f\u2009\t")
#: What `RowMapper._lookup` returns for a value its map does not list.
_UNMAPPED: Final = object()

_TYPED_FIELDS = NUMBER_FIELDS | OBJECT_FIELDS | LIST_FIELDS
"""Fields whose JSON value keeps its type even as a string (`_keep_type`)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """Why one field of a row could not become a contract value."""

    field: str
    message: str
    type: str


class _Bad(Exception):
    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@functools.lru_cache(maxsize=4096)
def normalise(name: str) -> str:
    """How headers and mapped values are matched: NFC, blanks collapsed, case folded."""
    return " ".join(unicodedata.normalize("NFC", name).split()).casefold()


def cell_text(value: Any) -> str:
    """A cell as text: Excel's `1001.0` for an id is `1001`, dates in ISO form."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)


class RowMapper:
    """Maps rows of one kind by one mapping; built once per import."""

    def __init__(self, mapping: ImportMapping, kind: str) -> None:
        mapping.check_kind(kind)
        self.kind = kind
        self.topic = TOPIC_BY_KIND[kind]
        self.fields = FIELDS_BY_KIND[kind]
        self.columns = {f: normalise(mapping.columns.get(f, f)) for f in self.fields}
        self.explicit = dict(mapping.columns)
        self.attributes = {k: normalise(c) for k, c in mapping.attributes.items()}
        self.defaults: dict[str, Any] = {**BUILTIN_DEFAULTS.get(kind, {}), **mapping.defaults}
        self.value_maps = {
            f: {normalise(k): v for k, v in targets.items()}
            for f, targets in mapping.values.items()
        }
        self.formats = mapping.time.format
        self.zone: ZoneInfo | None = mapping.time.zone()
        self.ambiguous = mapping.time.ambiguous
        self.decimal = mapping.numbers.decimal
        self.thousands = mapping.numbers.thousands
        self.derives_id = DERIVED_ID_FIELD in self.fields
        self.keeps_extras = kind == "customers"  # the CRM's unknown fields pass through
        used = set(self.columns.values()) | set(self.attributes.values())
        self._not_extra = used | {normalise(f) for f in self.fields}
        model = MODEL_BY_KIND[kind]
        self.required = tuple(
            f
            for f, info in model.model_fields.items()
            if info.is_required() and f not in self.defaults and f != DERIVED_ID_FIELD
        )

    def reads(self, column: str) -> bool:
        """Whether a row's cell under header `column` goes into its record."""
        return self.keeps_extras or normalise(column) in self._not_extra

    def header_problems(self, header: Iterable[str]) -> list[str]:
        """What a file's header lacks: mapped columns that are not there, required fields."""
        present = {normalise(h) for h in header if h}
        problems = [
            f"no column {column!r} (mapped to {field})"
            for field, column in self.explicit.items()
            if normalise(column) not in present
        ]
        problems += [
            f"no column {column!r} (mapped to attribute {key})"
            for key, column in self.attributes.items()
            if column not in present
        ]
        problems += [
            f"no column for the required field {field}"
            for field in self.required
            if field not in self.explicit and self.columns[field] not in present
        ]
        return problems

    def header_repeats(self, header: Iterable[str]) -> list[str]:
        """The columns this import reads that the header names more than once.

        A row's cells are looked up by name, so of two `order_id` columns (or
        `Order ID` and `order_id`: names are matched normalised) one would win
        unseen and the other's values vanish. A repeated column the import does
        not read is no harm (but with customers every column travels along)."""
        counts = Counter(normalise(h) for h in header if h)
        read = self._not_extra
        repeats = [
            f"column {name if len(name) <= 64 else name[:64] + '...'!r} appears {count} times"
            " in the header"
            for name, count in counts.items()
            if count > 1 and (self.keeps_extras or name in read)
        ]
        return repeats[:5] + ([f"{len(repeats) - 5} more repeated"] if len(repeats) > 5 else [])

    def map(
        self, cells: Mapping[str, Any], *, typed: bool = False
    ) -> tuple[dict[str, Any], list[Problem]]:
        """The record of one row (times as aware datetimes) and what could not be mapped.

        `typed`: the cells are JSON values (NDJSON), whose types are the record's own;
        see `_keep_type`. A default is the mapping's, not the file's: it is converted
        as for a spreadsheet cell (`customer_id: 1001` in YAML is "1001" for every format).
        """
        by_name = {normalise(k): v for k, v in cells.items() if isinstance(k, str)}
        record: dict[str, Any] = {}
        problems: list[Problem] = []

        def invisible(field: str, value: Any) -> bool:
            """A spreadsheet cell of whitespace that is no blank: a problem (a JSON
            string is the text, judged by the contract validation)."""
            why = None if typed else invisible_cell(value)
            if why is not None:
                problems.append(Problem(field, why, "import_invisible"))
            return why is not None

        for field in self.fields:
            value = by_name.get(self.columns[field])
            from_file = not blank_cell(value)
            if not from_file:
                value = self.defaults.get(field)
                if value is None:
                    continue
            elif invisible(field, value):
                continue
            try:
                record[field] = self._convert(field, value, typed and from_file)
            except _Bad as bad:
                problems.append(Problem(field, str(bad), bad.kind))
        for key, column in self.attributes.items():
            value = by_name.get(column)
            if blank_cell(value) or invisible(f"attributes.{key}", value):
                continue
            attributes = record.get("attributes")
            if not isinstance(attributes, dict):
                attributes = record["attributes"] = {}
            # `or value`: a JSON string of whitespace that is no blank (U+00A0) goes to the
            # validation as it is, as a field's does; cut, it was "", which the file lacks
            attributes[key] = (value.strip() or value) if isinstance(value, str) else _plain(value)
        if self.keeps_extras:
            for name, value in cells.items():
                keep = isinstance(name, str) and normalise(name) not in self._not_extra
                if keep and not blank_cell(value) and not invisible(name.strip(), value):
                    record.setdefault(name.strip(), _plain(value))
        return record, problems

    # --- conversions -----------------------------------------------------------------

    def _convert(self, field: str, value: Any, typed: bool = False) -> Any:
        _check_number(value)
        # a list's items are mapped one by one (`_items`), never the list itself
        mapped = _UNMAPPED if field in LIST_FIELDS else self._lookup(field, value)
        if typed and self._keep_type(field, value) and mapped is _UNMAPPED:
            return self._items(field, value) if isinstance(value, list) else value
        if field in LIST_FIELDS:
            return self._list(field, value)
        if mapped is not _UNMAPPED:
            value = mapped
        if field in TIME_FIELDS:
            return self.parse_time(value)
        if field in NUMBER_FIELDS:
            return self.parse_number(value)
        if field in OBJECT_FIELDS:
            return _object(value)
        if isinstance(value, list | dict):
            return value  # NDJSON: left to the contract validation
        if typed and isinstance(value, str):
            return value  # a JSON string is the text, blanks included (" PO-1" is no id)
        return cell_text(value)

    def _keep_type(self, field: str, value: Any) -> bool:
        """Whether a JSON value goes to the contract validation as it is.

        A spreadsheet cell has no type the contract knows, so a cell's text is
        converted; a JSON value has one. Converting it (`"order_id": 12` into "12",
        `true` into "true", `"quantity": "5"` into 5) let a record pass that the
        gateway refuses (`string_type`, `float_type`): only a string in a text or
        time field is converted (value maps, time formats), every other value keeps
        its type and the validation judges it, as on every other input path. A value
        the field's value map lists (`status: {1: up}`) is mapped first, in every type,
        and then converted as a cell's (once: a target that is a key too is not
        translated again).
        """
        return not isinstance(value, str) or field in _TYPED_FIELDS

    def _items(self, field: str, items: list[Any]) -> list[Any]:
        """A list of stages, each item the value map lists mapped (`[1, 2]` by
        `{1: knitting}` too, as a CSV cell `1 > 2`), the rest kept as they are."""
        table = field if field in self.value_maps else "stage"
        for item in items:
            _check_number(item)
        return [self._translate(field, i, table) for i in items]

    def _translate(self, field: str, value: Any, table: str | None = None) -> Any:
        mapped = self._lookup(field, value, table)
        return value if mapped is _UNMAPPED else mapped

    def _lookup(self, field: str, value: Any, table: str | None = None) -> Any:
        """The value map's target for `value` (matched by its text, as a cell's), or
        `_UNMAPPED`."""
        targets = self.value_maps.get(table or field)
        if targets and not isinstance(value, list | dict):
            return targets.get(normalise(cell_text(value)), _UNMAPPED)
        return _UNMAPPED

    def _list(self, field: str, value: Any) -> list[Any]:
        if isinstance(value, str):
            items: list[Any] = [part for part in _LIST_SPLIT.split(value.strip()) if part]
        elif isinstance(value, list):
            items = value
        else:
            raise _Bad(f"{field} must be a list of stages (a, b, c)", "import_list_type")
        return [cell_text(item) for item in self._items(field, items)]

    def parse_number(self, value: Any) -> int | float:
        if isinstance(value, bool):
            raise _Bad("a boolean where a number is expected", "import_number")
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise _Bad("numbers must be finite", "import_number")
            return value
        text = cell_text(value).translate(_BLANKS)
        if self.thousands:
            text = text.replace(self.thousands, "")
        if self.decimal == ",":
            text = text.replace(",", ".")
        if not _NUMBER.match(text):
            hint = ""
            if self.decimal == "." and "," in text:
                hint = " (for decimal commas set numbers.decimal: ',' in the mapping)"
            shown = capped(cell_text(value), quoted=True)
            raise _Bad(f"{shown} is not a number{hint}", "import_number")
        if re.fullmatch(r"[+-]?\d+", text):
            if len(text.lstrip("+-0")) > len(str(MAX_SAFE_INTEGER)):
                raise _out_of_range(text)  # before int(), which refuses 4,300 digits and more
            number: int | float = int(text)
        else:
            number = float(text)
        if abs(number) > MAX_SAFE_INTEGER:
            raise _out_of_range(text)
        return number

    def parse_time(self, value: Any) -> datetime:
        """An aware datetime; a naive one is placed in the mapping's zone (DST-checked)."""
        if isinstance(value, datetime):
            parsed = value
        elif isinstance(value, date):
            parsed = datetime.combine(value, time())
        elif isinstance(value, str):
            parsed = self._parse_text(value)
        else:
            raise _Bad(f"{_time_shown(value)} is not a time", "import_time_format")
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            if self.zone is None:
                raise _Bad(
                    f"{_time_shown(value)} has no UTC offset and the mapping names no "
                    "time.timezone for such times",
                    "timestamp_no_offset",
                )
            try:
                parsed = localise(parsed, self.zone, self.ambiguous)
            except OverflowError:  # 31.12.9999 23:00 in New York is past datetime's range
                raise _out_of_time(value) from None
        try:
            in_range = MIN_TIME <= parsed.astimezone(UTC) < MAX_TIME
        except OverflowError:
            in_range = False
        if not in_range:
            # checked here, not left to the contract: a local time at datetime's edges
            # overflowed (`processing_error`), and 0001-01-01 in a zone's local mean time
            # (-04:56:02) was written with an offset RFC 3339 has no form for
            raise _out_of_time(value)
        return parsed

    def _parse_text(self, given: str) -> datetime:
        """`given` cut of whitespace (a pasted date's no-break spaces too), read by the
        mapping's formats; the error shows `given` as it is (`_time_shown`)."""
        text = given.strip()
        for fmt in self.formats:
            try:
                if fmt == "iso":
                    return datetime.fromisoformat(text)
                return datetime.strptime(text, fmt)  # noqa: DTZ007 - wall time, localised by the caller
            except ValueError:
                continue
        raise _Bad(
            f"{_time_shown(given)} matches none of the time formats ({', '.join(self.formats)})",
            "import_time_format",
        )


def localise(naive: datetime, zone: ZoneInfo, ambiguous: str) -> datetime:
    """`naive` wall time in `zone`; a time the clocks skip is a `_Bad`, so is an
    ambiguous one (the hour repeated in autumn) unless the mapping picks a side."""
    earlier = naive.replace(tzinfo=zone, fold=0)
    later = naive.replace(tzinfo=zone, fold=1)
    if earlier.utcoffset() == later.utcoffset():
        return earlier
    back = earlier.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    if back != naive.replace(tzinfo=None):
        raise _Bad(
            f"{naive.isoformat()} does not exist in {zone.key} (the clocks skip it)",
            "import_time_nonexistent",
        )
    if ambiguous == "earlier":
        return earlier
    if ambiguous == "later":
        return later
    raise _Bad(
        f"{naive.isoformat()} happens twice in {zone.key} (the clocks go back); set "
        "time.ambiguous: earlier or later in the mapping",
        "import_time_ambiguous",
    )


def _time_shown(value: Any) -> str:
    """A time as its errors show it: a string as written, not cut of whitespace (a value
    of U+00A0 only read `''`, as if the cell were empty), a cell of another type as its
    text; both capped (`capped`)."""
    return capped(value if isinstance(value, str) else cell_text(value), quoted=True)


def _out_of_time(value: Any) -> _Bad:
    return _Bad(
        f"{_time_shown(value)} is outside {MIN_TIME.date()} - {MAX_TIME.date()}",
        "timestamp_range",
    )


def _check_number(value: Any) -> None:
    """A number a 64-bit float does not hold exactly is a `_Bad` (CONTRACT.md v1.2).

    Caught here, before `cell_text` turns it into text: an XLSX id cell
    12345678901234567890 is the float 12345678901234567168 and an NDJSON
    integer 2^70 would become a string, both silently another id.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if isinstance(value, float) and math.isnan(value):
        raise _Bad("numbers must be finite (no NaN or Infinity)", "import_number")
    if abs(value) > MAX_SAFE_INTEGER:
        # A float this large is whole; an infinite one was read from a number of 309
        # digits and more (an NDJSON `1e400`, an XLSX cell of thousands of digits).
        finite = isinstance(value, int) or math.isfinite(value)
        raise _out_of_range(str(int(value)) if finite else "a number of over 300 digits")


def _out_of_range(shown: str) -> _Bad:
    """The range error, repeating at most the start of the number (`capped`)."""
    return _Bad(
        f"{capped(shown, quoted=False, digits=True)} is beyond +-2^53, where numbers lose "
        "digits (store ids as text)",
        "import_number_range",
    )


def _object(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value, parse_constant=_no_constant)
            # the parser kept one of two equal keys; its hook is a frame deeper, so a cell
            # nested just within the parser's depth may be too deep for this second parse
            twice = repeated_keys(value, fix=WRITE_ONCE) if isinstance(parsed, dict) else []
        except ValueError:
            parsed = None
        except RecursionError:
            raise _Bad("attributes are nested too deeply", "import_object") from None
        if isinstance(parsed, dict):
            if twice:
                raise _Bad(f"attributes: {twice[0].loc}: {twice[0].msg}", twice[0].type)
            return parsed
    raise _Bad("attributes must be a JSON object", "import_object")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _plain(value: Any) -> Any:
    """A pass-through cell as JSON: spreadsheet dates as ISO text, integral floats as ints."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# --- the wire form and derived ids -------------------------------------------------------


def wire_time(value: datetime) -> str:
    """RFC 3339 with the row's own offset (local times stay recognisable in the output)."""
    return value.isoformat(timespec="milliseconds" if value.microsecond else "seconds")


def encode(record: Mapping[str, Any]) -> bytes:
    """The record's JSON value bytes (compact, UTF-8); numbers JSON cannot hold raise ValueError."""
    return json.dumps(
        record, default=_wire_default, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode()


def _wire_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return wire_time(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def derive_event_id(topic: str, record: Mapping[str, Any]) -> str:
    """A stable id from the record's content: the same row imported again gets the same id.

    Hashes the topic and the record without `event_id` in a canonical form
    (sorted keys, times as UTC milliseconds, integral floats as integers), so
    an equal row written with another offset, column order or number format
    gets the same id too.
    """
    body = {k: _canonical(v) for k, v in record.items() if k != DERIVED_ID_FIELD}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.sha256(f"{topic}\n{text}".encode()).hexdigest()
    return DERIVED_ID_PREFIX + digest[:40]


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_utc(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value
