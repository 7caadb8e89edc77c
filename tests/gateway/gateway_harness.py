"""Helpers of the gateway tests: the gateway on a real port against the real broker,
and readers of what it published.

uvicorn runs in a background thread (its own event loop, lifespan on), so
tests talk HTTP to it like a stage unit would; records are read back with a
`read_committed` consumer, the way downstream consumers must read them.

Test modules import them from here, never from `conftest`: pytest imports every
directory's conftest.py as the one top-level module `conftest`, so `from conftest
import Harness` found whichever was imported last, and `pytest tests/gateway
tests/dashboards` failed to collect (tests/gateway/conftest.py holds the fixtures).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import socket
import struct
import sys
import termios
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from kafka import KafkaConsumer, TopicPartition
from logging_state import logging_restored
from readable import readable_within
from samples import fresh_scan as scan

from chainwatch.commands.gateway import uvicorn_config
from chainwatch.free_port import free_port
from chainwatch.runners import prepare_topics
from chainwatch.settings import Settings, child_environment
from schemas.epcis import EpcisMapping, load_epcis_mapping
from streams.ingest.app import create_gateway_app
from streams.ingest.auth import Role, TokenEntry, TokenRegistry, hash_token
from streams.ingest.publisher import Publisher
from streams.ingest.readiness import TopicPreparation
from streams.ingest.settings import GatewaySettings
from streams.topics import TopicNames

DATA = Path(__file__).parent / "data"
EPCIS_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "epcis"
"""The README's EPCIS example (mapping, capture document, the scans it gives): read in place."""

TOKENS: dict[str, tuple[Role, str | None]] = {
    "unit-dye": (Role.UNIT, "DYE-01"),
    "unit-knit": (Role.UNIT, "KNIT-02"),
    "unit-qc": (Role.UNIT, "QC-N1"),
    "orders": (Role.ORDERS, None),
    "crm": (Role.CRM, None),
    "admin": (Role.ADMIN, None),
}


def token_of(name: str) -> str:
    return f"secret-token-of-{name}"


STAGES: dict[str, list[str]] = {"unit-dye-dyeing-only": ["dyeing"]}
"""Unit tokens bound to stages (their unit is DYE-01)."""


def make_registry() -> TokenRegistry:
    return TokenRegistry(
        [
            TokenEntry(name=name, sha256=hash_token(token_of(name)), role=role, unit_id=unit)
            for name, (role, unit) in TOKENS.items()
        ]
        + [
            TokenEntry(
                name=name,
                sha256=hash_token(token_of(name)),
                role=Role.UNIT,
                unit_id="DYE-01",
                stages=stages,
            )
            for name, stages in STAGES.items()
        ]
    )


class ServerThread:
    """uvicorn in a thread, configured as `chainwatch gateway` serves it; `start` returns
    once it listens (or fails loudly), `stop` once it ended (or fails loudly)."""

    def __init__(self, app: Any, gateway: GatewaySettings) -> None:
        config = uvicorn_config(app, gateway, host="127.0.0.1", port=0, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout_s: float = 30.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def stop(self, timeout_s: float = 60.0) -> None:
        """Shut down as on SIGTERM; `timeout_s` is well above the gateway's own bounds
        (`shutdown_grace_s`, then the publisher's close), so a stop that takes it hangs."""
        self.server.should_exit = True
        self.thread.join(timeout=timeout_s)
        if self.thread.is_alive():
            raise AssertionError(
                f"the gateway did not stop within {timeout_s:g} s; {self._where()}"
            )

    def _where(self) -> str:
        """Where a gateway that does not stop is stuck: its thread's stack and its event
        loop's tasks (read from another thread: a diagnosis, best effort)."""
        frame = sys._current_frames().get(self.thread.ident or -1)
        lines = ["its thread is at:", "".join(traceback.format_stack(frame)) if frame else "-"]
        try:
            loop = self.server.servers[0].get_loop() if self.server.servers else None
            for task in asyncio.all_tasks(loop) if loop is not None else ():
                stack = io.StringIO()
                task.print_stack(limit=8, file=stack)
                lines += [f"task {task.get_name()}:", stack.getvalue()]
        except RuntimeError as exc:  # the loop changed its tasks meanwhile
            lines.append(f"(tasks not read: {exc})")
        return "\n".join(lines)


@dataclass
class Harness:
    base_url: str
    settings: Settings
    client: httpx.Client
    topics: TopicNames = field(init=False)

    def __post_init__(self) -> None:
        self.topics = TopicNames(self.settings.kafka.topic_prefix)

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        token: str | None = "admin",
        content: bytes | None = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token_of(token)}"
        sent["Content-Type"] = content_type
        if content is None:
            import json

            content = json.dumps(body).encode()
        return self.client.post(path, content=content, headers=sent, params=params)

    def read_at(self, topic: str, placements: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
        """The (key, value) of the records a 202 says it stored, read committed."""
        return read_positions(self.settings.kafka.bootstrap, self.topics(topic), placements)

    def read_all(self, topic: str) -> list[tuple[bytes | None, bytes | None]]:
        return read_committed(self.settings.kafka.bootstrap, self.topics(topic))


def _consumer(bootstrap: str, isolation: str = "read_committed") -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level=isolation,
        auto_offset_reset="earliest",
    )


