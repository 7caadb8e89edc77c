"""Builds and runs the notifier from the settings (the `chainwatch notify` process).

Delivery runs in its own process, not inside `chainwatch sink`: a receiver that
hangs must never slow the ClickHouse sink, and the notifier needs no store (its
delivery log goes through Kafka to the sink, which owns ClickHouse).
"""

from __future__ import annotations

import asyncio

from chainwatch.errors import UserError
from chainwatch.kafka_admin import (
    admin_call_timeout_s,
    contract_topic_configs,
    create_missing_topics,
    retry_until_reachable,
)
from chainwatch.logs import get_logger
from chainwatch.process import Startup, run_until_signalled, serve_metrics, waiting_before_main
from chainwatch.settings import Settings
from chainwatch.stop_deadline import STOP_MARGIN_S
from chainwatch.topic_partitions import partition_counts
from schemas.plan import load_plan
from sinks.consumer import COMMIT_TIMEOUT_S, STOP_S
from sinks.webhooks import metrics as webhook_metrics
from sinks.webhooks.delivery import RetryPolicy
from sinks.webhooks.dispatcher import STOP_GRACE_S, NotifyStats, Topics
from sinks.webhooks.held import HELD_TOPIC
from sinks.webhooks.notifier import Notifier
from sinks.webhooks.records import DEAD_LETTER_TOPIC, DELIVERIES_TOPIC, NOTIFY_TOPICS
from sinks.webhooks.settings import parse_allowed_hosts
from sinks.webhooks.silence_follower import SilenceFollower
from sinks.webhooks.silences import SILENCES_TOPIC
from sinks.webhooks.subscriptions import (
    SubscriptionError,
    Subscriptions,
    load_subscriptions,
    read_subscriptions,
)
from sinks.webhooks.targets import TargetPolicy, parse_networks
from sinks.webhooks.warmup import CANCEL_WAIT_S, WarmupConfig
from streams.topics import ALERTS, TopicNames

log = get_logger(__name__)


def policy_from(settings: Settings) -> RetryPolicy:
    cfg = settings.webhooks
    return RetryPolicy(
        timeout_s=cfg.timeout_s,
        initial_backoff_s=cfg.initial_backoff_s,
        max_backoff_s=cfg.max_backoff_s,
        retry_horizon_s=cfg.retry_horizon_s,
        min_retry_after_s=cfg.min_retry_after_s,
        max_retry_after_s=cfg.max_retry_after_s,
        max_attempts=cfg.max_attempts,
    )


def targets_from(settings: Settings) -> TargetPolicy:
    return TargetPolicy(parse_networks(settings.webhooks.allowed_networks))


def load_configured(settings: Settings, *, sending: bool = True) -> Subscriptions:
    """The settings' subscriptions file, checked for sending; without `sending` (a
    listing), only read (`read_subscriptions`: no secret, address or stage checked)."""
    path = settings.webhooks.subscriptions
    if path is None:
        raise UserError("set CHAINWATCH_WEBHOOKS__SUBSCRIPTIONS to a subscriptions YAML file")
    try:
        if not sending:
            return read_subscriptions(path)
        return load_subscriptions(
            path,
            parse_allowed_hosts(settings.webhooks.allowed_hosts),
            targets_from(settings),
            stages=load_plan(settings.engine.plan).stage_duration,
        )
    except SubscriptionError as exc:
        raise UserError(str(exc)) from None


