"""`chainwatch silences add|list|expire|drop-held`: maintenance windows of the webhook
deliveries, and the messages they held for an endpoint no notifier sends to any more.

A silence is a record on the compacted `webhook-silences` topic, keyed by its id
(sinks/webhooks/silences.py); every notifier follows the topic, so a silence added or
expired here takes effect without a restart, on every notifier. `expire` writes the
silence again with `ends_at` = now (a compacted topic keeps the latest). Both also
tombstone the silences that ended more than `SILENCE_RETENTION` ago (at most
`MAX_TOMBSTONES` a run): compaction keeps a key's latest record for ever, so without
them the topic grew by one record per silence, and every notifier reads all of it at
its start. `drop-held`
writes a tombstone for each message `webhook-held` keeps of one endpoint that is not in
the subscriptions file (sinks/webhooks/held.py).

Deadlines: reading the topic is `sinks.topic_read.read_to_end` (each Kafka call,
and a read that makes no progress, within `admin_call_timeout_s`); a write is the
notifier's producer, its start, each publish and its stop bounded the same way.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, TypeAdapter, ValidationError

from chainwatch.errors import UsageError, UserError
from chainwatch.kafka_admin import admin_call_timeout_s
from chainwatch.notify_runner import ensure_notify_topics, load_configured
from chainwatch.settings import Settings
from chainwatch.topic_partitions import partition_counts
from schemas.common import UtcDatetime
from schemas.deadline import deadline
from schemas.plan import load_plan, parse_duration
from schemas.unit_status import UnitStatus
from sinks.daemon_executor import on_daemon_thread, to_daemon_thread
from sinks.producer_start import ProducerStartFailed
from sinks.topic_read import TopicReader, read_to_end
from sinks.webhooks.held import HELD_TOPIC
from sinks.webhooks.log_producer import LogProducer
from sinks.webhooks.publish import publish
from sinks.webhooks.silences import (
    MAX_SILENCE,
    MAX_SILENCES,
    SILENCES_TOPIC,
    Silence,
    silence_of_record,
)

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
        ends = starts + _length(for_)
    else:
        assert until is not None
        ends = parse_time("--until", until)
    if ends <= now:
        raise UsageError("--for/--until: the silence would have ended already")
    if until is not None:  # its end given: said with the options (the model names fields)
        start = "now" if from_ is None else f"--from {from_!r}"
        if ends <= starts:
            raise UsageError(f"--until {until!r}: not after {start}")
        if ends - starts > MAX_SILENCE:
            raise UsageError(
                f"--until {until!r}: a silence lasts at most {MAX_SILENCE.days} days from {start}"
            )
    return Window(starts, ends)


_WRITTEN_AS_DURATION = re.compile(r"\s*-?\s*[0-9]+\s*[smhd]\s*")


def _length(for_: str) -> timedelta:
    """`--for`, said as what it is when refused: `-4h` and `400d` are durations, one
    negative, one too long, and both were "expected a duration (30m, 4h, 2d)"."""
    try:
        length = parse_duration(for_)
    except ValueError:
        length = None
    if length is not None and length <= MAX_SILENCE:
        return length
    shown = repr(for_ if len(for_) <= 40 else for_[:40] + "…")
    if not _WRITTEN_AS_DURATION.fullmatch(for_):
        raise UsageError(f"--for {shown}: expected a duration (30m, 4h, 2d)")
    if for_.lstrip().startswith("-"):
        raise UsageError(f"--for {shown}: a silence cannot last a negative time")
    raise UsageError(f"--for {shown}: a silence lasts at most {MAX_SILENCE.days} days")


_OPTION_OF = {
    "units": "--unit",
    "stages": "--stage",
    "types": "--type",
    "order_ids": "--order",
    "customer_ids": "--customer",
    "endpoints": "--endpoint",
    "reason": "--reason",
    "created_by": "--by",
    "starts_at": "--from",
    "ends_at": "--for/--until",
}


def _contract_field(model: type[BaseModel], name: str) -> TypeAdapter[str]:
    """The rules of a contract model's field (its type and constraints), on their own."""
    field = model.model_fields[name]
    return TypeAdapter(Annotated[field.annotation, *field.metadata])  # type: ignore[arg-type]


_UNIT_ID = _contract_field(UnitStatus, "unit_id")
"""A unit id as the contract takes it (`unit-status`, `scans`): a silence for a value no
record can carry silences nothing."""


