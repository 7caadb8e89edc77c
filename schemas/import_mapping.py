"""The mapping file of `chainwatch import`: which column holds which contract field.

Spreadsheets and ERP exports name their columns in the plant's language
(`Auftrag`, `Zeitpunkt`), write local times without an offset and their own
words for stages (`Färberei`). A mapping file says, once per export format:

```yaml
kind: scans                       # optional; `--kind` must agree when both are given
columns: {order_id: Auftrag, stage: Stufe, event_time: Zeitpunkt}
defaults: {uom: kg}               # when the column is absent or the cell empty
values:                           # file value -> contract value (case-insensitive)
  stage: {Färberei: dyeing, Strickerei: knitting}
time: {format: "%d.%m.%Y %H:%M", timezone: Europe/Berlin}
numbers: {decimal: ","}
attributes: {shade: Farbe}        # scans: attribute key -> column
```

A contract field that `columns` does not name is read from a column of the
same name when there is one. Everything here is checked when the file is
loaded (`load_mapping`), against the kind being imported, so a typo is one
line naming the key (`MappingError`) before any row is read - never a
thousand rejected rows.
"""

from __future__ import annotations

import codecs
import re
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from schemas.customers import CustomerTier
from schemas.files import StrictSafeLoader, load_config_yaml, read_config_text
from schemas.orders import OrderOp
from schemas.scans import ScanAction, Uom
from schemas.text import shorten
from schemas.topics import CUSTOMERS, ORDERS, SCANS, UNIT_STATUS
from schemas.unit_status import DowntimeReason, UnitState
from schemas.validation import ID_FIELD_BY_TOPIC, MODEL_BY_TOPIC

ImportKind = Literal["scans", "orders", "customers", "unit-status"]
IMPORT_KINDS: Final[tuple[str, ...]] = get_args(ImportKind)

TOPIC_BY_KIND: Final[dict[str, str]] = {
    "scans": SCANS,
    "orders": ORDERS,
    "customers": CUSTOMERS,
    "unit-status": UNIT_STATUS,
}
"""Kind -> the logical input topic its records go to (CONTRACT.md, Inputs)."""

KEY_FIELD_BY_KIND: Final[dict[str, str]] = {
    kind: ID_FIELD_BY_TOPIC[topic] for kind, topic in TOPIC_BY_KIND.items()
}
"""Kind -> the field whose value is the Kafka key (and must equal it, CONTRACT.md v1.2)."""

MODEL_BY_KIND: Final[dict[str, type[BaseModel]]] = {
    kind: MODEL_BY_TOPIC[topic] for kind, topic in TOPIC_BY_KIND.items()
}
FIELDS_BY_KIND: Final[dict[str, tuple[str, ...]]] = {
    kind: tuple(model.model_fields) for kind, model in MODEL_BY_KIND.items()
}

TIME_FIELDS: Final = frozenset(
    {"event_time", "placed_at", "due_at", "updated_at", "expected_up_at"}
)
NUMBER_FIELDS: Final = frozenset({"quantity"})
LIST_FIELDS: Final = frozenset({"route"})
OBJECT_FIELDS: Final = frozenset({"attributes"})

DERIVED_ID_FIELD: Final = "event_id"
"""Kinds with this field get it derived from the row's content when the file has none."""

BUILTIN_DEFAULTS: Final[dict[str, dict[str, str]]] = {"orders": {"op": "created"}}
"""An order row without `op` is a `created` order (a list of orders is what exports hold)."""

_ENUMS: Final[dict[str, type[StrEnum]]] = {
    "action": ScanAction,
    "uom": Uom,
    "status": UnitState,
    "reason": DowntimeReason,
    "tier": CustomerTier,
    "op": OrderOp,
}
_STAGE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_STAGE_FIELDS: Final = frozenset({"stage", "route"})


class MappingError(Exception):
    """A mapping file that cannot be used; the message names the file and the key."""


def _text_key(value: Any) -> Any:
    """YAML reads `1:` or `2.5:` as numbers and `true:` as a boolean; a cell's text is
    what the map is matched on (a boolean cell's is `true`/`false`).

    `true:` was refused naming the key `1` ("Input should be a valid string"), and of
    `"1":` and `1:` one target was dropped unseen; the second is refused by name."""
    if not isinstance(value, dict):
        return value
    texts: dict[Any, Any] = {}
    written: dict[Any, Any] = {}
    for key, target in value.items():
        text = key
        if isinstance(key, bool):
            text = "true" if key else "false"
        elif isinstance(key, int | float):
            text = str(key)
        if text in texts:
            raise ValueError(f"{written[text]!r} and {key!r} are the same key {text!r}")
        texts[text], written[text] = target, key
    return texts


