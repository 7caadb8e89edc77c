"""`chainwatch replay` publishes a scenario as the file says; a line Kafka will not take
is a dead letter, never the end of the replay (CONTRACT v1.2)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from codecs import BOM_UTF8
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from memory_peak import peak_memory
from readable import line_within
from samples import customer, padded_value, scan

from chainwatch import replay, replay_records, replay_runs
from chainwatch.errors import UserError
from chainwatch.replay import no_progress, publish_scenario, read_records, read_topic
from chainwatch.runners import prepare_topics
from chainwatch.settings import Settings
from schemas.dead_letter import DeadLetter, ReasonCode
from schemas.json_blank import json_blank
from schemas.kafka_size import MAX_REQUEST_BYTES
from schemas.plan import load_plan
from schemas.validation import decode_replay_line
from sinks import topic_read
from sinks.topic_read import TopicUnreadable
from streams.partitioning import partition_of
from streams.rules.oracle import run_scenario
from streams.topics import CUSTOMERS, DEAD_LETTER, SCANS


def test_a_line_too_large_for_kafka_is_a_dead_letter_and_the_replay_goes_on(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory()
    prepare_topics(settings)
    first, last = scan(event_id="e-1"), scan(event_id="e-2")
    huge = customer(notes="x" * 3_000_000)  # valid, and over Kafka's 1 MiB
    lines = [
        {"topic": "scans", "key": first["order_id"], "value": first},
        {"topic": "crm.customers", "key": huge["customer_id"], "value": huge},
        {"topic": "scans", "key": last["order_id"], "value": last},
    ]
    scenario = tmp_path / "huge.ndjson"
    scenario.write_text("".join(json.dumps(line) + "\n" for line in lines))

    published, dead, _ = asyncio.run(publish_scenario(settings, scenario, no_progress))

    assert (published, dead) == (2, 1)
    scans = [json.loads(v or b"") for _, v in asyncio.run(read_topic(settings, SCANS))]
    assert [s["event_id"] for s in scans] == ["e-1", "e-2"]
    (letter,) = [
        DeadLetter.model_validate_json(v or b"")
        for _, v in asyncio.run(read_topic(settings, DEAD_LETTER))
    ]
    assert letter.reason_code is ReasonCode.PROCESSING_ERROR
    assert letter.source.line == 2
    assert letter.truncated


def _spy_on_decoding(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """The length of each value `decode_input` is called with while a scenario is
    published (None: a null value)."""
    decoded: list[int | None] = []
    decode = replay_records.decode_input

    def spy(topic: str, raw_value: bytes | None, **kwargs: Any) -> Any:
        decoded.append(None if raw_value is None else len(raw_value))
        return decode(topic, raw_value, **kwargs)

    monkeypatch.setattr(replay_records, "decode_input", spy)
    return decoded


def test_a_record_over_kafkas_limit_is_refused_undecoded_and_one_at_it_published(
    settings_factory: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the value was decoded first, and only `send` refused it. A line whose
    record cannot fit the producer's `max_request_size` is a dead letter before it is
    decoded; one at the limit is published, to a real Kafka. A keyless line is sized with
    the id it is sent with, and a record never sent moves no clock (it moved the final
    one's)."""
    settings = settings_factory()
    prepare_topics(settings)
    at = scan(event_id="e-1", order_id="PO-1", event_time="2027-03-01T10:00:00Z")
    over = scan(event_id="e-2", order_id="PO-2", event_time="2027-03-02T10:00:00Z")
    keyless = scan(event_id="e-3", order_id="PO-3", event_time="2027-03-03T10:00:00Z")
    limit = MAX_REQUEST_BYTES
    values = [
        padded_value(at, b"PO-1", limit),
        padded_value(over, b"PO-2", limit + 1),
        padded_value(keyless, None, limit),  # over it with its key, PO-3
    ]
    scenario = tmp_path / "limit.ndjson"
    scenario.write_bytes(
        b'{"topic": "scans", "key": "PO-1", "value": ' + values[0] + b"}\n"
        b'{"topic": "scans", "key": "PO-2", "value": ' + values[1] + b"}\n"
        b'{"topic": "scans", "value": ' + values[2] + b"}\n"
    )
    decoded = _spy_on_decoding(monkeypatch)

    published, dead, largest = asyncio.run(publish_scenario(settings, scenario, no_progress))

    assert (published, dead) == (1, 2)
    assert decoded == [len(values[0]), len(values[2])]  # the line over the limit never
    assert largest == datetime(2027, 3, 1, 10, tzinfo=UTC).timestamp() * 1000  # the one sent
    assert asyncio.run(read_topic(settings, SCANS)) == [(b"PO-1", values[0])]
    letters = [
        DeadLetter.model_validate_json(v or b"")
        for _, v in asyncio.run(read_topic(settings, DEAD_LETTER))
    ]
    assert [
        (d.reason_code, d.source.file, d.source.line, [e.type for e in d.errors], d.truncated)
        for d in letters
    ] == [
        (ReasonCode.PROCESSING_ERROR, "limit.ndjson", 2, ["too_large"], True),
        (ReasonCode.PROCESSING_ERROR, "limit.ndjson", 3, ["too_large"], True),
    ]
    assert f"{limit + 1:,} bytes, over the producer's max_request_size" in letters[0].reason
    assert f"{limit + 4:,} bytes" in letters[1].reason  # with its key, PO-3