def new_silence(settings: Settings, fields: dict[str, object]) -> Silence:
    """The silence `fields` describe, its refusals as usage errors (one line, the option and
    its value named); units checked against the contract's unit id, stages against the
    SLA plan's, as the subscriptions' filters are."""
    if not any(
        fields.get(name) for name in ("units", "stages", "types", "order_ids", "customer_ids")
    ):
        raise UsageError(
            "give at least one of --unit, --stage, --type, --order or --customer: "
            "a silence of every alert is refused"
        )
    for unit in fields.get("units") or []:  # type: ignore[attr-defined]
        try:
            _UNIT_ID.validate_python(unit)
        except ValidationError as exc:
            raise UsageError(
                f"--unit {unit!r}: not a unit id ({exc.errors()[0]['msg']}, "
                "as the contract's unit_id)"
            ) from None
    try:
        silence = Silence.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        message = str(first["msg"]).removeprefix("Value error, ")
        if len(loc) == 2 and str(loc[0]) in _OPTION_OF and isinstance(loc[1], int):
            value = fields[str(loc[0])][loc[1]]  # type: ignore[index]
            raise UsageError(f"{_OPTION_OF[str(loc[0])]} {value!r}: {message}") from None
        if len(loc) == 1 and str(loc[0]) in _OPTION_OF:
            raise UsageError(f"{_OPTION_OF[str(loc[0])]}: {message}") from None
        where = ".".join(str(p) for p in loc) or "silence"
        raise UsageError(f"{where}: {message}") from None
    if silence.stages:
        known = load_plan(settings.engine.plan).stage_duration
        if unknown := sorted(set(silence.stages) - set(known)):
            raise UsageError(
                f"--stage {', '.join(unknown)}: no stage of the SLA plan "
                f"({', '.join(sorted(known))})"
            )
    return silence


SEEN_DEADLINE_S = 5.0
"""How long `add` asks the store which of its units and orders it has seen: past that it
says nothing of them (a warning only, never worth a late silence)."""


@dataclass(frozen=True)
class Unseen:
    units: list[str]
    orders: list[str]


