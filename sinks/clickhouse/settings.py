"""Settings of the ClickHouse store and of the sink that fills it.

`ClickHouseSettings` and `SinkSettings` are nested under `clickhouse` and `sink`
in `chainwatch.settings.Settings` (`CHAINWATCH_CLICKHOUSE__*`, `CHAINWATCH_SINK__*`);
`StoreConfig` is what the store's functions read of the whole settings.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from schemas.settings_model import HOUR_S, SettingsModel
from schemas.urls import UrlError, split_url

MAX_TTL_DAYS = 18_250
"""50 years. ClickHouse's `DateTime` ends in 2106: a TTL past it wraps round to the past
(`+ toIntervalDay(40000)` is a date in 1999), and the rows it should keep expire at once."""


class ClickHouseSettings(SettingsModel):
    """Embedded chDB by default; a ClickHouse server when `url` is set."""

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
        default=400,
        ge=1,
        le=MAX_TTL_DAYS,
        description="Raw events are kept this many days after they arrived (at most 50 years).",
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
        if value is None:
            return None
        try:  # never urlsplit's own text: it may quote the password (schemas.urls)
            parts, _ = split_url(value.get_secret_value())
        except UrlError as exc:
            raise ValueError(f"is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https"):
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


class SinkSettings(SettingsModel):
    """How `chainwatch sink` batches into ClickHouse (docs/sinks.md)."""

    flush_rows: int = Field(
        default=50_000, ge=1, le=1_000_000, description="Rows per partition batch."
    )
    flush_interval_s: float = Field(
        default=1.0, gt=0, le=600, description="Max age of a batch (at most 600 s)."
    )
    max_buffer_rows: int = Field(
        default=500_000,
        ge=1,
        le=10_000_000,
        description="All buffers together (held in memory); reaching it forces a flush.",
    )
    max_buffer_bytes: int = Field(
        default=512 << 20,
        ge=1 << 20,
        le=64 << 30,
        description="Bytes of the records all buffers hold together; reaching it forces a "
        "flush (1 MiB to 64 GiB).",
    )
    max_backoff_s: float = Field(
        default=30.0, gt=0, le=HOUR_S, description="Longest wait between retries (at most 1 h)."
    )


class StoreConfig(Protocol):
    """What the store's functions read of the settings (`chainwatch.settings.Settings` has it)."""

    @property
    def clickhouse(self) -> ClickHouseSettings: ...

    @property
    def clickhouse_dir(self) -> Path:
        """Where the embedded chDB keeps its data."""
        ...
