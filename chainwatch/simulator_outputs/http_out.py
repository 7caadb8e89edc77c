"""Publishing simulated records through the HTTP ingest gateway (docs/ingest.md).

Records are batched per endpoint as JSON arrays and posted with
`?partial=true`, so the invalid share becomes dead letters at the gateway
instead of failing a whole batch (422). Order within each endpoint is kept:
a batch is sent before anything that must follow it. Two records do not fit
an array: a tombstone is `DELETE /v1/customers/{id}`, and a truncated
(malformed) record is posted alone as the raw body, which the gateway
dead-letters as one unparsable item. 503 (Kafka down) and connection errors
are retried with back-off, honouring `Retry-After` (each retry logged as
`simulate.gateway_retry`); 401/403 stop the run. Every request has one
wall-clock deadline, `REQUEST_DEADLINE_S`, connecting and the whole answer
included (`sinks.http_deadline`): a gateway that accepts and says nothing, or
sends a byte at a time, cannot hold the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from chainwatch.errors import UserError
from chainwatch.logs import get_logger
from chainwatch.settings import redact_url
from schemas.topics import CUSTOMERS, ORDERS, SCANS, UNIT_STATUS
from simulator.records import SimRecord
from sinks.http_deadline import DeadlineClient, failure_reason

log = get_logger(__name__)

ENDPOINT_OF_TOPIC = {
    SCANS: "/v1/scans",
    UNIT_STATUS: "/v1/unit-status",
    ORDERS: "/v1/orders",
    CUSTOMERS: "/v1/customers",
}
_RETRIES = 6
MAX_RETRY_AFTER_S = 60.0
"""A gateway's `Retry-After` is honoured up to this (a day-long one would hold the run silent)."""
REQUEST_DEADLINE_S = 15.0
"""How long one request to the gateway may take, all of it: the gateway answers within its
Kafka deadline (`publish_timeout_s`, 10 s) or says 503."""


@dataclass(slots=True)
class HttpCounts:
    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    refused: int = 0
    """Items of requests the gateway answered with an error (a 413 of a gateway whose
    `MAX_ITEMS` is below a batch, a 503 that outlasted the retries): neither published nor
    dead-lettered. They were counted as dead-lettered."""
    cut: int = 0
    """Items of requests a stop (Ctrl-C, SIGTERM) cut: not known to be taken (say, while
    retrying a gateway that does not answer); the run's last line counted them as sent."""
    per_status: dict[int, int] = field(default_factory=dict)


class HttpPublisher:
    """Batches records per endpoint: a batch goes out at `batch_size` items or
    `max_delay_s` after its first item (checked on every `send`)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        batch_size: int = 200,
        max_delay_s: float = 0.2,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client or DeadlineClient(
            deadline_s=REQUEST_DEADLINE_S, base_url=base_url.rstrip("/"), timeout=REQUEST_DEADLINE_S
        )
        self._where = redact_url(base_url.rstrip("/"))
        """The gateway's URL as errors and logs show it (a password in it masked)."""
        self._auth = {"Authorization": f"Bearer {token}"}
        self._batch_size = batch_size
        self._max_delay_s = max_delay_s
        self._clock = clock
        self._sleep = sleep
        self._buffers: dict[str, list[str]] = {}
        self._since: dict[str, float] = {}
        self.counts = HttpCounts()
        self._closed = False

    def send(self, record: SimRecord) -> None:
        path = ENDPOINT_OF_TOPIC[record.topic]
        if record.value is None:
            self._flush(path)
            self._request("DELETE", f"/v1/customers/{record.key}", None, 1)
        elif record.cut is not None:
            self._flush(path)
            self._request("POST", path, record.value_bytes(), 1)
        else:
            buffer = self._buffers.setdefault(path, [])
            if not buffer:
                self._since[path] = self._clock()
            buffer.append(record.value)
            if len(buffer) >= self._batch_size:
                self._flush(path)
        now = self._clock()
        for other, since in list(self._since.items()):
            if self._buffers.get(other) and now - since >= self._max_delay_s:
                self._flush(other)

    def _flush(self, path: str) -> None:
        buffer = self._buffers.get(path)
        if not buffer:
            return
        body = ("[" + ",".join(buffer) + "]").encode()
        count = len(buffer)
        buffer.clear()
        self._request("POST", path, body, count)

    def _request(self, method: str, path: str, body: bytes | None, items: int) -> None:
        try:
            self._request_with_retries(method, path, body, items)
        except KeyboardInterrupt:
            self.counts.cut += items
            raise

    def _request_with_retries(self, method: str, path: str, body: bytes | None, items: int) -> None:
        headers = dict(self._auth)
        params = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            params = {"partial": "true"}
        delay = 0.5
        for attempt in range(_RETRIES + 1):
            try:
                response = self._client.request(
                    method, path, content=body, params=params, headers=headers
                )
            except httpx.TransportError as exc:
                why = failure_reason(exc)
                if attempt == _RETRIES:
                    raise UserError(
                        f"gateway at {self._where} unreachable ({why}) after "
                        f"{attempt + 1} attempts; check the --gateway URL and that the "
                        "gateway runs"
                    ) from None
                log.warning(
                    "simulate.gateway_retry",
                    url=f"{self._where}{path}",
                    attempt=attempt + 1,
                    error=why,
                    retry_in_s=delay,
                )
                self._sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self.counts.requests += 1
            status = response.status_code
            self.counts.per_status[status] = self.counts.per_status.get(status, 0) + 1
            if status in (401, 403):
                raise UserError(f"gateway refused the token ({status}): {response.text[:200]}")
            if status == 503 and attempt < _RETRIES:
                retry_after = response.headers.get("retry-after", "")
                wait = float(retry_after) if retry_after.isdigit() else delay
                self._sleep(min(wait, MAX_RETRY_AFTER_S))
                delay = min(delay * 2, 10.0)
                continue
            if status >= 300:
                log.warning("simulate.gateway_error", path=path, status=status, items=items)
                self.counts.refused += items
                return
            self._count(response, items)
            return

    def _count(self, response: httpx.Response, items: int) -> None:
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if isinstance(answer, dict) and isinstance(answer.get("accepted"), int):
            self.counts.accepted += int(answer["accepted"])
            self.counts.rejected += int(answer.get("rejected") or 0)
        else:
            self.counts.accepted += items

    @property
    def failed(self) -> int:
        """Records the gateway refused (the run then exits 1, as a Kafka send that failed)."""
        return self.counts.refused

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for path in list(self._buffers):
                self._flush(path)
        finally:
            self._client.close()
