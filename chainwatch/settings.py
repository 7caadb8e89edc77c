"""The one settings object of Chainwatch.

Built once at start-up (`Settings()` reads `CHAINWATCH_*` environment variables,
nested with `__`, e.g. `CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS`) and passed down;
nothing else reads the environment. Secrets are `SecretStr` so they never
print; `redacted()` is what `chainwatch config` and the logs show.

Each library keeps its own settings models next to it (`streams/settings.py`,
`streams/ingest/settings.py`, `sinks/clickhouse/settings.py`,
`sinks/webhooks/settings.py`); this module assembles them into the one
`Settings` and re-exports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from sinks.clickhouse.settings import ClickHouseSettings, SinkSettings, redact_url
from sinks.webhooks.settings import WebhookSettings
from streams.ingest.settings import GatewaySettings
from streams.settings import LOCAL_BOOTSTRAP, EngineSettings, KafkaSettings

__all__ = [
    "LOCAL_BOOTSTRAP",
    "ClickHouseSettings",
    "EngineSettings",
    "GatewaySettings",
    "KafkaSettings",
    "Settings",
    "SinkSettings",
    "WebhookSettings",
    "redact_url",
]


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
