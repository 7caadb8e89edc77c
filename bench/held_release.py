"""The notifier's release check (`EndpointPipe._release_ended`) at the bounds: its cost.

    .venv/bin/python bench/held_release.py [--held 1000 10000 100000]
        [--silences 10 100 10000] [--budget 2000000]

No Kafka, no HTTP: a real `EndpointPipe` (held topic "": kept in the process only)
holding M open alerts of one assigned partition, each its alert's latest message, held
(`_hold`) as a delivery silenced by the covering silence holds it, and a real
`SilenceFollower` whose book holds N silences in force: one covers every held alert
(stage knitting, ending in an hour), N-1 cover none (other units). Nothing is
released: each check only looks. Prints, per M x N, the time of one check
- `look-ups`: after the silence covering them all was written again (its end an hour
  later), so every held alert is looked up against every silence: what every check
  cost, changed or not, before the checks looked only at what had changed;
- `changed`: after the book changed (a tombstone of an unknown id, as a silence that
  holds none of them expired or added): every held alert looked at, none looked up
  (the silence that held each is still there and in force);
- `unchanged`: the next check, nothing changed since (the steady state, every second);
- `one read`: after a later message of one held alert was read (that one looked at).
Past `--budget` silence look-ups (M x N), `look-ups` is timed on a pipe holding
budget / N alerts and scaled to M (`~`: each held alert costs the same).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import TopicPartition

from schemas.alerts import Alert, AlertCustomer, AlertStatus, AlertType, Severity
from sinks.webhooks.delivery import RetryPolicy
from sinks.webhooks.dispatcher import EndpointPipe, PipeConfig, Topics
from sinks.webhooks.outcomes import Job
from sinks.webhooks.silence_follower import SilenceFollower
from sinks.webhooks.silences import Silence
from sinks.webhooks.subscriptions import Endpoint
from sinks.webhooks.targets import TargetPolicy, parse_networks

TP = TopicPartition("cw.alerts", 0)


def alert(i: int, severity: Severity = Severity.WARNING) -> Alert:
    return Alert(
        alert_id=f"{i:064x}",
        type=AlertType.STAGE_OVERDUE,
        severity=severity,
        status=AlertStatus.OPEN,
        order_id=f"PO-{i}",
        stage="knitting",
        visit=1,
        deadline="2027-03-01T00:00:00Z",
        detected_at="2027-03-01T00:00:00Z",
        customer=AlertCustomer(customer_id="C-1", tier="gold"),
    )


def follower_with(silences: int) -> SilenceFollower:
    follower = SilenceFollower("unused:9092", "cw.webhook-silences", 1, call_s=5.0)
    now = datetime.now(UTC)
    window = {"starts_at": now - timedelta(hours=1), "ends_at": now + timedelta(hours=1)}
    covering = Silence(stages=["knitting"], reason="knitting hall", **window)
    follower.book.put(covering.silence_id, covering)
    for i in range(silences - 1):
        other = Silence(units=[f"UNIT-{i}"], reason="elsewhere", **window)
        follower.book.put(other.silence_id, other)
    return follower


def pipe_holding(alerts: list[Alert], follower: SilenceFollower) -> EndpointPipe:
    endpoint = Endpoint.model_validate(
        {"name": "ops", "url": "https://hooks.example.com/x", "format": "slack"}
    )
    config = PipeConfig(
        bootstrap="unused:9092",
        group_id="cw-notify",
        topics=Topics("cw.alerts", "cw.webhook-deliveries", "cw.webhook-dead-letter"),
        policy=RetryPolicy(),
        targets=TargetPolicy(parse_networks("")),
        queue_size=100,
        consumer_options={},
        silences=follower,
    )
    pipe = EndpointPipe(endpoint, config, producer=None)  # type: ignore[arg-type]
    pipe.assigned([TP])
    covering = next(s for s in follower.book.silences.values() if s.stages)
    for offset, held in enumerate(alerts):
        msg_id = pipe.ids.id_for(held, TP.partition, offset).msg_id
        job = Job(held, msg_id, TP, offset, pipe.assignments.generation(TP))
        pipe._hold(job, by=covering)
    return pipe


async def check_s(pipe: EndpointPipe, follower: SilenceFollower) -> float:
    began = time.perf_counter()
    await pipe._release_ended(follower)
    took = time.perf_counter() - began
    assert pipe.held, "nothing is to be released"
    assert pipe.queue.empty(), "nothing is to be released"
    return took


def extended(follower: SilenceFollower) -> None:
    """The silence covering every held alert written again, ending an hour later."""
    covering = next(s for s in follower.book.silences.values() if s.stages)
    later = covering.model_copy(update={"ends_at": covering.ends_at + timedelta(hours=1)})
    follower.book.put(covering.silence_id, later)


async def one_row(
    alerts: list[Alert], silences: int, budget: int
) -> tuple[str, float, float, float, float]:
    follower = follower_with(silences)
    pipe = pipe_holding(alerts, follower)
    await check_s(pipe, follower)  # the first check after the holds
    follower.book.put("0" * 32, None)  # a tombstone of no silence: the book changed
    changed = await check_s(pipe, follower)
    unchanged = min([await check_s(pipe, follower) for _ in range(5)])
    later = alert(0, Severity.CRITICAL)  # escalated: a later message of a held alert
    pipe._seen(TP, len(alerts), later.model_dump_json().encode())
    one_read = await check_s(pipe, follower)  # (that alert dropped: its later one decides)
    over = len(alerts) * silences > budget
    sample = max(100, budget // silences) if over else len(alerts)
    if over:
        pipe = pipe_holding(alerts[:sample], follower)
        await check_s(pipe, follower)
    extended(follower)
    look_ups = await check_s(pipe, follower) * len(alerts) / sample
    return ("~" if over else ""), look_ups, changed, unchanged, one_read


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--held", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--silences", type=int, nargs="+", default=[10, 100, 10_000])
    parser.add_argument("--budget", type=int, default=2_000_000)
    args = parser.parse_args()
    print(
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'held':>8} {'silences':>8} {'look-ups':>15} {'changed':>12} "
        f"{'unchanged':>12} {'one read':>12}"
    )
    alerts = [alert(i) for i in range(max(args.held))]
    for held in args.held:
        for silences in args.silences:
            est, look_ups, changed, unchanged, one_read = asyncio.run(
                one_row(alerts[:held], silences, args.budget)
            )
            print(
                f"{held:>8,} {silences:>8,} {est + f'{look_ups * 1000:,.1f} ms':>15} "
                f"{changed * 1000:>9,.1f} ms {unchanged * 1000:>9,.3f} ms "
                f"{one_read * 1000:>9,.3f} ms",
                flush=True,
            )


if __name__ == "__main__":
    main()
