"""The set-up the notifier's end-to-end tests share: a subscriptions file whose endpoints
post to a receiver on loopback, and the settings that read it, the pipeline's topics made
(tests/sinks/test_webhook_resend.py, test_webhook_silences_e2e.py). Written once, so a
change to what an endpoint needs (a field, a rule of the address checks) is made once."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from notify_waits import secret_for
from sink_harness import prepare_all_topics
from webhook_servers import loopback_webhooks

from chainwatch.settings import Settings


def write_subscriptions(path: Path, port: int, names: Iterable[str]) -> None:
    """A subscriptions file at `path` whose endpoint `name` posts to `/name` on `port`,
    signed with `secret_for(name)`, for each of `names` (a later write replaces it: the
    notifier and the commands read the file when they start)."""
    endpoints = [
        {"name": name, "url": f"http://127.0.0.1:{port}/{name}", "secret": secret_for(name)}
        for name in names
    ]
    path.write_text(json.dumps({"endpoints": endpoints}))  # JSON is YAML


def loopback_settings(
    settings_factory: Callable[..., Settings],
    subscriptions: Path,
    port: int,
    names: Iterable[str] = ("ops",),
    **webhooks: object,
) -> Settings:
    """Settings whose endpoints `names` post to `port` (`write_subscriptions` at
    `subscriptions`), with the fast retries of `loopback_webhooks` (`webhooks` overrides
    them), and the pipeline's topics made (`prepare_all_topics`). The notifier's own
    (silences, held) are left to the test: without a held topic the notifier keeps what a
    silence holds in the process only."""
    write_subscriptions(subscriptions, port, names)
    settings = settings_factory(webhooks=loopback_webhooks(subscriptions, **webhooks))
    prepare_all_topics(settings)
    return settings
