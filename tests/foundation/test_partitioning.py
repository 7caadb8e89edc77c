"""The memoised partitioner gives every key the partition Kafka's default partitioner gives
(the engine's producer, its join bundles and the gateway's batched sends all use it)."""

from __future__ import annotations

import random
from pathlib import Path

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from streams.app import create_app
from streams.partitioning import CachedPartitioner, murmur2, partition_of


def test_every_key_gets_the_default_partitioners_partition() -> None:
    keys = [f"PO-{n:08d}".encode() for n in range(3000)] + [b"", b"KNIT-1", "Ünit-ß".encode()]
    default, cached = DefaultPartitioner(), CachedPartitioner()
    for count in (1, 2, 3, 4, 12):
        partitions = list(range(count))
        for key in keys + keys[:100]:  # the second time from the cache
            expected = default(key, partitions, partitions)
            assert cached(key, partitions, partitions) == expected
            assert partition_of(key, count) == expected
            assert expected == (kafka_python_murmur2(key) & 0x7FFFFFFF) % count


def test_murmur2_is_kafkas_on_keys_of_every_length_and_byte() -> None:
    draw = random.Random(9)
    keys = [draw.randbytes(size) for size in range(80) for _ in range(20)]
    keys += [b"\xff" * 67, b"\x80\x00\x7f", b"a1" * 32]  # high bytes; an alert id's length
    for key in keys:
        assert murmur2(key) == aiokafka_murmur2(key) == kafka_python_murmur2(key) & 0xFFFFFFFF


def test_a_record_without_a_key_goes_to_an_available_partition() -> None:
    cached = CachedPartitioner()
    assert {cached(None, [0, 1, 2, 3], [2]) for _ in range(50)} == {2}
    assert {cached(None, [0, 1], []) for _ in range(200)} == {0, 1}


def test_the_workers_producer_uses_it(tmp_path: Path) -> None:
    app = create_app("partitioning-test", bootstrap="localhost:1", partitions=2, data_dir=tmp_path)
    assert isinstance(app.conf.producer_partitioner, CachedPartitioner)
    assert app.producer.partitioner is app.conf.producer_partitioner  # what aiokafka is given
