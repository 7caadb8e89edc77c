"""uvicorn's HTTP protocol with a deadline and a size limit on a request's headers.

uvicorn closes a keep-alive connection that stays idle `timeout_keep_alive`
seconds after a response, but a connection that sends part of a request line or
headers - and nothing more - stays open for ever, and every open connection
counts against uvicorn's `limit_concurrency` (`gateway.limit_connections`):
such connections, cheap for any client, turned every further request into a
503. Here the headers must be complete within `header_timeout_s` of the
connection opening, or of the previous response; otherwise the connection is
closed. The body has its own deadline in the app (`gateway.body_timeout_s`),
where a 408 can still be answered.

Nor did anything bound the headers' size: one client sending a header value of
endless `a`s made httptools copy the growing value with every chunk, so the
event loop spent seconds per chunk (a `/healthz` took 5 s, memory grew by
hundreds of MB, and the header deadline's timer could not even run). The
request line and headers together may have at most `max_header_bytes`,
counted as bytes arrive, before the parser sees them: beyond, the client gets
431 in the gateway's JSON error format and the connection is closed, logged
once per connection.

A request the HTTP parser refuses (a `Content-Length` that is not a number, two
of them, a control character in a header value, TLS or HTTP/2 spoken to the
plain-HTTP/1.1 port, a malformed chunk of a chunked body) is answered 400
`bad_request` in the same JSON format, saying what the parser objected to:
uvicorn's own answer was a plain-text "Invalid HTTP request received." with no
request id.

A request that asks for a protocol `Upgrade` (`curl --http2` on an http:// URL
sends `Upgrade: h2c`) and has a body is refused 400 `bad_request` saying so:
the parser hands what follows the headers to the upgraded protocol, so the app
saw an empty body and answered 422 "the request holds no items" to a POST of
scans. Without a body the `Upgrade` is ignored, as HTTP allows, and a request
pipelined after it is served (uvicorn dropped it: the connection then idled to
its keep-alive timeout).

An answer sent before its request's body was read (401, 403, 413, ...) that keeps
the connection is followed by the rest of that body, which uvicorn read and dropped
for as long as the client sent it (within `header_timeout_s`), with no byte cap: a
client refused could push a declared 10 GB, or chunks for ever, into its connection.
At most `Linger.max_bytes` of it are dropped now: a declared rest beyond that has
its answer say `Connection: close` (the close lingers, so the client reads the
answer), and a chunked body, whose rest is not known at the answer, closes the
connection (lingering too) once that much more of it came. Such an answer to a
client that sent `Expect: 100-continue` and was not yet asked for its body (no
`100 Continue` went) says `Connection: close` too: told the answer, the client may
never send that body, and its next request was read as the body's rest.

Beyond `limit_connections` open connections, uvicorn answers 503 before any app
runs; its answer was plain text without `Retry-After`, so a client could not
tell when to come back, or the gateway's refusal from a proxy's. It is now JSON
`too_many_connections` with a jittered `Retry-After`, like the app's
`overloaded` (streams.ingest.admission), so clients refused together come back
spread out. Requests in flight are limited by the app, not here. `/healthz`,
`/readyz` and `/metrics` are served regardless: a liveness probe refused under
a burst of posts would have the orchestrator restart a gateway that is merely
busy.
"""

from __future__ import annotations

import asyncio
import http
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import httptools
import orjson
import structlog
import uvicorn
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from chainwatch.errors import UserError
from chainwatch.lingering_close import Linger, LingeringTransport
from streams.ingest.admission import jittered_retry_after
from streams.ingest.request_id import mark_refused_by_protocol, request_id_of

log = structlog.stdlib.get_logger(__name__)

HEADERS_TOO_LARGE = "headers_too_large"
"""The `error` of the 431 (docs/ingest.md lists it with the app's codes)."""

TOO_MANY_CONNECTIONS = "too_many_connections"
"""The `error` of the 503 beyond `limit_connections` open connections (docs/ingest.md)."""

BAD_REQUEST = "bad_request"
"""The `error` of a 400 for a request the HTTP parser refuses (the app's own code for it)."""