def notify_topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Full name -> configs of the topics the notifier uses: alerts and its log (as the
    contract's), and `webhook-silences` (key = the silence's id) and `webhook-held` (key =
    endpoint and alert id, held.py), compacted."""
    kafka = settings.kafka
    names = TopicNames(kafka.topic_prefix)
    configs = contract_topic_configs(names, (ALERTS, *NOTIFY_TOPICS), kafka.topic_configs())
    configs[names(SILENCES_TOPIC)] = {**kafka.topic_configs(), "cleanup.policy": "compact"}
    configs[names(HELD_TOPIC)] = {**kafka.topic_configs(), "cleanup.policy": "compact"}
    return configs


def ensure_notify_topics(settings: Settings, *, only_silences: bool = False) -> None:
    """Create the notifier's missing topics (`notify_topic_configs`), or only the silences'."""
    kafka = settings.kafka
    configs = notify_topic_configs(settings)
    if only_silences:
        configs = {kafka.topic(SILENCES_TOPIC): configs[kafka.topic(SILENCES_TOPIC)]}
    create_missing_topics(
        kafka.endpoint,
        configs,
        request_timeout_s=kafka.request_timeout_s,
        partitions=kafka.partitions,
        replication_factor=kafka.replication_factor,
    )


def silence_follower(settings: Settings, *, create: bool = True) -> SilenceFollower:
    """The follower of the settings' silences topic, created if missing (unless not to
    `create`: `run_notify` has created every topic of the notifier in one admin round),
    its partitions counted here (each admin call within its deadline)."""
    kafka = settings.kafka
    topic = kafka.topic(SILENCES_TOPIC)
    if create:
        ensure_notify_topics(settings, only_silences=True)
    counts = partition_counts(kafka.endpoint, [topic], request_timeout_s=kafka.request_timeout_s)
    if topic not in counts:
        raise UserError(f"topic {topic} does not exist: `chainwatch notify` creates it")
    return SilenceFollower(
        kafka.endpoint, topic, counts[topic], call_s=admin_call_timeout_s(kafka.request_timeout_s)
    )


def build_notifier(
    settings: Settings, subscriptions: Subscriptions, *, silences: SilenceFollower | None = None
) -> Notifier:
    """The notifier; it consults the settings' silences (`silence_follower`) unless given."""
    kafka = settings.kafka
    names = TopicNames(kafka.topic_prefix)
    held = names(HELD_TOPIC)  # (`run_notify` created it; missing: held in the process only)
    counts = partition_counts(kafka.endpoint, [held], request_timeout_s=kafka.request_timeout_s)
    return Notifier(
        bootstrap=kafka.endpoint,
        group_id=f"{settings.engine.app_id}-notify",
        topics=Topics(
            names(ALERTS),
            names(DELIVERIES_TOPIC),
            names(DEAD_LETTER_TOPIC),
            held if held in counts else "",
            counts.get(held, 0),
        ),
        endpoints=subscriptions.endpoints,
        policy=policy_from(settings),
        targets=targets_from(settings),
        queue_size=settings.webhooks.queue_size,
        warmup=WarmupConfig(
            records=settings.webhooks.warmup_records, timeout_s=settings.webhooks.warmup_timeout_s
        ),
        silences=silences or silence_follower(settings),
    )


def stop_timeout_s(settings: Settings) -> float:
    """The notifier's stop deadline: `engine.stop_timeout_s`, or more when its graceful stop
    may need it. A stop lets the posts under way end (each attempt's `webhooks.timeout_s` +
    `STOP_GRACE_S`, `finish_in_flight`), ends a warm-up under way (`CANCEL_WAIT_S`: its
    reader's close), then commits the posts (`COMMIT_TIMEOUT_S`) and stops the consumer
    (`STOP_S`): a deadline shorter than that would cut a post whose outcome the next run
    then posts again, or, with Kafka frozen, end a stop whose every step is bounded as a
    hung one (`process_stop_timed_out`, exit 1)."""
    graceful = (
        settings.webhooks.timeout_s
        + STOP_GRACE_S
        + CANCEL_WAIT_S
        + COMMIT_TIMEOUT_S
        + STOP_S
        + STOP_MARGIN_S
    )
    return max(settings.engine.stop_timeout_s, graceful)


def run_notify(settings: Settings, *, drain: bool = False) -> NotifyStats:
    subscriptions = load_configured(settings)
    names = TopicNames(settings.kafka.topic_prefix)
    for endpoint in subscriptions.endpoints:  # at 0 while it waits for Kafka too
        webhook_metrics.start_series(
            endpoint.name, (names(DELIVERIES_TOPIC), names(DEAD_LETTER_TOPIC)), lambda: 0.0
        )
    startup = Startup(f"Kafka at {settings.kafka.bootstrap}")
    ops = serve_metrics(settings, startup)  # probes answer while it waits for Kafka
    with waiting_before_main("notifier", ops) as waited:
        # every topic of the notifier (alerts, its log, its silences compacted) in one round
        retry_until_reachable(
            lambda: ensure_notify_topics(settings), process="notifier", wait=not drain
        )
        silences = retry_until_reachable(
            lambda: silence_follower(settings, create=False), process="notifier", wait=not drain
        )
        log.info(
            "notify_starting",
            endpoints=[f"{e.name}@{e.host}" for e in subscriptions.endpoints],
        )
        notifier = build_notifier(settings, subscriptions, silences=silences)
        startup.also_ready(silences.problem)  # deliveries wait while it cannot read them
    if waited.stopped:  # nothing read: none of the endpoints' counts moved
        return NotifyStats(endpoints=len(subscriptions.endpoints))
    startup.waiting_for = None

    async def main(stop: asyncio.Event) -> NotifyStats:
        stats = await notifier.run(stop, drain=drain)
        log.info(
            "notify_stopped",
            delivered=stats.delivered,
            gave_up=stats.gave_up,
            silenced=stats.silenced,
            released=stats.released,
        )
        return stats

    with startup.watching_kafka(settings.kafka, ops):
        return run_until_signalled(
            "notifier", main, ops=ops, announced=True, stop_timeout_s=stop_timeout_s(settings)
        )
