"""The gateway's batched sends put each key on the partition every other producer would."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from streams.ingest.publisher import _murmur2


def test_cached_hash_matches_the_default_partitioner() -> None:
    partitioner = DefaultPartitioner()
    for n in (1, 3, 4, 12):
        partitions = list(range(n))
        for i in range(500):
            key = f"PO-{i:06d}".encode()
            assert partitions[_murmur2(key) % n] == partitioner(key, partitions, partitions)
