"""The log of Kafka not taking the gateway's requests: a few lines, not one per request.

While Kafka is down every post is answered 503, and a warning per request
buried everything else (17,621 `kafka unavailable` lines in 40 s under load).
Here the first refused request of an outage is logged at once, then at most one
line per `window_s` says how many were refused since the previous line, and one
line says when Kafka takes a request again. Every refusal is still counted
(`chainwatch_gateway_errors_total{error="kafka_unavailable"}`).

(`schemas.log_throttle.LogThrottle` throttles the sinks' and the engine's complaints
per kind; an outage also has an end, which this log says.)

A topic Kafka refuses the gateway's principal (`TopicRefusals`) is no outage: Kafka
answered, and the other topics publish. It is logged per topic, as often as an outage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import structlog

from schemas.log_throttle import LogThrottle

log = structlog.stdlib.get_logger(__name__)


class OutageLog:
    def __init__(self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._since: float | None = None
        """When the outage's first refused request began (`refused`'s `began`): `for_s`
        and `after_s` count from it, not from when that request gave up (up to
        `publish_timeout_s` later: a short outage said `after_s=0.0`)."""
        self._logged_at = 0.0
        self._held_back = 0  # refusals since the last line
        self._refused = 0  # refusals in this outage

    def refused(self, endpoint: str, error: str, began: float | None = None) -> None:
        """A request Kafka did not take; `began`: when it began, on this log's clock
        (`time.monotonic` unless given; now if not said)."""
        now = self._clock()
        began = now if began is None else min(began, now)
        self._refused += 1
        if self._since is None:
            self._since, self._logged_at = began, now
            log.warning("kafka unavailable", endpoint=endpoint, error=error)
            return
        self._since = min(self._since, began)  # one begun earlier, refused later
        if now - self._logged_at < self.window_s:
            self._held_back += 1
            return
        log.warning(
            "kafka unavailable",
            endpoint=endpoint,
            error=error,
            suppressed=self._held_back,
            refused=self._refused,
            for_s=round(now - self._since, 1),
        )
        self._logged_at, self._held_back = now, 0

    def published(self) -> None:
        """Kafka took a request: says so once after an outage."""
        if self._since is None:
            return
        log.info(
            "kafka available again",
            refused=self._refused,
            after_s=round(self._clock() - self._since, 1),
        )
        self._since, self._held_back, self._refused = None, 0, 0


class TopicRefusals:
    """Kafka refusing the gateway's principal a topic (`TopicAuthorizationFailed`, an ACL
    missing): an error per topic at most once per `window_s`, with how many of its
    refusals were held back since. Only the topic, the endpoint and Kafka's own error:
    nothing of the caller's (its token) is logged. Every refusal is still counted
    (`chainwatch_gateway_errors_total{error="topic_not_authorized"}`)."""

    def __init__(self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._throttle = LogThrottle(window_s, clock)

    def refused(self, topics: Iterable[str], endpoint: str, error: str) -> None:
        """A request Kafka refused for `topics`."""
        for topic in topics:
            held_back = self._throttle.admit(topic)
            if held_back is not None:
                log.error(
                    "kafka topic not authorized",
                    topic=topic,
                    endpoint=endpoint,
                    error=error,
                    suppressed=held_back,
                )
