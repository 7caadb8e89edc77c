"""A request's Content-Type and Content-Encoding -> its body's framing (`json` or
`ndjson`), or a 415: read from the headers before any of the body is, so a body the
gateway would misread is refused unread. The body itself is `body`'s.
"""

from __future__ import annotations

import re
from typing import Final

from schemas.http_whitespace import HTTP_WHITESPACE
from schemas.text import capped

NDJSON_TYPES: Final = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)
_PARAMETER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""A media type parameter's name: an HTTP token (RFC 9110 5.6.2)."""


class UnsupportedMediaType(Exception):
    """Neither JSON nor NDJSON, or not UTF-8, or compressed (415)."""


def media_type(content_type: str | None, content_encoding: str | None = None) -> str:
    """`json` or `ndjson`; a missing type is read as JSON, anything else is refused.

    So is a body the gateway would misread: one with a `Content-Encoding` other than
    `identity` (a gzip body was judged as bytes, `not_json`; a `br` label on a plain
    body was ignored) or a `charset` other than UTF-8 (JSON on the wire is UTF-8).
    Only HTTP's whitespace (space, tab) is cut around the parts: `str.strip()` read
    `application/json\xa0` (a 0xA0 byte) as JSON, and a parameter named `\xa0charset`,
    which is no token, is refused rather than ignored as a parameter of another name.
    A value the refusal repeats is capped (`capped`): a header of kilobytes was
    echoed whole into the 415 body.
    """
    coding = (content_encoding or "").strip(HTTP_WHITESPACE)
    if any(e.strip(HTTP_WHITESPACE).lower() not in ("", "identity") for e in coding.split(",")):
        raise UnsupportedMediaType(
            f"unsupported Content-Encoding {capped(coding, quoted=True)}: the gateway reads "
            "bodies as sent; send it uncompressed, without Content-Encoding (or with `identity`)"
        )
    if not content_type:
        return "json"
    main, *params = (part.strip(HTTP_WHITESPACE) for part in _parts(content_type))
    main = main.lower()
    for param in filter(None, params):  # `type/subtype;` is allowed (RFC 9110 8.3.1)
        name, _, value = (p.strip(HTTP_WHITESPACE) for p in param.partition("="))
        if not _PARAMETER_NAME.fullmatch(name):
            raise UnsupportedMediaType(
                f"unsupported content type parameter {capped(name, quoted=True)}: a "
                "parameter's name is an HTTP token, such as `charset`"
            )
        charset = value.strip('"').lower()
        if name.lower() == "charset" and charset not in ("utf-8", "utf8"):
            raise UnsupportedMediaType(
                f"unsupported charset {capped(charset, quoted=True)}: JSON and NDJSON bodies "
                "are read as UTF-8 (send charset=utf-8, or no charset)"
            )
    if main in NDJSON_TYPES:
        return "ndjson"
    if main in ("application/json", "text/json", "*/*") or main.endswith("+json"):
        return "json"
    raise UnsupportedMediaType(
        f"unsupported content type {capped(main, quoted=True)}: send application/json or "
        "application/x-ndjson"
    )


def _parts(content_type: str) -> list[str]:
    """`content_type` parted at each `;` outside a quoted string (RFC 9110 5.6.4): a
    quoted parameter value may hold one (`profile="urn:a; b"`), and parted there it made
    a parameter named `b"`, refused as no token. A quote left open quotes nothing: what
    follows it is parted at every `;` as before, so no `charset` hides behind it."""
    if '"' not in content_type:
        return content_type.split(";")
    parts: list[str] = []
    start = 0
    opened: int | None = None  # where the quoted string being read began
    escaped = False
    for at, char in enumerate(content_type):
        if opened is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                opened = None
        elif char == '"':
            opened = at
        elif char == ";":
            parts.append(content_type[start:at])
            start = at + 1
    if opened is not None:
        return [*parts, *content_type[start:].split(";")]
    return [*parts, content_type[start:]]
