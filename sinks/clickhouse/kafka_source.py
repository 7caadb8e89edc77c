"""Which Kafka the stored offsets came from, and what happens when it changes.

The sink's exactly-once rests on Kafka offsets: every row stores
`kafka_offset`, the stored offsets of a partition are skipped after a crash,
and `alerts`/`customers` use the offset as their version. A rebuilt Kafka (a
new cluster, or a topic deleted and created again) restarts every offset at 0,
so against a kept ClickHouse its new records would look "already stored" and
lose to older versions.

So the store records, per topic, the cluster id and the topic id it was filled
from (`kafka_sources`). At start the sink compares them with the broker's:

- first start (or a store from before this table): the current ids are recorded;
- same ids: nothing changes;
- other ids: the sink **refuses to start** and says so (`KafkaChanged`), unless
  the operator runs `chainwatch sink --new-kafka-epoch` once. That starts a new
  epoch for each changed topic: its records are stored with
  `kafka_offset = offset + base`, where `base` is one past the highest offset
  stored for the topic, so skip-sets, de-duplication tokens and versions keep
  working, and every new version wins over every old one. Kafka commits use the
  real offsets. History already stored is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from sinks.errors import SinkError

log = structlog.stdlib.get_logger(__name__)

NEW_EPOCH_HINT = "chainwatch sink --new-kafka-epoch"


@dataclass(frozen=True)
class KafkaIdentity:
    cluster_id: str
    topic_id: str


class KafkaChanged(SinkError):
    """The broker is not the one the store's offsets came from; the message says what to do."""


def resolve_offset_bases(
    client: Any,
    identities: Mapping[str, KafkaIdentity],
    tables_by_topic: Mapping[str, Iterable[str]],
    *,
    new_epoch: bool = False,
) -> dict[str, int]:
    """The offset base of each topic's current epoch; raises `KafkaChanged` (see module doc)."""
    rows = client.query(
        "SELECT topic, argMax(epoch, epoch), argMax(cluster_id, epoch), "
        "argMax(topic_id, epoch), argMax(offset_base, epoch) FROM kafka_sources GROUP BY topic"
    ).result_rows
    stored = {str(r[0]): (int(r[1]), KafkaIdentity(str(r[2]), str(r[3])), int(r[4])) for r in rows}
    bases: dict[str, int] = {}
    changed: list[str] = []
    records: list[tuple[str, int, str, str, int]] = []
    for topic, now in identities.items():
        known = stored.get(topic)
        if known is None:
            records.append((topic, 0, now.cluster_id, now.topic_id, 0))
            bases[topic] = 0
            continue
        epoch, was, base = known
        if was == now:
            bases[topic] = base
        elif new_epoch:
            top = _highest_offset(client, topic, tables_by_topic.get(topic, ()))
            new_base = max(base, top + 1)
            records.append((topic, epoch + 1, now.cluster_id, now.topic_id, new_base))
            bases[topic] = new_base
            log.warning(
                "kafka_epoch_started", topic=topic, epoch=epoch + 1, offset_base=new_base,
                cluster_id=now.cluster_id, topic_id=now.topic_id,
            )  # fmt: skip
        else:
            changed.append(
                f"{topic} (cluster {was.cluster_id or '?'} -> {now.cluster_id or '?'}, "
                f"topic id {was.topic_id or '?'} -> {now.topic_id or '?'})"
            )
    if changed:
        raise KafkaChanged(
            "Kafka is not the one this ClickHouse store was filled from: "
            + "; ".join(changed)
            + ". Its offsets restarted, so new records would be taken for ones already stored. "
            f"Run `{NEW_EPOCH_HINT}` once to store the new Kafka's records after the old ones "
            "(history is kept), or point the sink at an empty store."
        )
    if records:
        client.insert(
            "kafka_sources",
            records,
            column_names=["topic", "epoch", "cluster_id", "topic_id", "offset_base"],
        )
    return bases


def _highest_offset(client: Any, topic: str, tables: Iterable[str]) -> int:
    top = -1
    for table in tables:
        result = client.query(
            f"SELECT max(kafka_offset), count() FROM {table} WHERE kafka_topic = {{t:String}}",  # noqa: S608 - table constant
            parameters={"t": topic},
        ).result_rows[0]
        if int(result[1]):
            top = max(top, int(result[0]))
    return top
