"""Records on `alerts` that are not alerts: skipped, counted and logged with the reason.

Where they go: CONTRACT.md's `dead-letter` topic holds rejected *input*
records (orders, CRM, scans, unit status), written by the engine that rejects
them. `alerts` is an output, and the contract says nothing more about its
invalid records; a record there that is not an `Alert` (a tombstone, a
producer writing garbage, a contract breach such as a non-finite lateness) is a
defect upstream, not an input to dead-letter. So the notifier treats it as the
ClickHouse sink treats a bad record of any output topic (docs/sinks.md): it is
skipped (the endpoint's position moves past it: it can never be delivered, and
waiting on it would hold back every later alert), counted
(`chainwatch_webhook_invalid_alerts_total{endpoint}`) and logged as
`invalid_alert_skipped` with its topic, partition, offset and why, so it can be
found and read back from the topic. The decision is recorded in
docs/alert-channels.md.

The log is rate-limited: a producer writing garbage to `alerts` can send
thousands of records a second, and a line each would bury everything else. The
first record is logged at once, then at most one line per `window_s` carrying
how many were skipped since the last line (the counter has every one).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from aiokafka import TopicPartition
from pydantic import ValidationError

from schemas.log_throttle import LogThrottle
from sinks.webhooks.delivery import error_text

log = structlog.stdlib.get_logger(__name__)

MAX_REASON = 300
SHOWN_ERRORS = 3
"""Validation errors named in a reason; the rest are counted."""


class NotAnAlert(ValueError):
    """A record that cannot be an alert before it is even parsed (a tombstone)."""


def reason_for(exc: BaseException) -> str:
    """Why a record is no alert, in one bounded line: `loc: message` per error."""
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        parts = [
            f"{'.'.join(str(p) for p in error['loc']) or 'record'}: {error['msg']}"
            for error in errors[:SHOWN_ERRORS]
        ]
        text = "; ".join(parts)
        if len(errors) > SHOWN_ERRORS:
            text += f" (+{len(errors) - SHOWN_ERRORS} more)"
    elif isinstance(exc, NotAnAlert):
        text = str(exc)
    else:
        text = f"processing_error: {error_text(exc)}"
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def is_bug(exc: BaseException) -> bool:
    """Not a bad record but a failure of ours on a good one."""
    return not isinstance(exc, ValidationError | NotAnAlert)


class InvalidAlertLog:
    """One endpoint's skipped records, logged without flooding (see the module doc)."""

    def __init__(
        self, endpoint: str, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.endpoint = endpoint
        self._throttle = LogThrottle(window_s, clock)

    @property
    def window_s(self) -> float:
        return self._throttle.window_s

    @window_s.setter
    def window_s(self, seconds: float) -> None:
        self._throttle.window_s = seconds

    def skipped(self, tp: TopicPartition, offset: int, exc: BaseException) -> None:
        held_back = self._throttle.admit(self.endpoint)
        if held_back is None:
            return
        bug = is_bug(exc)
        (log.error if bug else log.warning)(
            "invalid_alert_skipped",
            endpoint=self.endpoint,
            topic=tp.topic,
            partition=tp.partition,
            offset=offset,
            reason=reason_for(exc),
            bug=bug,
            **({"exc_info": exc} if bug else {}),
            **({"more_since_last_line": held_back} if held_back else {}),
        )
