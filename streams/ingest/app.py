"""The ingest gateway: HTTP in, Kafka out, for systems that cannot produce to Kafka.

Request lifecycle (docs/ingest.md has the user's view):

1. request id (`X-Request-ID` echoed when sane, else generated); `Authorization` or
   `Content-Type` given twice -> 400; bearer token -> 401/403;
2. body within `max_body_bytes` / `max_items` -> else 413; JSON, array or NDJSON;
3. every item judged by `decode_input` (the stream engine's own validation);
4. any rejection without `?partial=true` -> 422, nothing published; with it,
   rejections become dead letters;
5. accepted records and dead letters go out in **one Kafka transaction**;
   202 only after it committed; Kafka unavailable -> 503 + `Retry-After`,
   and the aborted transaction is invisible to `read_committed` consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.common import IDENTIFIER_PATTERN
from schemas.dead_letter import DeadLetter, DeadLetterSource, ReasonCode
from schemas.deadline import cancel_requests, cancelled_since
from schemas.epcis import EpcisMapping
from schemas.json_blank import json_blank
from schemas.plan import load_plan
from streams.ingest.admission import Admission, jittered_retry_after
from streams.ingest.auth import Role, TokenEntry, TokenRegistry, bearer_token, named_first
from streams.ingest.batch import (
    ENDPOINTS,
    EVENT_LIST,
    Endpoint,
    Verdict,
    judge_epcis,
    judge_items,
)
from streams.ingest.body import (
    Body,
    BodyTimeout,
    BodyTooLarge,
    BodyTooSlow,
    MinRate,
    precheck_array,
    read_body,
    split_items,
)
from streams.ingest.docs_page import render_docs_page
from streams.ingest.media_type import UnsupportedMediaType, media_type
from streams.ingest.metrics import GatewayMetrics
from streams.ingest.openapi import METRICS_MEDIA_TYPE, install_openapi, partial_path
from streams.ingest.outage import OutageLog, TopicRefusals
from streams.ingest.publisher import (
    Publisher,
    PublisherConfig,
    PublishFailed,
    PublishNotAuthorized,
    PublishOutOfTime,
    PublishStopped,
    PublishTooLarge,
    PublishUnavailable,
    TransactionalPublisher,
    min_publish_s,
)
from streams.ingest.readiness import Readiness, TopicPreparation
from streams.ingest.records import OutRecord
from streams.ingest.request_id import refused_by_protocol, request_id_of
from streams.ingest.settings import GatewayConfig
from streams.ingest.single_headers import repeated_header
from streams.topics import CUSTOMERS, DEAD_LETTER, TopicNames

log = structlog.stdlib.get_logger(__name__)


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_CUSTOMER_ID = re.compile(IDENTIFIER_PATTERN)


class HttpError(Exception):
    """An answer other than 202, with a stable `error` code for clients."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.status, self.error, self.detail = status, error, detail
        self.headers = headers or {}
        self.extra = extra or {}
        super().__init__(detail)


class RequestIdMiddleware:
    """Gives every request an id (`request.state.request_id`) and echoes it in `X-Request-ID`;
    `Server-Timing: app;dur=<ms>` says how long the gateway took, from the request's arrival.

    Pure ASGI rather than `BaseHTTPMiddleware`: it sits on the hot path.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_of(scope)
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                took = f"app;dur={(time.perf_counter() - started) * 1000:.1f}".encode()
                message["headers"] = [*message.get("headers", []), header, (b"server-timing", took)]
            await send(message)

        await self.app(scope, receive, send_with_id)


def shutting_down(
    retry_after_s: int, *, started: bool = True, when: str = "while this request waited for a slot"
) -> HttpError:
    """503 `shutting_down`: the gateway stopped before the request was done (`started`:
    it may have published; else nothing was, and `when` says where it was cut). Its
    `Retry-After` is jittered: every client cut by one stop would otherwise come back in
    the same second."""
    retry_after = str(jittered_retry_after(retry_after_s))
    detail = (
        "the gateway shut down before this request was done; whether it was published is "
        f"not known, retry in {retry_after} s (a repeated item is idempotent downstream)"
        if started
        else f"the gateway shut down {when}; nothing was published, retry in {retry_after} s"
    )
    headers = {"Retry-After": retry_after, "Connection": "close"}
    return HttpError(503, "shutting_down", detail, headers=headers)


def _unpublished(retry_after_s: int, why: str, outcome_unknown: bool) -> tuple[str, dict[str, str]]:
    """The detail and headers of a 503 of a publish: nothing of the request was published,
    or, when Kafka stopped answering after the commit was sent, that is not known (it said
    "nothing was published" of requests Kafka had committed). Its `Retry-After` is
    jittered: after an outage every client refused during it came back in the same second."""
    retry = str(jittered_retry_after(retry_after_s))
    outcome = (
        "whether it was committed is not known; posting it again is safe (the engine "
        "takes a scan or a status once per event_id)"
        if outcome_unknown
        else "nothing was published"
    )
    return f"{why}; {outcome}, retry in {retry} s", {"Retry-After": retry}


def kafka_unavailable(retry_after_s: int, why: str, *, outcome_unknown: bool = False) -> HttpError:
    """503 `kafka_unavailable`: Kafka failed the request (unreachable, it did not answer in
    the time it had), or the topics are not prepared yet. The code an operator alerts on:
    only Kafka's failures are answered with it."""
    detail, headers = _unpublished(retry_after_s, why, outcome_unknown)
    return HttpError(503, "kafka_unavailable", detail, headers=headers)


