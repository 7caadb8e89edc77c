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

import difflib
import json
import types
import typing
from collections.abc import Mapping
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
    "child_environment",
    "conflicting_variables",
    "overlaid",
    "redact_url",
    "unknown_variables",
]


class Settings(BaseSettings):
    """Every setting of Chainwatch, from `CHAINWATCH_*` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="CHAINWATCH_",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
        allow_inf_nan=False,  # as every section's (schemas.settings_model)
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


ENV_PREFIX = "CHAINWATCH_"
NESTING = "__"


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning per `CHAINWATCH_<SECTION>__<KEY>` variable that names no setting.

    pydantic-settings ignores them, so `CHAINWATCH_ENGINE__BATCHSIZE=5` left the
    batch size at its default without a word. Only names with the nesting `__`
    are judged: single-level `CHAINWATCH_*` names are also the users' own
    (webhook secrets referenced from a subscriptions file, `CHAINWATCH_HOOK_OPS`).
    """
    known = known_variables()
    warnings = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or NESTING not in upper[len(ENV_PREFIX) :]:
            continue
        if _names_a_setting(upper[len(ENV_PREFIX) :].lower().split(NESTING)):
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.8)
        hint = f"; did you mean {close[0]}?" if close else " (`chainwatch config` lists them)"
        warnings.append(f"{name} is not a setting, ignored{hint}")
    return warnings


def conflicting_variables(environ: Mapping[str, str]) -> list[str]:
    """A line per setting given twice, by names that differ only in case, with two values.

    Names are matched ignoring case, and of two spellings the one later in the
    environment won: the setting depended on the order in which a shell or a
    supervisor happened to export them (`CHAINWATCH_ENGINE__BATCH_SIZE=111` and
    `chainwatch_engine__batch_size=222` gave 222 or 111). The values are not shown:
    one may be a secret.
    """
    spellings: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if _sets_a_setting(name):  # a user's own (`CHAINWATCH_HOOK_OPS`) is exact
            spellings.setdefault(name.lower(), {})[name] = value  # as pydantic-settings
    return [
        f"{' and '.join(sorted(names))} set the same setting to different values; unset all but one"
        for _, names in sorted(spellings.items())
        if len(set(names.values())) > 1
    ]


def unreadable_json(environ: Mapping[str, str]) -> list[str]:
    """A line per setting's variable whose value is JSON that cannot be read, for the
    error that pydantic-settings raised about it.

    It named the section only (`error parsing value for field "kafka"`) or let json's
    `RecursionError` through, both printed as an internal error. Only the values it reads
    as JSON are judged (`CHAINWATCH_KAFKA`; a bootstrap `[::1]:9092` is text). json's
    words and the position are said, never the value: it may hold a secret.
    """
    lines = []
    for name, value in sorted(environ.items()):
        if not _sets_a_setting(name) or not _read_as_json(name):
            continue
        try:
            json.loads(value)
        except RecursionError:
            lines.append(f"{name}: JSON nested too deeply to read")
        except json.JSONDecodeError as exc:
            why = exc.msg.removesuffix(" at")
            lines.append(f"{name}: not valid JSON ({why} at character {exc.pos + 1})")
    return lines


def _read_as_json(name: str) -> bool:
    """Whether pydantic-settings reads the variable's value as JSON: a section's, or a
    setting's that holds a model, a list or a mapping (never a text setting's)."""
    model: type[BaseModel] | None = Settings
    annotation: Any = None
    for part in name.lower()[len(ENV_PREFIX) :].split(NESTING):
        field = None if model is None else model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        model = _model_of(annotation)
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    kinds = typing.get_args(annotation) if union else (annotation,)
    complex_kinds = (dict, list, tuple, set, frozenset)
    return any(
        _model_of(kind) is not None or (typing.get_origin(kind) or kind) in complex_kinds
        for kind in kinds
    )


def child_environment(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` for a child process that must run with `settings`: every variable of a
    setting replaced by `settings.to_env()`'s, whatever its case. Laid over `environ`
    alone, a user's `chainwatch_engine__app_id` stayed beside the child's
    `CHAINWATCH_ENGINE__APP_ID`, and which one the child took was the environment's order
    (now the child refuses two spellings: `conflicting_variables`)."""
    kept = {name: value for name, value in environ.items() if not _sets_a_setting(name)}
    return overlaid(kept, settings.to_env())


def overlaid(environ: Mapping[str, str], overrides: Mapping[str, str]) -> dict[str, str]:
    """`environ` with `overrides` set, each replacing its name in any case (see
    `child_environment`)."""
    replaced = {name.lower() for name in overrides}
    kept = {name: value for name, value in environ.items() if name.lower() not in replaced}
    return {**kept, **overrides}


def _sets_a_setting(name: str) -> bool:
    """Whether `CHAINWATCH_<...>`, in any case, is read by `Settings` (a whole section's
    JSON included): such a variable is the parent's to pass on, as its settings say.
    Compared in lower case, as pydantic-settings compares names: in upper case a dotless
    i is an `I` (a name it reads as no setting's), and the Kelvin sign stays itself
    (lower case `k`: a name it reads as a setting's)."""
    lower = name.lower()
    if not lower.startswith(ENV_PREFIX.lower()):
        return False
    path = lower[len(ENV_PREFIX) :].split(NESTING)
    return (len(path) == 1 and path[0] in Settings.model_fields) or _names_a_setting(path)


def known_variables() -> list[str]:
    """Every nested setting's variable name (`CHAINWATCH_KAFKA__PARTITIONS`, ...)."""
    names = []
    for section, field in Settings.model_fields.items():
        model = _model_of(field.annotation)
        if model is not None:
            names += [f"{ENV_PREFIX}{section}{NESTING}{key}".upper() for key in model.model_fields]
    return names


def _names_a_setting(path: list[str]) -> bool:
    model: type[BaseModel] | None = Settings
    for depth, part in enumerate(path):
        if model is None or part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        nested = _model_of(annotation)
        if nested is None:
            rest = len(path) - depth - 1
            return rest == 0 or typing.get_origin(annotation) is dict
        model = nested
    return False  # a whole section (`CHAINWATCH_ENGINE__`): no key named


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None
