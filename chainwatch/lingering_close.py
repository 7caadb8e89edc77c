"""A lingering close: what a client still sends after its answer is read and dropped.

A socket closed with unread data makes the kernel answer with a reset instead of a
FIN, and so does data arriving once it is closed: a client still sending its body
when the gateway answered early (408 `body_too_slow`, a refusal with `Connection:
close`) saw its next send fail and its read end in a reset, and most clients send the
whole body before they read, so they never saw the answer (RFC 9112, section 9.6). So,
when a request was only partly received, the close shuts the write side only (the
answer, then a FIN: the client reads the answer and its end), reads and drops what the
client still sends, and closes the socket when the client closes its side, or after
`Linger.max_s`, or once `Linger.max_bytes` were dropped, whichever comes first (nginx's
`lingering_close`, Go's `closeWriteAndWait`). A connection that was idle closes at
once, and so does every connection once the server stops.

The request's app has ended before its answer's close, so a lingering connection holds
no request slot; it is one of the open connections (`limit_connections`) until it closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Linger:
    """How long, and how many bytes of what a client still sends, a close waits for at most
    (`max_s` 0: it never lingers)."""

    max_s: float
    max_bytes: int


class LingeringTransport(asyncio.Transport):
    """The transport handed to the HTTP protocol: its `close` lingers when `partly_received`
    says a request is only partly in (its protocol passes what arrives meanwhile to
    `dropped`), else closes at once; everything else is the socket's transport's."""

    def __init__(
        self, transport: asyncio.Transport, linger: Linger, partly_received: Callable[[], bool]
    ) -> None:
        super().__init__()
        self._transport = transport
        self._linger = linger
        self._partly_received = partly_received
        self._lingering = False
        self._dropped = 0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def lingering(self) -> bool:
        return self._lingering

    def close(self) -> None:
        if self._lingering or self._transport.is_closing():
            return
        if (
            self._linger.max_s <= 0
            or not self._partly_received()
            or not self._transport.can_write_eof()  # TLS: no half-close
        ):
            self._transport.close()
            return
        self._lingering = True
        self._transport.write_eof()  # after what is buffered: the answer, then a FIN
        self._transport.resume_reading()  # the protocol may have paused it mid-body
        self._timer = asyncio.get_running_loop().call_later(self._linger.max_s, self.close_now)

    def close_now(self) -> None:
        """Close without lingering (a lingering close ends here). An answer the client has
        not read by then is given up (a reset): a close waits for it to be written, so a
        client that neither reads nor closes held the connection for ever."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lingering and self._transport.get_write_buffer_size():
            self._transport.abort()
        else:
            self._transport.close()

    def stop(self) -> None:
        """The server stops: a close no longer lingers, and one lingering ends now (a
        connection left open when the server's event loop closes keeps it from closing)."""
        self._linger = Linger(max_s=0.0, max_bytes=0)
        if self._lingering:
            self.close_now()

    def dropped(self, data: bytes) -> bool:
        """Whether `data` arrived while lingering (then it is dropped, and past
        `max_bytes` the close ends)."""
        if not self._lingering:
            return False
        self._dropped += len(data)
        if self._dropped > self._linger.max_bytes:
            self.close_now()
        return True

    def lost(self) -> None:
        """The connection ended (the client closed, or the socket did): no timer is left."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def is_closing(self) -> bool:
        return self._lingering or self._transport.is_closing()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._lingering:  # nothing follows the FIN
            self._transport.write(data)

    def pause_reading(self) -> None:
        if not self._lingering:  # what a lingering client sends must be read to be dropped
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def abort(self) -> None:
        self.lost()
        self._transport.abort()
