"""The demo's wait for its children after SIGTERM (chainwatch/demo.py)."""

from __future__ import annotations

import pytest

from chainwatch import demo, notify_runner
from chainwatch.commands import gateway
from chainwatch.settings import Settings


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"CHAINWATCH_GATEWAY__SHUTDOWN_GRACE_S": "60"},
        {"CHAINWATCH_WEBHOOKS__TIMEOUT_S": "120"},
        {"CHAINWATCH_ENGINE__STOP_TIMEOUT_S": "90"},
    ],
)
def test_the_demo_waits_past_every_childs_own_stop_deadline(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    """A fixed 45 s was past the defaults' deadlines only: the children read the same
    settings, so a longer grace set for them had the demo kill one mid-way through a
    graceful stop."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    deadlines = (
        gateway.stop_timeout_s(settings),
        notify_runner.stop_timeout_s(settings),
        settings.engine.stop_timeout_s,
    )
    assert demo.children_stop_grace_s(settings) > max(deadlines)
