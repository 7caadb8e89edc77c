"""EPCIS event ids: the CBV 2.0 event hash and the contract's short form of an id.

`eventID` is optional in EPCIS 2.0; CBV 2.0 (section 8.9, "EPCIS event hash ID")
defines how to derive a deterministic id from an event's content: a *pre-hash
string* of the event's fields in a fixed order, with values in one canonical
form (UTC timestamps at millisecond precision, CBV web URIs, GS1 Digital Link
URIs for EPCs, plain numbers), hashed with SHA-256 and written
`ni:///sha-256;<hex>?ver=CBV2.0`. The same event in JSON-LD with bare CBV names,
URN forms, another field order or another time zone has the same hash; the
gateway therefore derives the same `event_id` when a document is posted again.

The reference implementation is GS1's `epcis-event-hash-generator`; this module
implements the algorithm for the JSON form only, with no network access (the
reference expands JSON-LD contexts, which may fetch them). Tested against the
pre-hash strings published with the reference implementation and against what
its release 1.9.3 computes for the knitwear documents of the tests
(tests/gateway/test_epcis_hash.py). Known deviations: `sensorElementList`
children are ordered lexically, not in the CBV sensor property order; EPC URN
schemes other than sgtin, sscc, sgln, pgln, grai, giai, gdti, lgtin (class) and
sgtin (idpat) stay as sent, and so does a Digital Link on another domain than
`id.gs1.org`, query and all (one on `id.gs1.org` loses its query string). Where
the reference departs from the CBV text (the order of `sourceList` and
`destinationList`, the extensions of a read point in a namespace not ending in
`/`, a bare name with spaces around it, an extension's timestamp, rounding a time
half up), this module follows the text; docs/ingest.md lists these.

Contract ids are 1-64 characters of `[A-Za-z0-9._:-]` (`schemas.common.Identifier`);
a hash id is 84 characters. `contract_event_id` keeps an id that fits and
otherwise gives a documented, deterministic short form (docs/ingest.md).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from schemas.cbv_terms import (
    BIZ_STEPS,
    BIZ_TRANSACTION_TYPES,
    DISPOSITIONS,
    SOURCE_DESTINATION_TYPES,
)
from schemas.common import IDENTIFIER_PATTERN

# --- the contract's short form of an EPCIS id -----------------------------------------------

_IDENTIFIER: Final = re.compile(IDENTIFIER_PATTERN)
_NI_SHA256: Final = re.compile(r"^ni:///sha-256;(?P<hex>[0-9A-Fa-f]{64})(?:\?.*)?$")
NI_PREFIX: Final = "ni-sha256-"
"""`ni:///sha-256;<hex>?...` -> `ni-sha256-` + the first 54 hex digits (lower case)."""
OTHER_PREFIX: Final = "epcis-sha256-"
"""Any other id that does not fit -> `epcis-sha256-` + the first 51 hex digits of its SHA-256."""


def contract_event_id(epcis_id: str) -> str:
    """The contract `event_id` for an EPCIS `eventID` (or a derived hash id).

    - an id that fits the identifier rule (1-64 of `[A-Za-z0-9._:-]`) is kept;
    - `ni:///sha-256;<64 hex>` (any query, e.g. `?ver=CBV2.0`) becomes
      `ni-sha256-<first 54 hex digits, lower case>`: 64 characters that still
      find the event by the prefix of its hash;
    - anything else becomes `epcis-sha256-<first 51 hex digits of SHA-256 of the
      UTF-8 id>`, also 64 characters.
    """
    if len(epcis_id) <= 64 and _IDENTIFIER.fullmatch(epcis_id):
        return epcis_id
    ni = _NI_SHA256.fullmatch(epcis_id)
    if ni is not None:
        return NI_PREFIX + ni.group("hex").lower()[: 64 - len(NI_PREFIX)]
    digest = hashlib.sha256(epcis_id.encode("utf-8", "surrogatepass")).hexdigest()
    return OTHER_PREFIX + digest[: 64 - len(OTHER_PREFIX)]


# --- the CBV 2.0 event hash ------------------------------------------------------------------

_Order = list[tuple[str, "_Order | None"]]
_QUANTITY: Final[_Order] = [("epcClass", None), ("quantity", None), ("uom", None)]
_TYPED = "typed"  # a list of {type, <value key>} entries: `type=...<key>=...` per entry

PROPERTY_ORDER: Final[list[tuple[str, str | None]]] = [
    ("eventTime", None),
    ("eventTimeZoneOffset", None),
    ("epcList", "epc"),
    ("parentID", None),
    ("inputEPCList", "epc"),
    ("childEPCs", "epc"),
    ("quantityList", "quantity"),
    ("childQuantityList", "quantity"),
    ("inputQuantityList", "quantity"),
    ("outputEPCList", "epc"),
    ("outputQuantityList", "quantity"),
    ("action", None),
    ("transformationID", None),
    ("bizStep", None),
    ("disposition", None),
    ("persistentDisposition", "persistent"),
    ("readPoint", "id"),
    ("bizLocation", "id"),
    ("bizTransactionList", "bizTransaction"),
    ("sourceList", "source"),
    ("destinationList", "destination"),
]
"""CBV 2.0 property order of the pre-hash string; the second item says how children are written."""

_IGNORED: Final = frozenset(
    {"type", "eventID", "recordTime", "@context", "certificationInfo", "errorDeclaration"}
)
_KNOWN: Final = frozenset(name for name, _ in PROPERTY_ORDER) | _IGNORED

_CBV_URN: Final = (
    ("urn:epcglobal:cbv:bizstep:", "https://ref.gs1.org/cbv/BizStep-"),
    ("urn:epcglobal:cbv:disp:", "https://ref.gs1.org/cbv/Disp-"),
    ("urn:epcglobal:cbv:btt:", "https://ref.gs1.org/cbv/BTT-"),
    ("urn:epcglobal:cbv:sdt:", "https://ref.gs1.org/cbv/SDT-"),
    ("urn:epcglobal:cbv:er:", "https://ref.gs1.org/cbv/ER-"),
)
"""CBV URNs -> web URIs. CURIEs (`cbv:BizStep-x`) stay as sent, as in the reference."""
_BARE: Final = {
    "bizStep": ("https://ref.gs1.org/cbv/BizStep-", BIZ_STEPS),
    "disposition": ("https://ref.gs1.org/cbv/Disp-", DISPOSITIONS),
    "persistentDisposition": ("https://ref.gs1.org/cbv/Disp-", DISPOSITIONS),
    "bizTransactionList": ("https://ref.gs1.org/cbv/BTT-", BIZ_TRANSACTION_TYPES),
    "sourceList": ("https://ref.gs1.org/cbv/SDT-", SOURCE_DESTINATION_TYPES),
    "destinationList": ("https://ref.gs1.org/cbv/SDT-", SOURCE_DESTINATION_TYPES),
}
"""Vocabulary -> (web URI prefix, its standard bare names): only a CBV term is expanded."""


def _check_digit(digits: str) -> str:
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return str((10 - total % 10) % 10)


def _gtin(company: str, item_ref: str) -> str:
    body = item_ref[:1] + company + item_ref[1:]
    return body + _check_digit(body)


def _gln(company: str, location_ref: str) -> str:
    body = company + location_ref
    return body + _check_digit(body)


_DL: Final = "https://id.gs1.org/"


def digital_link(value: str) -> str | None:
    """The canonical GS1 Digital Link URI of an EPC URN, or None when it is not one we convert."""
    parts = value.split(":")
    if len(parts) != 5 or parts[0] != "urn" or parts[1] != "epc":
        return None
    kind, scheme, fields = parts[2], parts[3], parts[4].split(".")
    try:
        if kind == "id" and scheme == "sgtin" and len(fields) == 3:
            return f"{_DL}01/{_gtin(fields[0], fields[1])}/21/{fields[2]}"
        if kind == "id" and scheme == "sscc" and len(fields) == 2:
            body = fields[1][:1] + fields[0] + fields[1][1:]
            return f"{_DL}00/{body}{_check_digit(body)}"
        if kind == "id" and scheme == "sgln" and len(fields) == 3:
            ext = "" if fields[2] == "0" else f"/254/{fields[2]}"
            return f"{_DL}414/{_gln(fields[0], fields[1])}{ext}"
        if kind == "id" and scheme == "pgln" and len(fields) == 2:
            return f"{_DL}417/{_gln(fields[0], fields[1])}"
        if kind == "id" and scheme == "grai" and len(fields) == 3:
            return f"{_DL}8003/0{_gln(fields[0], fields[1])}{fields[2]}"
        if kind == "id" and scheme == "giai" and len(fields) == 2:
            return f"{_DL}8004/{fields[0]}{fields[1]}"
        if kind == "id" and scheme == "gdti" and len(fields) == 3:
            return f"{_DL}253/{_gln(fields[0], fields[1])}{fields[2]}"
        if kind == "class" and scheme == "lgtin" and len(fields) == 3:
            return f"{_DL}01/{_gtin(fields[0], fields[1])}/10/{fields[2]}"
        if kind == "idpat" and scheme == "sgtin" and len(fields) == 3 and fields[2] == "*":
            return f"{_DL}01/{_gtin(fields[0], fields[1])}"
    except ValueError:  # a non-digit company prefix or reference: not an EPC we know
        return None
    return None


def canonical_time(value: str) -> str:
    """UTC with `Z`, millisecond precision; a value that is not a timestamp stays as sent.

    More digits are rounded, half up on the fourth (`.1415` -> `.142`, as the CBV
    text and the reference's published `TimeStampRoundOff` example have it; they were
    cut, `.141`, so an event timed in microseconds hashed unlike the reference's).
    A time whose UTC form is outside `datetime`'s years 1-9999
    (`0001-01-01T00:00:00+01:00`) stays as sent: its `OverflowError` made the hash
    of an event without `eventID` a `processing_error` with a traceback, where the
    scan's own validation says why the time is refused.
    """
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
        if moment.tzinfo is None:  # no offset: read as UTC, as the reference does on a UTC host
            moment = moment.replace(tzinfo=UTC)
        utc = moment.astimezone(UTC)
        millis = (utc.microsecond + 500) // 1000
        utc = utc.replace(microsecond=0) + timedelta(milliseconds=millis)
    except (ValueError, OverflowError):
        return text
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def canonical_value(value: Any, vocabulary: str | None = None) -> str:
    """One value in the pre-hash form: plain numbers, CBV web URIs, Digital Link EPCs."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an integer past a float's range: its digits, as sent as text
            return str(value)
        return str(int(number)) if number.is_integer() else repr(number)
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if number == number and abs(number) != float("inf"):  # not NaN / infinity
            return str(int(number)) if number.is_integer() else repr(number)
    for prefix, web in _CBV_URN:
        if text.startswith(prefix):
            return web + text[len(prefix) :]
    if vocabulary in _BARE:
        web, terms = _BARE[vocabulary]
        if text in terms:
            return web + text
    if text.startswith(_DL):  # a constrained Digital Link has no query string (CBV 2.0 8.9)
        return text.split("?", 1)[0]
    return digital_link(text) or text


def _field(name: str, value: Any, vocabulary: str | None = None) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return ""
    if "time" in name.lower() and "offset" not in name.lower() and isinstance(value, str):
        return f"{name}={canonical_time(value)}"
    return f"{name}={canonical_value(value, vocabulary)}"


def _epc_list(name: str, values: Any) -> str:
    if not isinstance(values, list):
        return ""
    items = sorted(_field("epc", v) for v in values if isinstance(v, str | int | float))
    joined = "".join(items)
    return name + joined if joined else ""


def _quantity_list(name: str, values: Any) -> str:
    if not isinstance(values, list):
        return ""
    items = []
    for entry in values:
        if isinstance(entry, dict):
            text = "".join(_field(key, entry.get(key)) for key, _ in _QUANTITY)
            if text:
                items.append("quantityElement" + text)
    joined = "".join(sorted(items))
    return name + joined if joined else ""


def _entry_part(name: str, value: Any, vocabulary: str | None = None) -> str:
    """A part of a typed list's entry: a blank string (empty or whitespace) is its name
    alone, as the reference writes it (its `_generic_child_list_to_prehash_string`
    writes `name` + `=value` only when the stripped value is not empty), where a blank
    field elsewhere (`bizStep: " "`) is left out, as the reference's ordered fields are."""
    if isinstance(value, str) and not value.strip():
        return name
    return _field(name, value, vocabulary)


def _typed_list(name: str, key: str, values: Any) -> str:
    if not isinstance(values, list):
        return ""
    items = []
    for entry in values:
        if isinstance(entry, dict):
            text = _entry_part("type", entry.get("type"), name) + _entry_part(key, entry.get(key))
            if text:
                items.append(text)
    joined = "".join(sorted(items))
    return name + joined if joined else ""


def _persistent(value: Any) -> str:
    if not isinstance(value, dict):
        return ""
    text = ""
    for key in ("set", "unset"):
        entries = value.get(key)
        if isinstance(entries, list):
            text += "".join(
                sorted(_field(key, v, "persistentDisposition") for v in entries if v is not None)
            )
    return "persistentDisposition" + text if text else ""


def _namespaces(context: Any) -> dict[str, str]:
    """Prefix -> namespace URI from the JSON-LD `@context` entries that are objects."""
    found: dict[str, str] = {}
    entries = context if isinstance(context, list) else [context]
    for entry in entries:
        if isinstance(entry, dict):
            for prefix, uri in entry.items():
                if isinstance(prefix, str) and isinstance(uri, str):
                    found[prefix] = uri
    return found


def _expand(key: str, namespaces: dict[str, str]) -> str:
    prefix, sep, local = key.partition(":")
    if sep and prefix in namespaces:
        return "{" + namespaces[prefix] + "}" + local
    return key


def _generic(key: str, value: Any, namespaces: dict[str, str]) -> list[str]:
    """Extension (and unordered) elements: `{ns}name=value`, children sorted lexically."""
    name = _expand(key, namespaces)
    if isinstance(value, list):
        return [text for item in value for text in _generic(key, item, namespaces)]
    if isinstance(value, dict):
        if "#text" in value:
            return [_field(name, value["#text"])]
        return [name + _children(value, namespaces)]
    return [_field(name, value) or name] if value is not None else []


def _not_hashed(key: str) -> bool:
    """JSON-LD keywords and comments are no fields of the event."""
    return key.startswith("@") or key in ("rdfs:comment", "comment")


def _children(value: dict[str, Any], namespaces: dict[str, str], skip: str = "") -> str:
    """A field's child elements (but `skip`), each as `_generic` writes it, sorted."""
    return "".join(
        sorted(
            text
            for key, child in value.items()
            if key != skip and not _not_hashed(key)
            for text in _generic(key, child, namespaces)
        )
    )


def _location(name: str, value: Any, namespaces: dict[str, str]) -> str:
    """`readPoint` / `bizLocation`: its `id`, then its extension fields, sorted.

    CBV 2.0 section 8.9 adds the extension elements of a field with an extension
    point (readPoint, bizLocation, sensor elements) "at the end of its enclosing
    parent's regular fields", so they follow the id here, before `bizLocation` or
    `bizTransactionList`, not with the event's own extensions at the end. The
    reference (1.9.3) does so only for a namespace ending in `/`
    (`_gather_user_extensions` looks for `/}`); any other field of the two
    (`{urn:example:}x`, an undeclared prefix) still follows the id here.
    """
    raw = value.get("id") if isinstance(value, dict) else value
    text = _field("id", raw) if isinstance(raw, str) else ""
    if isinstance(value, dict):
        text += _children(value, namespaces, skip="id")
    return name + text if text else ""


def prehash_string(event: dict[str, Any], context: Any = None) -> str:
    """The CBV 2.0 pre-hash string of one EPCIS event (JSON form).

    `context` is the document's `@context` (the event's own `@context` is used
    too); its object entries give the namespaces of extension fields.
    """
    namespaces = _namespaces(context)
    namespaces.update(_namespaces(event.get("@context")))
    parts = [f"eventType={event.get('type', '')}"]
    for name, children in PROPERTY_ORDER:
        value = event.get(name)
        if value is None:
            continue
        if children is None:
            parts.append(_field(name, value, name))
        elif children == "epc":
            parts.append(_epc_list(name, value))
        elif children == "quantity":
            parts.append(_quantity_list(name, value))
        elif children == "persistent":
            parts.append(_persistent(value))
        elif children == "id":
            parts.append(_location(name, value, namespaces))
        else:
            parts.append(_typed_list(name, children, value))
    extensions: list[str] = []
    for key, value in event.items():
        if key in _KNOWN or _not_hashed(key):
            continue
        extensions.extend(_generic(key, value, namespaces))
    parts.append("".join(sorted(extensions)))
    return "".join(parts)


def event_hash(event: dict[str, Any], context: Any = None) -> str:
    """`ni:///sha-256;<hex>?ver=CBV2.0` of the event's pre-hash string."""
    digest = hashlib.sha256(prehash_string(event, context).encode("utf-8", "surrogatepass"))
    return f"ni:///sha-256;{digest.hexdigest()}?ver=CBV2.0"
