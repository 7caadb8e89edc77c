"""Kafka's default partitioner (murmur2 of the key), with the hash memoised.

Every producer of the project partitions keyed records as Kafka's Java client
does, so a key's records land on the partition any other client would choose.
aiokafka's murmur2 is pure Python and was ~3 % of an engine step (py-spy,
docs/performance-engine.md); the keys the engine sends repeat from batch to
batch (orders in progress, units, customers), so the hash is cached.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=1 << 16)
def key_hash(key: bytes) -> int:
    """murmur2 of `key`, positive: the default partitioner's partition is this modulo the count."""
    return int(murmur2(key)) & 0x7FFFFFFF


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives `key` on a topic of `partitions`."""
    return key_hash(key) % partitions


class CachedPartitioner:
    """aiokafka's `DefaultPartitioner` with `key_hash` (faust's `producer_partitioner`)."""

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        if key is None:
            return random.choice(available or all_partitions)  # noqa: S311 - spreading, not secrecy
        return all_partitions[key_hash(key) % len(all_partitions)]
