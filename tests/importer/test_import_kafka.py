"""`chainwatch import --to kafka` against the suite's real broker, and with no broker."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import ConsumerRecord
from cancellation import cancelled_as_it_finishes
from child_env import environ_without_settings
from dead_servers import DeadServer
from kafka import KafkaConsumer, TopicPartition

from chainwatch.importer.errors import ImportInterrupted
from chainwatch.importer.outputs import KafkaOutput
from chainwatch.importer.tables import ImportFailed
from chainwatch.kafka_admin import admin_call_timeout_s
from chainwatch.settings import Settings
from sinks.clickhouse.rows_outputs import DeadLetterRows
from streams.topics import DEAD_LETTER, SCANS, TopicNames

ROOT = Path(__file__).resolve().parents[2]
SCANS_ARGS = [
    "examples/import/scans.csv", "--mapping", "examples/import/scans.mapping.yaml",
]  # fmt: skip


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    clean = environ_without_settings()
    return subprocess.run(
        [sys.executable, "-m", "chainwatch", "import", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


def _record(value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("dead-letter", 0, 0, 0, 0, None, value, None, 0, len(value), ())


def read_back(
    settings: Settings, topic: str, expected: int, timeout_s: float = 60
) -> list[tuple[bytes | None, bytes]]:
    """The topic's records, waiting (with a deadline) until `expected` arrived."""
    consumer = KafkaConsumer(
        TopicNames(settings.kafka.topic_prefix)(topic),
        bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        request_timeout_ms=20000,
    )
    got: list[tuple[bytes | None, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                got.extend((r.key, r.value) for r in batch)
    finally:
        consumer.close()
    assert len(got) == expected, f"{topic}: {len(got)} of {expected} records within {timeout_s}s"
    return got


@pytest.mark.integration
def test_import_publishes_records_and_dead_letters_to_kafka(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory()
    env = settings.to_env()
    result = cli(*SCANS_ARGS, "--to", "kafka", env=env)
    assert result.returncode == 3, result.stderr
    assert "import: 6 of 8 rows to Kafka" in result.stderr
    assert "2 dead letters published" in result.stderr

    scenario = tmp_path / "scans.ndjson"
    done = cli(*SCANS_ARGS, "--out", str(scenario), env=env)
    assert done.returncode == 3, done.stderr
    expected = [
        (line["key"].encode(), json.dumps(line["value"], separators=(",", ":")).encode())
        for line in map(json.loads, scenario.read_text(encoding="utf-8").splitlines())
    ]
    records = read_back(settings, SCANS, 6)
    # one order's records stay in one partition, in file order; bytes as in the scenario
    for order in (b"PO-4101", b"PO-4102"):
        assert [r for r in records if r[0] == order] == [e for e in expected if e[0] == order]

    raw_letters = read_back(settings, DEAD_LETTER, 2)
    letters = [json.loads(value) for _key, value in raw_letters]
    # the sink stores them with their file and row (it once refused source kind `import`)
    mapper = DeadLetterRows()
    stored = [
        dict(zip(mapper.table.columns, mapper.rows(_record(value))["dead_letters"][0], strict=True))
        for _key, value in raw_letters
    ]
    assert sorted((row["source_file"], row["source_line"]) for row in stored) == [
        ("scans.csv", 8),
        ("scans.csv", 9),
    ]
    assert sorted(
        (d["source"]["kind"], d["source"]["file"], d["source"]["line"]) for d in letters
    ) == [
        ("import", "scans.csv", 8),
        ("import", "scans.csv", 9),
    ]
    bad_time = next(d for d in letters if d["source"]["line"] == 9)
    assert bad_time["reason"].startswith("validation_failed: event_time:")
    assert base64.b64decode(bad_time["value_b64"]).startswith(b"PO-4102;Garneinkauf;Ende;")
    assert base64.b64decode(bad_time["key_b64"]) == b"PO-4102"


@pytest.mark.integration
def test_an_input_topic_with_another_partition_count_is_refused_before_anything_is_published(
    settings_factory: Callable[..., Settings],
) -> None:
    """A `scans` topic made by hand with 8 partitions where the deployment routes by 4: the
    import published into it and said it succeeded; the worker and the sink then refused
    the topic at their start (docs/scaling.md). Now the import refuses first, in their
    words, and creates nothing (`dead-letter` stays missing)."""
    from kafka.admin import NewTopic

    from chainwatch.kafka_admin import admin_client
    from chainwatch.topic_partitions import partition_counts

    settings = settings_factory()
    names = TopicNames(settings.kafka.topic_prefix)
    admin = admin_client(settings.kafka.endpoint, request_timeout_s=15)
    try:
        admin.create_topics([NewTopic(names(SCANS), 8, 1)])
    finally:
        admin.close()
    result = cli(*SCANS_ARGS, "--to", "kafka", env=settings.to_env())
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        f"error: topic {names(SCANS)} has 8 partitions but CHAINWATCH_KAFKA__PARTITIONS=4"
    ), line
    counts = partition_counts(
        settings.kafka.endpoint, [names(SCANS), names(DEAD_LETTER)], request_timeout_s=15
    )
    assert counts == {names(SCANS): 8}  # dead-letter not created
    consumer = KafkaConsumer(
        names(SCANS),
        bootstrap_servers=settings.kafka.bootstrap,
        enable_auto_commit=False,
        request_timeout_ms=20000,
    )
    try:
        parts = [TopicPartition(names(SCANS), p) for p in range(8)]
        assert sum(consumer.end_offsets(parts).values()) == 0  # nothing published
    finally:
        consumer.close()


START_S = 40.0
"""What a CLI command may take to start and end on a loaded machine, besides its Kafka wait."""


@pytest.mark.slow
def test_kafka_down_is_a_one_line_error_within_its_deadline(tmp_path: Path) -> None:
    request_timeout_s = 2.0
    env = {
        "CHAINWATCH_DATA_DIR": str(tmp_path / "data"),
        "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",  # nothing listens there
        "CHAINWATCH_KAFKA__REQUEST_TIMEOUT_S": str(request_timeout_s),
    }
    started = time.monotonic()
    result = cli(*SCANS_ARGS, "--to", "kafka", env=env, timeout=90)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot reach Kafka at 127.0.0.1:9"), lines[0]
    assert time.monotonic() - started < admin_call_timeout_s(request_timeout_s) + START_S


def test_the_producer_start_has_a_deadline_and_says_nothing_was_published() -> None:
    output = KafkaOutput("127.0.0.1:9", connect_timeout_s=5)
    started = time.monotonic()
    with pytest.raises(ImportFailed, match=r"cannot reach Kafka at 127\.0\.0\.1:9 .*nothing"):
        asyncio.run(output.start())
    assert time.monotonic() - started < 15


def test_unacknowledged_records_fail_at_the_deadline_with_a_count() -> None:
    async def stuck() -> None:
        output = KafkaOutput("127.0.0.1:9", ack_timeout_s=0.3)
        output.acknowledged = 4000
        output._pending.append(asyncio.get_running_loop().create_future())  # never acked
        await output.flush()

    with pytest.raises(ImportFailed) as caught:
        asyncio.run(stuck())
    message = str(caught.value)
    assert "did not answer within 0.3 s" in message
    assert "4000 records were acknowledged before" in message
    assert "Re-running the import is safe" in message


class _InstantProducer:
    """Takes each record after one turn of the loop, as aiokafka does with room in its
    buffer, and says so (`sent`); every record is acknowledged at once."""

    def __init__(self) -> None:
        self.sent = asyncio.Event()
        self.acked = asyncio.get_running_loop().create_future()
        self.acked.set_result(None)

    async def send(self, topic: str, key: bytes | None, value: bytes) -> asyncio.Future[None]:
        await asyncio.sleep(0)
        self.sent.set()
        return self.acked


@pytest.mark.parametrize("batch", [2000, 1], ids=["send", "send-and-flush"])
def test_an_interrupt_in_the_turn_a_send_finishes_stops_the_import(batch: int) -> None:
    """Ctrl-C (asyncio.run cancels the import) was dropped by Python 3.11's `wait_for`
    when the call it bounded had just finished: the import ran on to its end."""

    async def interrupted() -> int:
        output = KafkaOutput("127.0.0.1:9", batch=batch)
        producer = _InstantProducer()
        output._producer = producer  # type: ignore[assignment]

        async def publish() -> int:
            for _ in range(1000):
                await output.send("scans", b"k", b"{}")
            return 1000

        task = asyncio.ensure_future(publish())
        await producer.sent.wait()  # a send has just finished
        task.cancel()
        return await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(interrupted())


def test_an_interrupted_import_says_what_kafka_acknowledged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It exited with status 130 and not a word on what had been published."""
    from chainwatch.commands import importer as command
    from chainwatch.importer import run
    from chainwatch.importer.mapper import RowMapper
    from chainwatch.importer.pipeline import Importer
    from schemas.import_mapping import ImportMapping
    from schemas.plan import load_plan

    async def interrupted(*args: object) -> int:
        output = args[2]
        assert isinstance(output, KafkaOutput)
        output.acknowledged = 4000
        raise KeyboardInterrupt  # what asyncio.run raises after Ctrl-C

    monkeypatch.setattr(run, "import_to_kafka", interrupted)
    monkeypatch.setattr("chainwatch.kafka_admin.ensure_topics", lambda *a, **k: None)
    monkeypatch.setattr("chainwatch.topic_partitions.check_partitions", lambda *a, **k: None)
    importer = Importer(RowMapper(ImportMapping(), "scans"), load_plan())
    with pytest.raises(ImportInterrupted) as caught:
        command._to_kafka(importer, [], Settings(), None, None)  # type: ignore[arg-type]
    assert caught.value.exit_code == 130
    assert "interrupted; Kafka acknowledged 4000 records" in str(caught.value)
    assert "records not acknowledged may or may not have reached it" in str(caught.value)
    assert "Re-running the import is safe" in str(caught.value)


class _StuckProducer:
    """Holds records Kafka never acknowledges, and its stop retries them for ever (aiokafka's
    idempotent producer with the broker away); `stopping` says the stop began."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.Event().wait()


def test_an_interrupt_with_kafka_away_stops_the_import_within_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: the `finally` waited `producer.stop()` up to the 60 s ack deadline while
    aiokafka retried its unsent batches: Ctrl-C sat a minute in silence."""
    from chainwatch.importer import run
    from chainwatch.importer.mapper import RowMapper
    from chainwatch.importer.pipeline import Importer
    from schemas.import_mapping import ImportMapping
    from schemas.plan import load_plan

    monkeypatch.setattr(run, "INTERRUPTED_STOP_TIMEOUT_S", 0.2)
    importer = Importer(RowMapper(ImportMapping(), "scans"), load_plan())

    async def interrupted() -> float:
        output = KafkaOutput("127.0.0.1:9", ack_timeout_s=60)
        producer = _StuckProducer()
        ready = asyncio.Event()

        async def started() -> None:
            ready.set()
            output._producer = producer  # type: ignore[assignment]
            output._pending.append(asyncio.get_running_loop().create_future())  # never acked

        monkeypatch.setattr(output, "start", started)
        task = asyncio.ensure_future(
            run.import_to_kafka(importer, [], output, TopicNames(""), lambda _r: None)
        )
        async with asyncio.timeout(10):  # started: the import runs on into its flush
            await ready.wait()
        task.cancel()
        began = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(5):  # without the mend: the 60 s ack deadline
                await task
        assert producer.stopping.is_set()
        return time.monotonic() - began

    assert asyncio.run(interrupted()) < 5


@pytest.mark.parametrize("call", ["start", "stop"])
def test_a_cancellation_as_the_producer_starts_or_stops_is_not_dropped(
    monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    """`KafkaOutput.start/stop` bounded by `wait_for`, which on Python 3.11 dropped a
    Ctrl-C that arrived as the call finished (as the sends' deadlines did)."""
    from chainwatch.importer import outputs

    class Quick:
        def __init__(self) -> None:
            self.done = asyncio.Event()

        async def start(self) -> None:
            await asyncio.sleep(0)
            self.done.set()

        stop = start

    async def interrupted() -> str:
        producer = Quick()
        monkeypatch.setattr(outputs, "AIOKafkaProducer", lambda **_config: producer)
        output = KafkaOutput("127.0.0.1:9")
        if call == "stop":
            output._producer = producer  # type: ignore[assignment]

        return await cancelled_as_it_finishes(
            output.start if call == "start" else output.stop, producer.done
        )

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(interrupted())


def test_the_producer_gets_the_request_timeout_setting_to_connect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The import's producer had 15 s to connect whatever `kafka.request_timeout_s` said
    (its topic set-up before it had the setting): a slow cluster could not be given longer,
    and a setting of 1 s still waited 15 s for a Kafka that accepts and never answers."""
    from typer.testing import CliRunner

    from chainwatch import kafka_admin, topic_partitions
    from chainwatch.cli import app
    from chainwatch.cli_context import state

    server = DeadServer("silent")
    silent = f"127.0.0.1:{server.port}"
    # the topics' set-up has the setting already (test_kafka_request_timeout): here the
    # producer's own connection is what waits on the silent Kafka
    monkeypatch.setattr(kafka_admin, "ensure_topics", lambda *_args, **_kwargs: None)
    monkeypatch.setattr(topic_partitions, "check_partitions", lambda *_args, **_kwargs: None)
    monkeypatch.chdir(ROOT)
    state.pop("settings", None)
    started = time.monotonic()
    try:
        result = CliRunner().invoke(
            app,
            ["import", *SCANS_ARGS, "--to", "kafka"],
            env={
                "CHAINWATCH_DATA_DIR": str(tmp_path / "data"),
                "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": silent,
                "CHAINWATCH_KAFKA__REQUEST_TIMEOUT_S": "1.5",
            },
        )
    finally:
        state.pop("settings", None)
        server.close()
    assert isinstance(result.exception, ImportFailed), result.output  # the CLI's one line
    assert f"cannot reach Kafka at {silent} within 1.5s" in str(result.exception)
    assert time.monotonic() - started < 10  # the setting's 1.5 s, far below 15 s