def read_positions(
    bootstrap: str, topic: str, placements: list[dict[str, Any]], timeout_s: float = 20
) -> list[tuple[bytes, bytes]]:
    consumer = _consumer(bootstrap)
    wanted = {(p["partition"], p["offset"]) for p in placements}
    found: dict[tuple[int, int], tuple[bytes, bytes]] = {}
    try:
        tps = [TopicPartition(topic, p) for p in {p for p, _ in wanted}]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, min(o for p, o in wanted if p == tp.partition))
        deadline = time.monotonic() + timeout_s
        while set(found) != wanted and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                for r in records:
                    if (tp.partition, r.offset) in wanted:
                        found[(tp.partition, r.offset)] = (r.key, r.value)
    finally:
        consumer.close()
    return [
        found[(p["partition"], p["offset"])]
        for p in placements
        if (p["partition"], p["offset"]) in found
    ]


def read_committed(
    bootstrap: str, topic: str, isolation: str = "read_committed", timeout_s: float = 20
) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of `topic` up to its current end (the LSO when read committed)."""
    consumer = _consumer(bootstrap, isolation)
    out: list[tuple[bytes | None, bytes | None]] = []
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(consumer.position(tp) < ends[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=300).values():
                out.extend((r.key, r.value) for r in records)
    finally:
        consumer.close()
    return out


def start_gateway(
    settings: Settings,
    mapping: EpcisMapping | None = None,
    publisher: Publisher | None = None,
    preparation: TopicPreparation | None = None,
) -> tuple[ServerThread, str]:
    app = create_gateway_app(settings, make_registry(), mapping, publisher, preparation)
    server = ServerThread(app, settings.gateway)
    return server, server.start()


@contextmanager
def gateways(bootstrap: str) -> Iterator[Callable[..., Harness]]:
    """`make(**gateway settings)`: a gateway on fresh topics; all of them stopped on exit,
    and the process's logging put back as it was on entry.

    uvicorn's `Config` (access log off) empties the `uvicorn.access` logger and stops its
    propagation, process-wide. The per-test fixture (logging_state) puts back what a test
    changed, not what a module's fixture did before its first test: after a module that
    shares a gateway, `uvicorn.access` reached no root handler for the rest of the session.
    """
    running: list[tuple[ServerThread, httpx.Client]] = []

    def make(**gateway: Any) -> Harness:
        settings = gateway_settings(bootstrap, **gateway)
        prepare_topics(settings)
        server, url = start_gateway(settings, load_epcis_mapping(EPCIS_EXAMPLE / "mapping.yaml"))
        client = httpx.Client(base_url=url, timeout=30)
        running.append((server, client))
        return Harness(url, settings, client)

    with logging_restored():
        try:
            yield make
        finally:
            for server, client in running:
                client.close()
                server.stop()


def gateway_settings(
    bootstrap: str, *, kafka: Mapping[str, Any] | None = None, **gateway: Any
) -> Settings:
    """A gateway's settings on topics of its own; `kafka` adds kafka settings."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    return Settings(
        kafka={  # type: ignore[arg-type]
            "bootstrap_servers": bootstrap,
            "topic_prefix": prefix,
            "partitions": 4,
            **(kafka or {}),
        },
        engine={"app_id": f"cw-{prefix.rstrip('.')}"},  # type: ignore[arg-type]
        gateway={"transactional_id": f"gw-{prefix.rstrip('.')}", **gateway},  # type: ignore[arg-type]
    )