def _one_or_more(value: Any) -> Any:
    return (value,) if isinstance(value, str) else value


ValueMap = Annotated[dict[str, str], BeforeValidator(_text_key)]
Cell = str | int | float | bool


class TimeSpec(BaseModel):
    """How the file writes times, and the zone of times written without an offset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Annotated[tuple[str, ...], BeforeValidator(_one_or_more)] = Field(
        default=("iso",),
        min_length=1,
        description="`iso` (ISO 8601 / RFC 3339, offset optional) or strptime patterns such "
        "as `%d.%m.%Y %H:%M`, tried in order; spreadsheet date cells need none.",
    )
    timezone: str | None = Field(
        default=None,
        description="IANA zone (`Europe/Berlin`) of times without an offset; unset: such "
        "times are invalid, as in the contract.",
    )
    ambiguous: Literal["reject", "earlier", "later"] = Field(
        default="reject",
        description="A local time the clocks pass twice (the autumn change): reject the "
        "row, or take the earlier (summer time) or the later instant.",
    )

    @field_validator("format")
    @classmethod
    def _formats_parse_back(cls, formats: tuple[str, ...]) -> tuple[str, ...]:
        sample = datetime(2026, 11, 22, 14, 5, 9)  # noqa: DTZ001 - a wall time, like the cells
        for fmt in formats:
            if fmt == "iso":
                continue
            if "%" not in fmt:
                raise ValueError(f"{fmt!r} is neither `iso` nor a strptime pattern (%d.%m.%Y)")
            try:
                datetime.strptime(sample.strftime(fmt), fmt)  # noqa: DTZ007 - parse-back check only
            except (ValueError, re.error) as exc:  # re.error: a directive twice (`%d ... %d`)
                raise ValueError(f"{fmt!r} is not a usable strptime pattern ({exc})") from None
        return formats

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str | None) -> str | None:
        if name is not None:
            try:
                if len(name) > 64:  # the longest IANA name has 32 characters
                    raise ValueError(name)
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: `America` (a folder)
                shown = shorten(name, 64)
                raise ValueError(
                    f"unknown time zone {shown!r} (an IANA name such as Europe/Berlin)"
                ) from None
        return name

    def zone(self) -> ZoneInfo | None:
        return None if self.timezone is None else ZoneInfo(self.timezone)


class NumberSpec(BaseModel):
    """How the file writes numbers: `212,5` or `1.234,5` in German exports."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decimal: Literal[".", ","] = "."
    thousands: Literal["", ".", ",", " ", "'"] = Field(
        default="", description="A separator to ignore; none by default."
    )

    @field_validator("thousands")
    @classmethod
    def _not_the_decimal(cls, thousands: str, info: Any) -> str:
        if thousands and thousands == info.data.get("decimal"):
            raise ValueError("the thousands separator must differ from the decimal separator")
        return thousands


