"""The base of every settings section, and the bounds the sections share.

Each library keeps its own settings models (`streams/settings.py`,
`streams/ingest/settings.py`, `sinks/clickhouse/settings.py`,
`sinks/webhooks/settings.py`); they all derive from `SettingsModel` so that one
config says what every setting must be: frozen, and a finite number. A number
setting took `inf` (and `1e300`) wherever it only had a lower bound: an infinite
`CHAINWATCH_GATEWAY__SHUTDOWN_GRACE_S` crashed the gateway with an internal
`OverflowError`, a huge one killed its stop-deadline thread with a trace (the
stop then had no deadline). So no setting is `inf` or `nan`, and every duration,
size or count that an absurd value would break has its own upper bound.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

HOUR_S = 3_600.0
DAY_S = 86_400.0

FINITE_FROZEN = ConfigDict(frozen=True, allow_inf_nan=False)
"""The config of every settings model: frozen once built, and `inf`/`nan` refused
("Input should be a finite number", with the setting named)."""


class SettingsModel(BaseModel):
    """A settings section: frozen, and no number in it may be `inf` or `nan`."""

    model_config = FINITE_FROZEN
