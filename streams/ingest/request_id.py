"""A request's id, as the app and the HTTP layer in front of it (chainwatch.gateway_protocol)
both give it, so one request's answer, log line and metrics name one id.

The id is the client's `X-Request-ID` when sane, else a new one, and lives in the
scope's `state` (`request.state.request_id`): whichever of the two comes first sets
it, the other reads it. The HTTP layer refuses a request whose chunked body its parser
cannot read after the app may have started on it; it then marks the state
(`mark_refused_by_protocol`) so the app, seeing the body cut, neither answers it again nor
counts it a second time.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from schemas.common import IDENTIFIER_PATTERN

REQUEST_ID_MAX = 64
_PROTOCOL_REFUSED = "protocol_refused"
"""Set in a request's `state` when the HTTP layer answered it (and counted it) itself."""

_REQUEST_ID = re.compile(IDENTIFIER_PATTERN)


def request_id_of(scope: Any) -> str:
    """The request's id: the one its state holds already, else the client's sane
    `X-Request-ID`, else a new one; kept in the state for whoever asks next."""
    state: dict[str, Any] = scope.setdefault("state", {})
    known = state.get("request_id")
    if known is not None:
        return str(known)
    found = uuid.uuid4().hex
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if len(text) <= REQUEST_ID_MAX and _REQUEST_ID.fullmatch(text):
                found = text
            break
    state["request_id"] = found
    return found


def mark_refused_by_protocol(scope: Any) -> None:
    """The HTTP layer answered and counted the request: its app must do neither."""
    scope.setdefault("state", {})[_PROTOCOL_REFUSED] = True


def refused_by_protocol(scope: Any) -> bool:
    return bool(scope.get("state", {}).get(_PROTOCOL_REFUSED))
