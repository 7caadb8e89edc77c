"""`chainwatch silences add|list|expire`: maintenance windows of the webhook deliveries.

A silence is a record on the compacted `webhook-silences` topic, keyed by its id
(sinks/webhooks/silences.py); every notifier follows the topic, so a silence added or
expired here takes effect without a restart, on every notifier. `expire` writes the
silence again with `ends_at` = now (a compacted topic keeps the latest).

Deadlines: reading the topic is `chainwatch.topic_read.read_to_end` (each Kafka call,
and a read that makes no progress, within `admin_call_timeout_s`); a write is the
notifier's producer, its start, each publish and its stop bounded the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import TypeAdapter, ValidationError

from chainwatch.errors import UsageError, UserError
from chainwatch.kafka_admin import admin_call_timeout_s
from chainwatch.notify_runner import ensure_notify_topics
from chainwatch.settings import Settings
from chainwatch.topic_partitions import partition_counts
from chainwatch.topic_read import read_to_end
from schemas.common import UtcDatetime
from schemas.deadline import deadline
from schemas.plan import load_plan, parse_duration
from sinks.webhooks.log_producer import LogProducer
from sinks.webhooks.publish import publish
from sinks.webhooks.silences import MAX_SILENCE, MAX_SILENCES, SILENCES_TOPIC, Silence

_timestamp: TypeAdapter[datetime] = TypeAdapter(UtcDatetime)


def parse_time(option: str, value: str) -> datetime:
    try:
        return _timestamp.validate_python(value)
    except ValidationError:
        raise UsageError(
            f"{option} {value!r}: expected an RFC 3339 time with an offset (2027-03-12T22:00:00Z)"
        ) from None


@dataclass(frozen=True)
class Window:
    starts_at: datetime
    ends_at: datetime


def window(
    for_: str | None, until: str | None, from_: str | None, now: datetime | None = None
) -> Window:
    """`--from` (default now) and exactly one of `--for DURATION` or `--until TIME`."""
    now = now or datetime.now(UTC)
    if (for_ is None) == (until is None):
        raise UsageError("give exactly one of --for (4h, 90m, 2d) or --until (an RFC 3339 time)")
    starts = now if from_ is None else parse_time("--from", from_)
    if for_ is not None:
        try:
            length = parse_duration(for_)
        except ValueError:
            raise UsageError(f"--for {for_!r}: expected a duration (30m, 4h, 2d)") from None
        if length > MAX_SILENCE:
            raise UsageError(f"--for {for_!r}: a silence lasts at most {MAX_SILENCE.days} days")
        ends = starts + length
    else:
        assert until is not None
        ends = parse_time("--until", until)
    if ends <= now:
        raise UsageError("--for/--until: the silence would have ended already")
    return Window(starts, ends)


def new_silence(settings: Settings, fields: dict[str, object]) -> Silence:
    """The silence `fields` describe, its refusals as usage errors (one line, the field
    named); stages checked against the SLA plan's, as the subscriptions' filters are."""
    try:
        silence = Silence.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "silence"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise UsageError(f"{where}: {message}") from None
    if silence.stages:
        known = load_plan(settings.engine.plan).stage_duration
        if unknown := sorted(set(silence.stages) - set(known)):
            raise UsageError(
                f"--stage {', '.join(unknown)}: no stage of the SLA plan "
                f"({', '.join(sorted(known))})"
            )
    return silence


def _kafka_s(settings: Settings) -> float:
    return admin_call_timeout_s(settings.kafka.request_timeout_s)


async def read_silences(settings: Settings) -> dict[str, Silence]:
    """Every silence on the topic (the latest record of each id), by id."""
    kafka = settings.kafka
    topic = kafka.topic(SILENCES_TOPIC)
    counts = await asyncio.to_thread(
        partition_counts, kafka.endpoint, [topic], request_timeout_s=kafka.request_timeout_s
    )
    if topic not in counts:
        return {}
    records = await read_to_end(
        kafka.endpoint, topic, counts[topic], stall_s=_kafka_s(settings), close_s=_kafka_s(settings)
    )
    found: dict[str, Silence] = {}
    for record in records:
        key = (record.key or b"").decode(errors="replace")
        if record.value is None:
            found.pop(key, None)
            continue
        with contextlib.suppress(ValidationError):  # the notifier logs what it skips
            silence = Silence.model_validate_json(record.value)
            found[silence.silence_id] = silence
    return found


async def write_silence(settings: Settings, silence: Silence) -> None:
    kafka = settings.kafka
    within = _kafka_s(settings)
    producer = LogProducer(kafka.endpoint, start_timeout_s=within)
    await producer.start()
    try:
        async with deadline(within):
            await publish(
                producer,
                kafka.topic(SILENCES_TOPIC),
                silence.silence_id,
                silence.model_dump_json().encode(),
            )
    except TimeoutError:
        raise UserError(
            f"Kafka at {kafka.bootstrap} did not take silence {silence.silence_id} within "
            f"{within:g} s; check that the broker answers"
        ) from None
    finally:
        await producer.stop()


def add(settings: Settings, silence: Silence) -> Silence:
    """Write `silence` (creating the topic if needed), unless `MAX_SILENCES` are not
    expired yet: a notifier keeps no more."""
    now = datetime.now(UTC)

    async def main() -> None:
        await asyncio.to_thread(ensure_notify_topics, settings)
        current = [s for s in (await read_silences(settings)).values() if not s.expired(now)]
        if len(current) >= MAX_SILENCES:
            raise UserError(
                f"{len(current)} silences are in force or ahead, the most a notifier keeps "
                f"({MAX_SILENCES}); expire some first (`chainwatch silences list`)"
            )
        await write_silence(settings, silence)

    asyncio.run(main())
    return silence


def listed(settings: Settings, *, everything: bool) -> list[Silence]:
    """The silences in force or ahead (all with `everything`), by start then id."""
    now = datetime.now(UTC)
    found = asyncio.run(read_silences(settings)).values()
    shown = [s for s in found if everything or not s.expired(now)]
    return sorted(shown, key=lambda s: (s.starts_at, s.silence_id))


def expire(settings: Settings, silence_id: str) -> tuple[Silence, bool]:
    """Write silence `silence_id` again ending now; (it, False) if it had ended already."""
    now = datetime.now(UTC)

    async def main() -> tuple[Silence, bool]:
        found = await read_silences(settings)
        silence = found.get(silence_id)
        if silence is None:
            raise UserError(f"no silence {silence_id!r} (`chainwatch silences list --all`)")
        if silence.expired(now):
            return silence, False
        # one that has not started yet ends before it starts: never in force
        starts = min(silence.starts_at, now - timedelta(milliseconds=1))
        ended = Silence.model_validate(
            {**silence.model_dump(), "starts_at": starts, "ends_at": now}
        )
        await write_silence(settings, ended)
        return ended, True

    return asyncio.run(main())


def state_of(silence: Silence, now: datetime) -> str:
    if silence.expired(now):
        return "expired"
    return "active" if silence.in_force(now) else "future"
