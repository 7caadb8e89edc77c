"""Live streaming: pacing, bounds, the HTTP batching contract and the CLI."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from child_env import environ_without_settings
from dead_servers import DeadServer, outcome_within
from loopback_http import serving

from chainwatch.cli import main
from chainwatch.simulator_outputs import http_out
from chainwatch.simulator_outputs.http_out import HttpPublisher
from simulator import LiveResult, SimConfig, SimRecord, Summary, run_live, simulate
from simulator.pacing import TokenBucket


class Collect:
    """A publisher that keeps what it is sent (the destination is not under test here)."""

    def __init__(self) -> None:
        self.records: list[SimRecord] = []
        self.closed = 0

    def send(self, record: SimRecord) -> None:
        self.records.append(record)

    def close(self) -> None:
        self.closed += 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def test_token_bucket_arithmetic_holds_the_rate_after_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100, burst=10, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        bucket.take()
    assert clock.now == 0.0  # the burst is free
    for _ in range(200):
        bucket.take()
    assert clock.now == pytest.approx(2.0, rel=0.01)


def test_live_publishing_honours_the_rate_on_the_real_clock() -> None:
    """1000 records at 500/s take about 2 s (burst 50 -> 1.9 s ideal), measured, not slept."""
    sink = Collect()
    started = time.monotonic()
    result = run_live(simulate(SimConfig()), sink, Summary(), rate=500, max_events=1000)
    elapsed = time.monotonic() - started
    assert result.sent == len(sink.records) == 1000
    assert result.stopped_by == "max_events"
    assert 1.6 <= elapsed <= 3.0, elapsed
    assert sink.closed == 1


def test_duration_bound_and_interrupt_stop_cleanly() -> None:
    clock = FakeClock()
    sink = Collect()
    result = run_live(
        simulate(SimConfig(days=None)),
        sink,
        Summary(),
        rate=50,
        duration_s=3,
        clock=clock,
        sleep=clock.sleep,
    )
    assert result.stopped_by == "duration"
    assert 140 <= result.sent <= 160
    assert sink.closed == 1

    def interrupted() -> Iterator[SimRecord]:
        yield from list(simulate(SimConfig()))[:5]
        raise KeyboardInterrupt

    sink = Collect()
    result = run_live(interrupted(), sink, Summary(), rate=None)
    assert (result.stopped_by, result.sent, sink.closed) == ("interrupted", 5, 1)


class _Recorder(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        self.requests.append(
            {
                "method": self.command,
                "path": self.path,
                "auth": self.headers.get("authorization"),
                "type": self.headers.get("content-type"),
                "body": body,
            }
        )
        answer = b'{"accepted": 1, "rejected": 0}'
        self.send_response(202)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_POST = _handle
    do_DELETE = _handle

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    handler = type("Recorder", (_Recorder,), {"requests": seen})
    with serving(handler) as port:
        yield f"http://127.0.0.1:{port}", seen


def test_http_publisher_follows_the_gateway_api(
    recorder: tuple[str, list[dict[str, Any]]],
) -> None:
    url, seen = recorder
    config = SimConfig(seed=4, invalid_share=0.05)
    records = list(simulate(config))
    tombstone = SimRecord("crm.customers", "C-0003", None, records[-1].at_ms + 1, "crm_tombstone")
    records.append(tombstone)
    publisher = HttpPublisher(url, "s3cret", batch_size=50, max_delay_s=3600)
    for record in records:
        publisher.send(record)
    publisher.close()

    assert all(r["auth"] == "Bearer s3cret" for r in seen)
    paths = {r["path"].split("?")[0] for r in seen if r["method"] == "POST"}
    assert paths == {"/v1/scans", "/v1/unit-status", "/v1/orders", "/v1/customers"}
    posts = [r for r in seen if r["method"] == "POST"]
    assert all(r["path"].endswith("?partial=true") for r in posts)
    assert all(r["type"] == "application/json" for r in posts)
    deletes = [r["path"] for r in seen if r["method"] == "DELETE"]
    assert "/v1/customers/C-0003" in deletes
    sent_values = []
    malformed = 0
    for request in posts:
        try:
            body = json.loads(request["body"])
        except ValueError:
            malformed += 1
            continue
        assert isinstance(body, list)
        assert 1 <= len(body) <= 50
        sent_values.extend(body)
    expected = [r for r in records if r.value is not None and r.cut is None]
    assert malformed == sum(1 for r in records if r.cut is not None) > 0
    assert len(sent_values) == len(expected)
    # order is kept within each endpoint
    scans_sent = [v["event_id"] for v in sent_values if "action" in v and "event_id" in v]
    scans_expected = [
        json.loads(r.value or "{}").get("event_id")
        for r in expected
        if r.topic == "scans" and "event_id" in (r.value or "")
    ]
    assert scans_sent == [e for e in scans_expected if e is not None]


def _publish_one_within(seconds: float, publisher: HttpPublisher) -> BaseException | None:
    """Send one scan and close (the flush posts it); fail if it outlives `seconds`."""
    record = next(r for r in simulate(SimConfig(seed=4)) if r.topic == "scans")

    def run() -> None:
        publisher.send(record)
        publisher.close()

    error: BaseException | None = outcome_within(seconds, run)
    return error


@pytest.mark.parametrize("kind", ["silent", "trickle"])
def test_http_publisher_gives_up_on_a_dead_gateway_at_its_deadlines(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpx's timeout bounds one read: a gateway that said nothing held each of the seven
    attempts 30 s, one that sent a byte at a time held `simulate --gateway` for ever."""
    monkeypatch.setattr(http_out, "REQUEST_DEADLINE_S", 0.5, raising=False)
    gateway = DeadServer(kind)
    slept: list[float] = []
    try:
        publisher = HttpPublisher(gateway.url, "s3cret", max_delay_s=3600, sleep=slept.append)
        error = _publish_one_within(15, publisher)
    finally:
        gateway.close()
    assert str(error) == (
        f"gateway at {gateway.url} unreachable (ReadTimeout: no answer within 0.5 s) after "
        "7 attempts; check the --gateway URL and that the gateway runs"
    )
    assert slept == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]


