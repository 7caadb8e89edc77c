"""Settings of the stream processing: where Kafka is, and how the engine runs.

Plain frozen models; the composition root (`chainwatch.settings.Settings`) nests
them under `kafka` and `engine` and fills them from `CHAINWATCH_KAFKA__*` and
`CHAINWATCH_ENGINE__*`.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from schemas.kafka_security import KafkaEndpoint, KafkaSecurity, SaslMechanism, SecurityProtocol
from schemas.settings_model import SettingsModel
from streams.engine.limits import DAY_MS, EngineLimits

LOCAL_BOOTSTRAP = "127.0.0.1:19092"

_BOOTSTRAP_SERVER = re.compile(r"^(?:\[[0-9A-Fa-f:.%\w]+\]|[^\s:\[\]/,]+)(?::(\d{1,5}))?$")
"""One `host[:port]` of a bootstrap list (an IPv6 host in brackets); the clients take
9092 for a missing port."""

KAFKA_INT16_MAX = 32_767
"""Kafka's protocol carries a replication factor as an int16: a larger one could not even
be sent (the admin client's encoder raised `struct.error`)."""


def _readable_file(path: Path) -> bool:
    try:
        with path.open("rb"):
            return True
    except OSError:
        return False


class KafkaSettings(SettingsModel):
    """Where the broker is, and how the project runs its own when none is given."""

    bootstrap_servers: str | None = Field(
        default=None,
        description="host:port[,host:port]. Unset: the project runs a local broker on "
        f"{LOCAL_BOOTSTRAP} (`chainwatch kafka start`).",
    )
    topic_prefix: str = Field(default="", description="Prefix of every topic name (deployments).")
    partitions: int = Field(default=4, ge=1, le=1024, description="Partitions of created topics.")
    replication_factor: int = Field(
        default=1,
        ge=1,
        le=KAFKA_INT16_MAX,
        description="Replication of every topic the project creates (inputs, outputs, the "
        "engine's internal and changelog topics); 3 on a cluster (docs/scaling.md).",
    )
    min_insync_replicas: int = Field(
        default=1,
        ge=1,
        le=KAFKA_INT16_MAX,
        description="`min.insync.replicas` of created topics: with acks=all, a write succeeds "
        "once this many replicas have it; replication_factor - 1 on a cluster (2 of 3).",
    )
    request_timeout_s: float = Field(
        default=15.0,
        ge=0.5,
        le=300,
        description="How long the project's Kafka tooling (topic set-up, admin calls: every "
        "process's start, replays, doctor, runs, imports) waits for a broker to answer a "
        "connection or a request before it says Kafka did not answer; an administrative "
        "call is given this plus 5 s.",
    )
    probe_timeout_s: float = Field(
        default=3.0,
        ge=0.5,
        le=120,
        description="How long a readiness probe waits for a broker's answer: `replay`'s and "
        "`backtest`'s check before they start, `doctor`'s, and the worker's, sink's and "
        "notifier's own (every 5 s, for their /readyz; the gateway has "
        "`gateway.readiness_timeout_s`). Raise it for a cluster that answers slower (TLS "
        "and SASL over a long link).",
    )
    security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT",
        description="How every client connects: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or "
        "SASL_SSL (SASL over TLS). Anything but PLAINTEXT needs `bootstrap_servers`.",
    )
    sasl_mechanism: SaslMechanism = Field(
        default="PLAIN",
        description="SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.",
    )
    sasl_username: str | None = Field(default=None, description="SASL_*: the user (required).")
    sasl_password: SecretStr | None = Field(
        default=None, description="SASL_*: its password (required; never shown)."
    )
    ssl_cafile: Path | None = Field(
        default=None,
        description="SSL, SASL_SSL: PEM file of the CAs that signed the brokers' certificates "
        "(unset: the system's CAs).",
    )
    ssl_certfile: Path | None = Field(
        default=None, description="SSL, SASL_SSL: PEM certificate of this client (mutual TLS)."
    )
    ssl_keyfile: Path | None = Field(
        default=None,
        description="SSL, SASL_SSL: PEM private key of `ssl_certfile` (encrypted: give "
        "`ssl_key_password`).",
    )
    ssl_key_password: SecretStr | None = Field(
        default=None,
        description="SSL, SASL_SSL: the pass phrase of an encrypted `ssl_keyfile` (Kafka's "
        "`ssl.key.password`; never shown).",
    )
    local_port: int = Field(default=19092, ge=1, le=65535, description="Port of the local broker.")
    local_controller_port: int = Field(default=19093, ge=1, le=65535)
    local_heap: str = Field(
        default="768m", pattern=r"^\d+[mMgG]$", description="-Xmx of the broker"
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers_are_host_ports(cls, value: str | None) -> str | None:
        """A typo (`kafka:9O92`, a `kafka://` URL, an empty entry) is refused at the start:
        the clients took it as a server that never answers, and the worker, sink,
        notifier and gateway waited for it for ever, saying only that Kafka did not answer."""
        if value is None:
            return None
        servers = [server.strip() for server in value.split(",")]
        for server in servers:
            found = _BOOTSTRAP_SERVER.match(server)
            port = found and found.group(1)
            if not found or (port is not None and not 1 <= int(port) <= 65535):
                shown = repr(server[:80]) if server else "an empty entry"
                raise ValueError(
                    f"{shown} is not host:port (a comma-separated list of host:port, "
                    "port 1-65535; unset it to use the local broker)"
                )
        return ",".join(servers)  # the clients split on commas, not on the spaces beside

    @model_validator(mode="after")
    def _insync_within_replication(self) -> KafkaSettings:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"min_insync_replicas ({self.min_insync_replicas}) cannot exceed "
                f"replication_factor ({self.replication_factor}): no write would succeed"
            )
        return self

    @model_validator(mode="after")
    def _security_complete(self) -> KafkaSettings:
        """A secured setting that cannot work is refused at the start, in one line, rather
        than found by every client as a connection that never authenticates."""
        secured = self.security_protocol != "PLAINTEXT" or any(
            value is not None
            for value in (
                self.sasl_username,
                self.sasl_password,
                self.ssl_cafile,
                self.ssl_certfile,
                self.ssl_keyfile,
                self.ssl_key_password,
            )
        )
        if secured and self.is_local:
            raise ValueError(
                "the local broker is PLAINTEXT: Kafka security settings (security_protocol, "
                "sasl_*, ssl_*) need CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS (your cluster)"
            )
        # a file or a user the protocol does not use was ignored: the clients spoke
        # PLAINTEXT to a TLS broker, and every process said only that Kafka did not answer
        protocol = self.security_protocol
        for names, used, fix in (
            (("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password"), "TLS",
             ("SSL", "SASL_SSL")),
            (("sasl_username", "sasl_password"), "SASL", ("SASL_SSL", "SASL_PLAINTEXT")),
        ):  # fmt: skip
            unused = [name for name in names if getattr(self, name) is not None]
            if unused and protocol not in fix:
                raise ValueError(
                    f"{', '.join(unused)} {'is' if len(unused) == 1 else 'are'} given with "
                    f"security_protocol {protocol}, which does not use {used}: set "
                    f"CHAINWATCH_KAFKA__SECURITY_PROTOCOL to {fix[0]} or {fix[1]}, or unset "
                    f"{'it' if len(unused) == 1 else 'them'}"
                )
        if self.security_protocol.startswith("SASL_") and (
            not self.sasl_username or self.sasl_password is None
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_username and "
                "sasl_password (CHAINWATCH_KAFKA__SASL_USERNAME, CHAINWATCH_KAFKA__SASL_PASSWORD)"
            )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("ssl_keyfile is given without ssl_certfile (the certificate it keys)")
        if self.ssl_key_password is not None and self.ssl_certfile is None:
            raise ValueError(
                "ssl_key_password is given without ssl_certfile and ssl_keyfile (the key it "
                "decrypts)"
            )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not _readable_file(path):
                raise ValueError(f"{name} {str(path)[:200]!r} is not a readable file")
        _ = self.security.ssl_context  # its files read now: TlsFilesRefused, a ValueError
        return self

    @functools.cached_property
    def security(self) -> KafkaSecurity:
        """The security of every connection (`schemas.kafka_security`); one per settings
        object, so every client of a process shares one TLS context (files read once)."""
        return KafkaSecurity(
            protocol=self.security_protocol,
            sasl_mechanism=self.sasl_mechanism,
            sasl_username=self.sasl_username,
            sasl_password=self.sasl_password,
            ssl_cafile=self.ssl_cafile,
            ssl_certfile=self.ssl_certfile,
            ssl_keyfile=self.ssl_keyfile,
            ssl_key_password=self.ssl_key_password,
        )

    @property
    def endpoint(self) -> KafkaEndpoint:
        """The cluster as every client connects to it: bootstrap and security."""
        return KafkaEndpoint(self.bootstrap, self.security)

    def topic_configs(self) -> dict[str, str]:
        """Configs every created topic gets (besides its own, e.g. compaction)."""
        return {"min.insync.replicas": str(self.min_insync_replicas)}

    @property
    def bootstrap(self) -> str:
        return self.bootstrap_servers or f"127.0.0.1:{self.local_port}"

    @property
    def is_local(self) -> bool:
        """True when the project owns the broker (no bootstrap servers configured)."""
        return self.bootstrap_servers is None

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


