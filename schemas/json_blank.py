"""What a blank NDJSON line (or request body) is: JSON whitespace only.

JSON's whitespace is space, tab, LF and CR (RFC 8259), nothing else. `bytes.strip()`
also strips a vertical tab and a form feed (`str.strip()` U+001C-U+001F, U+0085,
U+00A0 and more): a replay or import line of only `\\x0c` was skipped as blank,
never counted nor dead-lettered, although no JSON parser takes it, and a gateway
EPCIS body of one was answered 422 `empty`. Such a line or body is one like any
other (`not_json`); one of JSON whitespace (a CRLF ending too) is blank: a line is
skipped, a body holds no items.
"""

from __future__ import annotations

from typing import Final

JSON_WHITESPACE: Final = b" \t\n\r"


def json_blank(line: bytes | bytearray) -> bool:
    """Whether `line` holds nothing but JSON whitespace (an empty line too)."""
    return not line.strip(JSON_WHITESPACE)
