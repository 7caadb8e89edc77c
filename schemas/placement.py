"""Whether an input record was read from the partition its id belongs to.

The engine keeps each id's state (an order, a unit, a customer) on one
partition: the one Kafka's default partitioner (murmur2, as the Java client)
gives the id as key. Processed where it was read, a record from another
partition wrote its id's state to that partition's changelog as well, and after
a restart the stale copy could win. Two cases, decided here once for the engine
and the sink (they must agree on which records are stored):

- A keyless record is valid input (CONTRACT v1.2 only refuses a key that is
  present and differs from the id), but Kafka spreads keyless records over
  every partition. The engine forwards it to its id's partition of the same
  topic, keyed with the id, and processes the copy there; the sink stores the
  copy's rows, not the original's.
- A keyed record read from another partition than its key's is a dead letter
  (`key_mismatch`, error type `wrong_partition`): its producer partitions keys
  otherwise (librdkafka's default is CRC32), or the worker reading it counts
  the topic's partitions otherwise. It is never forwarded: a forwarded copy is
  keyed, so two workers that disagree on the partition count (a topic altered
  from 4 to 8 partitions, one worker started before) would send it back and
  forth for ever, one appended record per hop. Dead letters are bounded and
  say what to fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from schemas.dead_letter import ErrorDetail, ReasonCode
from schemas.validation import ID_FIELD_BY_TOPIC, InputRecord, RecordRejected, record_id

__all__ = ["Misplaced", "misplaced"]


@dataclass(frozen=True, slots=True)
class Misplaced:
    """Where a keyless record read from another partition than its id's belongs."""

    key: bytes
    """Its id as Kafka key: the key the forwarded copy carries."""
    home: int
    """The partition Kafka's default partitioner gives `key`."""

    @staticmethod
    def advice(topic: str) -> str:
        """What to change in the producer so its records need no forwarding."""
        return f"produce {topic} records with their {ID_FIELD_BY_TOPIC[topic]} as key"


def misplaced(
    topic: str,
    key: bytes | None,
    record: InputRecord,
    partition: int,
    home: Callable[[bytes], int],
) -> Misplaced | None:
    """None when `record` of logical input `topic`, read from `partition`, is where `home`
    (the default partitioner over the topic's partitions) puts its id, or names no id
    (a tombstone without a key); where it belongs when it is keyless and elsewhere.

    Raises `RecordRejected` (`key_mismatch`, `wrong_partition`) for a keyed record
    elsewhere (see the module's docstring: forwarding it could loop). For a record
    that passed `check_key`: a present key is then the id, and is hashed as it is
    (the id is not encoded again; this runs for every input record).
    """
    if key is not None:
        belongs = home(key)
        if belongs != partition:
            raise _wrong_partition(topic, key, partition, belongs)
        return None
    own = record_id(topic, record)
    if own is None:
        return None  # a tombstone has no id: its key names it, and a keyless one is dead-lettered
    key = own.encode()
    belongs = home(key)
    if belongs == partition:
        return None
    return Misplaced(key, belongs)


def _wrong_partition(topic: str, key: bytes, partition: int, belongs: int) -> RecordRejected:
    msg = (
        f"the record is on partition {partition}, not on partition {belongs} where Kafka's "
        f"default partitioner (murmur2) puts its key {key.decode('utf-8', 'replace')!r}: "
        "its producer partitions keys otherwise (librdkafka's default is CRC32: set "
        "partitioner=murmur2_random), or the workers' CHAINWATCH_KAFKA__PARTITIONS differs "
        "from the topic's partition count"
    )
    field = ID_FIELD_BY_TOPIC[topic]
    return RecordRejected(
        ReasonCode.KEY_MISMATCH, [ErrorDetail(loc=field, msg=msg, type="wrong_partition")]
    )
