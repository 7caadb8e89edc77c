"""grafana-client with a deadline and a size cap on every call, and its answers checked.

grafana-client reads each answer whole, and niquests' timeout bounds one socket
read, not a call: a server that trickles a byte every few seconds holds a call
forever, and a gigabyte answer is read into memory. `Grafana` keeps
grafana-client (URLs, auth, the status-to-exception mapping) but swaps the
transport under it and runs each call under a deadline:

- every call runs on a worker thread that the caller waits for until the call's
  deadline, `min(per-call timeout, what is left of the whole run)`: name
  resolution, connect, headers and body together. Past it the caller gets a
  `PublishError`; the abandoned worker stops at its next read (each socket read
  waits at most until the deadline) and its outcome is dropped.
- an answer's body is streamed and read up to `max_bytes` (a larger
  `Content-Length` is refused before reading); compressed bodies are not asked
  for, so the cap bounds what is parsed. Redirects are not followed: `--url`
  must be the address Grafana answers on.
- every answer used must be a JSON object with the keys the caller reads.

Every failure is a `PublishError` of one line naming Grafana's scheme, host and
port and the request's method and path, never the token or the URL's userinfo.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import niquests
from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaException, GrafanaTimeoutError

from dashboards.errors import OptionError, PublishError
from schemas.urls import UrlError, split_url

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
"""A dashboard API answer is a few hundred bytes; a dashboard itself tens of kB."""
MAX_MESSAGE_CHARS = 200
"""How much of Grafana's own message (an error body) an error line quotes."""


