"""The one settings object of Chainwatch.

Built once at start-up (`Settings()` reads `CHAINWATCH_*` environment variables,
nested with `__`, e.g. `CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS`) and passed down;
nothing else reads the environment. Secrets are `SecretStr` so they never
print; `redacted()` is what `chainwatch config` and the logs show.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_BOOTSTRAP = "127.0.0.1:19092"


class KafkaSettings(BaseModel):
    """Where the broker is, and how the project runs its own when none is given."""

    model_config = ConfigDict(frozen=True)

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
        description="Replication of every topic the project creates (inputs, outputs, the "
        "engine's internal and changelog topics); 3 on a cluster (docs/scaling.md).",
    )
    min_insync_replicas: int = Field(
        default=1,
        ge=1,
        description="`min.insync.replicas` of created topics: with acks=all, a write succeeds "
        "once this many replicas have it; replication_factor - 1 on a cluster (2 of 3).",
    )
    local_port: int = Field(default=19092, ge=1, le=65535, description="Port of the local broker.")
    local_controller_port: int = Field(default=19093, ge=1, le=65535)
    local_heap: str = Field(
        default="768m", pattern=r"^\d+[mMgG]$", description="-Xmx of the broker"
    )

    @model_validator(mode="after")
    def _insync_within_replication(self) -> KafkaSettings:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"min_insync_replicas ({self.min_insync_replicas}) cannot exceed "
                f"replication_factor ({self.replication_factor}): no write would succeed"
            )
        return self

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


class ClickHouseSettings(BaseModel):
    """Embedded chDB by default; a ClickHouse server when `url` is set."""

    model_config = ConfigDict(frozen=True)

    url: SecretStr | None = Field(
        default=None,
        description="http(s)://user:password@host:8123/database. Unset: embedded chDB "
        "under <data_dir>/clickhouse.",
    )
    database: str = Field(default="chainwatch", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    query_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Loopback port on which the process owning the embedded store answers "
        "read-only queries from local tools (`chainwatch sql`, `status`); 0 = any free port "
        "(published in <data_dir>/clickhouse.endpoint.json).",
    )
    ttl_days: int = Field(
        default=400, ge=1, description="Raw events are kept this many days after they arrived."
    )
    cluster: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$",
        description="Name of a ClickHouse cluster (remote_servers): migrations create "
        "Replicated*MergeTree tables ON CLUSTER with Distributed tables over them "
        "(docs/scaling.md). Unset: single node. Needs `url`.",
    )

    @model_validator(mode="after")
    def _cluster_needs_server(self) -> ClickHouseSettings:
        if self.cluster is not None and self.url is None:
            raise ValueError("cluster needs url: the embedded chDB is a single node")
        return self

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and urlsplit(value.get_secret_value()).scheme not in ("http", "https"):
            raise ValueError("must start with http:// or https://")
        return value

    @property
    def is_embedded(self) -> bool:
        return self.url is None

    def redacted_url(self) -> str | None:
        """The URL with its secrets masked (`user:***@`, `?password=***`), for logs and config."""
        if self.url is None:
            return None
        return redact_url(self.url.get_secret_value())


_SECRET_PARAMS = re.compile(r"pass|pwd|secret|token|key", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`url` with the password of its user info and every secret-looking query value masked."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}{sep and ':***'}@{hostport}"
    query = urlencode(
        [
            (name, "***" if _SECRET_PARAMS.search(name) else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class EngineSettings(BaseModel):
    """How the monitoring engine runs."""

    model_config = ConfigDict(frozen=True)

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
    snapshots: bool = Field(
        default=True, description="publish an order-state snapshot after each change of an order"
    )
    tick_interval_s: float = Field(
        default=0.2, gt=0, le=1, description="live mode: how often due deadlines are checked"
    )
    metrics_port: int = Field(
        default=9460,
        ge=0,
        le=65535,
        description="`chainwatch worker` serves Prometheus `/metrics`, `/healthz` and `/readyz` "
        "on `metrics_host` at this port; taken (another worker on this host): the next free "
        "port up to +15, then any free port (logged as `worker_ops_listening`); 0 = off",
    )
    closed_order_retention_days: float = Field(
        default=30,
        gt=0,
        le=3650,
        description="a completed or cancelled order leaves the engine's state this long after "
        "it closed (engine clock); a later record for it is a dead letter `order_closed`",
    )


class GatewaySettings(BaseModel):
    """The HTTP ingest gateway (`chainwatch gateway`, docs/ingest.md)."""

    model_config = ConfigDict(frozen=True)

    host: str = Field(default="127.0.0.1", description="Listen address.")
    port: int = Field(default=8088, ge=0, le=65535, description="Listen port.")
    tokens_file: Path | None = Field(default=None, description="Bearer tokens YAML (sha256).")
    epcis_mapping: Path | None = Field(
        default=None, description="EPCIS -> scan mapping YAML; unset = no EPCIS capture."
    )
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="413 beyond.")
    max_items: int = Field(default=5000, ge=1, description="Items per request; 413 beyond.")
    max_item_bytes: int = Field(
        default=900_000,
        ge=256,
        description="One item's JSON; 413 beyond (keep below the broker's message.max.bytes).",
    )
    publish_timeout_s: float = Field(default=10.0, gt=0, description="Kafka commit deadline.")
    retry_after_s: int = Field(default=5, ge=1, description="`Retry-After` of a 503.")
    producers: int = Field(default=2, ge=1, le=32, description="Transactional producer pool.")
    transactional_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="Base transactional id, unique per gateway instance and stable across its "
        "restarts; unset = `<engine.app_id>-gateway`.",
    )
    max_clock_skew_s: float = Field(
        default=86_400.0,
        gt=0,
        description="An event_time further than this in the future is invalid (CONTRACT v1.2).",
    )
    limit_concurrency: int = Field(
        default=64,
        ge=1,
        description="Connections and requests served at once; beyond, uvicorn answers 503.",
    )
    judge_threads: int = Field(
        default=2, ge=1, le=32, description="Threads that parse and validate request bodies."
    )
    readiness_interval_s: float = Field(
        default=2.0, gt=0, description="How often `/readyz`'s cached answer is refreshed."
    )
    readiness_timeout_s: float = Field(
        default=3.0, gt=0, description="Deadline of one readiness check against Kafka."
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

    def ops_network_list(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [
            ipaddress.ip_network(n.strip(), strict=False)
            for n in self.ops_networks.split(",")
            if n.strip()
        ]


class SinkSettings(BaseModel):
    """How `chainwatch sink` batches into ClickHouse (docs/sinks.md)."""

    model_config = ConfigDict(frozen=True)

    flush_rows: int = Field(default=50_000, ge=1, description="Rows per partition batch.")
    flush_interval_s: float = Field(default=1.0, gt=0, description="Max age of a batch.")
    max_buffer_rows: int = Field(
        default=500_000, ge=1, description="All buffers together; reaching it forces a flush."
    )
    max_backoff_s: float = Field(default=30.0, gt=0, description="Longest wait between retries.")


class WebhookSettings(BaseModel):
    """How `chainwatch notify` delivers alerts (docs/sinks.md)."""

    model_config = ConfigDict(frozen=True)

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
        default=10.0, gt=0, description="Per attempt, from connecting to the answer."
    )
    initial_backoff_s: float = Field(default=1.0, gt=0)
    max_backoff_s: float = Field(default=300.0, gt=0)
    retry_horizon_s: float = Field(
        default=3600.0, gt=0, description="Give up (dead letter) this long after the first try."
    )
    min_retry_after_s: float = Field(
        default=1.0, ge=0, description="A receiver's `Retry-After` is raised to at least this."
    )
    max_retry_after_s: float = Field(
        default=300.0, gt=0, description="A receiver's `Retry-After` is lowered to at most this."
    )
    max_attempts: int = Field(
        default=20, ge=1, description="Attempts per delivery at most, within the horizon."
    )
    queue_size: int = Field(
        default=10_000,
        ge=1,
        description="Deliveries held in memory per endpoint; when full, that endpoint "
        "fetches no more alerts until there is room.",
    )

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        for entry in filter(None, (e.strip() for e in value.split(","))):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not a network (10.0.0.0/8) or address") from None
        return value


class Settings(BaseSettings):
    """Every setting of Chainwatch, from `CHAINWATCH_*` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="CHAINWATCH_",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
    )

    data_dir: Path = Field(
        default=Path(".chainwatch"),
        description="Kafka data, the embedded ClickHouse, pids and logs live here.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["console", "json"] = "console"
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Prometheus port of `chainwatch sink` and `chainwatch notify`; 0 = off "
        "(the worker's is `engine.metrics_port`)",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address every Prometheus endpoint (sink, notify, worker) listens on; "
        "loopback unless set "
        "(e.g. 0.0.0.0 behind a firewall for a remote Prometheus).",
    )
    kafka: KafkaSettings = KafkaSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    engine: EngineSettings = EngineSettings()
    sink: SinkSettings = SinkSettings()
    webhooks: WebhookSettings = WebhookSettings()
    gateway: GatewaySettings = GatewaySettings()

    @property
    def data_path(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def kafka_dir(self) -> Path:
        return self.data_path / "kafka"

    @property
    def clickhouse_dir(self) -> Path:
        return self.data_path / "clickhouse"

    @property
    def log_dir(self) -> Path:
        return self.data_path / "logs"

    def to_env(self) -> dict[str, str]:
        """These settings as `CHAINWATCH_*` variables, for child processes (secrets included)."""
        env: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, BaseModel):
                for name in type(value).model_fields:
                    walk(f"{prefix}{name.upper()}__", getattr(value, name))
                return
            key = prefix.removesuffix("__")
            if value is None:
                return
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[key] = str(value)

        for name in type(self).model_fields:
            walk(f"CHAINWATCH_{name.upper()}__", getattr(self, name))
        return env

    def redacted(self) -> dict[str, Any]:
        """Effective settings as plain data with every secret masked."""
        data = self.model_dump(mode="json")
        data["data_dir"] = str(self.data_path)
        data["clickhouse"]["url"] = self.clickhouse.redacted_url()
        return data