def test_http_publisher_reports_a_garbage_answer_in_one_short_line() -> None:
    """The junk a non-gateway sent used to be quoted whole, control bytes and all."""
    gateway = DeadServer("garbage")
    try:
        publisher = HttpPublisher(
            gateway.url.replace("http://", "http://user:pw@"),
            "s3cret",
            max_delay_s=3600,
            sleep=lambda _s: None,
        )
        error = _publish_one_within(15, publisher)
    finally:
        gateway.close()
    message = str(error)
    where = gateway.url.replace("http://", "http://user:***@")
    assert message.startswith(
        f"gateway at {where} unreachable (RemoteProtocolError: no valid HTTP answer) "
    )
    assert message.endswith("after 7 attempts; check the --gateway URL and that the gateway runs")
    assert message.isprintable()
    assert len(message) < 300
    assert "s3cret" not in message
    assert ":pw@" not in message


@pytest.mark.slow
def test_cli_writes_a_deterministic_scenario_with_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "a.ndjson", tmp_path / "b.ndjson"
    args = ["simulate", "--days", "1", "--orders-per-day", "10", "--seed", "9", "--summary"]
    assert main([*args, "--out", str(first)]) == 0
    assert main([*args, "--out", str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()
    err = capsys.readouterr().err
    assert "per topic:" in err
    assert "scans" in err
    moved = tmp_path / "c.ndjson"
    assert main([*args, "--out", str(moved), "--start", "2028-01-01T00:00:00+01:00"]) == 0
    assert '"placed_at":"2027-12-31T' in moved.read_text() or "2028-01-0" in moved.read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "choose exactly one"),
        (["--out", "x", "--kafka"], "choose exactly one"),
        (["--out", "x", "--anomaly", "bogus=1"], "expected NAME=RATE"),
        (["--out", "x", "--anomaly", "late_stage=2"], "--anomaly late_stage: "),
        (["--out", "x", "--anomaly", "late_stage=often"], "'often' is not a number"),
        (["--out", "x", "--start", "2027-03-01T00:00:00"], "UTC offset"),
        (["--out", "x", "--start", "yesterday"], "--start 'yesterday' is not an RFC 3339"),
        (["--gateway", "http://127.0.0.1:9"], "--token"),
        # retried for half a minute, then exit 1 (the URL is never quoted: it may hold a password)
        (["--gateway", "u:pw@127.0.0.1:9", "--token", "t"], "--gateway must be an http(s) URL"),
        (["--gateway", "http://u:pw@h:99999", "--token", "t"], "--gateway is not a valid URL"),
        # no connection to port 0 is made: the same half minute of retries, then exit 1
        (["--gateway", "http://u:pw@127.0.0.1:0", "--token", "t"], "--gateway has port 0"),
        # each of these was an OverflowError, a hang or records past 2100 before
        (["--out", "x", "--start", "0001-01-01T00:00:00Z"], "--start: start must lie in"),
        (["--out", "x", "--start", "9999-12-31T00:00:00Z"], "--start: start must lie in"),
        (["--out", "x", "--start", "2098-06-01T00:00:00Z", "--days", "365"], "--days: 365 days"),
        (["--out", "x", "--id-prefix", "a b"], "--id-prefix: "),
        (["--out", "x", "--days", "99999999999999999999999"], "--days"),
        (["--out", "x", "--customers", "100000000"], "--customers"),
        # ignored before: the file held the default 3 days, not what the option asked for
        (["--out", "x", "--duration", "600"], "--duration: only a live run"),
        (["--out", "x", "--rate", "5", "--duration", "9"], "--rate and --duration: only a live"),
        (["--kafka", "--token-file", "x"], "--token and --token-file are for --gateway only"),
    ],
)
def test_cli_refuses_bad_options_with_one_line(
    extra: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # `--out x` is refused before it is written: checked below
    assert main(["simulate", *extra]) == 2  # a usage error, as click's own (it was 1)
    err = capsys.readouterr().err
    assert message in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: --") or "choose exactly one" in lines[0], lines[0]
    assert lines[0].endswith("(see `chainwatch simulate --help`)")
    assert "pw" not in lines[0]
    assert not Path("x").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\n  \n", "is empty"),
        (b"\xf0\x9f\x00\xffELF\x02\x01", "is not UTF-8 text"),
        (b"two words\n", "holds no token"),
        (b"tok\x07en", "holds no token"),
        ("t\u00f6ken".encode(), "holds no token"),
    ],
)
def test_cli_refuses_a_token_file_that_holds_no_token_before_sending(
    content: bytes,
    message: str,
    recorder: tuple[str, list[dict[str, Any]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An empty token file was sent as `Bearer `, which no header can carry: half a minute
    of retries, then "gateway ... unreachable" (exit 1); a binary one an internal error."""
    url, seen = recorder
    token_file = tmp_path / "gateway.token"
    token_file.write_bytes(content)
    args = ["simulate", "--gateway", url, "--token-file", str(token_file), "--max-events", "1"]
    started = time.monotonic()
    assert main(args) == 2
    assert time.monotonic() - started < 10
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: --token-file {token_file} "), lines[0]
    assert message in lines[0]
    assert lines[0].endswith("(see `chainwatch simulate --help`)")
    assert "two" not in lines[0]
    assert "ELF" not in lines[0]
    assert seen == []


def test_cli_refuses_an_empty_or_spaced_token_option(
    recorder: tuple[str, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, seen = recorder
    for token, message in (("", "--token is empty"), ("a b", "--token holds no token")):
        assert main(["simulate", "--gateway", url, "--token", token, "--max-events", "1"]) == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1, lines
        assert message in lines[0]
    assert seen == []


def test_sigterm_ends_a_live_run_as_ctrl_c_does_flushing_what_it_holds(
    recorder: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """`timeout`, `kill` or a supervisor's stop killed the run at once: the records held
    for the next gateway batch (or Kafka's buffer) were lost, no line said so, exit 143."""
    url, seen = recorder
    env = environ_without_settings()
    env["CHAINWATCH_DATA_DIR"] = str(tmp_path / "data")
    command = [sys.executable, "-m", "chainwatch", "simulate", "--gateway", url, "--token", "t"]
    proc = subprocess.Popen(
        [*command, "--rate", "300"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not seen and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # polling a condition (the first post) under a deadline
        assert seen, "no post within 60 s"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    said = re.search(r"simulate: (\d+) records in .*, stopped: interrupted", err)
    assert said, err
    received = 0
    for request in seen:
        try:
            body = json.loads(request["body"]) if request["body"] else None
        except ValueError:
            body = None  # a truncated record, posted alone
        received += len(body) if isinstance(body, list) else 1
    # nothing held back is lost; the record in hand when the signal lands (as a Ctrl-C's)
    # may be sent and not yet counted, and a request the signal cuts is said to be cut
    cut = re.search(r", (\d+) cut by the stop", err)
    cut_items = int(cut.group(1)) if cut else 0
    assert int(said.group(1)) - cut_items <= received <= int(said.group(1)) + 1


def test_a_request_cut_by_the_stop_is_counted_and_said(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ctrl-C while the gateway did not answer ended with "14 records in 2.0s ... gateway
    accepted 0, dead-lettered 0": the records of the request it cut were not mentioned."""
    from chainwatch.commands.simulate import _report_live
    from chainwatch.free_port import free_port

    def interrupt(_seconds: float) -> None:
        raise KeyboardInterrupt  # Ctrl-C while it waits to retry

    customers = [r for r in simulate(SimConfig(seed=4)) if r.topic == "crm.customers"][:5]
    assert all(r.value is not None and r.cut is None for r in customers)
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens: refused, then a retry
    publisher = HttpPublisher(nobody, "t", batch_size=5, max_delay_s=3600, sleep=interrupt)
    for record in customers[:4]:
        publisher.send(record)  # buffered: the fifth fills the batch and posts it
    with pytest.raises(KeyboardInterrupt):
        publisher.send(customers[4])
    publisher.close()
    assert (publisher.counts.cut, publisher.counts.accepted, publisher.counts.requests) == (5, 0, 0)
    _report_live(LiveResult(5, 1.0, "interrupted"), publisher)
    assert capsys.readouterr().err.splitlines()[-1] == (
        "simulate: gateway accepted 0, dead-lettered 0, 5 cut by the stop (not known to be "
        "taken), 0 requests"
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_a_stdout_that_takes_nothing_is_one_line_not_an_internal_error(tmp_path: Path) -> None:
    """`simulate --out - > /dev/full` ended in "internal error: OSError: [Errno 28] ..."."""
    env = environ_without_settings()
    env["CHAINWATCH_DATA_DIR"] = str(tmp_path / "data")
    with open("/dev/full", "w") as full:
        ran = subprocess.run(
            [sys.executable, "-m", "chainwatch", "simulate", "--out", "-", "--days", "1"],
            stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
    assert ran.returncode == 1
    assert ran.stderr.strip() == "error: cannot write to stdout: No space left on device"


def test_items_the_gateway_refuses_are_refused_not_dead_lettered_and_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A gateway whose MAX_ITEMS is below the batch of 200 answers 413: the run said
    "gateway accepted 49, dead-lettered 551" and exited 0; nothing was dead-lettered."""
    from chainwatch.commands.simulate import _report_live
    from chainwatch.errors import UserError

    class TooLarge(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            answer = b'{"error": "too_large"}'
            self.send_response(413)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    customers = [r for r in simulate(SimConfig(seed=4)) if r.topic == "crm.customers"][:5]
    with serving(TooLarge) as port:
        publisher = HttpPublisher(f"http://127.0.0.1:{port}", "t", batch_size=5)
        for record in customers:
            publisher.send(record)
        publisher.close()
    assert (publisher.counts.refused, publisher.counts.rejected) == (5, 0)
    with pytest.raises(UserError, match=r"^5 records could not be published"):
        _report_live(LiveResult(5, 1.0, "exhausted"), publisher)
    assert capsys.readouterr().err.splitlines()[-1] == (
        "simulate: gateway accepted 0, dead-lettered 0, refused 5, 1 requests"
    )