def publish_timeout(retry_after_s: int, why: str, *, outcome_unknown: bool = False) -> HttpError:
    """503 `publish_timeout`: the request's own `publish_timeout_s` ran out inside the
    gateway (it waited for a busy producer, was left behind in a retry one at a time, or
    had less time left than a producer's start may take): plain overload, Kafka not seen
    failing. Answered `kafka_unavailable` before, it paged whoever alerted on that."""
    detail, headers = _unpublished(retry_after_s, why, outcome_unknown)
    return HttpError(503, "publish_timeout", detail, headers=headers)


def publish_failed(retry_after_s: int) -> HttpError:
    """503 `publish_failed`: the gateway itself failed publishing the request (a fault of
    its own or a library's, or its group never answered: a bug to report), not Kafka,
    which may have committed it. Answered `kafka_unavailable` before, it paged whoever
    runs Kafka for the gateway's fault."""
    detail, headers = _unpublished(
        retry_after_s,
        "the gateway failed publishing this request (a fault of its own, not Kafka's)",
        outcome_unknown=True,
    )
    return HttpError(503, "publish_failed", detail, headers=headers)


def topic_not_authorized(retry_after_s: int, topics: Sequence[str]) -> HttpError:
    """503 `topic_not_authorized`: Kafka refuses the gateway's principal a topic of the
    request (an ACL missing). A 5xx, not a 403: the client's token is fine and an operator
    must fix the gateway's; other topics publish meanwhile."""
    why = f"Kafka refuses this gateway's writes to {', '.join(topics)} (an ACL is missing)"
    detail, headers = _unpublished(retry_after_s, why, outcome_unknown=False)
    return HttpError(503, "topic_not_authorized", detail, headers=headers)


def _take_back_cancel() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        task.uncancel()


class ShutdownAnswer:
    """A request cancelled by a shutdown, wherever the cancel lands, ends with a 503
    (`shutting_down`, `Retry-After`) when its response has not started, else just ends;
    one warning line, no traceback. The operations answer it themselves (logged and
    counted like any error); this catches the rest."""

    def __init__(self, app: ASGIApp, retry_after_s: int) -> None:
        self.app = app
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            _take_back_cancel()
            request_id = scope.get("state", {}).get("request_id") or uuid.uuid4().hex
            log.warning(
                "request cut by shutdown",
                request_id=request_id,
                path=scope.get("path"),
                response_started=started,
            )
            if started:
                return
            exc = shutting_down(self.retry_after_s)
            body = {"request_id": request_id, "error": exc.error, "detail": exc.detail}
            await _json(exc.status, body, exc.headers)(scope, receive, tracking_send)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def operation(request: Request) -> str:
    """The operation a request was routed to, as the OpenAPI document names it
    (`DELETE /v1/customers/{customer_id}`): the route's path, not the request's, so an
    answer never echoes what the client put in the path."""
    route = request.scope.get("route")
    return f"{request.method} {getattr(route, 'path', '(no route)')}"


def _partial(request: Request) -> bool:
    """`?partial=`: one of the spellings of true or false, nothing around it (a query
    value has no whitespace to strip: `str.strip()` read `%0Ctrue` or `%C2%A0true` as
    true); anything else is 422 `bad_parameter`."""
    values = request.query_params.getlist("partial")
    if not values:
        return False
    text = values[-1].lower()
    if len(values) == 1 and text in _TRUE | _FALSE:
        return text in _TRUE
    raise HttpError(
        422,
        "bad_parameter",
        "`partial` must be given once, as true or false",
        extra={"loc": "partial"},
    )


