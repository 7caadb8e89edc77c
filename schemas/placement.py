"""Whether an input record was read from the partition its id belongs to.

The engine keeps each id's state (an order, a unit, a customer) on one
partition: the one Kafka's default partitioner (murmur2, as the Java client)
gives the id as key. A record without a key is valid input (CONTRACT v1.2 only
refuses a key that is present and differs from the id), but Kafka spreads
keyless records over every partition, and a producer with another partitioner
(librdkafka's default is CRC32) puts keyed ones elsewhere too. Processed where
it was read, such a record wrote its id's state to that partition's changelog as
well, and after a restart the stale copy could win. So the engine forwards it
to its id's partition of the same topic, keyed, and processes the copy there;
the sink stores the copy's rows, not the original's. One decision for both,
here: they must agree on which records are the originals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from schemas.customers import Tombstone
from schemas.validation import ID_FIELD_BY_TOPIC, InputRecord

__all__ = ["Misplaced", "misplaced"]


@dataclass(frozen=True, slots=True)
class Misplaced:
    """Where a record read from another partition than its id's belongs."""

    key: bytes
    """Its id as Kafka key: the key it carried, or its id field when it had none."""
    home: int
    """The partition Kafka's default partitioner gives `key`."""
    keyless: bool
    """It had no key (else its producer partitions keys otherwise than murmur2)."""

    def advice(self, topic: str) -> str:
        """What to change in the producer so its records need no forwarding."""
        if self.keyless:
            return f"produce {topic} records with their {ID_FIELD_BY_TOPIC[topic]} as key"
        return (
            "set the producer's partitioner to Kafka's default, murmur2 "
            "(librdkafka: partitioner=murmur2_random; its default is CRC32)"
        )


def misplaced(
    topic: str,
    key: bytes | None,
    record: InputRecord,
    partition: int,
    home: Callable[[bytes], int],
) -> Misplaced | None:
    """None when `record` of logical input `topic`, read from `partition`, is where `home`
    (the default partitioner over the topic's partitions) puts its id, or names no id
    (a tombstone without a key); else where it belongs.

    For a record that passed `check_key`: a present key is then the id, and is hashed
    as it is (the id is not encoded again; this runs for every input record).
    """
    keyless = key is None
    if key is None:
        if isinstance(record, Tombstone):
            return None  # names no customer: ignored wherever it is read
        key = getattr(record, ID_FIELD_BY_TOPIC[topic]).encode()
    belongs = home(key)
    if belongs == partition:
        return None
    return Misplaced(key, belongs, keyless)
