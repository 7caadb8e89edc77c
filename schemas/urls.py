"""Splitting a URL a user gave (a webhook's, a datasource's) without ever quoting it back.

`urlsplit` says why it cannot split a URL in a `ValueError` that may carry the URL's
authority whole, password included: `netloc 'bot:S3CRETPW@hooks.example.com℁' contains
invalid characters under NFKC normalization`. Its error has no code, so its text is read
for the kind of fault only and a fixed reason stands in for it.
"""

from __future__ import annotations

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


def split_url(url: str) -> tuple[SplitResult, int | None]:
    """`urlsplit(url)` and its port; `UrlError` with a fixed reason when either fails."""
    try:
        parts = urlsplit(url)
        return parts, parts.port
    except ValueError as exc:
        text = str(exc)
        reason = next((said for seen, said in _REASONS if seen in text), "cannot be parsed")
        raise UrlError(reason) from None