def test_a_hostile_value_over_kafkas_limit_costs_no_decoding(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A value of ~200,000 small objects just over the limit: decoding it built them all
    again for a record Kafka refuses anyway, and so did parsing its line (an 8 MiB one
    took 11 s and 810 MB to publish, then 2.6 s and 595 MB, now 0.3 s and 113 MB, the
    process's ~73 MB at rest included). Publishing it costs a few times the line's own
    bytes (its dead letter keeps it, base64): 6 times them, 53 when the line was parsed."""
    record = scan(event_id="e-1", order_id="PO-1")
    value = padded_value(record, b"PO-1", MAX_REQUEST_BYTES + 1, inner="{}")
    line = b'{"topic": "scans", "key": "PO-1", "value": ' + value + b"}"
    scenario = tmp_path / "hostile.ndjson"
    scenario.write_bytes(line + b"\n")
    decoded = _spy_on_decoding(monkeypatch)
    producer = _Producer()

    with peak_memory() as peak:
        published, dead, _ = publish_to(producer, monkeypatch, scenario)

    assert (published, dead, decoded) == (0, 1, [])
    assert producer.sent == ["dead-letter"]
    assert peak.bytes < 8 * len(line), (peak.bytes, len(line))


def test_deep_and_repeating_lines_are_refused_alike_by_the_replay_and_its_oracle(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Lines the scan of a line did not follow cost the old price (a value nested 65-199
    deep: 8 MiB took 10-25 s and 1.1 GB; a line of 900,000 `value`s 1.7 s): each is a dead
    letter as before, the parser's word for one nested deeper than it takes, and the
    reference engine refuses the same lines. A line holding 1 MiB of deep arrays in a
    member it ignores is published with its value as written, by both."""
    good = scan(event_id="e-1", order_id="PO-1")
    written = json.dumps(good).encode()
    size = MAX_REQUEST_BYTES + 1

    def units(levels: int) -> bytes:
        unit = b"[" * levels + b"0" + b"]" * levels
        return b"[" + b",".join([unit] * (size // len(unit) + 1)) + b"]"

    head = b'{"topic": "scans", "key": "PO-1", '
    lines = [
        head + b'"value": ' + units(100) + b"}",  # too large: the parser takes it
        head + b'"value": ' + units(1000) + b"}",  # deeper than the parser takes
        head + b'"value":[0],' * (size // 12) + b'"value": ' + written + b"}",
        head + b'"x": ' + units(150) + b', "value": ' + written + b"}",  # published
    ]
    scenario = tmp_path / "deep.ndjson"
    scenario.write_bytes(b"\n".join(lines) + b"\n")
    producer = _Producer()

    published, dead, _ = publish_to(producer, monkeypatch, scenario)

    assert (published, dead) == (1, 3)
    assert producer.sent == ["dead-letter"] * 3 + ["scans"]
    assert producer.values[3] == written
    letters = [DeadLetter.model_validate_json(v or b"") for v in producer.values[:3]]
    assert [(d.reason_code, d.errors[0].type) for d in letters] == [
        (ReasonCode.PROCESSING_ERROR, "too_large"),
        (ReasonCode.NOT_JSON, "json_invalid"),
        (ReasonCode.BAD_REPLAY_LINE, "duplicate_key"),
    ]
    assert "recursion limit exceeded" in letters[1].errors[0].msg
    oracle = run_scenario(replay.scenario_texts(scenario), load_plan(None), None)
    assert oracle.dead_letters == dead


def test_a_keyless_line_is_published_with_its_id_as_key(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """Kafka refuses a keyless record on the compacted `crm.customers` (the replay ended
    with `UnknownError`), and spreads keyless records over every partition, where the
    engine forwards each to its id's partition first. Keyed with its id, a line is read
    where a producer keying its records would put it."""
    settings = settings_factory()
    prepare_topics(settings)
    scans = [scan(event_id=f"e-{n}", order_id=f"PO-{n}") for n in range(8)]
    lines = [{"topic": "scans", "value": s} for s in scans]
    lines.append({"topic": "crm.customers", "value": customer(customer_id="C-9")})
    lines.append({"topic": "crm.customers", "key": "C-9", "value": None})  # a tombstone
    scenario = tmp_path / "keyless.ndjson"
    scenario.write_text("".join(json.dumps(line) + "\n" for line in lines))

    published, dead, _ = asyncio.run(publish_scenario(settings, scenario, no_progress))

    assert (published, dead) == (10, 0)
    records = asyncio.run(read_records(settings, SCANS))
    assert sorted(r.key for r in records) == sorted(s["order_id"].encode() for s in scans)
    for record in records:
        assert record.partition == partition_of(record.key, settings.kafka.partitions)
    customers = asyncio.run(read_records(settings, CUSTOMERS))
    assert [(r.key, r.value is None) for r in customers] == [(b"C-9", False), (b"C-9", True)]


class _Producer:
    """Takes every record (kept in `sent`); acknowledges them at once, or, `silent`,
    never: a broker that went away."""

    def __init__(self, *, silent: bool = False) -> None:
        self.silent = silent
        self.sent: list[str] = []
        self.values: list[bytes | None] = []

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None
    ) -> asyncio.Future[None]:
        self.sent.append(topic)
        self.values.append(value)
        acked = asyncio.get_running_loop().create_future()
        if not self.silent:
            acked.set_result(None)
        return acked


def publish_to(producer: _Producer, monkeypatch: pytest.MonkeyPatch, scenario: Path) -> Any:
    """`publish_scenario` with `producer` in place of Kafka's."""

    async def nothing(*_args: object, **_kwargs: object) -> None:
        return None

    monkeypatch.setattr(replay, "AIOKafkaProducer", lambda **_config: producer)
    monkeypatch.setattr(replay, "start_producer", nothing)
    monkeypatch.setattr(replay, "stop_producer", nothing)
    return asyncio.run(publish_scenario(Settings(), scenario, no_progress))


def test_a_line_is_published_with_its_value_as_the_file_writes_it(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """The value was re-serialised: `1e400` became `Infinity` (not JSON), of two
    equal keys one vanished. The worker now decodes the file's own bytes, as a live
    record's; a keyless line is still keyed by its id."""
    settings = settings_factory()
    prepare_topics(settings)
    good = json.dumps(scan(event_id="e-1", order_id="PO-1"))
    values = [
        good.replace('"quantity": 212.5', '"quantity": 1e400'),
        good.replace('"order_id": "PO-1"', '"order_id": "PO-1", "order_id": "PO-2"'),
        "{ " + good[1:-1] + " }",
    ]
    lines = [f'{{"topic": "scans", "key": "PO-1", "value": {v}}}' for v in values[:2]]
    lines.append(f'{{"value":  {values[2]} , "topic": "scans"}}')
    scenario = tmp_path / "as-written.ndjson"
    scenario.write_text("".join(line + "\n" for line in lines))

    published, dead, _ = asyncio.run(publish_scenario(settings, scenario, no_progress))

    assert (published, dead) == (3, 0)
    records = asyncio.run(read_topic(settings, SCANS))
    assert [v for _, v in records] == [v.encode() for v in values]
    assert records[2][0] == b"PO-1"  # keyless: keyed by its order_id, parsed from the line


def test_a_scenario_still_being_written_to_publishes_what_it_held_when_the_run_began(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A file another process appends to (an export, a log) while it is replayed: the
    replay read each line written in the time of a send, for ever when the writer kept
    up, and its count said another file's. Here each send appends a line (and a half,
    a line the writer is still writing), 50 times at most."""
    scenario = tmp_path / "growing.ndjson"
    line = json.dumps({"topic": "scans", "key": "PO-1", "value": scan(event_id="e-1")})
    scenario.write_text(f"{line}\n{line}\n")
    producer = _Producer()
    send = producer.send
    said: list[tuple[int | None, int | None]] = []

    async def send_and_grow(topic: str, key: bytes | None, value: bytes | None) -> Any:
        if len(producer.sent) < 50:
            with scenario.open("a") as handle:
                handle.write(f"{line}\n{line[:20]}")
        return await send(topic, key, value)

    def progress(_message: str, /, *, done: int | None = None, total: int | None = None) -> None:
        said.append((done, total))

    monkeypatch.setattr(producer, "send", send_and_grow)
    monkeypatch.setattr(replay, "AIOKafkaProducer", lambda **_config: producer)
    monkeypatch.setattr(replay, "start_producer", lambda *_a: asyncio.sleep(0))
    monkeypatch.setattr(replay, "stop_producer", lambda *_a, **_k: asyncio.sleep(0))
    published, dead, _ = asyncio.run(publish_scenario(Settings(), scenario, no_progress))
    assert (published, dead) == (2, 0)

    scenario.write_text(f"{line}\n{line}\n")  # what a run finds when it begins...
    run = replay.ReplayRun(Settings(data_dir=tmp_path), scenario, partitions=1, progress=progress)
    with scenario.open("a") as handle:  # ...and not what is written while its workers start
        handle.write(f"{line}\n" * 3)
    monkeypatch.setattr(replay.ReplayRun, "prepare_topics", lambda self: None)
    producer.sent.clear()
    run.publish()
    assert run.published == 2
    assert {total for done, total in said if done is not None} == {2}


def test_kafka_gone_mid_publish_stops_the_replay_in_one_line_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before: the idempotent producer retried for ever and the replay waited at
    "publishing: 115000/300000" without a word (a broker stopped mid-publish)."""
    monkeypatch.setattr(replay, "PUBLISH_TIMEOUT_S", 0.3)
    record = scan(event_id="e-1")
    scenario = tmp_path / "s.ndjson"
    scenario.write_text(json.dumps({"topic": "scans", "key": record["order_id"], "value": record}))

    started = time.monotonic()
    with pytest.raises(UserError) as caught:
        publish_to(_Producer(silent=True), monkeypatch, scenario)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert (
        "did not answer within 0.3 s (0 of the scenario's records acknowledged before)" in message
    )


def test_a_scenario_saved_with_a_byte_order_mark_publishes_its_first_record(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before: the mark made the first line `not_json`, a dead letter (a customer gone)."""
    first, last = customer(), scan(event_id="e-1")
    lines = [
        {"topic": "crm.customers", "key": first["customer_id"], "value": first},
        {"topic": "scans", "key": last["order_id"], "value": last},
    ]
    scenario = tmp_path / "bom.ndjson"
    text = "".join(json.dumps(line) + "\r\n" for line in lines)  # as Notepad saves it
    scenario.write_bytes(b"\xef\xbb\xbf" + text.encode())
    producer = _Producer()

    published, dead, _ = publish_to(producer, monkeypatch, scenario)

    assert (published, dead) == (2, 0)
    assert producer.sent == ["crm.customers", "scans"]


def test_two_notepad_files_in_one_scenario_publish_every_record(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before: only line 1 lost its byte order mark; `cat a.ndjson b.ndjson` of two files
    Notepad saved made b's first record a `not_json` dead letter."""
    records = [scan(event_id=f"e-{n}") for n in range(4)]
    files = [
        b"\xef\xbb\xbf"
        + "".join(
            json.dumps({"topic": "scans", "key": r["order_id"], "value": r}) + "\r\n" for r in pair
        ).encode()
        for pair in (records[:2], records[2:])
    ]
    scenario = tmp_path / "both.ndjson"
    scenario.write_bytes(b"".join(files))  # cat a.ndjson b.ndjson
    producer = _Producer()

    published, dead, _ = publish_to(producer, monkeypatch, scenario)

    assert (published, dead) == (4, 0)
    assert producer.sent == ["scans"] * 4


def test_a_line_of_megabytes_is_a_dead_letter_read_in_bounded_memory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before: the line was read and parsed whole (200 MB took 4.3 GB; a gigabyte ran the
    machine out of memory)."""
    huge = 6 * replay.MAX_SCENARIO_LINE_BYTES + 12_345
    first, last = scan(event_id="e-1"), scan(event_id="e-2")
    line = b'{"topic": "scans", "value": {"notes": "' + b"x" * huge
    scenario = tmp_path / "huge.ndjson"
    with scenario.open("wb") as out:
        out.write(json.dumps({"topic": "scans", "value": first}).encode() + b"\n")
        out.write(line + b"\n")
        out.write(json.dumps({"topic": "scans", "value": last}).encode() + b"\n")
    producer = _Producer()

    with peak_memory() as peak:
        published, dead, _ = publish_to(producer, monkeypatch, scenario)

    assert (published, dead) == (2, 1)
    assert producer.sent == ["scans", "dead-letter", "scans"]
    letter = DeadLetter.model_validate_json(producer.values[1] or b"")
    assert letter.reason_code is ReasonCode.PROCESSING_ERROR
    assert (letter.source.line, letter.truncated) == (2, True)
    assert (letter.original_size, letter.original_sha256) == (
        len(line),
        hashlib.sha256(line).hexdigest(),
    )
    bound = 4 * replay.MAX_SCENARIO_LINE_BYTES  # the line's first read and a few copies
    assert peak.bytes < bound, f"{peak.bytes:,} bytes held for a {len(line):,}-byte line"


def test_a_blank_line_of_megabytes_is_skipped_as_any_blank_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before: whitespace over `MAX_SCENARIO_LINE_BYTES` was a processing_error dead
    letter, counted in the replay's totals and a backtest's input_records."""
    from chainwatch.backtest.run import count_records

    first, last = scan(event_id="e-1"), scan(event_id="e-2")
    scenario = tmp_path / "blank.ndjson"
    with scenario.open("wb") as out:
        out.write(json.dumps({"topic": "scans", "value": first}).encode() + b"\n")
        out.write(b" \t" * (replay.MAX_SCENARIO_LINE_BYTES // 2 + 1) + b" \r\n")
        out.write(json.dumps({"topic": "scans", "value": last}).encode() + b"\n")
    producer = _Producer()

    published, dead, _ = publish_to(producer, monkeypatch, scenario)

    assert (published, dead) == (2, 0)
    assert producer.sent == ["scans", "scans"]
    assert [n for n, _ in replay.scenario_lines(scenario)] == [1, 3]
    assert count_records(scenario) == 2


NOT_JSON_WHITESPACE = [b"\x0b", b"\x0c", b" \x1c\x1d\x1e\x1f ", b"\xc2\x85", b"\xc2\xa0"]
"""Whitespace to Python's `strip()` (bytes: the first two; text: all), none to JSON's."""


def test_a_line_of_whitespace_json_does_not_know_is_a_dead_letter(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`bytes.strip()` decided which lines were blank: a line of a form feed or a vertical
    tab (long or not) was skipped, never published nor counted, though no JSON parser
    takes it. Blank is JSON whitespace only (a CRLF ending too); the reference engine
    and a backtest's count read the file alike."""
    from chainwatch.backtest.run import count_records

    record = json.dumps({"topic": "scans", "value": scan(event_id="e-1")}).encode()
    long_form_feeds = b"\x0c" * (replay.MAX_SCENARIO_LINE_BYTES + 1)
    lines = [record, *NOT_JSON_WHITESPACE, b" \t\r", b"", long_form_feeds, b"\x0c\r", record]
    scenario = tmp_path / "spaces.ndjson"
    scenario.write_bytes(b"\n".join(lines) + b"\n")
    producer = _Producer()

    published, dead, _ = publish_to(producer, monkeypatch, scenario)

    assert (published, dead) == (2, 7)
    letters = [DeadLetter.model_validate_json(v or b"") for v in producer.values[1:-1]]
    assert [letter.source.line for letter in letters] == [2, 3, 4, 5, 6, 9, 10]
    assert [letter.reason_code for letter in letters] == [
        *[ReasonCode.NOT_JSON] * 5,
        ReasonCode.PROCESSING_ERROR,  # over MAX_SCENARIO_LINE_BYTES: not parsed
        ReasonCode.NOT_JSON,
    ]
    assert count_records(scenario) == 9
    oracle = run_scenario(replay.scenario_texts(scenario), load_plan(None), None)
    assert oracle.dead_letters == 7


def test_json_blank() -> None:
    for blank in (b"", b" ", b"\t \r\n", b"\r\n", b"\n"):
        assert json_blank(blank), blank
    for other in (*NOT_JSON_WHITESPACE, b" x ", b"{}"):
        assert not json_blank(other), other


def test_the_reference_engine_is_given_the_lines_the_replay_reads(tmp_path: Path) -> None:
    """`splitlines()`, which the tests and the fleet bench read scenarios with for the
    oracle, kept a byte order mark the replay strips and split a line at a lone CR (JSON
    whitespace to the replay): the oracle saw dead letters the replay never made."""
    records = [
        json.dumps({"topic": "scans", "value": scan(event_id=f"e-{n}")}).encode() for n in range(3)
    ]
    spaced = records[1].replace(b", ", b",\r", 1)  # a lone CR: whitespace inside a line
    scenario = tmp_path / "lines.ndjson"
    scenario.write_bytes(
        BOM_UTF8 + records[0] + b"\r\n" + spaced + b"\n \n" + BOM_UTF8 + records[2] + b"\n"
        + b'{"topic": "scans", "value": "' + b"x" * replay.MAX_SCENARIO_LINE_BYTES + b'"}\n'
    )  # fmt: skip

    texts = list(replay.scenario_texts(scenario))

    assert texts == [records[0], spaced, records[2], replay.UNREAD_LINE]
    assert run_scenario(texts, load_plan(None), None).dead_letters == 1  # the long line
    assert run_scenario(scenario.read_bytes().splitlines(), load_plan(None), None).dead_letters > 1


def test_a_scenario_that_is_a_directory_or_a_pipe_is_said_to_be_one(tmp_path: Path) -> None:
    """Before: "scenario file not found", as for a typo."""
    os.mkfifo(tmp_path / "pipe.ndjson")
    for path, why in [(tmp_path, "is a directory"), (tmp_path / "pipe.ndjson", "a pipe")]:
        with pytest.raises(UserError, match=f"scenario {path}: .*{why}"):
            replay.ReplayRun(Settings(), path, partitions=1, progress=no_progress)


def test_a_failed_clean_up_does_not_hide_why_the_replay_failed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before: a broker stopped mid-publish was reported by the topics' deletion in the
    `finally` ("cannot reach Kafka"), not as the publish that had failed."""

    def publish_fails(self: replay.ReplayRun, *args: object, **kwargs: object) -> None:
        raise UserError("Kafka did not take the scenario's records")

    said = _run_failing_to_publish(monkeypatch, tmp_path, publish_fails)
    assert any("were not deleted: cannot reach Kafka" in line for line in said), said


def test_a_run_stopped_by_kafka_names_all_its_topics_and_leaves_no_worker_state(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before: the line named `<prefix>.*` (7 topics), not the 9 `<app_id>-*` ones, and
    the deletion's error skipped `remove_worker_state`: `worker0/faust/replay-<id>` stayed."""
    made: list[Path] = []

    def publish_fails(self: replay.ReplayRun, *args: object, **kwargs: object) -> None:
        state = self.settings.data_path / "worker0" / "faust" / self.settings.engine.app_id
        state.mkdir(parents=True)  # what the run's worker had written
        made.append(state)
        raise UserError("Kafka did not take the scenario's records")

    said = _run_failing_to_publish(monkeypatch, tmp_path, publish_fails)
    app_id = made[0].name
    line = next(line for line in said if "were not deleted" in line)
    assert f"({app_id}.* and {app_id}-*)" in line, line
    assert not made[0].exists()
    assert not (tmp_path / "data" / "worker0").exists()


def test_a_run_that_keeps_its_topics_names_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before: `replay --keep-topics` kept them silently; the run id that names them was
    printed nowhere, so they were found only by listing the broker's topics."""
    deleted: list[Settings] = []
    monkeypatch.setattr(replay_runs, "delete_run_on_kafka", deleted.append)
    said: list[str] = []

    def progress(message: str, /, *, done: int | None = None, total: int | None = None) -> None:
        said.append(message)

    scenario = tmp_path / "s.ndjson"
    scenario.write_text("")
    run = replay.ReplayRun(
        Settings(data_dir=tmp_path / "data"), scenario, partitions=1, progress=progress
    )
    state = run.settings.data_path / "worker0" / "faust" / run.settings.engine.app_id
    state.mkdir(parents=True)

    run.close(keep_topics=True)

    app_id = run.settings.engine.app_id
    assert app_id == f"replay-{run.run_id}"
    line = next(line for line in said if line.startswith("kept the run's topics"))
    assert f"({app_id}.* and {app_id}-*)" in line, line
    assert f"worker*/faust/{app_id}" in line, line
    assert f"`chainwatch runs delete {run.run_id}` deletes them" in line, line
    assert (deleted, state.exists()) == ([], True)


class _Failing(_Producer):
    """Takes every record; Kafka's acknowledgement fails with `error`, as aiokafka fails a
    batch it gave up on."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None
    ) -> asyncio.Future[None]:
        acked = asyncio.get_running_loop().create_future()
        acked.set_exception(self.error)
        return acked


def _one_scan_scenario(tmp_path: Path) -> Path:
    record = scan(event_id="e-1")
    scenario = tmp_path / "s.ndjson"
    scenario.write_text(json.dumps({"topic": "scans", "key": record["order_id"], "value": record}))
    return scenario


def test_a_broker_gone_mid_publish_is_said_to_stop_answering_not_to_refuse(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before: a broker stopped mid-replay ended, some 85 s later, with "Kafka refused the
    scenario's records (LeaderNotAvailableError ...)": aiokafka fails a batch that
    expired without a leader so, yet nothing refused anything. Nor is it the deadline."""
    from aiokafka.errors import LeaderNotAvailableError

    with pytest.raises(UserError) as caught:
        publish_to(_Failing(LeaderNotAvailableError()), monkeypatch, _one_scan_scenario(tmp_path))
    message = str(caught.value)
    assert "stopped answering (LeaderNotAvailableError) (0 of the scenario's" in message
    assert "refused" not in message
    assert "within" not in message


def test_kafka_refusing_the_records_is_said_to_be_a_refusal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from aiokafka.errors import TopicAuthorizationFailedError

    with pytest.raises(UserError) as caught:
        publish_to(
            _Failing(TopicAuthorizationFailedError()), monkeypatch, _one_scan_scenario(tmp_path)
        )
    message = str(caught.value)
    assert "refused the records (TopicAuthorizationFailedError) (0 of the scenario's" in message
    assert "within" not in message


def test_kafka_refusing_the_final_clock_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: aiokafka's own errors passed the `except` (kafka-python's `KafkaError`)
    and ended the replay as an "internal error"."""
    from aiokafka.errors import KafkaTimeoutError

    class Refusing(_Producer):
        async def send_and_wait(self, topic: str, **_kwargs: object) -> None:
            raise KafkaTimeoutError

    async def nothing(*_args: object, **_kwargs: object) -> None:
        return None

    monkeypatch.setattr(replay, "AIOKafkaProducer", lambda **_config: Refusing())
    monkeypatch.setattr(replay, "start_producer", nothing)
    monkeypatch.setattr(replay, "stop_producer", nothing)
    with pytest.raises(UserError, match=r"did not acknowledge the final clock .*KafkaTimeoutError"):
        asyncio.run(replay.send_final_clock(Settings(), 1_800_000_000_000))


def test_a_crm_line_kafka_would_not_take_without_a_key_is_a_dead_letter_of_its_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before: a keyless tombstone line stopped the replay on aiokafka's
    `AssertionError` (neither key nor value), and a keyless CRM line whose value names
    no customer_id on Kafka's `UnknownError` (a compacted topic takes no keyless
    record): both "internal error"s. Each is now a dead letter, the rest published; so is
    an invalid keyless CRM line naming a customer_id (its key comes from a valid record
    only) and a keyless null on any topic (docs/contract.md "Replay files")."""
    good = scan(event_id="e-1")
    lines = [
        {"topic": "crm.customers", "value": None},  # a tombstone without a key
        {"topic": "crm.customers", "value": {"name": "no id"}},  # names no customer
        {"topic": "crm.customers", "value": {"customer_id": "C-9"}},  # invalid, names one
        {"topic": "scans", "value": None},  # neither key nor value
        {"topic": "scans", "key": good["order_id"], "value": good},
    ]
    scenario = tmp_path / "keyless-crm.ndjson"
    scenario.write_text("".join(json.dumps(line) + "\n" for line in lines))
    producer = _Producer()

    published, dead, _ = publish_to(producer, monkeypatch, scenario)

    assert (published, dead) == (1, 4)
    assert producer.sent == ["dead-letter"] * 4 + ["scans"]
    letters = [DeadLetter.model_validate_json(v or b"") for v in producer.values[:4]]
    assert [(d.source.line, d.reason_code) for d in letters] == [
        (1, ReasonCode.VALIDATION_FAILED),  # the engine's reason for a keyless tombstone
        (2, ReasonCode.VALIDATION_FAILED),
        (3, ReasonCode.VALIDATION_FAILED),
        (4, ReasonCode.NOT_OBJECT),
    ]
    assert [(e.loc, e.type) for e in letters[0].errors] == [("key", "missing")]


def test_the_reference_engine_dead_letters_the_keyless_lines_the_replay_refuses() -> None:
    """The oracle took a tombstone line without a key (decoded, a `Tombstone`, then
    ignored: no dead letter), which the replay dead-letters itself (Kafka takes no
    keyless record on the compacted CRM topic): the two disagreed on the dead letters of
    such a file. Every keyless line the replay refuses is one for the oracle too."""
    plan = load_plan(None)
    lines = [
        {"topic": "crm.customers", "value": None},  # a tombstone without a key
        {"topic": "crm.customers", "value": {"name": "no id"}},
        {"topic": "scans", "value": None},
        {"topic": "crm.customers", "key": "C-9", "value": None},  # taken: a keyed tombstone
        {"topic": "crm.customers", "value": customer(customer_id="C-8")},  # taken, with its id
    ]
    for line in (json.dumps(line).encode() for line in lines):
        refused = isinstance(
            replay_records.outgoing(decode_replay_line(line), line, plan), replay_records.Refused
        )
        assert run_scenario([line], plan, None).dead_letters == refused, line


def test_a_line_writing_its_value_or_topic_twice_is_a_dead_letter_naming_key_and_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The line parser kept the last `value` (or `topic`): one of two records was
    replayed, which one the parser's choice. Such a line is now refused as the file's
    other bad lines are; a key its value repeats is still the engine's to refuse."""
    first, second = scan(event_id="e-1", order_id="PO-1"), scan(event_id="e-2", order_id="PO-1")
    repeated = json.dumps(first).replace('"unit_id": ', '"unit_id": "KNIT-02", "unit_id": ', 1)
    lines = [
        f'{{"topic": "scans", "key": "PO-1", "value": {json.dumps(first)}, '
        f'"value": {json.dumps(second)}}}',
        f'{{"topic": "orders", "topic": "scans", "key": "PO-1", "value": {json.dumps(first)}}}',
        f'{{"topic": "scans", "key": "PO-1", "value": {repeated}}}',
    ]
    scenario = tmp_path / "twice.ndjson"
    scenario.write_text("".join(line + "\n" for line in lines))
    producer = _Producer()

    published, dead, _ = publish_to(producer, monkeypatch, scenario)

    assert (published, dead) == (1, 2)
    assert producer.sent == ["dead-letter", "dead-letter", "scans"]
    letters = [DeadLetter.model_validate_json(v or b"") for v in producer.values[:2]]
    assert [
        (d.source.file, d.source.line, d.reason_code, [(e.loc, e.type) for e in d.errors])
        for d in letters
    ] == [
        ("twice.ndjson", 1, ReasonCode.BAD_REPLAY_LINE, [("value", "duplicate_key")]),
        ("twice.ndjson", 2, ReasonCode.BAD_REPLAY_LINE, [("topic", "duplicate_key")]),
    ]
    assert producer.values[2] == repeated.encode()  # as written: the worker refuses it


@pytest.mark.parametrize("stalls", ["start", "end_offsets"])
def test_a_reader_kafka_does_not_answer_ends_in_one_line(
    monkeypatch: pytest.MonkeyPatch, stalls: str
) -> None:
    """Reading a run's results: a reader whose start or end-offsets request Kafka never
    answered ended as "internal error: TimeoutError"."""

    class Stalling:
        def __init__(self, **_config: object) -> None:
            pass

        async def _never(self, *_args: object) -> Any:
            await asyncio.Event().wait()

        async def start(self) -> None:
            if stalls == "start":
                await self._never()

        def assign(self, _partitions: object) -> None:
            pass

        async def end_offsets(self, _partitions: object) -> Any:
            await self._never()

        async def stop(self) -> None:
            pass

    monkeypatch.setattr(topic_read, "new_consumer", lambda *_args, **_config: Stalling())
    monkeypatch.setattr(replay, "READ_STALL_TIMEOUT_S", 0.2)
    with pytest.raises(
        TopicUnreadable, match=r"did not (start a reader|give the end offsets).* within"
    ):
        asyncio.run(read_records(Settings(), SCANS))


def _run_failing_to_publish(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, publish_fails: Callable[..., None]
) -> list[str]:
    """A replay whose publish fails (`publish_fails`, a UserError "did not take the
    scenario's records") and whose topics' deletion fails too (Kafka gone): its progress
    lines. No Kafka: every step that would reach it stands in."""

    def deletion_fails(settings: Settings, timeout_s: float | None = None) -> None:
        said.append(f"deletion within {timeout_s} s")
        raise UserError("cannot reach Kafka")

    monkeypatch.setattr(replay.ReplayRun, "prepare_topics", lambda self: None)
    monkeypatch.setattr(replay.ReplayRun, "wait_for_group", lambda self, n: None)
    monkeypatch.setattr(replay.ReplayRun, "start_workers", lambda self, n: [])
    monkeypatch.setattr(replay.ReplayRun, "publish", publish_fails)
    said: list[str] = []
    monkeypatch.setattr(replay_runs, "delete_run_on_kafka", deletion_fails)
    scenario = tmp_path / "s.ndjson"
    scenario.write_text("")

    def progress(message: str, /, *, done: int | None = None, total: int | None = None) -> None:
        said.append(message)

    with pytest.raises(UserError, match="did not take the scenario's records"):
        replay.run_replay(
            Settings(data_dir=tmp_path / "data"),
            scenario, until=None, workers=1, partitions=1, progress=progress,
        )  # fmt: skip
    return said


def test_a_failed_runs_clean_up_has_short_deadlines(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before: a broker stopped mid-replay kept the user ~115 s from the error line: the
    publish's 60 s, then the producer's stop (10 s), the workers' (30 s) and the
    deletion's connection (15 s) each waited out a deadline of its own, Kafka gone. Of a
    failed run everything is thrown away: each clean-up step has `FAILED_CLEANUP_S`."""

    def publish_fails(self: replay.ReplayRun) -> None:
        raise UserError("Kafka did not take the scenario's records")

    said = _run_failing_to_publish(monkeypatch, tmp_path, publish_fails)
    assert f"deletion within {replay.FAILED_CLEANUP_S} s" in said


def test_deleting_the_topics_with_kafka_gone_ends_within_the_step_deadline(
    tmp_path: Path,
) -> None:
    """The admin client's own bootstrap wait (15 s) was the deletion's, whatever the
    caller could afford."""
    from dead_servers import DeadServer

    from chainwatch.kafka_admin import KafkaUnreachable

    gone = DeadServer("closed")
    settings = Settings(
        data_dir=tmp_path,
        kafka={"bootstrap_servers": gone.url.removeprefix("http://")},  # type: ignore[arg-type]
    )
    started = time.monotonic()
    with pytest.raises(KafkaUnreachable, match="cannot reach Kafka"):
        replay_runs.delete_run_topics(settings, 1.0)
    assert time.monotonic() - started < 3


def test_workers_that_do_not_stop_are_killed_at_the_grace_all_together() -> None:
    """The grace is the whole stop's, not one per worker."""
    ignoring = (
        "import signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); sys.stdin.read()"
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", ignoring], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        for _ in range(3)
    ]
    for worker in workers:
        assert worker.stdout is not None
        assert line_within(worker.stdout, 60, "a fake worker") == b"ready\n"
    started = time.monotonic()
    replay.stop_workers(workers, 0.5)  # type: ignore[arg-type]
    took = time.monotonic() - started
    for worker in workers:
        assert worker.returncode == -signal.SIGKILL
        assert worker.stdin is not None
        assert worker.stdout is not None
        worker.stdin.close()
        worker.stdout.close()
    assert took < 1.4  # three workers, one grace


def test_a_publish_that_failed_stops_its_producer_within_the_clean_up_deadline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Its unsent batches are of a run that failed: the producer's stop had 10 s, all of
    them spent retrying them with Kafka gone."""
    monkeypatch.setattr(replay, "PUBLISH_TIMEOUT_S", 0.1)
    stops: list[float | None] = []

    async def stop(_producer: object, timeout_s: float | None = None) -> None:
        stops.append(timeout_s)

    producer = _Producer(silent=True)
    monkeypatch.setattr(replay, "AIOKafkaProducer", lambda **_config: producer)
    monkeypatch.setattr(replay, "start_producer", lambda *_a: asyncio.sleep(0))
    monkeypatch.setattr(replay, "stop_producer", stop)
    with pytest.raises(UserError, match=r"did not answer within 0\.1 s"):
        asyncio.run(publish_scenario(Settings(), _one_scan_scenario(tmp_path), no_progress))
    assert stops == [replay.FAILED_CLEANUP_S]
