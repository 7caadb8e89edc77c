"""Ingest throughput: events/s through the HTTP gateway vs a bare aiokafka producer.

    python bench/ingest.py [--events 50000] [--batch 500] [--concurrency 4]

Needs a running broker (CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS, default the local
one). The gateway runs as its own process (`chainwatch gateway`, as deployed)
on a fresh topic prefix; this process posts pre-serialised batches of scans
over keep-alive connections and waits for every 202 (= committed to Kafka).
The bare producer (acks=all, idempotent, same batch size and linger) then
sends the same records from this process and awaits every ack. Both figures,
their ratio and the machine are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chainwatch.free_port import free_port
from chainwatch.runners import prepare_topics
from chainwatch.settings import Settings, child_environment
from chainwatch.traffic import scan_events
from streams.ingest.auth import hash_token

TOKEN = "bench-admin-token"
TARGET_RATIO = 0.7


def _load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def _records(n: int) -> list[tuple[bytes, bytes]]:
    # at most 30 s between events: starting n * 30 s ago keeps every event_time in the
    # past (v1.2 rejects one more than the clock skew, 24 h, in the future)
    events = scan_events(seed=11, start=datetime.now(UTC) - timedelta(seconds=30 * n))
    return [next(events) for _ in range(n)]


async def _http(url: str, bodies: list[bytes], concurrency: int) -> float:
    """Post every body over `concurrency` keep-alive connections; the seconds it took.

    A minimal HTTP/1.1 client on asyncio streams, not httpx: with single-scan posts
    httpx's own CPU (~10 ms a request on this 2-core VM, shared with the gateway)
    capped the bench at ~50-100 requests/s whatever the gateway did.
    """
    host, port = url.removeprefix("http://").split(":")
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    head = (
        f"POST /v1/scans HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/x-ndjson\r\nContent-Length: "
    ).encode()

    async def post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> None:
        writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
        headers = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length: *(\d+)", headers)
        text = await reader.readexactly(int(length.group(1)) if length else 0)
        status = int(headers.split(b" ", 2)[1])
        if status != 202:
            raise RuntimeError(f"{status}: {text[:300]!r}")

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while not queue.empty():
                await post(reader, writer, queue.get_nowait())
        finally:
            writer.close()

    reader, writer = await asyncio.open_connection(host, int(port))
    await post(reader, writer, bodies[0])  # warm: topics, a producer
    writer.close()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def _bare(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        max_batch_size=262144,
        linger_ms=0,
    )
    await producer.start()
    try:
        await (await producer.send(topic, records[0][1], key=records[0][0]))
        started = time.perf_counter()
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("gateway exited during start-up")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("gateway not ready")


PY_SPY = Path(sys.executable).parent / "py-spy"
"""The sampling profiler of the dev dependencies, beside this interpreter."""


@contextlib.contextmanager
def _sampled(pid: int, profile: Path | None) -> Iterator[None]:
    """py-spy attached to `pid` while the block runs, its samples written to `profile`
    (nothing without one). It needs ptrace rights over the gateway (root, or
    kernel.yama.ptrace_scope 0): otherwise it says so and the bench goes on unsampled."""
    if profile is None:
        yield
        return
    spy = subprocess.Popen(
        [str(PY_SPY), "record", "-p", str(pid), "-r", "100", "--format", "raw", "-o", str(profile)],
        stdout=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its samples on SIGINT
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
        print(f"profile: {profile} ({'written' if profile.exists() else 'NOT written'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--producers", type=int, default=2, help="gateway producer pool")
    parser.add_argument(
        "--profile",
        type=Path,
        help="write py-spy's samples of the gateway while it takes the posts (collapsed "
        "stacks, its `raw` format: flamegraph.pl or speedscope read them)",
    )
    args = parser.parse_args()

    prefix = f"bench{uuid.uuid4().hex[:6]}."
    base = Settings()
    settings = Settings(
        kafka={**base.kafka.model_dump(), "topic_prefix": prefix},  # type: ignore[arg-type]
        gateway={"transactional_id": f"bench-{prefix.rstrip('.')}", "producers": args.producers},  # type: ignore[arg-type]
        log_level="warning",
    )
    # the bare producer's topic too: the broker creates none (auto.create.topics.enable=false)
    prepare_topics(settings, also=("bare-scans",))
    records = _records(args.events)
    bodies = [
        b"\n".join(value for _, value in records[i : i + args.batch])
        for i in range(0, len(records), args.batch)
    ]

    with tempfile.TemporaryDirectory() as tmp:
        tokens = Path(tmp) / "tokens.yaml"
        entry = {"name": "bench", "sha256": hash_token(TOKEN), "role": "admin"}
        tokens.write_text(json.dumps({"tokens": [entry]}))  # JSON is YAML
        port = free_port()
        env = child_environment(settings, os.environ)
        cmd = [sys.executable, "-m", "chainwatch", "gateway", "--port", str(port)]
        proc = subprocess.Popen([*cmd, "--tokens", str(tokens)], env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, proc)
            http_load = _load()
            with _sampled(proc.pid, args.profile):
                http_s = asyncio.run(_http(url, bodies, args.concurrency))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)

    bare_load = _load()
    bare_s = asyncio.run(_bare(settings.kafka.bootstrap, f"{prefix}bare-scans", records))
    http_rate = args.events / http_s
    bare_rate = args.events / bare_s
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(
        f"events: {args.events} scans, batches of {args.batch}, "
        f"{args.concurrency} concurrent HTTP clients, {args.producers} gateway producers"
    )
    print(f"HTTP gateway : {http_rate:10,.0f} events/s  ({http_s:.2f} s; {http_load})")
    print(f"bare aiokafka: {bare_rate:10,.0f} events/s  ({bare_s:.2f} s; {bare_load})")
    met = http_rate >= TARGET_RATIO * bare_rate
    print(
        f"ratio        : {http_rate / bare_rate:10.1%}  "
        f"(target >= {TARGET_RATIO:.0%}: {'met' if met else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