def write_tokens(path: Path) -> Path:
    """The tokens of `TOKENS` as a tokens file."""
    import yaml

    entries = []
    for name, (role, unit) in TOKENS.items():
        entry: dict[str, Any] = {"name": name, "sha256": hash_token(token_of(name)), "role": role}
        if unit is not None:
            entry["unit_id"] = unit
        entries.append(entry)
    path.write_text(yaml.safe_dump({"tokens": [dict(e, role=str(e["role"])) for e in entries]}))
    return path


@dataclass
class GatewayProcess:
    """`chainwatch gateway` as its own process (its own GIL and RSS, as in production)."""

    process: Any
    base_url: str
    settings: Settings

    def rss_bytes(self) -> int:
        return _status_kb(self.process.pid, "VmRSS") * 1024

    def peak_rss_bytes(self) -> int:
        return _status_kb(self.process.pid, "VmHWM") * 1024

    def cpu_seconds(self) -> float:
        """User + system CPU time the gateway process has used."""
        import os

        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def reset_peak_rss(self) -> bool:
        """Start VmHWM afresh (Linux `clear_refs` 5); False where that is not allowed."""
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True


def _status_kb(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field_name} for pid {pid}")


@contextmanager
def running_gateway_process(
    kafka_bootstrap: str,
    tmp: Path,
    probe: str = "readyz",
    log_level: str = "warning",
    kafka: Mapping[str, Any] | None = None,
    **gateway: Any,
) -> Iterator[GatewayProcess]:
    """`chainwatch gateway` on a free port until the block ends (then SIGTERM); entered
    once `probe` answers 200 (`readyz`: it takes posts; `healthz`: it serves)."""
    import os
    import subprocess
    import sys

    settings = gateway_settings(kafka_bootstrap, kafka=kafka, **gateway)
    port = free_port()
    env = {
        **child_environment(settings, os.environ),
        "CHAINWATCH_DATA_DIR": str(tmp),
        "CHAINWATCH_LOG_LEVEL": log_level,
    }
    chainwatch = Path(sys.executable).parent / "chainwatch"
    log_file = (tmp / "gateway.log").open("wb")
    process = subprocess.Popen(
        [
            str(chainwatch),
            "gateway",
            "--port",
            str(port),
            "--tokens",
            str(write_tokens(tmp / "tokens.yaml")),
            "--epcis-mapping",
            str(EPCIS_EXAMPLE / "mapping.yaml"),
        ],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited: {(tmp / 'gateway.log').read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not answer /{probe} within 60 s")
            try:
                if httpx.get(f"{url}/{probe}", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)  # polling a starting process, with a deadline
        yield GatewayProcess(process, url, settings)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        log_file.close()


def metric(base_url: str, name: str, **labels: str) -> float:
    """The value of the gateway's metric `name` with exactly these labels (0 if none)."""
    wanted = {f'{k}="{v}"' for k, v in labels.items()}
    for line in httpx.get(f"{base_url}/metrics", timeout=5).text.splitlines():
        series, _, value = line.rpartition(" ")
        found, _, rest = series.partition("{")
        if found == name and set(filter(None, rest.rstrip("}").split(","))) == wanted:
            return float(value)
    return 0.0


def in_flight(base_url: str) -> float:
    return metric(base_url, "chainwatch_gateway_requests_in_flight", endpoint="scans")


def protocol_refusals(base_url: str, status: int, error: str) -> float:
    """`chainwatch_gateway_protocol_refusals_total` of this status and error (0 if none)."""
    return metric(
        base_url, "chainwatch_gateway_protocol_refusals_total", status=str(status), error=error
    )


def wait_until_metric(
    base_url: str, name: str, value: float, timeout_s: float = 10.0, **labels: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while metric(base_url, name, **labels) != value:
        assert time.monotonic() < deadline, f"{name}{labels} never {value}"
        time.sleep(0.05)  # polling a condition, with a deadline


def wait_until_in_flight(base_url: str, count: int, timeout_s: float = 10.0) -> None:
    wait_until_metric(
        base_url, "chainwatch_gateway_requests_in_flight", count, timeout_s, endpoint="scans"
    )


def scans_post_head(host: str, declared: int, extra_headers: str = "") -> bytes:
    """A POST of scans by the admin token whose body will have `declared` bytes."""
    return (
        "POST /v1/scans HTTP/1.1\r\n"
        f"Host: {host}\r\n{extra_headers}"
        f"Authorization: Bearer {token_of('admin')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode()


@contextmanager
def half_sent_request(base_url: str, declared: int = 1000) -> Iterator[socket.socket]:
    """A POST whose headers promise `declared` bytes of body, of which one arrives.

    (Past `body_rate_grace_s` that is a body below `min_body_bytes_per_s`: a test that
    means to hold a slot longer turns the minimum off.)"""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    try:
        sock.sendall(scans_post_head(host, declared) + b"[")
        yield sock
    finally:
        sock.close()


@contextmanager
def trickled_request(
    base_url: str, body: bytes, piece: int, every_s: float
) -> Iterator[socket.socket]:
    """A POST of `body` (its length declared) sent `piece` bytes at a time, one piece every
    `every_s` (the pace of the client under test, not a wait), from a thread of its own
    until the body is sent, the gateway closes the connection, or the block ends; the
    gateway closes the connection after its answer (`Connection: close`)."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    done = threading.Event()

    def send() -> None:
        with contextlib.suppress(OSError):  # the gateway answered and closed
            for at in range(0, len(body), piece):
                if done.wait(every_s):
                    return
                sock.sendall(body[at : at + piece])

    sender = threading.Thread(target=send, daemon=True)
    try:
        sock.sendall(scans_post_head(host, len(body), "Connection: close\r\n"))
        sender.start()
        yield sock
    finally:
        done.set()
        if sender.is_alive():
            sender.join(timeout=10)
        sock.close()


@contextmanager
def sending_until_answered(
    base_url: str, declared: int = 1000, extra_headers: str = "", every_s: float = 0.2
) -> Iterator[socket.socket]:
    """A POST of scans whose body (`declared` bytes) the client sends a byte every `every_s`
    until an answer is there to read; it then sends on (`send_settled`) before it reads, as
    a client that sends its whole body before reading does."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(scans_post_head(host, declared, extra_headers) + b"[")
        while not readable_within(sock, every_s):
            sock.sendall(b" ")
        yield sock


_TCP_CLOSE = 7
"""`tcpi_state` of a connection that was reset (Linux's `TCP_CLOSE`)."""


def send_settled(sock: socket.socket, data: bytes, timeout_s: float = 10.0) -> None:
    """Send `data` and wait until the peer took all of it (acknowledged) or refused it (a
    reset): what a test asserts next then depends on what the peer did, not on how soon
    the kernel got to it. Raises as a client's send does on a connection that was reset."""
    sock.sendall(data)
    deadline = time.monotonic() + timeout_s
    while _unacknowledged(sock) and _tcp_state(sock) != _TCP_CLOSE:
        assert time.monotonic() < deadline, "the peer neither took nor refused the data"
        time.sleep(0.01)  # polling a condition, with a deadline


def _unacknowledged(sock: socket.socket) -> int:
    """Bytes sent on `sock` that its peer has not acknowledged yet (Linux's SIOCOUTQ)."""
    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0])


def _tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def post_in_background(gw: Harness) -> tuple[threading.Thread, list[httpx.Response]]:
    """A post of one fresh scan from a thread of its own (it may wait for a slot); the
    answer is in the list once the thread ended."""
    answers: list[httpx.Response] = []
    headers = {"Authorization": f"Bearer {token_of('admin')}", "Content-Type": "application/json"}

    def post() -> None:
        with httpx.Client(base_url=gw.base_url, timeout=60) as client:
            answers.append(client.post("/v1/scans", content=json.dumps(scan()), headers=headers))

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread, answers


def read_response(sock: socket.socket, timeout_s: float) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body of the response, read until the server closes."""
    sock.settimeout(timeout_s)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body