class HeaderDeadlineProtocol(HttpToolsProtocol):
    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    retry_after_s: int = 5
    linger: Linger = Linger(max_s=0.0, max_bytes=0)
    """How a close after an answer waits for what the client still sends (chainwatch.
    lingering_close); its `max_bytes` also bounds what is dropped of the rest of a body
    answered early on a kept connection (`_drop_rest`)."""
    count_refusal: Callable[[int, str], None] | None = None
    """Counts each refusal here by status and error (the app's metrics: these requests
    never reach the app)."""
    _closer: LingeringTransport
    _header_timer: asyncio.TimerHandle | None = None
    _in_head = True  # the parser is reading a request line or headers
    _head_bytes = 0  # of them so far
    _refused = False
    _fed = b""  # what the parser is being fed now
    _body_in = 0  # bytes of the current request's body the parser passed on
    _dropped = 0  # bytes read of the current request after its answer (`_drop_rest`)
    _after_upgrade = b""  # what followed an ignored upgrade, to be fed after it
    _upgrade_logged = False  # an ignored upgrade on this connection was logged

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # uvicorn closes the connection after an answer with `Connection: close`; a client
        # still sending its body then got a reset instead of the answer: this close lingers
        self._closer = LingeringTransport(transport, self.linger, self._partly_received)
        super().connection_made(self._closer)
        self._arm()

    def _partly_received(self) -> bool:
        """A request's line, headers or body is only partly in, or reading is paused (a
        pipelined request waits for its answer, so what the client sent after it is still
        unread): its client may still send."""
        return not self._in_head or self._head_bytes > 0 or self.flow.read_paused

    def data_received(self, data: bytes) -> None:
        if self._closer.dropped(data):
            return  # answered and closing: what the client still sends is only read
        self._receive(data)
        # what a pipelining client sent after an ignored upgrade (a loop, not a recursion:
        # one packet may hold a thousand such requests)
        while self._after_upgrade and not self.transport.is_closing():
            rest, self._after_upgrade = self._after_upgrade, b""
            self._receive(rest)

    def _receive(self, data: bytes) -> None:
        if self._refused:
            return  # the connection is closing: nothing more is read
        if self._answered_in_body():
            self._drop_rest(data)
            return
        if self._in_head:
            room = self.max_header_bytes - self._head_bytes
            if len(data) > room:
                # the part that may still end the headers; the rest only if it did
                if room > 0:
                    self._feed(data[:room])
                if self.transport.is_closing() or self.parser is None:
                    return  # refused by the parser (400) or gone
                if self._after_upgrade:  # parsed after what followed the upgrade
                    self._after_upgrade += data[room:]
                    return
                if self._reading_head():  # still: the headers did not end within the limit
                    self._refuse_headers()
                    return
                self._receive(data[room:])
                return
            self._head_bytes += len(data)
        self._feed(data)

    def _answered_in_body(self) -> bool:
        """The parser is inside the body of a request already answered (on a kept
        connection: what it reads is dropped)."""
        cycle = self.cycle
        return cycle is not None and cycle.response_complete and self._in_body_of(cycle)

    def _drop_rest(self, data: bytes) -> None:
        """The rest of an answered request's body: parsed (to find its end, and the next
        request after it) and dropped, at most `linger.max_bytes` of it; beyond, the
        connection closes, lingering (the answer is whole: the client reads it)."""
        room = self.linger.max_bytes - self._dropped
        self._dropped += min(len(data), room)
        if len(data) <= room:
            self._feed(data)
            return
        self._feed(data[:room])
        if self.transport.is_closing() or self.parser is None:
            return  # refused by the parser (a broken chunk: 400) or gone
        if self._after_upgrade:  # it ended within, then an ignored upgrade: what followed
            self._after_upgrade += data[room:]  # that is parsed first, then this
            return
        if self._answered_in_body():  # the body goes on beyond what is dropped
            self.transport.close()
            self._closer.dropped(data[room:])
            return
        self._receive(data[room:])  # it ended within: the rest is the next request's

    def _feed(self, data: bytes) -> None:
        """uvicorn's parsing of `data`; what followed an upgrade it ignored is kept in
        `_after_upgrade` (`_unsupported_upgrade_warning`)."""
        self._fed = data
        try:
            super().data_received(data)
        finally:
            self._fed = b""

    def _unsupported_upgrade_warning(self) -> None:
        """uvicorn calls this where the parser stopped at an `Upgrade` it will not make, and
        drops what followed: a request pipelined after it was silently lost (the parser
        reads on after the point, `HttpParserUpgrade`'s offset). What follows an upgrade
        with a body is that body, whose request is refused (`_start_asgi_task`).

        Logged once per connection, not uvicorn's two warnings per request, the second
        advising to install a WebSocket library (the gateway serves no WebSocket): one
        packet of pipelined `Upgrade: h2c` requests wrote thousands of lines."""
        if not self._upgrade_logged:
            self._upgrade_logged = True
            client = "%s:%d" % self.client if self.client else None  # noqa: UP031
            upgrade = dict(self.headers).get(b"upgrade", b"").decode("latin-1")
            log.info("protocol upgrade ignored", client=client, upgrade=upgrade[:64])
        stopped = sys.exception()  # called while uvicorn handles the parser's upgrade
        if isinstance(stopped, httptools.HttpParserUpgrade) and not self._upgrade_with_body():
            self._after_upgrade = self._fed[stopped.args[0] :]

    def _upgrade_with_body(self) -> bool:
        return bool(cast(dict[str, Any], self.scope).get(_UPGRADE_WITH_BODY))

    def _reading_head(self) -> bool:
        return self._in_head

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._body_in = self._dropped = 0
        self._disarm()
        if self.parser.should_upgrade() and not self._should_upgrade() and _has_body(self.headers):
            # the parser hands what follows the headers to the upgraded protocol: the body
            # would be lost and the app would see an empty request (`curl --http2` on an
            # http:// URL sends `Upgrade: h2c` with every POST)
            cast(dict[str, Any], self.scope)[_UPGRADE_WITH_BODY] = True
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_in += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0  # what follows is the next request's

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request's headers have the same deadline

    def shutdown(self) -> None:
        """The server stops: its connections close without lingering (a lingering one left
        open would outlast the event loop)."""
        self._closer.stop()
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._closer.lost()
        super().connection_lost(exc)

    def _refuse_headers(self) -> None:
        """431 and close; when a response to an earlier request on this connection is
        still owed (pipelining), that one is sent first and the connection closed after."""
        self._refused = True
        self._disarm()
        client = "%s:%d" % self.client if self.client else None  # noqa: UP031
        log.warning(
            "request headers too large",
            client=client,
            limit_bytes=self.max_header_bytes,
            status=431,
        )
        self._answer_and_close(
            431,
            HEADERS_TOO_LARGE,
            f"the request line and headers exceed {self.max_header_bytes} bytes",
        )

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request its parser refuses (it logged `msg` already), in
        the gateway's JSON error format, with the parser's reason."""
        self._refused = True  # the parser is in error: nothing more is read
        self._disarm()
        reason = sys.exception()  # called while uvicorn handles the parser's error
        why = f": {reason}" if reason is not None and str(reason) else ""
        self._answer_and_close(400, BAD_REQUEST, f"the request is not valid HTTP/1.1{why}")

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        """Every request's app starts here (pipelined ones too): uvicorn's plain-text 503
        beyond its `limit_concurrency` (`gateway.limit_connections`) is replaced by the
        gateway's JSON one (the ops paths are served: a liveness probe answered 503
        under a burst of posts got the gateway restarted, cutting every request in
        flight), and a request whose body the parser dropped for an `Upgrade` never
        reaches the app."""
        if app is service_unavailable and cycle.scope["path"] in OPS_PATHS:
            app = self.app  # probes and scrapes answer even when ingest is over the limit
        elif app is service_unavailable:
            retry = str(jittered_retry_after(self.retry_after_s))
            others = (self.limit_concurrency or 1) - 1  # (uvicorn's counts the one asking)
            app = self._refusal(
                503,
                TOO_MANY_CONNECTIONS,
                f"the gateway holds {others} other open connections; "
                f"nothing was published, retry in {retry} s",
                [(b"retry-after", retry.encode())],
            )
        elif cast(dict[str, Any], cycle.scope).get(_UPGRADE_WITH_BODY):
            app = self._refusal(
                400,
                BAD_REQUEST,
                "the request asks for a protocol upgrade (`Upgrade` header) and has a body: "
                "the gateway speaks HTTP/1.1 only, and the body would not be read; nothing "
                "was published, send it without `Upgrade` (curl: --http1.1, not --http2)",
            )
        super()._start_asgi_task(cycle, self._closing_when_the_rest_is_not_read(cycle, app))

    def _closing_when_the_rest_is_not_read(
        self, cycle: RequestResponseCycle, app: Any
    ) -> Callable[[Any, Any, Any], Awaitable[None]]:
        """`app`, whose answer closes the connection when it comes before its request's
        body was read and that body's rest is not to be read on it: the rest declared is
        more than is dropped (`_drop_rest`), or it was never asked for
        (`_body_not_asked_for`). Said in the answer, `Connection: close`, rather than the
        connection ending under a client that was told it could send on."""

        async def answer(scope: Any, receive: Any, send: Any) -> None:
            async def send_closing(message: Any) -> None:
                if message["type"] == "http.response.start" and (
                    self._rest_too_large(cycle) or self._body_not_asked_for(cycle)
                ):
                    cycle.keep_alive = False  # uvicorn adds the header and closes after
                await send(message)

            await app(scope, receive, send_closing)

        return answer

    def _rest_too_large(self, cycle: RequestResponseCycle) -> bool:
        """What `cycle`'s request declares of its body and the parser has not passed on yet
        exceeds what is dropped of it (False for a body read in full, or chunked: its rest
        is not known, and what is dropped of it is counted as it comes)."""
        if not self._in_body_of(cycle):
            return False
        declared = _declared_length(cycle.scope["headers"])
        return declared is not None and declared - self._body_in > self.linger.max_bytes

    def _body_not_asked_for(self, cycle: RequestResponseCycle) -> bool:
        """`cycle`'s client waits for a `100 Continue` before it sends its body
        (`Expect: 100-continue`; uvicorn sends it when the app first reads, and clears
        `waiting_for_100_continue` then or at the answer, after this is asked), none was
        sent, and the body is not in. Such a client may send its body anyway, or, told
        the final answer, not at all and its next request instead, which was then read
        as that body (its first bytes dropped, the rest a 400 `bad_request`): the
        connection cannot tell them apart, so it closes after the answer, as Go's server
        does (the close lingers: a client sending the body reads the answer)."""
        return cycle.waiting_for_100_continue and self._in_body_of(cycle)

    def _refusal(
        self,
        status: int,
        error: str,
        detail: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> Callable[[Any, Any, Any], Awaitable[None]]:
        """An ASGI app (uvicorn's own event types are private) that answers in the gateway's
        JSON error shape, counted, then closes the connection."""

        async def refuse(scope: Any, receive: Any, send: Any) -> None:
            self._counted(status, error)
            request_id, body = _error_body(error, detail)
            start = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
                (b"x-request-id", request_id.encode()),
                (b"connection", b"close"),
            ]
            await send({"type": "http.response.start", "status": status, "headers": start})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        return refuse

    def _answer_and_close(self, status: int, error: str, detail: str) -> None:
        """A JSON error answer written before (or instead of) any app, then close.

        When the parser failed inside the body of the request it reads (a broken chunk),
        that request is the one refused: answered at once if its app has not answered
        yet (the app sees a disconnect, not a body that never ends), only closed if its
        answer has begun, answered in turn if it waits behind a pipelined request. When
        the failure is in the head of a new request and a response to an earlier one on
        this connection is still owed (pipelining), that one is sent first and the
        connection closed after, without this answer."""
        cycle = self.cycle
        if cycle is not None and self._in_body_of(cycle):
            self._refuse_in_body(cycle, status, error, detail)
            return
        self._counted(status, error)
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
            return
        self._write_and_close(status, error, detail)

    def _in_body_of(self, cycle: RequestResponseCycle) -> bool:
        """The parser is inside the body of `cycle`'s request (its headers were complete,
        its message is not): a failure now is this request's, not a later one's."""
        return not self._in_head and cycle.scope is self.scope

    def _refuse_in_body(
        self, cycle: RequestResponseCycle, status: int, error: str, detail: str
    ) -> None:
        """Refuse the request whose body the parser could not read (see `_answer_and_close`)."""
        for at, (queued, _) in enumerate(self.pipeline):
            if queued is cycle:  # an earlier response is owed: this one's answer follows it
                self.pipeline[at] = (cycle, self._refusal(status, error, detail))
                return
        if cycle.response_started:
            self.transport.close()  # an answer is under way: it cannot be replaced
            return
        self._counted(status, error)
        # answered under the request's own id, and its app told: it sees the body cut
        # and must not count (nor log under another id) a `client_disconnected`
        scope = cast(dict[str, Any], cycle.scope)
        request_id = request_id_of(scope)
        mark_refused_by_protocol(scope)
        cycle.disconnected = True  # its app ends without writing (uvicorn then sends nothing)
        cycle.message_event.set()  # and stops waiting for the rest of the body
        self._write_and_close(status, error, detail, request_id)

    def _write_and_close(
        self, status: int, error: str, detail: str, request_id: str | None = None
    ) -> None:
        """The answer in the gateway's JSON error shape, straight onto the connection."""
        request_id, body = _error_body(error, detail, request_id)
        head = (
            f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            f"x-request-id: {request_id}\r\n"
            "connection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()

    def _counted(self, status: int, error: str) -> None:
        if self.count_refusal is not None:
            self.count_refusal(status, error)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        in_request = self.cycle is not None and not self.cycle.response_complete
        if not in_request and not self.transport.is_closing():
            # no answer is owed (an idle connection, half a head, or the rest of a body
            # answered `header_timeout_s` ago): nothing to linger for
            self._closer.close_now()


OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Served beyond `limit_connections`: cheap (no Kafka call, readiness is cached), and what
an orchestrator and Prometheus must still see while ingest is refused."""

_UPGRADE_WITH_BODY = "chainwatch.upgrade_with_body"
"""Marks the scope of a request whose body the parser gives to an upgrade (refused)."""


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """The request declares a body (`Transfer-Encoding`, or a `Content-Length` above 0)."""
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip(b" 0")):
            return True
    return False


def _declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The body's `Content-Length` (the parser refused a request with a bad one, or two);
    None without one (chunked)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


UVICORN_NEEDED = "0.45"
"""The first uvicorn whose protocol starts every app in `_start_asgi_task`: 0.36 to 0.44
create the task inline, so the JSON 503 beyond `limit_concurrency`, the ops paths served
beyond it and the refused `Upgrade` with a body would silently do nothing there."""

_HOOKS = (
    "_start_asgi_task",
    "_should_upgrade",
    "_unsupported_upgrade_warning",
    "send_400_response",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "on_response_complete",
    "shutdown",
)
"""uvicorn's methods `HeaderDeadlineProtocol` overrides or calls beyond asyncio's protocol."""


def check_uvicorn() -> None:
    """A `UserError` (one line) when the installed uvicorn lacks a hook the gateway's
    protocol relies on: an override of a method uvicorn never calls is silently inert."""
    missing = [name for name in _HOOKS if not callable(getattr(HttpToolsProtocol, name, None))]
    if missing:
        raise UserError(
            f"the gateway needs uvicorn>={UVICORN_NEEDED}, installed is {uvicorn.__version__} "
            f"(its HTTP protocol lacks {', '.join(missing)}): "
            f"pip install 'uvicorn>={UVICORN_NEEDED}'"
        )


def with_header_deadline(
    header_timeout_s: float,
    max_header_bytes: int = 64 * 1024,
    retry_after_s: int = 5,
    count_refusal: Callable[[int, str], None] | None = None,
    linger: Linger | None = None,
) -> type[HeaderDeadlineProtocol]:
    """The protocol class for uvicorn's `http=`, with this deadline and header limit, the
    `Retry-After` of its 503 beyond `limit_connections` (jittered), what counts its refusals
    and how its closes linger (None: never; a `UserError` if the installed uvicorn lacks
    what it overrides: `check_uvicorn`)."""
    check_uvicorn()
    return type(
        "HeaderDeadlineProtocol",
        (HeaderDeadlineProtocol,),
        {
            "header_timeout_s": header_timeout_s,
            "max_header_bytes": max_header_bytes,
            "retry_after_s": retry_after_s,
            "linger": linger or HeaderDeadlineProtocol.linger,
            # a plain function in the class dict would be bound as a method
            "count_refusal": staticmethod(count_refusal) if count_refusal else None,
        },
    )


def _error_body(error: str, detail: str, request_id: str | None = None) -> tuple[str, bytes]:
    """The request id (a new one unless given) and the JSON error body naming it, in the
    shape of the routes' errors (`streams.ingest`), so a client reads every refusal the
    same way."""
    request_id = request_id or uuid.uuid4().hex
    return request_id, orjson.dumps({"request_id": request_id, "error": error, "detail": detail})
