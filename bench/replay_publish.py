"""The replay publisher's CPU a scenario line, with Kafka stood in for.

    .venv/bin/python bench/replay_publish.py [--records 100000] [--repeat 3]
    .venv/bin/python bench/replay_publish.py --hostile deep150   # one 8 MiB line

`publish_scenario` reads, judges and sends every line of a simulated scenario to a
producer that takes each record at once: what is left is the replay's own work per
line (decoding the line, finding its value as written, the record's key and event
time). Prints the CPU microseconds a line, the best of `--repeat` runs (a loaded
machine only adds). `--hostile` publishes one ~8 MiB line of a hostile shape (`HOSTILE`)
and prints its wall and CPU seconds, the peak RSS and what became of it (run each in a
process of its own: the peak is the process's).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chainwatch import replay
from chainwatch.settings import Settings
from schemas.dead_letter import DeadLetter
from simulator import SimConfig, write_scenario

MIB = 1024 * 1024
_HEAD = b'{"topic": "scans", "key": "PO-1", '


def _nested(levels: int, size: int) -> bytes:
    unit = b"[" * levels + b"0" + b"]" * levels
    return b"[" + b",".join([unit] * (size // (len(unit) + 1))) + b"]"


def _members(member: bytes, size: int) -> bytes:
    return member * (size // len(member))


HOSTILE: dict[str, Callable[[int], bytes]] = {
    # a value too large for Kafka: of small objects, of arrays nested 40, 150, 300 deep (the
    # last deeper than the line parser takes), of small objects and then too deep
    "objects": lambda size: _HEAD + b'"value": [' + b'{"a":1},' * (size // 8) + b"{}]}",
    "deep40": lambda size: _HEAD + b'"value": ' + _nested(40, size) + b"}",
    "deep150": lambda size: _HEAD + b'"value": ' + _nested(150, size) + b"}",
    "deep300": lambda size: _HEAD + b'"value": ' + _nested(300, size) + b"}",
    "tail300": lambda size: (
        _HEAD + b'"value": [' + b"{}," * ((size - 700) // 3) + b"[" * 300 + b"]" * 300 + b"]}"
    ),
    # `value` written again and again, the last small or too large; other members each
    # with an array; 8 MiB of deep arrays in a member the line ignores, beside its value
    "values": lambda size: _HEAD + _members(b'"value":0,', size) + b'"value":1}',
    "big_last": lambda size: (
        _HEAD + _members(b'"value":[0],', size // 2) + b'"value":' + _nested(1, size // 2) + b"}"
    ),
    "members": lambda size: _HEAD + _members(b'"m": [0, {}], ', size) + b'"value": 1}',
    "ignored": lambda size: _HEAD + b'"x": ' + _nested(150, size) + b', "value": {}}',
}


class _Producer:
    """Takes every record at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes | None) -> Any:
        self.sent.append((topic, value))
        acked = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return acked


async def _nothing(*_args: object, **_kwargs: object) -> None:
    return None


def _publish(scenario: Path) -> _Producer:
    producer = _Producer()
    replay.AIOKafkaProducer = lambda **_config: producer  # type: ignore[assignment,misc]
    replay.start_producer = _nothing  # type: ignore[assignment]
    replay.stop_producer = _nothing  # type: ignore[assignment]
    asyncio.run(replay.publish_scenario(Settings(), scenario, replay.no_progress))
    return producer


def per_line(records: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        scenario = Path(tmp) / "scenario.ndjson"
        write_scenario(scenario, SimConfig(days=None), max_records=records)
        lines = sum(1 for _ in replay.scenario_lines(scenario))
        best = float("inf")
        for _ in range(repeat):
            cpu = time.process_time()
            _publish(scenario)
            best = min(best, time.process_time() - cpu)
    print(f"{lines} lines: {best / lines * 1e6:.1f} us of CPU a line (best of {repeat})")


def hostile(shape: str) -> None:
    line = HOSTILE[shape](8 * MIB - 200)
    with tempfile.TemporaryDirectory() as tmp:
        scenario = Path(tmp) / "hostile.ndjson"
        scenario.write_bytes(line + b"\n")
        wall, cpu = time.perf_counter(), time.process_time()
        producer = _publish(scenario)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    outcome = "published"
    for topic, value in producer.sent:
        if topic.endswith("dead-letter") and value is not None:
            letter = DeadLetter.model_validate_json(value)
            outcome = f"{letter.reason_code.value}: {letter.errors[0].msg[:100]}"
    print(f"{shape}: {len(line) / MIB:.1f} MiB, wall {wall:.2f} s, CPU {cpu:.2f} s, ", end="")
    print(f"peak RSS {peak_mb:.0f} MB; {outcome}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--hostile", choices=sorted(HOSTILE))
    args = parser.parse_args()
    if args.hostile:
        hostile(args.hostile)
    else:
        per_line(args.records, args.repeat)


if __name__ == "__main__":
    main()
