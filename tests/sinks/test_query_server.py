"""The loopback query server serves one read statement, under limits, beside the sink's inserts."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sink_harness import wait_for
from slow_clients import drip, held_past_a_bound

from chainwatch.settings import Settings
from sinks.clickhouse.connection import SerializedClient, open_client, open_own_handle
from sinks.clickhouse.query_server import QueryServer, endpoint_file
from sinks.clickhouse.read_only import (
    ReadFailed,
    ReadLimits,
    ReadOnlyQueries,
    StatementRefused,
    check_canonical,
)

# --- the tokenizer over ClickHouse's canonical text (pure) ---------------------


@pytest.mark.parametrize(
    "canonical",
    [
        "SELECT count() FROM scans WHERE stage = 'dyeing'",
        "WITH 1 AS x SELECT x UNION ALL SELECT 2",
        "SELECT 'INTO OUTFILE; DROP TABLE t SETTINGS readonly = 0' AS s",
        "SELECT `into`, `settings` FROM t",
        "SELECT format('{} {}', 1, 2), number FROM numbers(3)",
        "SELECT * FROM system.tables",
        "SHOW TABLES",
        "SHOW CREATE TABLE scans",
        "DESCRIBE TABLE scans",
        "EXISTS TABLE scans",
        "EXPLAIN PIPELINE header = 1 SELECT 1",
        "SELECT x -> (x + 1), [1, 2][1], CAST(a, 'Int32'), 10000000000., -0.5 FROM t",
    ],
)
def test_plain_reads_pass_the_tokenizer(canonical: str) -> None:
    check_canonical(canonical)


@pytest.mark.parametrize(
    ("canonical", "reason"),
    [
        ("SELECT 42 INTO OUTFILE '/tmp/x' APPEND", "INTO OUTFILE"),
        ("SELECT 1 SETTINGS readonly = 0", "SETTINGS"),
        ("SELECT 1 FORMAT JSON", "FORMAT"),
        ("SELECT * FROM file('/etc/passwd', 'CSV')", "file()"),
        ("SELECT file('/etc/hostname')", "file()"),
        ("SELECT * FROM url('http://169.254.169.254/', 'LineAsString')", "url()"),
        ("SELECT * FROM s3('https://b.s3.amazonaws.com/k', 'CSV')", "s3()"),
        ("SELECT * FROM remote('10.0.0.1', system.one)", "remote()"),
        ("SELECT 1 WHERE 1 IN (SELECT * FROM urlCluster('c', 'http://x/'))", "urlCluster()"),
        ("SELECT * FROM executable('x.sh', 'CSV', 'a Int8')", "executable()"),
        ("INSERT INTO t SELECT 1", "read-only"),
        ("DROP TABLE t", "read-only"),
        ("EXPLAIN PIPELINE INSERT INTO t SELECT 1", "read-only"),
        ("SELECT 1; DROP TABLE t", "one statement"),
        ("SELECT 1 # comment", "unexpected character"),
    ],
)
def test_everything_but_a_plain_read_is_refused_with_a_reason(canonical: str, reason: str) -> None:
    with pytest.raises(StatementRefused, match=reason.replace("(", r"\(").replace(")", r"\)")):
        check_canonical(canonical)


# --- the server, on a real embedded store beside a sink's client ---------------


@dataclass
class Served:
    settings: Settings
    sink: SerializedClient
    server: QueryServer

    def post(self, sql: str, timeout: float = 30) -> httpx.Response:
        return httpx.post(
            f"http://127.0.0.1:{self.server.port}/query",
            json={"sql": sql},
            headers={"X-Chainwatch-Token": self.server.token},
            timeout=timeout,
        )

    def insert_mark(self, n: int) -> float:
        started = time.perf_counter()
        self.sink.insert("marks", [(n,)], column_names=["n"])
        return time.perf_counter() - started

    def marks(self) -> int:
        return int(self.sink.query("SELECT count() FROM marks").result_rows[0][0])


def _serve(tmp_path: Path, limits: ReadLimits | None = None, **options: Any) -> Iterator[Served]:
    settings = Settings(data_dir=tmp_path / "data")
    sink = SerializedClient(open_client(settings))
    sink.command("CREATE TABLE marks (n UInt32) ENGINE = MergeTree ORDER BY n")
    sink.insert("marks", [(0,)], column_names=["n"])  # warm: the client knows the table
    queries = ReadOnlyQueries(open_own_handle(settings), limits)
    server = QueryServer(queries, settings.clickhouse_dir, 0, **options).start()
    try:
        yield Served(settings, sink, server)
    finally:
        server.stop()
        queries.close()
        sink.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from _serve(tmp_path)


def _error(resp: httpx.Response) -> str:
    body: dict[str, Any] = resp.json()
    return str(body["error"])


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["", " APPEND", " TRUNCATE"])
def test_into_outfile_is_refused_and_writes_nothing(
    served: Served, tmp_path: Path, mode: str
) -> None:
    target = tmp_path / "owned.txt"
    target.write_text("precious\n")
    fresh = tmp_path / "fresh.txt"
    for path in (target, fresh):
        resp = served.post(f"SELECT 42 INTO OUTFILE '{path}'{mode}")
        assert resp.status_code == 403
        assert "INTO OUTFILE" in _error(resp)
    assert target.read_text() == "precious\n"
    assert not fresh.exists()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT 1; DROP TABLE marks", "one statement"),
        ("SELECT 1 SETTINGS readonly = 0", "SETTINGS"),
        ("SELECT 1 FORMAT JSONEachRow", "FORMAT"),
        ("select * from FILE('/etc/passwd', 'LineAsString')", "reads outside the store"),
        ("SELECT file('/etc/hostname')", "reads outside the store"),
        ("SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')", "reads outside the store"),
        ("SELECT * FROM s3('http://127.0.0.1:9/b/k', 'CSV')", "reads outside the store"),
        ("SELECT * FROM remote('127.0.0.1:9', system.one)", "reads outside the store"),
        ("SELECT 1 /* ; */ -- \n ; DROP TABLE marks", "one statement"),
        ("DROP TABLE marks", "read-only"),
        ("SELEC 1", "syntax error"),
        ("   ", "empty"),
    ],
)
def test_the_server_refuses_with_a_4xx_and_a_reason(served: Served, sql: str, reason: str) -> None:
    resp = served.post(sql)
    assert resp.status_code == 403
    assert reason in _error(resp)
    assert served.marks() == 1


@pytest.mark.integration
def test_reads_with_keywords_in_strings_and_comments_are_served(served: Served) -> None:
    resp = served.post("SELECT 'INTO OUTFILE ; DROP' AS s, count() AS n FROM marks -- SETTINGS")
    assert resp.status_code == 200, resp.text
    assert resp.json()["rows"] == [["INTO OUTFILE ; DROP", 1]]


@pytest.mark.integration
def test_a_tables_definition_is_served_and_a_create_is_not(served: Served) -> None:
    """`SHOW CREATE TABLE` was refused for its word CREATE: the schema could be read only
    from `system.tables`. A CREATE statement is still refused."""
    resp = served.post("SHOW CREATE TABLE marks")
    assert resp.status_code == 200, resp.text
    ((ddl,),) = resp.json()["rows"]
    assert ddl.startswith("CREATE TABLE")
    assert "MergeTree" in ddl
    assert served.post("CREATE TABLE other (n UInt8) ENGINE = Memory").status_code == 403


@pytest.mark.integration
def test_a_read_of_no_rows_names_its_columns(served: Served) -> None:
    """Before: chDB answers no rows without a header, so `chainwatch sql` printed one blank
    line (a CSV without its header line) for a query that matched nothing."""
    resp = served.post("SELECT n, toString(n) AS s FROM marks WHERE n > 100")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"columns": ["n", "s"], "types": ["UInt32", "String"], "rows": []}
    shown = served.post("SHOW TABLES LIKE 'nothing%'")  # no DESCRIBE of it: as it was
    assert shown.status_code == 200, shown.text
    assert shown.json()["rows"] == []


@pytest.mark.integration
def test_a_failed_multi_statement_leaves_the_sinks_next_insert_working(served: Served) -> None:
    assert served.post("SELECT 1; DROP TABLE marks").status_code == 403
    served.insert_mark(1)
    assert served.marks() == 2


@pytest.mark.integration
def test_a_slow_read_does_not_hold_up_an_insert(served: Served) -> None:
    answers: list[httpx.Response] = []
    reader = threading.Thread(target=lambda: answers.append(served.post("SELECT sleep(3) AS s")))
    reader.start()
    try:
        wait_for(
            lambda: served.sink.query(
                "SELECT count() FROM system.processes WHERE query LIKE '%sleep(3)%' "
                "AND query NOT LIKE '%system.processes%'"
            ).result_rows[0][0],
            10,
            "the slow read to run",
        )
        took = served.insert_mark(1)
    finally:
        reader.join(timeout=30)
    assert took < 1.0, f"an insert waited {took:.2f}s behind a read"
    assert answers[0].status_code == 200, answers[0].text
    assert served.marks() == 2


@pytest.mark.integration
def test_reads_stop_at_the_server_limits(tmp_path: Path) -> None:
    limits = ReadLimits(max_execution_time_s=1, max_result_rows=1000)
    for served in _serve(tmp_path, limits):
        too_many = served.post("SELECT number FROM numbers(5000)")
        assert too_many.status_code == 400
        assert "Limit for result exceeded" in _error(too_many)
        started = time.monotonic()
        too_long = served.post(
            "SELECT count() FROM numbers(1000000000000) WHERE sipHash64(number) = 1"
        )
        assert time.monotonic() - started < 10
        assert too_long.status_code == 400
        assert "Timeout exceeded" in _error(too_long)


@pytest.mark.integration
def test_after_a_read_stopped_mid_stream_by_a_limit_the_next_reads_answer_right(
    served: Served,
) -> None:
    """The rest of a result aborted mid-stream (blocks of 65,536 rows against the default
    limit of 100,000) turned up in the next statement on the same chDB handle: it failed,
    and the server dropped the connection."""
    for n in range(3):
        too_many = served.post("SELECT number FROM numbers(1000000)")
        assert too_many.status_code == 400
        assert "Limit for result exceeded" in _error(too_many)
        after = served.post(f"SELECT 'x' AS a, {n} AS n")
        assert after.status_code == 200, after.text
        assert after.json()["rows"] == [["x", n]]


@pytest.mark.integration
def test_a_deeply_nested_body_is_a_400_not_a_dropped_connection(served: Served) -> None:
    body = b'{"sql": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    resp = httpx.post(
        f"http://127.0.0.1:{served.server.port}/query",
        content=body,
        headers={"X-Chainwatch-Token": served.server.token},
        timeout=30,
    )
    assert resp.status_code == 400
    assert served.post("SELECT 1 AS one").json()["rows"] == [[1]]


@pytest.mark.integration
def test_the_endpoint_file_is_private_even_over_a_leftover_of_another_mode(
    tmp_path: Path,
) -> None:
    leftover = endpoint_file(tmp_path / "data" / "clickhouse").with_suffix(".tmp")
    leftover.parent.mkdir(parents=True)
    leftover.write_text("{}")
    leftover.chmod(0o644)
    for served in _serve(tmp_path):
        path = endpoint_file(served.settings.clickhouse_dir)
        assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.integration
def test_no_header_is_asked_of_an_empty_read_that_used_half_its_time(tmp_path: Path) -> None:
    """`DESCRIBE (query)` evaluates the query's scalar subqueries again: after a read that
    took most of `max_execution_time` it took as long once more, so a read of no rows ran
    up to twice the limit (60 s: the loopback client's whole deadline). Before: the header
    was asked whatever the read had cost."""
    settings = Settings(data_dir=tmp_path / "data")
    sink = SerializedClient(open_client(settings))
    sink.command("CREATE TABLE marks (n UInt32) ENGINE = MergeTree ORDER BY n")
    queries = ReadOnlyQueries(open_own_handle(settings), ReadLimits(max_execution_time_s=2))
    sent: list[str] = []
    query = queries.client.query

    def spy(sql: str, **kwargs: Any) -> Any:
        sent.append(sql)
        return query(sql, **kwargs)

    queries.client.query = spy  # type: ignore[method-assign]
    try:  # the scalar subquery sleeps 1.2 s: more than half of the 2 s limit
        slow = "SELECT n FROM marks WHERE n > (SELECT sum(sleepEachRow(0.3)) FROM numbers(4))"
        assert list(queries.query(slow).result_rows) == []
        assert not [s for s in sent if s.startswith("DESCRIBE")]
        quick = queries.query("SELECT n FROM marks WHERE n > 5")
        assert list(quick.column_names) == ["n"]  # a cheap read still names its columns
    finally:
        queries.close()
        sink.close()


@pytest.mark.integration
def test_a_read_from_another_request_waits_until_a_cut_read_is_cleared(tmp_path: Path) -> None:
    """The server answers each request on a thread of its own, all through one chDB handle.
    A read that came in after another's result was cut by a limit, and before the handle was
    cleared of the rest, read that rest: of 200 requests on 8 threads (1 in 5 over
    `max_result_rows`), 2 were refused with `unrecognized data found in stream: 000017ff...`.
    Here the other read is started at that moment (between the cut and the clearing)."""
    settings = Settings(data_dir=tmp_path / "data")
    sink = SerializedClient(open_client(settings))
    queries = ReadOnlyQueries(open_own_handle(settings))
    answers: list[object] = []

    def other_read() -> None:
        try:
            answers.append(list(queries.query("SELECT 7 AS n, 'other' AS s").result_rows))
        except Exception as exc:  # the wrong answer this test is about
            answers.append(f"{type(exc).__name__}: {exc}"[:300])

    other = threading.Thread(target=other_read)
    settle = queries._settle

    def settle_after_another_read_came_in() -> None:
        if not other.is_alive() and not answers:  # the cut read's clearing, once
            other.start()
            # before: it answered at once, from the leftovers; now it waits for the handle,
            # and this wait ends by its bound (the only way it can end then)
            other.join(timeout=2)
        settle()

    queries._settle = settle_after_another_read_came_in  # type: ignore[method-assign]
    try:
        with pytest.raises(ReadFailed, match="Limit for result exceeded"):
            queries.query("SELECT number FROM numbers(1000000)")
        other.join(timeout=30)
        assert answers == [[(7, "other")]]
        assert list(queries.query("SELECT 8 AS n").result_rows) == [(8,)]
    finally:
        queries.close()
        sink.close()


@pytest.mark.integration
def test_an_answer_of_one_block_over_max_result_bytes_is_refused(tmp_path: Path) -> None:
    """ClickHouse checks `max_result_bytes` after each block of a result, and lets the first
    through whatever its size: one row of one array (`groupArray` over a table, or
    `arrayMap(x -> x, range(100000000))`) was decoded in the sink's process, 6.8 GB resident
    (0.4 GB before), and answered as 989 MB of JSON after 84 s, the sink's inserts held up
    69 s meanwhile. The answer's bytes are counted before it is decoded now."""
    limits = ReadLimits(max_result_bytes=1 << 20)
    for served in _serve(tmp_path, limits):
        too_big = served.post("SELECT arrayMap(x -> x, range(1000000)) AS a")
        assert too_big.status_code == 400
        assert "Limit for result exceeded" in _error(too_big)
        assert "1 MiB" in _error(too_big)
        fits = served.post("SELECT arrayMap(x -> x, range(100000)) AS a, 'x' AS s")
        assert fits.status_code == 200, fits.text
        assert fits.json()["types"] == ["Array(UInt32)", "String"]
        assert fits.json()["rows"] == [[list(range(100000)), "x"]]
        after = served.post("SELECT count() AS n FROM marks")
        assert after.json()["rows"] == [[1]]


@pytest.mark.integration
def test_a_caller_gone_before_its_answer_puts_no_traceback_on_the_owners_stderr(
    served: Served, capfd: pytest.CaptureFixture[str]
) -> None:
    """`chainwatch sql` stopped (Ctrl-C, its deadline) while its read runs: the server's
    write of the answer fails, and socketserver printed `Exception occurred during
    processing of request` and a traceback to the owning process's stderr, in the middle
    of the sink's JSON log lines."""
    before = threading.active_count()
    body = b'{"sql": "SELECT sleep(1) AS s"}'
    caller = socket.create_connection(("127.0.0.1", served.server.port))
    head = (
        f"POST /query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-Chainwatch-Token: {served.server.token}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    caller.sendall(head.encode() + body)
    wait_for(
        lambda: served.sink.query(
            "SELECT count() FROM system.processes WHERE query LIKE '%sleep(1)%' "
            "AND query NOT LIKE '%system.processes%'"
        ).result_rows[0][0],
        10,
        "the read to run",
    )
    caller.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    caller.close()  # a reset: the answer's write fails at once
    wait_for(lambda: threading.active_count() == before, 10, "the request's thread to end")
    assert "Traceback" not in capfd.readouterr().err
    assert served.post("SELECT 1 AS one").json()["rows"] == [[1]]


@pytest.mark.integration
def test_connections_past_the_bound_are_closed_and_hold_no_thread(tmp_path: Path) -> None:
    """Anyone on the host may connect (the token is read with the request), and each
    connection held a thread and a descriptor of the owning process while it sent a byte
    every few seconds: 1,500 such connections held 1,500 threads and descriptors of the sink
    (chDB lifts the descriptor limit to the hard one, 20,000 here, not past it)."""
    settings = Settings(data_dir=tmp_path / "data")
    sink = SerializedClient(open_client(settings))
    queries = ReadOnlyQueries(open_own_handle(settings))
    server = QueryServer(queries, settings.clickhouse_dir, 0, max_connections=4).start()
    try:
        closed, threads = held_past_a_bound(
            server.port, b"GET /ping HTTP/1.1\r\n", callers=12, bound=4,
            wait_for=wait_for, within_s=10,
        )  # fmt: skip
        assert threads <= 4
        assert closed == 8
        resp = httpx.post(
            f"http://127.0.0.1:{server.port}/query",
            json={"sql": "SELECT 1 AS one"},
            headers={"X-Chainwatch-Token": server.token},
            timeout=30,
        )
        assert resp.json()["rows"] == [[1]]
    finally:
        server.stop()
        queries.close()
        sink.close()


def _head(server: QueryServer, length: int) -> bytes:
    return (
        f"POST /query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-Chainwatch-Token: {server.token}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


@pytest.mark.integration
@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_request_dripped_a_byte_at_a_time_is_cut_at_the_deadline(
    tmp_path: Path, where: str
) -> None:
    """The handler's timeout is per read: a local client sending a byte every 50 ms (or
    every few seconds) kept its connection, and its slot, for ever; 32 such held the whole
    endpoint, and `chainwatch sql` said the store "serves no query endpoint". Here the
    deadline is 0.5 s; a real request, and a read that runs longer than that, are answered."""
    for served in _serve(tmp_path, request_deadline_s=0.5):
        port = served.server.port
        if where == "headers":
            start = b"POST /query HTTP/1.1\r\nHost: x\r\nX-Pad: "
        else:
            start = _head(served.server, 100_000) + b'{"sql": "SELECT 1 -- '
        dripped = drip(port, start, give_up_s=5.0)
        assert dripped.closed, f"still open after {dripped.after_s:.1f}s"
        assert dripped.answer == b""  # closed unanswered
        assert 0.5 <= dripped.after_s < 4.0, dripped.after_s
        body = b'{"sql": "SELECT sleep(1) AS s"}'  # answered after the deadline: not cut
        slow = drip(port, _head(served.server, len(body)) + body, give_up_s=10.0)
        assert slow.answer.startswith(b"HTTP/1.0 200 "), slow.answer[:200]
        assert served.post("SELECT 1 AS one").json()["rows"] == [[1]]