def _quoted(values: list[str]) -> str:
    return ", ".join("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)


def _seen(settings: Settings, silence: Silence) -> Unseen:
    from sinks.clickhouse.readers import open_reader

    reader = open_reader(settings)
    try:
        units: set[str] = set()
        if silence.units:
            wanted = _quoted(silence.units)
            # unit_status is ordered by unit_id; scans only scanned until each is found
            rows = reader.query(
                f"SELECT DISTINCT unit_id FROM (SELECT unit_id FROM unit_status WHERE unit_id "  # noqa: S608 - identifiers ([A-Za-z0-9._:-]) quoted
                f"IN ({wanted}) UNION ALL SELECT unit_id FROM scans WHERE unit_id IN "
                f"({wanted})) LIMIT {len(silence.units)}"
            ).rows
            units = {str(r[0]) for r in rows}
        orders: set[str] = set()
        if silence.order_ids:
            rows = reader.query(  # ordered by order_id: a lookup of its key
                f"SELECT DISTINCT order_id FROM orders WHERE order_id IN "  # noqa: S608 - identifiers quoted
                f"({_quoted(silence.order_ids)})"
            ).rows
            orders = {str(r[0]) for r in rows}
    finally:
        reader.close()
    return Unseen(
        [u for u in silence.units if u not in units],
        [o for o in silence.order_ids if o not in orders],
    )


def unseen(settings: Settings, silence: Silence) -> Unseen | None:
    """The silence's units that no scan or unit status in the store names, and its orders
    the store has no record of; None when the store cannot say within `SEEN_DEADLINE_S`
    (none configured, not migrated, unreachable, slow). Reads only. On a daemon thread:
    a store that does not answer in time is left to its own deadlines, not waited for."""
    if not silence.units and not silence.order_ids:
        return None
    answer = on_daemon_thread(_seen, settings, silence, thread_name="silences-seen")
    try:
        return answer.result(timeout=SEEN_DEADLINE_S)
    except Exception:  # the store's failure or slowness: no warning, not this command's
        return None


def unknown_endpoints(settings: Settings, silence: Silence) -> tuple[list[str], list[str]]:
    """The silence's `endpoints` that the settings' subscriptions file does not name, and
    the names it has; nothing when no file is set or it cannot be read (`notify` says
    why). A silence for a misspelt endpoint silenced nothing, and said nothing: a warning
    then, not a refusal (in a rolling change of the file another notifier may have it)."""
    if not silence.endpoints or settings.webhooks.subscriptions is None:
        return [], []
    try:
        names = [e.name for e in load_configured(settings, sending=False).endpoints]
    except UserError:
        return [], []
    return [e for e in silence.endpoints if e not in names], names


def _kafka_s(settings: Settings) -> float:
    return admin_call_timeout_s(settings.kafka.request_timeout_s)


async def read_silences(settings: Settings) -> dict[str, Silence]:
    """Every silence on the topic (the latest record of each id), by id."""
    kafka = settings.kafka
    topic = kafka.topic(SILENCES_TOPIC)
    counts = await to_daemon_thread(
        partition_counts, kafka.endpoint, [topic], request_timeout_s=kafka.request_timeout_s,
        thread_name="silences-partitions",
    )  # fmt: skip
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
        try:
            silence = silence_of_record(record.key, record.value)
        except ValueError:  # the notifier logs what it skips; the key's latest record
            found.pop(key, None)  # decides, as after a compaction
            continue
        found[silence.silence_id] = silence
    return found


SILENCE_RETENTION = timedelta(days=7)
"""How long a silence that has ended stays on the topic (`list --all` shows it, as
`expired`) before `add` or `expire` writes its tombstone: a week of history (last
night's maintenance window, what held the alerts of a weekend), far past any clock
skew between the machines (an ended silence never applies in any case)."""
MAX_TOMBSTONES = 500
"""Silences one `add` or `expire` tombstones at most, those that ended first: the run
stays one round of writes however many have piled up (each run still removes more
than the one silence it may add, so the backlog shrinks)."""


@dataclass(frozen=True)
class Pruned:
    """What a run did to the silences that ended more than `SILENCE_RETENTION` ago."""

    removed: int
    """Tombstoned by this run."""
    left: int
    """Past the retention and left for the next run (past `MAX_TOMBSTONES`, or the
    tombstones not taken: `failed`)."""
    failed: str = ""
    """Why the tombstones were not written (Kafka did not take them in time), or ''."""


def _ended_long_ago(found: dict[str, Silence], now: datetime) -> list[Silence]:
    """The silences that ended more than `SILENCE_RETENTION` before `now`, first ended
    first. Never one in force or ahead: its end is after `now`."""
    old = [s for s in found.values() if s.ends_at <= now - SILENCE_RETENTION]
    return sorted(old, key=lambda s: (s.ends_at, s.silence_id))


async def prune(settings: Settings, found: dict[str, Silence], now: datetime) -> Pruned:
    """A tombstone for each of the first `MAX_TOMBSTONES` silences of `found` (the topic
    as read) that ended more than `SILENCE_RETENTION` before `now`. Run after the
    command's own write: a broker that does not take them is said (`Pruned.failed`),
    not an error of the silence written, and the next run tries again."""
    old = _ended_long_ago(found, now)
    if not old:
        return Pruned(0, 0)
    ids = [s.silence_id for s in old[:MAX_TOMBSTONES]]
    try:
        await write_tombstones(settings, settings.kafka.topic(SILENCES_TOPIC), ids)
    except TombstonesNotTaken as exc:
        return Pruned(0, len(old), exc.why)
    except ProducerStartFailed as exc:
        return Pruned(0, len(old), str(exc))
    return Pruned(len(ids), len(old) - len(ids))


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


def add(settings: Settings, silence: Silence) -> Pruned:
    """Write `silence` (creating the topic if needed), unless `MAX_SILENCES` are not
    expired yet: a notifier keeps no more. Then `prune` the topic as read."""
    now = datetime.now(UTC)

    async def main() -> Pruned:
        await to_daemon_thread(ensure_notify_topics, settings, thread_name="silences-topics")
        found = await read_silences(settings)
        current = [s for s in found.values() if not s.expired(now)]
        if len(current) >= MAX_SILENCES:
            raise UserError(
                f"{len(current)} silences are in force or ahead, the most a notifier keeps "
                f"({MAX_SILENCES}); expire some first (`chainwatch silences list`)"
            )
        await write_silence(settings, silence)
        return await prune(settings, found, now)

    return asyncio.run(main())


def listed(settings: Settings, *, everything: bool) -> list[Silence]:
    """The silences in force or ahead (all with `everything`), by start then id."""
    now = datetime.now(UTC)
    found = asyncio.run(read_silences(settings)).values()
    shown = [s for s in found if everything or not s.expired(now)]
    return sorted(shown, key=lambda s: (s.starts_at, s.silence_id))


def expire(settings: Settings, silence_id: str) -> tuple[Silence, bool, Pruned]:
    """Write silence `silence_id` again ending now; (it, False) if it had ended already.
    Then `prune` the topic as read (the silence itself, if it ended long ago)."""
    now = datetime.now(UTC)

    async def main() -> tuple[Silence, bool, Pruned]:
        found = await read_silences(settings)
        silence = found.get(silence_id)
        if silence is None:
            raise UserError(f"no silence {silence_id!r} (`chainwatch silences list --all`)")
        if silence.expired(now):
            return silence, False, await prune(settings, found, now)
        # one that has not started yet ends before it starts: never in force
        starts = min(silence.starts_at, now - timedelta(milliseconds=1))
        ended = Silence.model_validate(
            {**silence.model_dump(), "starts_at": starts, "ends_at": now}
        )
        await write_silence(settings, ended)
        return ended, True, await prune(settings, found, now)

    return asyncio.run(main())


DROP_CONCURRENCY = 500
"""Tombstones `drop-held` has in flight at once."""


def held_of(settings: Settings, endpoint: str) -> list[bytes]:
    """The keys `webhook-held` keeps (not tombstoned) of `endpoint`, which must not be in
    the subscriptions file (if one is set): its notifiers send what is held of it. As
    the topic has them: a key that is no UTF-8, decoded and encoded again, got its
    tombstone under another key and outlived the drop."""
    path = settings.webhooks.subscriptions
    if path is not None and endpoint in {
        e.name for e in load_configured(settings, sending=False).endpoints
    }:
        raise UserError(
            f"endpoint {endpoint!r} is in the subscriptions file {path}: its notifiers send "
            "what is held of it; remove it from the file (on every notifier) first"
        )
    kafka = settings.kafka
    topic = kafka.topic(HELD_TOPIC)

    async def main() -> list[bytes]:
        counts = await to_daemon_thread(
            partition_counts, kafka.endpoint, [topic], request_timeout_s=kafka.request_timeout_s,
            thread_name="held-partitions",
        )  # fmt: skip
        if topic not in counts:
            return []
        prefix = f"{endpoint}|".encode()
        live: dict[bytes, None] = {}  # (keys only: the topic is read a fetch at a time)
        async with TopicReader(
            kafka.endpoint, topic, counts[topic], stall_s=_kafka_s(settings),
            close_s=_kafka_s(settings),
        ) as reader:  # fmt: skip
            async for records in reader.batches_to_end():
                for record in records:
                    if record.key is None or not record.key.startswith(prefix):
                        continue
                    if record.value is None:
                        live.pop(record.key, None)
                    else:
                        live[record.key] = None
        return list(live)

    return asyncio.run(main())


class TombstonesNotTaken(Exception):
    """Kafka did not take a round of `write_tombstones` within the call deadline."""

    def __init__(self, why: str, written: int) -> None:
        super().__init__(why)
        self.why = why
        self.written = written
        """The tombstones of the rounds before, which Kafka took."""


async def write_tombstones(settings: Settings, topic: str, keys: Sequence[str | bytes]) -> None:
    """A tombstone on `topic` for each of `keys`, `DROP_CONCURRENCY` in flight at once,
    each round within the call deadline (`TombstonesNotTaken` past it); the producer's
    start bounded as `LogProducer.start` is (`drop-held`, and `prune` after add/expire)."""
    kafka = settings.kafka
    within = _kafka_s(settings)
    producer = LogProducer(kafka.endpoint, start_timeout_s=within)
    await producer.start()
    try:
        for start in range(0, len(keys), DROP_CONCURRENCY):
            chunk = keys[start : start + DROP_CONCURRENCY]
            try:
                async with deadline(within):
                    await asyncio.gather(*(publish(producer, topic, k, None) for k in chunk))
            except TimeoutError:
                why = f"Kafka at {kafka.bootstrap} did not take them within {within:g} s"
                raise TombstonesNotTaken(why, start) from None
    finally:
        await producer.stop()


def drop_held(settings: Settings, keys: list[bytes]) -> str:
    """A tombstone on `webhook-held` for each of `keys` (`held_of`); the topic's name."""
    kafka = settings.kafka
    topic = kafka.topic(HELD_TOPIC)
    try:
        asyncio.run(write_tombstones(settings, topic, keys))
    except TombstonesNotTaken as exc:
        raise UserError(
            f"Kafka at {kafka.bootstrap} did not take the tombstones within "
            f"{_kafka_s(settings):g} s (the first {exc.written} were written); check that the "
            "broker answers, and run the command again"
        ) from None
    return topic


def state_of(silence: Silence, now: datetime) -> str:
    if silence.expired(now):
        return "expired"
    return "active" if silence.in_force(now) else "future"