def _single_headers(request: Request) -> None:
    """400 when `Authorization` or `Content-Type` is given twice (streams.ingest.
    single_headers): which copy counts is ambiguous."""
    if (name := repeated_header(request.scope["headers"])) is not None:
        raise HttpError(
            400,
            "bad_request",
            f"the `{name}` header is given more than once; HTTP allows it once",
        )


class Gateway:
    """The request handling, with everything it needs bound once at start-up."""

    def __init__(
        self,
        settings: GatewayConfig,
        tokens: TokenRegistry,
        mapping: EpcisMapping | None,
        publisher: Publisher,
        metrics: GatewayMetrics,
        preparation: TopicPreparation | None = None,
    ) -> None:
        self.settings = settings
        self.preparation = preparation
        self.limits = settings.gateway
        self.tokens = tokens
        self.mapping = mapping
        self.publisher = publisher
        self.metrics = metrics
        self.topics = TopicNames(settings.kafka.topic_prefix)
        self.plan = load_plan(settings.engine.plan)
        self.max_skew = timedelta(seconds=self.limits.max_clock_skew_s)
        self.readiness = Readiness(
            self._kafka_answers,
            interval_s=self.limits.readiness_interval_s,
            deadline_s=self.limits.readiness_timeout_s,
        )
        self.starting: str | None = None
        """Once the topics are prepared, what the start still waits for: a producer's
        warm-up (on a new cluster, seconds: its first transactional producer makes
        Kafka create the transaction log). /readyz said `"kafka": "unreachable"` then,
        from the check made while the topics were prepared, of a Kafka that had just
        created them."""
        self.outage = OutageLog()
        self.refused_topics = TopicRefusals()
        self.admission = Admission(self.limits.limit_concurrency, self.limits.admission_wait_s)
        self.min_body_rate = (
            MinRate(self.limits.min_body_bytes_per_s, self.limits.body_rate_grace_s)
            if self.limits.min_body_bytes_per_s
            else None
        )
        metrics.waiting.set_function(lambda: self.admission.waiting)
        publisher.observe_groups(metrics)
        self.executor = ThreadPoolExecutor(
            max_workers=self.limits.judge_threads, thread_name_prefix="gateway-judge"
        )

    def authenticate(self, request: Request) -> TokenEntry:
        token = bearer_token(request.headers.get("authorization"))
        principal = self.tokens.authenticate(token) if token else None
        if principal is None:
            raise HttpError(
                401,
                "unauthorized",
                "a valid `Authorization: Bearer <token>` header is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return principal

    @staticmethod
    def authorize(principal: TokenEntry, endpoint: Endpoint, request: Request) -> None:
        """Apart from `authenticate`, so a request refused 403 is logged with its
        caller's name: who tried what they may not is what an operator looks for. The
        answer names the operation refused (one endpoint has several: its partial path,
        the customers' DELETE) and the roles that may, so the caller knows which token
        to use."""
        if principal.role not in endpoint.roles:
            allowed = ", ".join(repr(role.value) for role in sorted(endpoint.roles))
            raise HttpError(
                403,
                "forbidden",
                f"role {principal.role.value!r} may not {operation(request)} "
                f"(roles that may: {allowed})",
            )

    async def handle(
        self, request: Request, endpoint: Endpoint, partial_mode: bool = False
    ) -> Response:
        """One ingest request; `partial_mode` is the partial operation
        (`/v1/partial/...`), else `?partial=` decides."""
        started = time.perf_counter()
        request_id: str = request.state.request_id
        principal: TokenEntry | None = None
        counts = (0, 0)
        error: str | None = None
        try:
            _single_headers(request)
            principal = self.authenticate(request)
            self.authorize(principal, endpoint, request)
            partial = partial_mode or _partial(request)
            async with self._admitted():
                with self.metrics.in_flight.labels(endpoint.name).track_inprogress():
                    response, counts = await self._ingest(request, endpoint, partial, principal)
        except (HttpError, asyncio.CancelledError) as caught:
            error, response, rejected = self._refusal(request_id, caught)
            if rejected is not None:
                counts = (0, rejected)
        if error is None or not refused_by_protocol(request.scope):
            # (a refusal of the HTTP layer is counted there, once: protocol_refusals)
            self.metrics.requests.labels(endpoint.name, str(response.status_code)).inc()
            if error is not None:
                self.metrics.errors.labels(endpoint.name, error).inc()
        if counts[0]:
            self.metrics.items.labels(endpoint.name, "accepted").inc(counts[0])
        if counts[1]:
            self.metrics.items.labels(endpoint.name, "rejected").inc(counts[1])
        log.info(
            "ingest",
            request_id=request_id,
            endpoint=endpoint.name,
            caller=principal.name if principal else None,
            status=response.status_code,
            # only on a refused request: `error=None` on every other line made a
            # search of the gateway's log for errors find every request
            **({} if error is None else {"error": error}),
            accepted=counts[0],
            rejected=counts[1],
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return response

    async def _ingest(
        self, request: Request, endpoint: Endpoint, partial: bool, principal: TokenEntry
    ) -> tuple[Response, tuple[int, int]]:
        request_id: str = request.state.request_id
        try:
            kind = media_type(
                request.headers.get("content-type"),
                ", ".join(request.headers.getlist("content-encoding")),
            )
            body = await read_body(
                request,
                self.limits.max_body_bytes,
                self._precheck(endpoint, kind),
                self.limits.body_timeout_s,
                self.min_body_rate,
            )
            # Counting, parsing and validating are CPU work: off the event loop, so one
            # large request never stalls the others (or the health probes).
            verdicts = await asyncio.get_running_loop().run_in_executor(
                self.executor,
                self._judge,
                request_id,
                endpoint,
                body,
                kind,
                principal.role is Role.UNIT,
            )
        except BodyTooLarge as exc:
            raise HttpError(413, "too_large", str(exc)) from None
        except BodyTimeout as exc:
            close = {"Connection": "close"}
            raise HttpError(408, "body_timeout", str(exc), headers=close) from None
        except BodyTooSlow as exc:
            self._log_slow_body(request, endpoint, principal, exc)
            close = {"Connection": "close"}
            raise HttpError(408, "body_too_slow", str(exc), headers=close) from None
        except ClientDisconnect:
            if refused_by_protocol(request.scope):  # answered and counted there
                raise HttpError(
                    400, "bad_request", "the HTTP layer refused the body (not valid HTTP/1.1)"
                ) from None
            # No one to answer; the status is for the log line and the metrics.
            raise HttpError(
                400, "client_disconnected", "the client went away before sending the whole body"
            ) from None
        except UnsupportedMediaType as exc:
            raise HttpError(415, "unsupported_media_type", str(exc)) from None
        # an item whose check raised is a bug of the gateway's (`item processing failed`),
        # answered as the client's own fault (422, or dead-lettered): counted for the
        # ChainwatchGatewayFaults alert, which nothing else told of it
        faults = sum(v.reason_code is ReasonCode.PROCESSING_ERROR for v in verdicts)
        if faults:
            self.metrics.item_faults.labels(endpoint.name).inc(faults)
        if not verdicts:
            raise HttpError(422, "empty", "the request holds no items")
        if principal.role is Role.UNIT:
            claims = {c for v in verdicts for c in ((v.unit_id, v.stage), *v.also_claims)}
            foreign = sorted({f for unit, stage in claims if (f := principal.foreign(unit, stage))})
            if foreign:
                raise HttpError(
                    403,
                    "forbidden",
                    f"token {principal.name!r} may only post for unit {principal.unit_id!r}"
                    + (f" and stages {', '.join(principal.stages)}" if principal.stages else "")
                    + f", not for {named_first(foreign)}",
                )
        accepted = [v for v in verdicts if v.accepted]
        rejected = [v for v in verdicts if not v.accepted]
        if rejected and not partial:
            raise HttpError(
                422,
                "invalid_items",
                f"{len(rejected)} of {len(verdicts)} items are invalid; nothing was published "
                "(fix them, or post with ?partial=true to dead-letter them)",
                extra={
                    "accepted": 0,
                    "rejected": len(rejected),
                    "items": [self._rejection(v, None) for v in rejected],
                },
            )
        topic = self.topics(endpoint.topic)
        records = [OutRecord(topic, v.key, v.value) for v in accepted]
        now = datetime.now(UTC)
        dead_letters = [self._dead_letter(v, request_id, now) for v in rejected]
        dead_topic = self.topics(DEAD_LETTER)
        records.extend(OutRecord(dead_topic, None, dl.encode()) for dl in dead_letters)
        placements = await self._publish(endpoint, records)
        results: list[dict[str, Any]] = [
            {
                "index": v.index,
                "status": "accepted",
                "key": v.key.decode() if v.key else None,
                "partition": p.partition,
                "offset": p.offset,
            }
            for v, p in zip(accepted, placements, strict=False)
        ]
        results.extend(self._rejection(v, dl) for v, dl in zip(rejected, dead_letters, strict=True))
        results.sort(key=lambda r: int(r["index"]))
        answer = {
            "request_id": request_id,
            "topic": topic,
            "accepted": len(accepted),
            "rejected": len(rejected),
            "items": results,
        }
        return _json(202, answer), (len(accepted), len(rejected))

    def _log_slow_body(
        self, request: Request, endpoint: Endpoint, principal: TokenEntry, exc: BodyTooSlow
    ) -> None:
        """A warning with the numbers (the `ingest` line has only the code): a trickling
        body is how a client with a valid token would hold the request slots."""
        client = request.client
        log.warning(
            "request body too slow",
            request_id=request.state.request_id,
            endpoint=endpoint.name,
            caller=principal.name,
            client=f"{client.host}:{client.port}" if client else None,
            received_bytes=exc.received,
            elapsed_s=round(exc.elapsed_s, 1),
            min_bytes_per_s=self.limits.min_body_bytes_per_s,
        )

    def _precheck(self, endpoint: Endpoint, kind: str) -> Callable[[bytes], None] | None:
        if kind == "ndjson":
            return None
        path = EVENT_LIST if endpoint.name == "epcis" else ()
        return precheck_array(path, self.limits.max_items, self.limits.max_item_bytes)

    def _judge(
        self, request_id: str, endpoint: Endpoint, body: Body, kind: str, unit_token: bool = False
    ) -> list[Verdict]:
        # what is logged while judging (`item processing failed`) names the request: on
        # the executor's thread, beside other requests' items, it is otherwise anonymous
        with structlog.contextvars.bound_contextvars(request_id=request_id, endpoint=endpoint.name):
            return self._judge_items(endpoint, body, kind, unit_token)

    def _judge_items(
        self, endpoint: Endpoint, body: Body, kind: str, unit_token: bool
    ) -> list[Verdict]:
        limits = self.limits
        if endpoint.name != "epcis":
            items = split_items(body, kind, limits.max_items, limits.max_item_bytes)
            return judge_items(
                items, endpoint, self.plan, self.max_skew,
                every_claim_of=unit_token,
            )  # fmt: skip
        if self.mapping is None:
            raise HttpError(
                404, "epcis_not_configured", "this gateway has no EPCIS mapping (--epcis-mapping)"
            )
        if json_blank(body):  # not `strip()`: a form feed or U+00A0 is no JSON, not nothing
            return []
        result = judge_epcis(
            body,
            self.mapping,
            endpoint,
            self.plan,
            limits.max_items,
            limits.max_item_bytes,
            self.max_skew,
        )
        if result.document_error is not None:
            return [result.document_error]
        return result.verdicts

    async def _kafka_answers(self) -> bool:
        """The readiness check; not made while the topics are prepared (that says it)."""
        return self._topics_waiting_for() is None and await self.publisher.ready()

    def _topics_waiting_for(self) -> str | None:
        """What the gateway still waits for before it may publish (None: nothing)."""
        return None if self.preparation is None else self.preparation.waiting_for()

    def waiting_for(self) -> str | None:
        """What the gateway still waits for before it is ready (None: nothing): its
        topics, then the start of its first producer (`starting`)."""
        return self._topics_waiting_for() or self.starting

    async def _topics_prepared(self) -> None:
        """Wait for the topics (a post right after the start), as long as a publish may take."""
        if self.preparation is None or (waiting := self._topics_waiting_for()) is None:
            return
        try:
            async with asyncio.timeout(self.limits.publish_timeout_s):
                await self.preparation.prepared()
        except TimeoutError:
            raise self._unavailable(f"waiting for {waiting} to prepare the topics") from None

    async def _publish(self, endpoint: Endpoint, records: list[OutRecord]) -> list[Any]:
        """Publish within one `publish_timeout_s`, the wait for the topics included (a
        post that got the topics at its deadline's end had a second one to publish)."""
        started, began = time.perf_counter(), time.monotonic()  # began: the outage log's clock
        await self._topics_prepared()
        budget = self.limits.publish_timeout_s
        left = budget - (time.perf_counter() - started)
        if left < min_publish_s(budget):
            # prepared at the deadline's end: a publish with milliseconds left would only
            # time out, and throw away the producer it was starting on the way
            raise self._unavailable("the topics were prepared too late for this request")
        try:
            placements = await self.publisher.publish(records, within_s=left)
        except PublishTooLarge as exc:
            raise HttpError(413, "too_large", str(exc)) from None
        except PublishStopped as exc:
            raise shutting_down(
                self.limits.retry_after_s,
                started=exc.outcome_unknown,
                when="before this request's commit",
            ) from None
        except PublishOutOfTime as exc:
            raise publish_timeout(
                self.limits.retry_after_s,
                "the gateway's Kafka producers were busy until this request's time "
                f"({budget:g} s) ran out",
                outcome_unknown=exc.outcome_unknown,
            ) from None
        except PublishNotAuthorized as exc:
            self.refused_topics.refused(exc.topics, endpoint.name, str(exc))
            raise topic_not_authorized(self.limits.retry_after_s, exc.topics) from None
        except PublishFailed:  # logged where it failed; says nothing of Kafka
            raise publish_failed(self.limits.retry_after_s) from None
        except PublishUnavailable as exc:
            if exc.kafka_failed:  # not a fault of the gateway's own: Kafka is gone
                self.readiness.note(False, str(exc))
                self.outage.refused(endpoint.name, str(exc), began)
            if exc.outcome_unknown:
                raise self._unavailable(
                    "Kafka did not answer the request's commit", outcome_unknown=True
                ) from None
            raise self._unavailable("Kafka did not take the request") from None
        self.readiness.note(True)
        self.outage.published()
        self.metrics.publish_seconds.labels(endpoint.name).observe(time.perf_counter() - started)
        return placements

    @asynccontextmanager
    async def _admitted(self) -> AsyncIterator[None]:
        """Within a slot among the `limit_concurrency` requests handled at once (streams.
        ingest.admission), taken after the token was checked: a client without one never
        waits, nor holds a slot. Beyond, 503 `overloaded` after `admission_wait_s`."""
        try:
            admitted = await self.admission.enter()
        except asyncio.CancelledError:
            # a stop cut it before it started: "whether it was published is not known"
            # (what a cut request is told) would send a client to check for nothing
            _take_back_cancel()
            raise shutting_down(self.limits.retry_after_s, started=False) from None
        if not admitted:
            retry = str(jittered_retry_after(self.limits.retry_after_s))
            raise HttpError(
                503,
                "overloaded",
                f"the gateway handles {self.admission.limit} requests at once and none ended "
                f"within {self.admission.wait_s:g} s; nothing was published, retry in {retry} s",
                headers={"Retry-After": retry},
            )
        try:
            yield
        finally:
            self.admission.leave()

    def _refusal(
        self, request_id: str, caught: HttpError | asyncio.CancelledError
    ) -> tuple[str, Response, int | None]:
        """The error code, the answer and the rejected items' count of a refused request.
        (A helper, so no local of the caller keeps the exception - and through its
        traceback the request's body - alive after the `except` block.)"""
        exc = caught if isinstance(caught, HttpError) else self._cut_by_shutdown()
        body = {"request_id": request_id, "error": exc.error, "detail": exc.detail, **exc.extra}
        rejected = int(exc.extra["rejected"]) if "rejected" in exc.extra else None
        return exc.error, _json(exc.status, body, exc.headers), rejected

    def _cut_by_shutdown(self) -> HttpError:
        """The answer to a request cancelled by a shutdown (uvicorn cancels what still runs
        after `shutdown_grace_s`): 503 with `Retry-After`, not uvicorn's plain-text 500
        and an error with a traceback in the log. The cancel is taken back so the answer
        can still be sent (the task ends right after)."""
        _take_back_cancel()
        return shutting_down(self.limits.retry_after_s)

    def _unavailable(self, why: str, *, outcome_unknown: bool = False) -> HttpError:
        """`kafka_unavailable` with this gateway's `retry_after_s`."""
        return kafka_unavailable(self.limits.retry_after_s, why, outcome_unknown=outcome_unknown)

    @staticmethod
    def _rejection(verdict: Verdict, dead_letter: DeadLetter | None) -> dict[str, Any]:
        errors = verdict.errors or []
        result: dict[str, Any] = {
            "index": verdict.index,
            "status": "rejected" if dead_letter is None else "dead_lettered",
            "reason_code": verdict.reason_code.value if verdict.reason_code else None,
            "errors": [e.model_dump() for e in errors],
        }
        if dead_letter is not None:
            result["dead_letter_id"] = dead_letter.dead_letter_id
            result["reason"] = dead_letter.reason
        return result

    @staticmethod
    def _dead_letter(verdict: Verdict, request_id: str, now: datetime) -> DeadLetter:
        """The envelope, truncated (CONTRACT v1.2) when the original would not fit in Kafka."""
        assert verdict.reason_code is not None
        source = DeadLetterSource(kind="http", request_id=request_id, index=verdict.index)
        return DeadLetter.build(
            verdict.value, source, verdict.errors or [], verdict.reason_code, now
        )

    async def delete_customer(self, request: Request, customer_id: str) -> Response:
        """A CRM delete is a tombstone (null value) on the compacted topic; logged and
        counted like every ingest request (`customers-delete`), errors included."""
        endpoint = ENDPOINTS["customers"]
        started = time.perf_counter()
        request_id: str = request.state.request_id
        principal: TokenEntry | None = None
        error: str | None = None
        try:
            _single_headers(request)
            principal = self.authenticate(request)
            self.authorize(principal, endpoint, request)
            if len(customer_id) > 64 or not _CUSTOMER_ID.fullmatch(customer_id):
                raise HttpError(
                    422,
                    "bad_parameter",
                    "customer_id must be 1-64 characters of [A-Za-z0-9._:-]",
                    extra={"loc": "customer_id"},
                )
            topic = self.topics(CUSTOMERS)
            async with self._admitted():
                placements = await self._publish(
                    endpoint, [OutRecord(topic, customer_id.encode(), None)]
                )
        except (HttpError, asyncio.CancelledError) as caught:
            error, response, _ = self._refusal(request_id, caught)
        else:
            response = _json(
                202,
                {
                    "request_id": request_id,
                    "topic": topic,
                    "key": customer_id,
                    "partition": placements[0].partition,
                    "offset": placements[0].offset,
                },
            )
        self.metrics.requests.labels(_DELETE, str(response.status_code)).inc()
        if error is not None:
            self.metrics.errors.labels(_DELETE, error).inc()
        log.info(
            "tombstone",
            request_id=request_id,
            endpoint=_DELETE,
            caller=principal.name if principal else None,
            status=response.status_code,
            **({} if error is None else {"error": error}),
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return response


_DELETE = "customers-delete"
"""The `endpoint` label of `DELETE /v1/customers/{customer_id}` in metrics and logs."""


def default_publisher(settings: GatewayConfig) -> TransactionalPublisher:
    g = settings.gateway
    return TransactionalPublisher(
        PublisherConfig(
            bootstrap=settings.kafka.endpoint,
            transactional_id=g.transactional_id or f"{settings.engine.app_id}-gateway",
            pool_size=g.producers,
            publish_timeout_s=g.publish_timeout_s,
            max_group_records=g.max_items,  # a group is no bigger than one request may be
            max_group_bytes=g.max_body_bytes,
        )
    )


def _from_allowed(
    request: Request, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    client = request.client
    if client is None:
        return False
    try:
        address = ipaddress.ip_address(client.host)
    except ValueError:
        return False
    return any(address in network for network in networks)


STARTING_PRODUCER = "the start of the gateway's first Kafka producer"
"""What `/healthz` and `/readyz` say the gateway waits for once its topics are prepared."""


def create_gateway_app(  # noqa: C901 - the routes are closures over one gateway
    settings: GatewayConfig,
    tokens: TokenRegistry,
    mapping: EpcisMapping | None = None,
    producer: Publisher | None = None,
    preparation: TopicPreparation | None = None,
) -> FastAPI:
    """The gateway as an ASGI app; the publisher starts and stops with the app's lifespan.

    `preparation` prepares the topics in the background while the gateway serves, not
    ready until it is done (`chainwatch gateway` passes one; tests prepare them before).
    """
    publisher = producer if producer is not None else default_publisher(settings)
    metrics = GatewayMetrics(max_group_records=settings.gateway.max_items)
    metrics.start_series(ENDPOINTS, without_items=[_DELETE])
    gateway = Gateway(settings, tokens, mapping, publisher, metrics, preparation)
    ops_networks = settings.gateway.ops_network_list()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        preparing: asyncio.Task[None] | None = None
        if preparation is None:
            await publisher.start()
        else:  # a producer is warmed once there are topics to publish to

            async def prepare_then_warm() -> None:
                gateway.starting = STARTING_PRODUCER  # said once the topics are prepared
                try:
                    await preparation.run()
                    await publisher.start()
                    await gateway.readiness.check_once()  # ready now, not at the next check
                finally:  # said until the check has answered (ready, or Kafka gone since)
                    gateway.starting = None

            preparing = asyncio.create_task(prepare_then_warm(), name="gateway-topics")
        await gateway.readiness.start()
        try:
            yield
        finally:
            # a cancel of our task during the shutdown goes on to stop the publisher (its
            # producers' transactions), then is handed on: the preparation's own
            # `CancelledError`, suppressed here, took it along and the task ran on
            baseline = cancel_requests()
            try:
                if preparing is not None:
                    preparing.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await preparing
                await gateway.readiness.stop()
            finally:
                await publisher.stop()
                gateway.executor.shutdown(wait=False, cancel_futures=True)
            if cancelled_since(baseline):
                raise asyncio.CancelledError

    app = FastAPI(
        title="Chainwatch ingest gateway",
        version="1",
        description="HTTP and EPCIS 2.0 ingest into Chainwatch's Kafka topics (docs/ingest.md).",
        lifespan=lifespan,
        # `/v1/scans/` is a 404 like any unknown path: Starlette's redirect to the path
        # without the slash was built from the client's Host header, and behind a TLS
        # proxy it pointed the client at plain http
        redirect_slashes=False,
        # Swagger UI and ReDoc load from a CDN: blank on a plant network without internet
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gateway
    app.add_middleware(ShutdownAnswer, retry_after_s=settings.gateway.retry_after_s)
    app.add_middleware(RequestIdMiddleware)  # outside: its header is on every answer

    def error_response(request: Request, status: int, error: str, detail: str) -> Response:
        request_id = getattr(request.state, "request_id", None) or uuid.uuid4().hex
        return _json(status, {"request_id": request_id, "error": error, "detail": detail})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        response = error_response(
            request,
            exc.status_code,
            _ERROR_NAMES.get(exc.status_code, "http_error"),
            str(exc.detail),
        )
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(request, 422, "bad_parameter", f"{where}: {first.get('msg', '')}")

    def route(endpoint: Endpoint, partial: bool) -> Callable[[Request], Awaitable[Response]]:
        async def ingest(request: Request) -> Response:
            return await gateway.handle(request, endpoint, partial)

        mode = "_partial" if partial else ""
        ingest.__name__ = f"post{mode}_{endpoint.name.replace('-', '_')}"
        return ingest

    for endpoint in ENDPOINTS.values():
        for partial in (False, True):
            app.add_api_route(
                partial_path(endpoint) if partial else endpoint.path,
                route(endpoint, partial),
                methods=["POST"],
                summary=("Partial mode: " if partial else "") + endpoint.summary,
                status_code=202,
                response_class=Response,
                tags=["ingest"],
            )

    @app.delete("/v1/customers/{customer_id}", status_code=202, tags=["ingest"])
    async def delete_customer(request: Request, customer_id: str) -> Response:
        """Delete a CRM customer: a tombstone on `crm.customers`."""
        return await gateway.delete_customer(request, customer_id)

    # HEAD after GET: a 405 at these paths names the first route's methods (`Allow: GET`)
    @app.head("/healthz", include_in_schema=False)  # probes that ask with HEAD
    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Response:
        """The process serves requests (liveness), and says what it still waits for."""
        waiting = gateway.waiting_for()
        return _json(
            200, {"status": "ok"} if waiting is None else {"status": "ok", "waiting_for": waiting}
        )

    def ops_only(request: Request) -> Response | None:
        if _from_allowed(request, ops_networks):
            return None
        return error_response(
            request,
            403,
            "forbidden",
            f"{operation(request)} answers only clients in gateway.ops_networks",
        )

    @app.head("/readyz", include_in_schema=False)
    @app.get("/readyz", tags=["ops"])
    async def readyz(request: Request) -> Response:
        """Kafka answers (readiness, checked in the background): 503 while it does not."""
        if (refused := ops_only(request)) is not None:
            return refused
        retry = str(settings.gateway.retry_after_s)
        if (waiting := gateway.waiting_for()) is not None:
            return _json(
                503,
                {"status": "not_ready", "kafka": "waiting", "waiting_for": waiting},
                {"Retry-After": retry},
            )
        state = gateway.readiness.state()
        if state.ready:
            return _json(200, {"status": "ready", "kafka": "ok", "age_s": state.age_s})
        return _json(
            503,
            {"status": "not_ready", "kafka": "unreachable", "age_s": state.age_s},
            {"Retry-After": retry},
        )

    @app.get("/metrics", tags=["ops"])
    async def prometheus(request: Request) -> Response:
        """Prometheus metrics."""
        if (refused := ops_only(request)) is not None:
            return refused
        return Response(metrics.render(), media_type=METRICS_MEDIA_TYPE)

    install_openapi(app, ENDPOINTS.values(), settings.gateway.max_items)
    docs_page = render_docs_page(app.openapi())  # once: serving it costs nothing

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        """The OpenAPI document as a page that needs nothing from another host."""
        return Response(docs_page, media_type="text/html; charset=utf-8")

    return app


_ERROR_NAMES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
