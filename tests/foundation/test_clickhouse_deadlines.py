"""Every request to a ClickHouse server ends by its deadline, with one line that says so.

clickhouse-connect's own timeouts bound one socket read (60 s): a server that
answered `/ping` and then said nothing held `chainwatch sql` a minute, one that
sent a byte at a time held it, `db migrate` and the sink's start for ever. No
ClickHouse server is needed: `StallingClickHouse` answers `/ping` (and the
opening of a client), then stalls.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from aiokafka import TopicPartition
from clickhouse_connect.driver.httputil import get_pool_manager
from dead_servers import DeadServer, PromptServer, StallingClickHouse, outcome_within
from urllib3 import PoolManager, Timeout

from chainwatch.cli_context import plain_store_error
from chainwatch.settings import Settings
from sinks.clickhouse import connection
from sinks.clickhouse.connection import SerializedClient, StoreUnavailable, open_client
from sinks.clickhouse.deadline_pool import DeadlinePassed, Deadlines, bound
from sinks.clickhouse.readers import open_reader
from sinks.clickhouse.sink import ClickHouseSink, StopRequested, rows_at_fault
from sinks.clickhouse.stored_offsets import READ_BACK_MAX_EXECUTION_S, read_cut, read_stored

STALLS = ["silent", "trickle", "trickle_body"]


@pytest.fixture
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CONNECT_DEADLINE_S", "READ_DEADLINE_S", "WRITE_DEADLINE_S", "DDL_DEADLINE_S"):
        monkeypatch.setattr(connection, name, 1.0)


Stalling = Callable[..., StallingClickHouse]
"""Starts a `StallingClickHouse` (its arguments), closed after the test."""


@pytest.fixture
def stalling() -> Iterator[Stalling]:
    servers: list[StallingClickHouse] = []

    def start(kind: str, *, opens: bool = True) -> StallingClickHouse:
        servers.append(StallingClickHouse(kind, opens=opens))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _settings(server: StallingClickHouse) -> Settings:
    return Settings(clickhouse={"url": server.url("reader:s3cret@")})  # type: ignore[arg-type]


def _read_one(server: StallingClickHouse) -> object:
    """`SELECT 1` through `open_reader`, as `chainwatch sql`, `status` and `doctor` read."""
    reader = open_reader(_settings(server))
    try:
        return reader.query("SELECT 1")
    finally:
        reader.close()


def _through_a_client(
    server: StallingClickHouse, call: Callable[[SerializedClient], object]
) -> object:
    """What `call` returns or raises on a client opened on `server` (no `CREATE DATABASE`),
    within 10 s; the client closed after."""
    client = SerializedClient(open_client(_settings(server), create_database=False))
    try:
        return outcome_within(10, lambda: call(client))
    finally:
        client.close()


def _unreachable(server: StallingClickHouse) -> str:
    return (
        f"cannot reach ClickHouse at http://reader:***@127.0.0.1:{server.port}/plant "
        "(no answer within 1 s); check CHAINWATCH_CLICKHOUSE__URL"
    )


@pytest.mark.usefixtures("short_deadlines")
@pytest.mark.parametrize("kind", ["silent", "trickle"])
def test_a_server_that_answers_ping_then_stalls_its_opening_is_one_line_at_the_deadline(
    kind: str, stalling: Stalling
) -> None:
    server = stalling(kind, opens=False)
    started = time.monotonic()
    error = outcome_within(
        10, lambda: open_client(_settings(server), create_database=False, writer=False)
    )
    took = time.monotonic() - started
    assert isinstance(error, StoreUnavailable), error
    assert "s3cret" not in str(error)
    assert plain_store_error(str(error)) == _unreachable(server)
    assert took < 3  # one deadline: a cut request is not replayed


@pytest.mark.usefixtures("short_deadlines")
@pytest.mark.parametrize("kind", STALLS)
def test_a_read_of_a_server_that_stalls_is_one_line_at_the_read_deadline(
    kind: str, stalling: Stalling
) -> None:
    """`chainwatch sql`, `status` and `doctor` read through `open_reader`."""
    server = stalling(kind)
    started = time.monotonic()
    error = outcome_within(10, lambda: _read_one(server))
    took = time.monotonic() - started
    assert server.stalled.is_set()  # the client opened; a read stalled
    assert isinstance(error, StoreUnavailable), error
    assert plain_store_error(str(error)) == _unreachable(server)
    assert took < 3  # one deadline, not one per clean-up query after it


@pytest.mark.usefixtures("short_deadlines")
@pytest.mark.parametrize("kind", STALLS)
def test_migrations_and_inserts_to_a_server_that_stalls_end_at_their_deadline(
    kind: str, stalling: Stalling
) -> None:
    """`chainwatch db migrate` (its `CREATE DATABASE`), the sink's inserts; a failed insert
    is an outage the sink retries with the same batch, not rows at fault."""
    server = stalling(kind)
    opening = outcome_within(10, lambda: open_client(_settings(server)))
    assert isinstance(opening, StoreUnavailable), opening
    assert plain_store_error(str(opening)) == _unreachable(server)

    inserting = _through_a_client(
        server, lambda client: client.insert("scans", [[1, "a"]], column_names=["n", "s"])
    )
    assert isinstance(inserting, StoreUnavailable), inserting
    assert plain_store_error(str(inserting)) == _unreachable(server)
    assert not rows_at_fault(inserting)


@pytest.mark.usefixtures("short_deadlines")
@pytest.mark.parametrize("kind", STALLS)
def test_a_read_back_of_stored_offsets_the_deadline_cuts_is_an_outage_not_a_slow_read(
    kind: str, stalling: Stalling
) -> None:
    """The read carries the server's own limit, below the deadline: a server that honours
    it answers (TIMEOUT_EXCEEDED) long before, so reaching the deadline means no answer at
    all, which the sink logs as ClickHouse unavailable (check the URL), not as a slow read
    (check the projection's mutations)."""
    server = stalling(kind)
    reading = _through_a_client(server, lambda client: read_stored(client, "scans", "scans", 0, 0))
    assert isinstance(reading, StoreUnavailable), reading
    assert plain_store_error(str(reading)) == _unreachable(server)
    assert not read_cut(reading)
    read_back = next(r for r in server.requests if b"kafka_offset" in r)
    assert f"max_execution_time={READ_BACK_MAX_EXECUTION_S}".encode() in read_back
    assert b"optimize_use_projections=1" in read_back
    assert b"timeout_overflow_mode=throw" in read_back  # not a profile's 'break': a part


@pytest.mark.parametrize("kind", ["silent", "trickle"])
def test_the_sink_told_to_stop_while_clickhouse_stalls_its_start_stops_at_once(
    kind: str,
) -> None:
    """The store is opened and migrated on a thread that no signal can stop; the stop
    aborts its requests instead of waiting out their deadlines (default ones here)."""
    server = StallingClickHouse(kind)
    # told to stop once its first statement after the opening (`CREATE DATABASE`) stalls
    took = _took_to_stop_opening(_settings(server), server.stalled, server.close)
    assert took < 2


def test_the_sink_told_to_stop_while_a_read_back_of_its_stored_offsets_stalls_stops_at_once(
    stalling: Stalling,
) -> None:
    """A partition's first records wait for the read-back of what the store holds of it;
    that read ran in `asyncio.to_thread` until its deadline (the server's limit is 100 s),
    so a stop meanwhile waited, until the stop deadline cut the sink (exit 1). The stop
    now aborts the read (default deadlines here)."""
    server = stalling("silent")
    deadlines = Deadlines(connection.CONNECT_DEADLINE_S, "stalling")
    client = SerializedClient(
        open_client(_settings(server), create_database=False, deadlines=deadlines)
    )
    sink = ClickHouseSink(bootstrap="127.0.0.1:9", group_id="g", client=client, mappers={})

    async def stopped_meanwhile() -> float:
        stop = asyncio.Event()
        sink._stop = stop  # what `run` sets
        reading = asyncio.ensure_future(sink._read_stored("scans", TopicPartition("scans", 0), 0))
        await asyncio.to_thread(server.stalled.wait, 10)
        stop.set()
        started = time.monotonic()
        with pytest.raises(StopRequested):
            await reading
        return time.monotonic() - started

    try:
        took = outcome_within(10, lambda: asyncio.run(stopped_meanwhile()))
    finally:
        client.close()
    assert not isinstance(took, BaseException), took
    assert took < 2


def _took_to_stop_opening(
    settings: Settings, under_way: threading.Event, close: Callable[[], None]
) -> float:
    """How long the sink's opening of the store `settings` name took to end once told to
    stop, the stop coming once `under_way` is set (its client None); `close` ends the
    server after."""
    from chainwatch.sink_runner import _open_store

    async def signalled_meanwhile() -> object:
        stop = asyncio.Event()
        opening = asyncio.ensure_future(_open_store(settings, stop))
        await asyncio.to_thread(under_way.wait, 10)
        stop.set()
        started = time.monotonic()
        client = await opening
        return client, time.monotonic() - started

    try:
        outcome = outcome_within(
            3 * connection.CONNECT_DEADLINE_S, lambda: asyncio.run(signalled_meanwhile())
        )
    finally:
        close()
    assert not isinstance(outcome, BaseException), outcome
    client, took = outcome
    assert client is None
    return float(took)


def _opening_at(url: str) -> Settings:
    return Settings(clickhouse={"url": url})  # type: ignore[arg-type]


def test_the_sink_told_to_stop_while_clickhouse_trickles_its_ping_stops_at_once() -> None:
    """The `/ping` before a client opens was not among the requests a stop aborts: the
    sink waited out all of `CONNECT_DEADLINE_S` for a server trickling its answer."""
    server = DeadServer("trickle")  # a status line, then a header a byte every 50 ms
    # told to stop while its `/ping` is under way
    took = _took_to_stop_opening(_opening_at(f"{server.url}/plant"), server.asked, server.close)
    assert took < connection.CONNECT_DEADLINE_S / 4


def test_the_sink_told_to_stop_while_clickhouse_stalls_its_tls_handshake_stops_at_once() -> None:
    """The handshake of the `https` `/ping` runs on a socket TLS took over (the one a stop
    shuts was detached from it): the sink waited out all of `CONNECT_DEADLINE_S`."""
    server = DeadServer("silent")  # reads the client's hello, answers nothing
    url = f"https://127.0.0.1:{server.port}/plant"
    took = _took_to_stop_opening(_opening_at(url), server.asked, server.close)
    assert took < connection.CONNECT_DEADLINE_S / 4


BoundPool = Callable[[float], tuple[PoolManager, Deadlines]]
"""Makes a pool as clickhouse-connect does, bound to deadlines of so many seconds."""


@pytest.fixture
def bound_pool() -> Iterator[BoundPool]:
    """`BoundPool`; each pool made is cleared after the test (its servers' fixtures after)."""
    pools: list[PoolManager] = []

    def make(seconds: float) -> tuple[PoolManager, Deadlines]:
        deadlines = Deadlines(seconds, "test")
        pools.append(bound(get_pool_manager(), deadlines))
        return pools[-1], deadlines

    yield make
    for pool in pools:
        pool.clear()


def _pool_request(pool: PoolManager, deadlines: Deadlines, url: str) -> object:
    """One call of one request, with the timeouts clickhouse-connect gives its pool."""
    with deadlines.call():
        return pool.request(
            "POST", url, body=b"SELECT 1", timeout=Timeout(connect=5, read=60), retries=0
        )


@pytest.fixture
def silent_server() -> Iterator[DeadServer]:
    """Reads what a client sends first (a TLS hello) and answers nothing."""
    server = DeadServer("silent")
    yield server
    server.close()


@pytest.fixture(params=["tls_handshake_stalls", "tcp_connect_hangs"])
def stalled_connect(request: pytest.FixtureRequest) -> Iterator[str]:
    """A URL where a new connection never completes: its TLS handshake answered by
    nothing, or its TCP connect to a server whose full listen queue drops the SYN, as a
    black-holed address does."""
    if request.param == "tls_handshake_stalls":
        silent: DeadServer = request.getfixturevalue("silent_server")
        yield f"https://127.0.0.1:{silent.port}/"
        return
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = int(listener.getsockname()[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5):  # fills the queue
            yield f"http://127.0.0.1:{port}/"


def test_a_new_connection_that_stalls_ends_at_the_call_s_deadline(
    stalled_connect: str, bound_pool: BoundPool
) -> None:
    """The pool connects before it sends the request, which armed the deadline: a new
    connection's TLS handshake, and its TCP connect, were bounded by `connect_timeout`
    (5 s) alone, past the call's deadline, and failed as urllib3's "Read timed out", not
    as the deadline."""
    pool, deadlines = bound_pool(1.0)
    error = outcome_within(30, lambda: _pool_request(pool, deadlines, stalled_connect))
    assert isinstance(error, DeadlinePassed), error
    assert str(error) == "no answer within 1 s"
    assert deadlines.cut == str(error)


def test_a_stop_ends_a_new_connection_s_tls_handshake_at_once(
    silent_server: DeadServer, bound_pool: BoundPool
) -> None:
    """`abort` shut the requests under way: a connection still in its handshake was none
    of them, and the stop waited out `connect_timeout` (5 s), whatever the deadline."""
    pool, deadlines = bound_pool(600.0)
    ended: list[object] = []
    url = f"https://127.0.0.1:{silent_server.port}/"
    thread = threading.Thread(
        target=lambda: ended.append(outcome_within(30, lambda: _pool_request(pool, deadlines, url)))
    )
    thread.start()
    assert silent_server.asked.wait(30)  # the client's hello came: its handshake is under way
    deadlines.abort()
    thread.join(30)
    (error,) = ended
    assert isinstance(error, DeadlinePassed), error
    assert str(error) == "abandoned: the process is stopping"


@pytest.fixture
def prompt_server() -> Iterator[PromptServer]:
    server = PromptServer()
    yield server
    server.close()


def test_a_request_answered_in_time_is_never_cut_later(
    prompt_server: PromptServer, bound_pool: BoundPool
) -> None:
    """The deadline of a request whose answer was read is dropped: its connection, idle
    past it and used again, still works (and is the same connection)."""
    pool, deadlines = bound_pool(0.3)
    for streamed in (False, True, False, True):
        with deadlines.call():
            answer = pool.request(
                "POST",
                f"http://127.0.0.1:{prompt_server.port}/",
                body=b"x",
                preload_content=not streamed,
            )
            body = b"".join(answer.stream(1)) if streamed else answer.data
            answer.release_conn()
        assert body == b"ok"
        assert deadlines.cut is None
        time.sleep(0.5)  # past the deadline, idle
    assert prompt_server.connections == 1


class _Unread:
    """A connection whose answer's body was left unread (urllib3-future hands such a
    connection back to its pool before the body is read)."""

    is_idle = False
    sock = None


def test_an_earlier_calls_abandoned_answer_does_not_fail_the_current_call() -> None:
    """Its deadline falls due during a later call: that call's later requests failed at
    once with "no answer within N s", though none of its own was late."""
    deadlines = Deadlines(600.0, "http://clickhouse.example")
    with deadlines.call():
        stale = deadlines._shared.arm(_Unread())  # type: ignore[arg-type]
        stale.in_call = False  # its headers came; the body was never read
    with deadlines.call():
        stale.fire("no answer within 600 s")  # the watchdog, later
        assert deadlines.cut is None


@pytest.mark.usefixtures("short_deadlines")
def test_a_read_of_a_server_that_answers_each_request_late_ends_at_the_one_read_deadline(
    stalling: Stalling,
) -> None:
    """A read is several requests (its statement checked by the server's parser, then,
    after a failure, the handle settled with up to four more): each had the read's
    deadline of its own, so `chainwatch sql` on a server that answers each just in time
    took five deadlines (200 s) to print one error. The read has the one deadline now."""
    server = stalling("slow_error")
    error = outcome_within(10, lambda: _read_one(server))
    assert isinstance(error, StoreUnavailable), error
    assert plain_store_error(str(error)) == _unreachable(server)
    answered_late = [
        r
        for r in server.requests
        if not r.startswith(b"GET /ping") and not any(p in r for p in StallingClickHouse._OPENING)
    ]
    # the opening's table-functions read, then what fits in the one read deadline of 1 s at
    # 0.4 s a request (a load that slows the client only makes it fewer): five had a deadline each
    assert len(answered_late) <= 1 + 3, answered_late


def test_the_requests_of_one_call_share_its_deadline(
    prompt_server: PromptServer, bound_pool: BoundPool
) -> None:
    """The second request of a call gets what the first left: a request ending by its
    own deadline no longer restarts the clock for the next."""
    pool, deadlines = bound_pool(1.0)
    late = f"http://127.0.0.1:{prompt_server.port}/late"
    started = time.monotonic()

    def two_requests() -> None:
        for _ in range(2):
            pool.request("POST", late, body=b"x").release_conn()

    with deadlines.call(), pytest.raises(DeadlinePassed, match=r"^no answer within 1 s$"):
        two_requests()
    assert time.monotonic() - started < 1.5
    assert deadlines.cut == "no answer within 1 s"
