"""Kafka's default partitioner (murmur2 of the key), with the hash memoised.

Every producer of the project partitions keyed records as Kafka's Java client
does, so a key's records land on the partition any other client would choose.
aiokafka's murmur2 is pure Python and was ~3 % of an engine step (py-spy,
docs/performance-engine-history.md); the keys the engine sends repeat from batch to
batch (orders in progress, units, customers), so the hash is cached. Alert
ids (64 hex characters) mostly do not repeat: `murmur2` here is the same
function as aiokafka's, reading the key four bytes at a time (`struct`), about
half the CPU per 64-byte key (tests/foundation/test_partitioning.py checks it
against aiokafka's).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from functools import lru_cache

_WORDS = struct.Struct("<I")
_M = 0x5BD1E995


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), unsigned 32 bits."""
    length = len(data)
    h = 0x9747B28C ^ length
    whole = length & ~3
    for (k,) in _WORDS.iter_unpack(data[:whole]) if whole else ():
        k = (k * _M) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * _M) & 0xFFFFFFFF
        h = ((h * _M) & 0xFFFFFFFF) ^ k
    extra = length & 3
    if extra:
        if extra >= 3:
            h ^= data[whole + 2] << 16
        if extra >= 2:
            h ^= data[whole + 1] << 8
        h = ((h ^ data[whole]) * _M) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * _M) & 0xFFFFFFFF
    return h ^ (h >> 15)


@lru_cache(maxsize=1 << 16)
def key_hash(key: bytes) -> int:
    """murmur2 of `key`, positive: the default partitioner's partition is this modulo the count."""
    return murmur2(key) & 0x7FFFFFFF


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
