"""The messages a silence held, kept on Kafka: sent when no silence covers them any more.

An endpoint that records an open alert's latest message `silenced` keeps it (in
`EndpointPipe.held`) and writes it to the compacted `webhook-held` topic, key
`<endpoint>|<alert id>`: the alert, its `webhook-id` and where its record is on
`alerts`. Once sent (its outcome recorded), or once a later message of the alert was
read (resolved, escalated: that one decides), the key gets a tombstone. A partition
newly assigned to an endpoint (its start, a rebalance) has what is held of it read
back from the topic (`read_held`), so a notifier restarted during a maintenance
window, or the partition's next owner, still sends the alert when the window ends,
and a message sent before the restart is not sent again. A read that fails is tried
again while the partitions stay assigned; past the endpoint's bound (`MAX_HELD`) a
message stays on the topic only and is read back once the endpoint holds fewer
(dispatcher.py).
"""

from __future__ import annotations

from collections.abc import Collection

from pydantic import BaseModel, ConfigDict, ValidationError

from schemas.alerts import Alert
from schemas.deadline import deadline
from schemas.kafka_security import Kafka
from sinks.topic_read import TopicReader

HELD_TOPIC = "webhook-held"
POLL_MS = 200


class HeldMessage(BaseModel):
    """One message a silence held: what is needed to send it as it would have been."""

    model_config = ConfigDict(frozen=True)

    endpoint: str
    webhook_id: str
    partition: int
    offset: int
    alert: Alert


def held_key(endpoint: str, alert_id: str) -> str:
    return f"{endpoint}|{alert_id}"


async def read_held(
    bootstrap: Kafka,
    topic: str,
    topic_partitions: int,
    endpoint: str,
    partitions: Collection[int],
    *,
    call_s: float,
) -> dict[str, HeldMessage]:
    """What `endpoint` holds of the `alerts` partitions `partitions`, by alert id: the
    whole topic (its partitions 0..`topic_partitions`-1) read to its end offsets
    (`sinks.topic_read`: a consumer of no group), the latest value of each key. Raises
    `TimeoutError` past `call_s` for the whole read, Kafka's errors."""
    prefix = f"{endpoint}|".encode()
    found = await _latest(bootstrap, topic, topic_partitions, prefix, call_s=call_s)
    return {
        key[len(prefix) :].decode(errors="replace"): held
        for key, held in found.items()
        if held.partition in partitions
    }


async def count_held(
    bootstrap: Kafka,
    topic: str,
    topic_partitions: int,
    endpoints: Collection[str],
    *,
    call_s: float,
) -> dict[str, int]:
    """How many alerts each of `endpoints` holds on the topic (every partition of
    `alerts`), read as `read_held` reads it: what a drain leaves held says so."""
    found = await _latest(bootstrap, topic, topic_partitions, b"", call_s=call_s)
    counts = dict.fromkeys(endpoints, 0)
    for held in found.values():
        if held.endpoint in counts:
            counts[held.endpoint] += 1
    return counts


async def _latest(
    bootstrap: Kafka, topic: str, topic_partitions: int, prefix: bytes, *, call_s: float
) -> dict[bytes, HeldMessage]:
    """The latest held message of each key that starts with `prefix`, tombstoned keys left
    out (`read_held`)."""
    found: dict[bytes, HeldMessage] = {}
    reader = TopicReader(
        bootstrap, topic, topic_partitions, stall_s=call_s, close_s=call_s,
        own_deadlines=False, poll_ms=POLL_MS,
    )  # fmt: skip
    try:
        async with deadline(call_s):
            await reader.start()
            async for records in reader.batches_to_end():
                for record in records:
                    if record.key is None or not record.key.startswith(prefix):
                        continue
                    if record.value is None:
                        found.pop(record.key, None)
                        continue
                    try:
                        held = HeldMessage.model_validate_json(record.value)
                    except ValidationError:
                        continue  # not ours to send: left to the alert's next change
                    found[record.key] = held
    finally:
        await reader.close()
    return found
