"""The request headers that must come once: `Authorization` and `Content-Type`.

HTTP allows neither to repeat (RFC 9110 5.3: only a list-valued field may), and two
copies are ambiguous: Starlette reads the first, a proxy in front may read the last,
so a request could be authenticated, or parsed, as something other than what the
proxy checked or logged. Such a request is refused (400 `bad_request`) before its
token is read. (Two `Content-Length`s never get here: the HTTP parser refuses them.)
"""

from __future__ import annotations

from collections.abc import Iterable

SINGLE = (b"authorization", b"content-type")
"""Lower case, as the ASGI scope's header names are."""


def repeated_header(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The first of `SINGLE` given more than once, as its name is written in HTTP; None if none."""
    seen: set[bytes] = set()
    for raw_name, _ in headers:
        name = raw_name.lower()
        if name in SINGLE:
            if name in seen:
                return "-".join(part.capitalize() for part in name.decode().split("-"))
            seen.add(name)
    return None
