"""Settings of the HTTP ingest gateway, and what the gateway needs of the whole settings.

`GatewaySettings` is nested under `gateway` in `chainwatch.settings.Settings`
(`CHAINWATCH_GATEWAY__*`).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Protocol

from pydantic import Field, field_validator, model_validator

from schemas.settings_model import DAY_S, HOUR_S, SettingsModel
from streams.settings import EngineSettings, KafkaSettings

MIB = 1024 * 1024


MAX_CLOCK_SKEW_BOUND_S = 200 * 365 * DAY_S
"""200 years: any skew past the contract's timestamp range (1971-2100) refuses the same
records, and the demo and the simulator's docs turn the check off with 100 years."""


class GatewaySettings(SettingsModel):
    """The HTTP ingest gateway (`chainwatch gateway`, docs/ingest.md)."""

    host: str = Field(default="127.0.0.1", description="Listen address.")
    port: int = Field(default=8088, ge=0, le=65535, description="Listen port.")
    tokens_file: Path | None = Field(default=None, description="Bearer tokens YAML (sha256).")
    epcis_mapping: Path | None = Field(
        default=None, description="EPCIS -> scan mapping YAML; unset = no EPCIS capture."
    )
    max_body_bytes: int = Field(
        default=8 * MIB,
        ge=1024,
        le=256 * MIB,
        description="413 beyond (at most 256 MiB: a body is held in memory).",
    )
    max_items: int = Field(
        default=5000, ge=1, le=1_000_000, description="Items per request; 413 beyond."
    )
    max_item_bytes: int = Field(
        default=900_000,
        ge=256,
        le=64 * MIB,
        description="One item's JSON; 413 beyond (keep below the broker's message.max.bytes).",
    )
    publish_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="Kafka commit deadline (at most 300 s)."
    )
    retry_after_s: int = Field(default=5, ge=1, le=3600, description="`Retry-After` of a 503.")
    producers: int = Field(default=2, ge=1, le=32, description="Transactional producer pool.")
    transactional_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="Base transactional id, unique per gateway instance and stable across its "
        "restarts; unset = `<engine.app_id>-gateway`.",
    )
    max_clock_skew_s: float = Field(
        default=DAY_S,
        gt=0,
        le=MAX_CLOCK_SKEW_BOUND_S,
        description="An event_time further than this in the future is invalid (CONTRACT v1.2).",
    )
    limit_concurrency: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description="Requests to the publishing operations handled at once (body, validation, "
        "publish), after their token was checked; beyond, a request waits for a slot, "
        "at most `admission_wait_s`, then 503 `overloaded`. Idle connections do not count.",
    )
    admission_wait_s: float = Field(
        default=10.0,
        ge=0,
        le=60,
        description="How long a request beyond `limit_concurrency` waits for a slot, first "
        "come first served (0: refused at once); long enough for a burst of a few hundred "
        "small posts to drain on a busy machine (docs/ingest.md, Throughput).",
    )
    limit_connections: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Open connections at once, idle keep-alive ones and ones still sending "
        "their headers included, more than `limit_concurrency`; a request beyond is "
        "answered 503 `too_many_connections` before any operation runs (the connection "
        "itself is accepted and held until its headers' deadline: keep `ulimit -n` above).",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="A request's line and headers must arrive within this of the connection "
        "opening (or of the previous response), else the connection is closed.",
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=1 * MIB,
        description="A request's line and headers together may have at most this many bytes, "
        "else 431 and the connection is closed.",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=HOUR_S,
        description="A request body not received in full within this is answered 408: a "
        "client that stops sending cannot hold a connection slot, or a shutdown, for ever.",
    )
    min_body_bytes_per_s: int = Field(
        default=240,
        ge=0,
        le=100 * MIB,
        description="Once `body_rate_grace_s` passed, a request body must have arrived at this "
        "many bytes a second on average since its read began, else 408 `body_too_slow` and its "
        "slot is freed at once (0: off): a client trickling its body cannot hold one of the "
        "`limit_concurrency` slots for all of `body_timeout_s` (docs/ingest.md, Admission).",
    )
    body_rate_grace_s: float = Field(
        default=5.0,
        gt=0,
        le=HOUR_S,
        description="How long a request body may take before `min_body_bytes_per_s` applies.",
    )
    lingering_close_s: float = Field(
        default=2.0,
        ge=0,
        le=60,
        description="After an answer sent before its request was read in full (408 "
        "`body_too_slow`, a refusal with `Connection: close`), the connection is shut for "
        "writing and what the client still sends is read and dropped for at most this long "
        "before it is closed, so the client reads the answer instead of a reset (0: closed at "
        "once; docs/ingest.md, Admission).",
    )
    lingering_close_bytes: int = Field(
        default=1 * MIB,
        ge=0,
        le=256 * MIB,
        description="At most this many bytes a client still sends are read and dropped after "
        "such an answer, and of the rest of a body answered early on a connection kept (a "
        "declared rest beyond this is answered with `Connection: close`); beyond, the "
        "connection is closed.",
    )
    shutdown_grace_s: float = Field(
        default=15.0,
        gt=0,
        le=600,
        description="On SIGTERM/SIGINT, requests in flight get this long to finish (keep it "
        "above `publish_timeout_s`); the ones still running then are cancelled (503 "
        "`shutting_down`).",
    )
    judge_threads: int = Field(
        default=2, ge=1, le=32, description="Threads that parse and validate request bodies."
    )
    readiness_interval_s: float = Field(
        default=2.0,
        gt=0,
        le=HOUR_S,
        description="How often `/readyz`'s cached answer is refreshed.",
    )
    readiness_timeout_s: float = Field(
        default=3.0, gt=0, le=60, description="Deadline of one readiness check against Kafka."
    )
    ops_networks: str = Field(
        default="127.0.0.0/8,::1/128",
        description="Comma-separated client networks that `/readyz` and `/metrics` answer "
        "(others get 403); `/healthz` answers everyone.",
    )

    @field_validator("ops_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        for network in value.split(","):
            if network.strip():
                ipaddress.ip_network(network.strip(), strict=False)
        return value

    @model_validator(mode="after")
    def _connections_beyond_the_requests(self) -> GatewaySettings:
        if self.limit_connections <= self.limit_concurrency:
            raise ValueError(
                f"limit_connections ({self.limit_connections}) must exceed limit_concurrency "
                f"({self.limit_concurrency}): a request beyond the open connections is refused "
                "503 `too_many_connections` at once, so with no connections to spare, requests "
                "would never wait for a slot (`admission_wait_s`) and a burst would be refused"
            )
        return self

    def ops_network_list(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [
            ipaddress.ip_network(n.strip(), strict=False)
            for n in self.ops_networks.split(",")
            if n.strip()
        ]


class GatewayConfig(Protocol):
    """What the gateway reads of the settings (`chainwatch.settings.Settings` has it)."""

    @property
    def gateway(self) -> GatewaySettings: ...

    @property
    def kafka(self) -> KafkaSettings: ...

    @property
    def engine(self) -> EngineSettings: ...