class EngineSettings(SettingsModel):
    """How the monitoring engine runs."""

    app_id: str = Field(default="chainwatch", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    plan: Path | None = Field(
        default=None, description="SLA plan YAML; unset = shipped knitwear plan"
    )
    store: Literal["memory", "rocksdb"] = Field(
        default="memory", description="faust table store; rocksdb needs the `rocksdb` extra"
    )
    clock: Literal["live", "event"] = Field(
        default="live", description="live: wall clock; event: event time (replay, backtests)"
    )
    standby_replicas: int = Field(
        default=1, ge=0, le=3, description="faust standby copies of each table partition"
    )
    commit_interval_s: float = Field(default=1.0, gt=0, le=60)
    session_timeout_s: float = Field(
        default=30,
        ge=6,
        le=300,
        description="how long the group waits for a worker that stopped heartbeating (crashed, "
        "frozen) before its partitions move to the others",
    )
    heartbeat_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="how often a worker heartbeats its consumer group (faust's default: 3 s); "
        "a worker that joins (scaling out, a replay's second worker) waits for the others to "
        "rejoin, which they do at their next heartbeat; at most a third of "
        "`session_timeout_s`",
    )
    stop_timeout_s: float = Field(
        default=30,
        gt=0,
        le=600,
        description="how long a worker, the sink, the notifier or the gateway may take to "
        "stop after SIGINT/SIGTERM (or after a stop that began without one: a crash, an "
        "error, a drain that ended); past it the process logs `process_stop_timed_out` and "
        "exits with status 1 (safe: what was not committed is read again on restart); the "
        "notifier and the gateway take more when their own graceful stop needs it",
    )
    snapshots: bool = Field(
        default=True, description="publish an order-state snapshot after each change of an order"
    )
    tick_interval_s: float = Field(
        default=0.2, gt=0, le=1, description="live mode: how often due deadlines are checked"
    )
    batch_size: int = Field(
        default=2000,
        ge=1,
        le=100_000,
        description="the most records an agent takes as one batch (live clock), and an "
        "event-clock worker's first batch",
    )
    replay_batch_size: int = Field(
        default=32_000,
        ge=1,
        le=1_000_000,
        description="event clock (replays, backtests): a batch that filled doubles the next, "
        "up to this many records (fewer derivations per record on a backlog); one that did "
        "not fill halves it, down to `batch_size`",
    )
    replay_defer_derivations: bool = Field(
        default=True,
        description="event clock (replays, backtests): derive an order once while a backlog "
        "of its agent lasts, not once per batch; every derivation is made before the inputs "
        "that owe it are committed",
    )
    batch_within_s: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="how long an agent waits for its batch (up to `batch_size` records) to fill "
        "before it takes what it has: longer gives larger batches under load (fewer "
        "per-batch costs), and adds up to this much latency per hop when traffic is light; "
        "an event-clock batch grown to n records waits up to n / `batch_size` times this",
    )
    metrics_port: int = Field(
        default=9460,
        ge=0,
        le=65535,
        description="`chainwatch worker` serves Prometheus `/metrics`, `/healthz` and `/readyz` "
        "on `metrics_host` at this port; taken (another worker on this host): the next free "
        "port up to +15, then any free port (logged as `worker_ops_listening`); 0 = off",
    )
    gc_young_threshold: int = Field(
        default=20_000,
        ge=0,
        le=1_000_000,
        description="a worker freezes what it holds once started and runs Python's young "
        "garbage collection every this many allocations (Python's default: 700); the engine "
        "frees its data by reference counting, so fewer collections save CPU; 0 = Python's "
        "defaults",
    )
    closed_order_retention_days: float = Field(
        default=30,
        gt=0,
        le=3650,
        description="a completed or cancelled order leaves the engine's state this long after "
        "it closed (engine clock); a later record for it is a dead letter `order_closed`",
    )

    unit_lookback_days: float = Field(
        default=30,
        gt=0,
        le=3650,
        description="how late (in the unit's own event time) an order's visit may reach its "
        "unit and still find every downtime it overlaps; older downtimes no known visit "
        "overlaps are folded away, their alerts final",
    )

    @model_validator(mode="after")
    def _heartbeats_within_the_session(self) -> EngineSettings:
        if self.heartbeat_interval_s * 3 > self.session_timeout_s:
            raise ValueError(
                f"heartbeat_interval_s ({self.heartbeat_interval_s}) must be at most a third of "
                f"session_timeout_s ({self.session_timeout_s}): a worker that misses one "
                "heartbeat would otherwise be taken for dead"
            )
        return self

    def limits(self) -> EngineLimits:
        """The engine's bounded-state limits as these settings make them."""
        return EngineLimits(
            unit_lookback_ms=round(self.unit_lookback_days * DAY_MS),
            closed_order_retention_ms=round(self.closed_order_retention_days * DAY_MS),
        )
