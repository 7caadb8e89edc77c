"""Settings of the webhook notifier (`chainwatch notify`).

Nested under `webhooks` in `chainwatch.settings.Settings` (`CHAINWATCH_WEBHOOKS__*`).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from schemas.settings_model import DAY_S, SettingsModel

DEFAULT_WARMUP_RECORDS = 50_000
DEFAULT_WARMUP_TIMEOUT_S = 60.0
MAX_ATTEMPTS_BOUND = 10_000
"""The largest `max_attempts`, one constant so that tests which leave ending a delivery's
retries to the horizon (not the count) ask for the most the setting takes, not a literal
past it (100_000 there broke eight tests when the bound came)."""

# A day bounds the waits a receiver may ask for or an operator may set (a `Retry-After` is
# read up to a day too). Every duration here is bounded: `timeout_s=inf` (or 1e300) was taken
# and left a hanging receiver's post, and so the notifier's stop, without any deadline (the
# stop-deadline thread died on an OverflowError, with a trace).


def parse_allowed_hosts(text: str) -> list[str]:
    """`allowed_hosts`'s entries: `hooks.example.com, *.slack.com,` -> two hosts (spaces
    beside an entry and empty entries dropped); none: every host is allowed."""
    return [h.strip() for h in text.split(",") if h.strip()]


class WebhookSettings(SettingsModel):
    """How `chainwatch notify` delivers alerts (docs/sinks.md)."""

    subscriptions: Path | None = Field(
        default=None, description="Subscriptions YAML; unset = `chainwatch notify` refuses."
    )
    allowed_hosts: str = Field(
        default="",
        description="Comma-separated; if set, endpoint hosts must be one of these "
        "(`*.example.com` matches subdomains).",
    )
    allowed_networks: str = Field(
        default="",
        description="Comma-separated networks (`10.20.0.0/16,127.0.0.1`) that endpoints may "
        "reach although not public; by default only public addresses are reached.",
    )
    timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Per attempt, from connecting to the answer (at most 600 s).",
    )
    initial_backoff_s: float = Field(default=1.0, gt=0, le=3600)
    max_backoff_s: float = Field(default=300.0, gt=0, le=DAY_S)
    retry_horizon_s: float = Field(
        default=3600.0,
        gt=0,
        le=7 * DAY_S,
        description="Give up (dead letter) this long after the first try (at most 7 days, "
        "the retention of `alerts`; keep it far below).",
    )
    min_retry_after_s: float = Field(
        default=1.0,
        ge=0,
        le=DAY_S,
        description="A receiver's `Retry-After` is raised to at least this.",
    )
    max_retry_after_s: float = Field(
        default=300.0,
        gt=0,
        le=DAY_S,
        description="A receiver's `Retry-After` is lowered to at most this.",
    )
    max_attempts: int = Field(
        default=20,
        ge=1,
        le=MAX_ATTEMPTS_BOUND,
        description="Attempts per delivery at most, within the horizon.",
    )
    queue_size: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Deliveries held in memory per endpoint; when full, that endpoint "
        "fetches no more alerts until there is room.",
    )

    warmup_records: int = Field(
        default=DEFAULT_WARMUP_RECORDS,
        ge=0,
        le=1_000_000,
        description="Records per partition an endpoint reads back before its committed "
        "position when it is assigned the partition (start, rebalance), to recognise the "
        "engine's unchanged re-publishes and not deliver them again; 0 = none (they are).",
    )
    warmup_timeout_s: float = Field(
        default=DEFAULT_WARMUP_TIMEOUT_S,
        gt=0,
        le=3600,
        description="Deadline of one endpoint's read-back (every Kafka call included); past "
        "it, or on an error, the endpoint delivers without it (a warning: repeats may be "
        "delivered again).",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: str) -> str:
        """Spaces beside an entry and empty entries (`a,,b`, a trailing comma) are dropped,
        but a value that names no host at all (`,`, a template's `${HOSTS},` with HOSTS
        empty) is refused: read as no list, it allowed every host, the opposite of what
        setting an allow-list asks for."""
        if value and not parse_allowed_hosts(value):
            raise ValueError(
                f"{value[:80]!r} names no host (a comma-separated list of hosts, "
                "`*.example.com` for subdomains); unset it to allow every host"
            )
        return value

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        for entry in filter(None, (e.strip() for e in value.split(","))):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not a network (10.0.0.0/8) or address") from None
        return value

    @model_validator(mode="after")
    def _ranges(self) -> WebhookSettings:
        """A lower bound above its upper one was ignored without a word (`RetryPolicy` takes
        the upper one): `MIN_RETRY_AFTER_S=600` still let a receiver's `Retry-After: 1` retry
        after 300 s, and an `INITIAL_BACKOFF_S` above `MAX_BACKOFF_S` was never waited."""
        for low, high in (
            ("min_retry_after_s", "max_retry_after_s"),
            ("initial_backoff_s", "max_backoff_s"),
        ):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low):g}) is above {high} "
                                 f"({getattr(self, high):g})")  # fmt: skip
        return self