def base_url(url: str, option: str = "--url") -> str:
    """`scheme://host[:port]` of an http(s) URL (no userinfo), or a one-line OptionError."""
    try:
        parts, port = split_url(url)
    except UrlError as exc:  # a fixed reason: urlsplit's own may quote the password
        raise OptionError(
            f"{option} is not a valid URL ({exc}): it must look like http://host:port"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OptionError(f"{option} must be an http(s) URL with a host, like http://host:port")
    if port == 0:
        raise OptionError(f"{option} has port 0: it must look like http://host:port")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def check_token(token: str) -> None:
    """A one-line OptionError, never quoting it, for a token no `Authorization` header can
    carry: empty, whitespace at either end (a file's newline in `CHAINWATCH_GRAFANA_TOKEN`),
    a control character or one outside ASCII (Grafana's tokens are ASCII). Such a token was
    reported as "cannot reach Grafana ...: InvalidHeader", or as an internal error
    (`UnicodeEncodeError`) for one outside Latin-1."""
    where = "--token (or CHAINWATCH_GRAFANA_TOKEN)"
    if not token:
        raise OptionError(f"{where} is empty: give the service account token")
    if token != token.strip() or not token.isascii() or not token.isprintable():
        raise OptionError(
            f"{where} is no token: it has whitespace at either end, a control character "
            "or a character outside ASCII"
        )


def one_line(text: str, secret: str = "", limit: int = MAX_MESSAGE_CHARS) -> str:
    """The first non-blank line of `text`, printable, without `secret`, at most `limit` chars."""
    if secret:
        text = text.replace(secret, "***")
    return _first_line(text, limit)


def _first_line(text: str, limit: int) -> str:
    line = next((part for part in text.splitlines() if part.strip()), "")
    line = re.sub(r"[^\x20-\x7e\u00a0-\uffff]", "?", line.strip())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class _TooLarge(Exception):
    pass


class _Redirected(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Late(Exception):
    pass


class _Transport:
    """What grafana-client calls `s`: a niquests session bounded in time and size per call."""

    def __init__(self, max_bytes: int, headers: Any) -> None:
        self.max_bytes = max_bytes
        self.deadline = time.monotonic()
        self.current = "a request"
        self.headers = headers
        self._session = niquests.Session()

    def request(self, method: str, url: str, **kwargs: Any) -> niquests.Response:
        self.current = f"{method.upper()} {urlsplit(url).path}"
        kwargs.update(
            stream=True,
            allow_redirects=False,
            timeout=max(0.01, self.deadline - time.monotonic()),
            headers={
                **self.headers,
                **(kwargs.get("headers") or {}),
                "Accept-Encoding": "identity",
            },
        )
        response = self._session.request(method, url, **kwargs)
        try:
            status = response.status_code or 0
            if 300 <= status < 400:
                raise _Redirected(status)
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise _TooLarge
            body = bytearray()
            for chunk in response.iter_raw(-1):  # as the bytes arrive
                body += chunk
                if len(body) > self.max_bytes:
                    raise _TooLarge
                if time.monotonic() > self.deadline:
                    raise _Late
        except BaseException:
            response.close()  # the connection is not reused
            raise
        # grafana-client reads `.content`/`.json()`/`.text`: hand it the bytes read,
        # as niquests does itself once a streamed body is consumed.
        response._content = bytes(body)
        response._content_consumed = True
        return response

    def close(self) -> None:
        self._session.close()


class _Outcome:
    def __init__(self) -> None:
        self.value: object = None
        self.error: BaseException | None = None


class Grafana:
    """grafana-client's `GrafanaApi` for one run: each `call` bounded, its answer checked."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        call_timeout_s: float,
        total_timeout_s: float,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.base = base_url(url)
        check_token(token)
        self._token = token
        self._call_s = call_timeout_s
        self._total_s = total_timeout_s
        self._end = time.monotonic() + total_timeout_s
        self._max_bytes = max_bytes
        self.api: Any = GrafanaApi.from_url(url, credential=token, timeout=call_timeout_s)
        client = self.api.client
        self._transport = _Transport(max_bytes, dict(client.s.headers))
        client.s.close()
        client.s = self._transport

    def close(self) -> None:
        self._transport.close()

    def call(self, request: Callable[[Any], object], *keys: str) -> dict[str, Any]:
        """`request(api)` within its deadline; its answer, a JSON object with string `keys`."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise PublishError(
                f"publishing to Grafana at {self.base} did not finish within {self._total_s:g} s"
            )
        limit = min(self._call_s, left)
        self._transport.deadline = time.monotonic() + limit
        self._transport.current = "a request"
        outcome = _Outcome()

        def work() -> None:
            try:
                outcome.value = request(self.api)
            except BaseException as exc:  # handed to the caller, never printed by the thread
                outcome.error = exc

        worker = threading.Thread(target=work, name="grafana-call", daemon=True)
        worker.start()
        worker.join(limit)
        what = self._transport.current
        if worker.is_alive() or isinstance(outcome.error, _Late | GrafanaTimeoutError):
            self._transport.deadline = time.monotonic()  # the worker's next read gives up
            if limit < self._call_s:  # cut short by the whole run's deadline
                raise PublishError(
                    f"publishing to Grafana at {self.base} did not finish within "
                    f"{self._total_s:g} s (waiting for {what})"
                ) from None
            raise PublishError(
                f"Grafana at {self.base} did not answer {what} within {limit:g} s"
            ) from None
        if outcome.error is not None:
            error = self._error(outcome.error, what)
            if error is outcome.error:
                raise error
            raise error from None
        return self._checked(outcome.value, what, keys)

    def _error(self, exc: BaseException, what: str) -> BaseException:
        """The one-line error for what went wrong on the wire; anything else as it was."""
        where = f"Grafana at {self.base}"
        if isinstance(exc, _TooLarge):
            return PublishError(f"{where} answered {what} with more than {self._max_bytes} bytes")
        if isinstance(exc, _Redirected):
            return PublishError(
                f"{where} answered {what} with a redirect ({exc.status}): pass --url the "
                "address Grafana answers on (scheme, host, port and sub-path)"
            )
        if isinstance(exc, GrafanaException) and exc.status_code:
            return PublishError(
                f"{where} refused {what}: {one_line(str(exc.message), self._token)}",
                status=exc.status_code,
            )
        if isinstance(exc, niquests.exceptions.JSONDecodeError | UnicodeDecodeError):
            return PublishError(f"{where} answered {what} with a body that is not JSON")
        if isinstance(exc, GrafanaException | niquests.exceptions.RequestException | OSError):
            return PublishError(f"cannot reach Grafana at {self.base}: {type(exc).__name__}")
        return exc  # not the wire's doing (a bug here): reported as it is

    def _checked(self, answer: object, what: str, keys: tuple[str, ...]) -> dict[str, Any]:
        if isinstance(answer, dict):
            missing = [key for key in keys if not isinstance(answer.get(key), str)]
            if not missing:
                return answer
            got = "a JSON object without " + ", ".join(map(repr, missing))
        elif isinstance(answer, str):
            got = "text"
        elif answer is None:
            got = "no body"
        else:
            got = f"a JSON {type(answer).__name__}"
        wanted = "a JSON object" + (" with " + ", ".join(map(repr, keys)) if keys else "")
        raise PublishError(f"Grafana at {self.base} answered {what} with {got}; expected {wanted}")