class CsvSpec(BaseModel):
    """How a CSV file is written; the delimiter is detected when not given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delimiter: Annotated[str, Field(min_length=1, max_length=1)] | None = None
    encoding: str = Field(
        default="utf-8-sig", description="Text encoding, e.g. `cp1252` for old Excel exports."
    )

    @field_validator("delimiter")
    @classmethod
    def _usable_delimiter(cls, delimiter: str | None) -> str | None:
        """A quote or a line break cannot part fields: the CSV reader and the import's
        record bounds (which follow the quotes) would read a `"` differently, and a
        line break splits the header into one column."""
        if delimiter is not None and delimiter in '"\r\n':
            raise ValueError(
                f"{delimiter!r} cannot be the delimiter (it is the CSV quote or a line break)"
            )
        return delimiter

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, name: str) -> str:
        try:
            info = codecs.lookup(name)
        except LookupError:
            raise ValueError(f"unknown text encoding {name!r}") from None
        # base64, rot13, zlib, hex... are codecs too, but bytes-to-bytes or str-to-str:
        # a CSV file cannot be read with them.
        if not getattr(info, "_is_text_encoding", True):
            raise ValueError(f"{name!r} is not a text encoding (e.g. utf-8, cp1252)")
        try:
            codecs.getincrementaldecoder(name)().decode(b"a", final=True)
        except UnicodeDecodeError:
            pass  # a text encoding in which `a` alone is not text (utf-16)
        except Exception:
            raise ValueError(f"{name!r} is not a text encoding (e.g. utf-8, cp1252)") from None
        return name


class ImportMapping(BaseModel):
    """One mapping file; `ImportMapping()` is the identity mapping (columns named as fields)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ImportKind | None = None
    columns: dict[str, Annotated[str, Field(min_length=1)]] = Field(
        default_factory=dict, description="Contract field -> column header (or NDJSON key)."
    )
    defaults: dict[str, Cell] = Field(
        default_factory=dict, description="Contract field -> value when absent or empty."
    )
    values: dict[str, ValueMap] = Field(
        default_factory=dict,
        description="Contract field -> {file value: contract value}; matched ignoring case "
        "and surrounding blanks; a value not listed is kept as it is. The `stage` map also "
        "applies to each stage of an order's `route`.",
    )
    attributes: dict[str, Annotated[str, Field(min_length=1)]] = Field(
        default_factory=dict, description="Scans: attribute key -> column header."
    )
    time: TimeSpec = TimeSpec()
    numbers: NumberSpec = NumberSpec()
    csv: CsvSpec = CsvSpec()
    sheet: str | None = Field(default=None, description="XLSX: sheet name; unset: the first.")
    header_row: int = Field(
        default=1, ge=1, le=1000, description="CSV/XLSX: the row holding the column headers."
    )

    def check_kind(self, kind: str) -> None:
        """`MappingError` unless every key names a field of `kind` and every map target fits."""
        fields = FIELDS_BY_KIND[kind]
        for section in ("columns", "defaults", "values"):
            for name in getattr(self, section):
                route_stage = section == "values" and name == "stage" and "route" in fields
                if name not in fields and not route_stage:
                    raise MappingError(
                        f"{section}.{name}: not a field of {kind} (fields: {', '.join(fields)})"
                    )
        if self.attributes and kind != "scans":
            raise MappingError("attributes: only scans have attributes")
        for name, targets in self.values.items():
            for source, target in targets.items():
                problem = _target_problem(name, target)
                if problem:
                    raise MappingError(f"values.{name}.{source}: {problem}")
        for name, value in self.defaults.items():
            problem = _target_problem(name, value) if isinstance(value, str) else None
            if problem:
                raise MappingError(f"defaults.{name}: {problem}")


def _target_problem(field: str, target: str) -> str | None:
    enum = _ENUMS.get(field)
    if enum is not None and target not in {member.value for member in enum}:
        allowed = ", ".join(member.value for member in enum)
        return f"{target!r} is not one of the contract's {field} values ({allowed})"
    if field in _STAGE_FIELDS and not _STAGE.match(target):
        return f"{target!r} is not a stage name (lower case letters, digits, _)"
    return None


class _Loader(StrictSafeLoader):
    """YAML 1.1 without `yes`/`no`/`on`/`off` as booleans: `Ein: up` must stay text."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in StrictSafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_mapping(path: Path, kind: str | None = None) -> ImportMapping:
    """Read and check a mapping file; `MappingError` (one line naming the key) if it is bad.

    With `kind` (the `--kind` of the command) the file's own `kind` must agree
    and every field is checked against that kind.
    """
    try:
        text = read_config_text(Path(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"cannot read mapping {path}: {_why(exc)}") from None
    try:
        data = load_config_yaml(text, _Loader)
    except yaml.YAMLError as exc:
        why = " ".join(str(exc).split())
        raise MappingError(f"mapping {path} is not valid YAML: {why}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MappingError(f"mapping {path} must be a YAML mapping of keys")
    try:
        mapping = ImportMapping.model_validate(data)
    except ValidationError as exc:
        raise MappingError(f"mapping {path}: {_describe(exc)}") from None
    chosen = kind or mapping.kind
    if kind is not None and mapping.kind is not None and mapping.kind != kind:
        raise MappingError(f"mapping {path} is for kind {mapping.kind}, not {kind}")
    if chosen is not None:
        try:
            mapping.check_kind(chosen)
        except MappingError as exc:
            raise MappingError(f"mapping {path}: {exc}") from None
    return mapping


def _why(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return "not UTF-8 text"


def _describe(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "<file>"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required"
    elif first["type"] == "literal_error" and "input" in first:
        message = f"{first['input']!r}: {message}"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return " ".join(f"{where}: {message}{more}".split())
