"""Every counter series a long-running process has a closed set of labels for is on its
`/metrics` at 0 from its start, before it has reached Kafka: a labelled series existed
only once it was used, so `rate()`/`increase()` rules and dashboards saw nothing ("no
data") for a quiet topic, table or endpoint, or for a process that had not counted yet."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas.alerts import AlertStatus, AlertType
from schemas.dead_letter import ReasonCode

# the process's wait for Kafka, replaced: its own /metrics read meanwhile, then it stops
_READ_METRICS_WHILE_WAITING = """
import sys, urllib.request
from chainwatch import notify_runner, runners, sink_runner
from chainwatch.errors import UserError
from chainwatch.settings import Settings

settings = Settings()
port = settings.engine.metrics_port if sys.argv[1] == "worker" else settings.metrics_port


def kafka_away(*_args, **_kwargs):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        with open(sys.argv[2], "wb") as out:
            out.write(answer.read())
    raise UserError("read")


if sys.argv[1] == "worker":
    runners.prepare_worker_topics = kafka_away
    run = runners.run_worker
elif sys.argv[1] == "sink":
    sink_runner.prepare_sink_topics = kafka_away
    run = sink_runner.run_sink
else:
    notify_runner.ensure_notify_topics = kafka_away
    run = notify_runner.run_notify
try:
    run(settings)
except UserError:
    pass
"""

STORED = ("scans", "orders", "crm.customers", "unit-status", "order-state", "alerts")
STORED += ("dead-letter", "webhook-deliveries")
INPUTS = ("scans", "orders", "crm.customers", "unit-status")
TABLES = ("scans", "order_events", "customers", "unit_status", "order_state", "alerts")
TABLES += ("dead_letters", "webhook_deliveries")

EXPECTED: dict[str, set[tuple[str, tuple[tuple[str, str], ...]]]] = {
    "sink": {
        *(
            (f"chainwatch_sink_{name}_total", (("topic", t),))
            for t in STORED
            for name in ("records", "invalid_records", "already_stored")
        ),
        *(("chainwatch_sink_forwarded_records_total", (("topic", t),)) for t in INPUTS),
        *(("chainwatch_sink_rows_written_total", (("table", t),)) for t in TABLES),
        ("chainwatch_sink_insert_retries_total", ()),
    },
    "notifier": {
        *(
            ("chainwatch_webhook_deliveries_total", (("endpoint", "x"), ("outcome", o)))
            for o in ("delivered", "gave_up")
        ),
        *(
            ("chainwatch_webhook_attempts_total", (("endpoint", "x"), ("result", r)))
            for r in ("2xx", "3xx", "4xx", "5xx", "other", "error")
        ),
        *(
            ("chainwatch_webhook_warmups_total", (("endpoint", "x"), ("outcome", o)))
            for o in ("done", "failed")
        ),
        *(
            (f"chainwatch_webhook_{name}_total", (("endpoint", "x"),))
            for name in (
                "invalid_alerts",
                "repeats_skipped",
                "finished_skipped",
                "silenced",
                "released",
                "held_over_bound",
            )
        ),
        *(
            ("chainwatch_webhook_log_refused_total", (("topic", t),))
            for t in ("webhook-deliveries", "webhook-dead-letter")
        ),
        ("chainwatch_webhook_log_producer_renewals_total", ()),
    },
    "worker": {
        *(
            ("chainwatch_worker_records_total", (("outcome", o), ("topic", t)))
            for t in (
                "scans",
                "orders",
                "crm.customers",
                "unit-status",
                "order-inbox",
                "customer-inbox",
                "unit-inbox",
            )
            for o in ("ok", "dead_lettered", "processing_error", "forwarded")
        ),
        *(
            ("chainwatch_worker_alerts_published_total", (("status", s.value), ("type", t.value)))
            for t in AlertType
            for s in AlertStatus
        ),
        *(("chainwatch_worker_dead_letters_total", (("reason", r.value),)) for r in ReasonCode),
        ("chainwatch_worker_alerts_reannounced_total", ()),
    },
}


def _counters(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.type == "counter"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


@pytest.mark.parametrize("process", ["sink", "notifier", "worker"])
def test_every_known_counter_series_is_at_zero_from_the_start(process: str, tmp_path: Path) -> None:
    from chainwatch.free_port import free_port

    subscriptions = tmp_path / "subscriptions.yaml"
    subscriptions.write_text(
        '{"endpoints": [{"name": "x", "url": "https://h.example/x", "format": "slack"}]}'
    )
    port = str(free_port())
    env = {
        **os.environ,
        "CHAINWATCH_DATA_DIR": str(tmp_path),
        "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "CHAINWATCH_KAFKA__TOPIC_PREFIX": "",
        "CHAINWATCH_METRICS_PORT": port,
        "CHAINWATCH_ENGINE__METRICS_PORT": port,
        "CHAINWATCH_WEBHOOKS__SUBSCRIPTIONS": str(subscriptions),
        "CHAINWATCH_WEBHOOKS__ALLOWED_HOSTS": "h.example",
    }
    done = subprocess.run(
        [sys.executable, "-c", _READ_METRICS_WHILE_WAITING, process, str(tmp_path / "metrics")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    counters = _counters((tmp_path / "metrics").read_text())
    missing = sorted(EXPECTED[process] - counters.keys())
    assert missing == [], missing
    assert {counters[series] for series in EXPECTED[process]} == {0.0}
    if process == "notifier":  # and what it holds now, a gauge: 0, not missing
        gauges = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families((tmp_path / "metrics").read_text())
            if family.type == "gauge"
            for sample in family.samples
        }
        assert gauges.get(("chainwatch_webhook_held", (("endpoint", "x"),))) == 0.0
