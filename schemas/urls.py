"""Splitting a URL a user gave (a webhook's, a datasource's) without ever quoting it back.

`urlsplit` says why it cannot split a URL in a `ValueError` that may carry the URL's
authority whole, password included: `netloc 'bot:S3CRETPW@hooks.example.com℁' contains
invalid characters under NFKC normalization`. Its error has no code, so its text is read
for the kind of fault only and a fixed reason stands in for it.

Where asked (`dotted_ipv4_only`: the URLs webhooks post to or link to), a host that looks
like an IPv4 address (its last label a number, as the WHATWG URL standard decides it) must
be one in dotted-decimal `a.b.c.d`. `urlsplit` and httpx pass
`127.1`, `0x7f.1`, `2130706433` or `1.2.3` on as names, and the resolver (`inet_aton`)
reads them as 127.0.0.1 or 1.2.0.3: an address no check of the written host saw, or one
nobody meant. `1.2.3.4.5` or `a.1.2.3` resolve to nothing and were retried for an hour.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from urllib.parse import SplitResult, urlsplit


class UrlError(ValueError):
    """A URL that cannot be split; its text is a fixed reason, never a part of the URL."""


_REASONS: tuple[tuple[str, str], ...] = (
    ("Port out of range", "port out of range (above 65535)"),
    ("Port could not be cast", "port not a number"),
    ("IPv6", "bad IPv6 literal in [...]"),
    ("does not appear to be an IPv4 or IPv6 address", "bad IPv6 literal in [...]"),
    ("NFKC", "characters that normalise to URL delimiters (/ ? # @ :)"),
)
"""A fragment of `urlsplit`'s message (Python 3.11-3.13), and the reason said instead."""


def fixed_reason(text: str, reasons: tuple[tuple[str, str], ...]) -> str:
    """The reason said for a parser's message `text`: the first of `reasons` whose fragment
    it holds, else "cannot be parsed"; never a part of `text` itself (nor of the URL)."""
    return next((said for seen, said in reasons if seen in text), "cannot be parsed")


_NUMBER = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*", re.ASCII)
"""A label WHATWG's host parser reads as a number (decimal, or hex after `0x`)."""

NUMERIC_HOST_REASON = (
    "a numeric host that is no IPv4 address: write it as a.b.c.d, each 0-255 without leading zeros"
)


_LABEL_SEPARATORS = str.maketrans(dict.fromkeys("\u3002\uff0e\uff61", "."))
"""IDNA's label separators besides `.` (UTS #46): the ideographic full stop U+3002, the
fullwidth U+FF0E and the halfwidth U+FF61. NFKC maps only the fullwidth one to `.`, yet
httpx's IDNA encoding maps all three: `127<U+3002>1` passed and was sent as `127.1`."""


def looks_numeric_but_no_ipv4(host: str) -> bool:
    """The host ends in a number (WHATWG: an IPv4 host) yet is no dotted-decimal IPv4
    address; compatibility forms (fullwidth digits, IDNA's other dots) are read as what
    they normalise to."""
    if ":" in host:  # an IPv6 literal (`::ffff:1.2.3.4` ends in a number too)
        return False
    labels = unicodedata.normalize("NFKC", host).translate(_LABEL_SEPARATORS).split(".")
    last = labels[-2] if len(labels) > 1 and not labels[-1] else labels[-1]
    if not _NUMBER.fullmatch(last):
        return False
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return True
    return False


def split_url(url: str, *, dotted_ipv4_only: bool = False) -> tuple[SplitResult, int | None]:
    """`urlsplit(url)` and its port; `UrlError` with a fixed reason when either fails, or,
    with `dotted_ipv4_only`, when its host looks numeric but is no IPv4 address (`127.1`,
    `256.1.1.1`, `1.2.3.4.5`).

    Only a URL whose address is checked before it is reached needs `dotted_ipv4_only`
    (a webhook's, and the link a message carries): `127.1` there is an address the check
    never saw. A ClickHouse or Grafana URL the operator gave may use the resolver's short
    forms or an /etc/hosts name like `db.2`, as it did before the check.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlError(fixed_reason(str(exc), _REASONS)) from None
    if dotted_ipv4_only and parts.hostname and looks_numeric_but_no_ipv4(parts.hostname):
        raise UrlError(NUMERIC_HOST_REASON)
    return parts, port
