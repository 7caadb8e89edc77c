"""`chainwatch runs list|delete` as an operator runs them (docs/replay.md, "What a run
leaves behind"): a kept run is listed, and listing creates nothing; it is deleted whole,
its consumer group too; a bad id or a Kafka that does not answer is one line each.

Before, a run's leftovers were listed and deleted only by a `python -c` one-liner, and
its consumer group with its committed offsets stayed on the broker.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from dead_servers import DeadServer, outcome_within
from kafka_groups import group_on_broker

from chainwatch import cli_context, kafka_admin, replay_run_list
from chainwatch.cli import main
from chainwatch.kafka_admin import admin_client
from chainwatch.replay import run_replay
from chainwatch.replay_run_list import run_of_topic
from chainwatch.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "examples" / "example_1_on_time.ndjson"


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _broker(bootstrap: str) -> tuple[list[str], list[str]]:
    """Every topic and every consumer group on the broker."""
    admin = admin_client(bootstrap, request_timeout_s=15)
    try:
        topics = sorted(admin.list_topics())
        groups = sorted(str(g["group_id"]) for g in admin.list_groups())
    finally:
        admin.close()
    return topics, groups


def _runs(capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, object]]:
    assert main(["runs", "list", "--json"]) == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.splitlines()
    return {run["run_id"]: run for run in map(json.loads, lines)}


def test_a_kept_run_is_listed_without_creating_anything_and_deleted_with_its_group(
    settings_factory: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = settings_factory()
    monkeypatch.setitem(cli_context.state, "settings", settings)
    others = _runs(capsys)  # other tests' runs on the suite's broker
    said: list[str] = []
    run_replay(
        settings, SCENARIO, until=None, workers=1, partitions=1, keep_topics=True,
        progress=lambda message, **_counts: said.append(message), timeout_s=240,
    )  # fmt: skip
    kept = next(line for line in said if line.startswith("kept the run's topics"))
    run_id = kept.split("`chainwatch runs delete ")[1].split("`")[0]
    bootstrap, data = settings.kafka.bootstrap, settings.data_path
    before = (_broker(bootstrap), _files(data))

    runs = _runs(capsys)
    assert main(["runs", "list"]) == 0
    table = capsys.readouterr().out.splitlines()

    assert (_broker(bootstrap), _files(data)) == before  # nothing created, topic or file
    assert runs.keys() - others.keys() == {run_id}
    state = sorted(str(p) for p in data.glob(f"worker*/faust/replay-{run_id}"))
    assert state
    assert runs[run_id] == {
        "run_id": run_id,
        "topics": 16,  # the contract's 7, the engine's 9
        "status": "stopped",
        "members": 0,
        "consumer_group": True,
        "worker_state": state,
    }
    assert table[0].split() == ["run", "topics", "group", "worker", "state"]
    assert [line.split() for line in table if line.startswith(f"{run_id} ")] == [
        [run_id, "16", "stopped", "1", "dir(s)"]
    ]

    assert main(["runs", "delete", run_id]) == 0
    assert capsys.readouterr().out == (
        f"deleted run {run_id}: consumer group replay-{run_id}, 16 topics, worker state (worker0)\n"
    )
    assert group_on_broker(bootstrap, f"replay-{run_id}") == (False, {})
    assert not list(data.glob(f"worker*/faust/replay-{run_id}"))
    deadline = time.monotonic() + 60
    while run_id in _runs(capsys):  # Kafka deletes topics in the background
        assert time.monotonic() < deadline, "the run's topics were not deleted within 60 s"
        time.sleep(0.2)  # poll interval of the condition


def test_deleting_runs_says_what_each_one_did_and_fails_for_the_rest(
    settings_factory: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One line per run: what was deleted on stdout, each refusal on stderr; exit 1 when
    any run was not deleted (a run of which nothing is found too: a mistyped id)."""
    settings = settings_factory()
    monkeypatch.setitem(cli_context.state, "settings", settings)
    state = settings.data_path / "worker1" / "faust" / "replay-onlyondisk"
    state.mkdir(parents=True)

    assert main(["runs", "delete", "onlyondisk", "nosuchrun", "onlyondisk"]) == 1

    shown = capsys.readouterr()
    assert shown.out == "deleted run onlyondisk: worker state (worker1)\n"
    assert shown.err.startswith("error: run nosuchrun: nothing to delete (no consumer group")
    assert len(shown.err.splitlines()) == 1
    assert not state.exists()


@pytest.mark.parametrize("run_id", ["*", "a/../b"])
def test_a_bad_run_id_is_refused_before_kafka_is_asked(
    run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A silent broker would hold a command that asked it for the whole deadline. The ids
    are the command line's: a usage error, as `replay --run-id '*'` is (it was exit 1)."""
    server = DeadServer("silent")
    try:
        bootstrap = f"127.0.0.1:{server.port}"
        settings = Settings(data_dir=tmp_path, kafka={"bootstrap_servers": bootstrap})  # type: ignore[arg-type]
        monkeypatch.setitem(cli_context.state, "settings", settings)
        assert main(["runs", "delete", "abc", run_id]) == 2  # a usage error, as click's own
    finally:
        server.close()
    assert not server.asked.is_set()
    assert capsys.readouterr().err.splitlines() == [
        f"error: run id {run_id!r}: a run's id is letters, digits, '.', '_' or '-' "
        "(the one `chainwatch runs list` shows) (see `chainwatch runs delete --help`)"
    ]


def test_kafka_not_answering_is_one_line_within_the_deadline_the_disk_still_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = DeadServer("closed")
    bootstrap = f"127.0.0.1:{gone.port}"
    settings = Settings(data_dir=tmp_path, kafka={"bootstrap_servers": bootstrap})  # type: ignore[arg-type]
    monkeypatch.setitem(cli_context.state, "settings", settings)
    state = tmp_path / "worker0" / "faust" / "replay-0123456789"
    state.mkdir(parents=True)

    started = time.monotonic()
    listed = outcome_within(30, lambda: main(["runs", "list", "--json", "--timeout", "2"]))
    listing = capsys.readouterr()
    deleted = outcome_within(30, lambda: main(["runs", "delete", "0123456789", "--timeout", "2"]))
    deleting = capsys.readouterr()
    elapsed = time.monotonic() - started

    assert (listed, deleted) == (1, 1)
    assert elapsed < 15  # 2 s a call: the connection's, once per command
    assert json.loads(listing.out) == {
        "run_id": "0123456789",
        "topics": None,
        "status": "unknown",
        "members": None,
        "consumer_group": None,
        "worker_state": [str(state)],
    }
    assert listing.err.splitlines() == [
        f"error: the runs on Kafka are unknown: cannot reach Kafka at {bootstrap} "
        "(KafkaTimeoutError); check that it runs there (`chainwatch kafka start` starts the "
        "local one; CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS names another) (listed: the worker "
        f"state in {tmp_path} only)"
    ]
    assert deleting.out == ""
    assert deleting.err.splitlines() == [
        "error: run 0123456789 not deleted: whether it still runs is unknown, cannot reach "
        f"Kafka at {bootstrap} (KafkaTimeoutError); check that it runs there (`chainwatch "
        "kafka start` starts the local one; CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS names another)"
    ]
    assert state.exists()
    assert os.listdir(tmp_path) == ["worker0"]  # no log dir or file made either


@pytest.mark.parametrize(
    ("topic", "run_id"),
    [
        ("replay-8d47fa4045.scans", "8d47fa4045"),
        ("replay-8d47fa4045.crm.customers", "8d47fa4045"),  # a contract name with a dot
        ("replay-8d47fa4045-order-inbox", "8d47fa4045"),
        ("replay-a-b-orders-changelog", "a-b"),  # a known id with a dash: the longest
        ("replay-a-b.alerts", "a-b"),
        ("replay-8d47fa4045", None),  # neither a contract topic nor an engine one
        ("replayed-8d47fa4045.scans", None),
        ("cw.scans", None),
        ("replay-.scans", None),
    ],
)
def test_a_topic_is_of_the_run_its_name_says(topic: str, run_id: str | None) -> None:
    assert run_of_topic(topic, known=["a", "a-b"]) == run_id


class _DescribingAdmin:
    """An admin client that lists one run's group, and describes it with `error`."""

    def __init__(self, error: str) -> None:
        self.error = error

    def list_topics(self) -> list[str]:
        return ["replay-8d47fa4045.scans"]

    def list_groups(self) -> list[dict[str, str]]:
        return [{"group_id": "replay-8d47fa4045"}]

    def describe_groups(self, groups: list[str]) -> dict[str, object]:
        return {name: {"error": self.error, "members": []} for name in groups}

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "error", ["[Error 16] NotCoordinatorError: ", "[Error 30] GroupAuthorizationFailedError: "]
)
def test_a_group_kafka_would_not_describe_is_unknown_not_stopped(
    error: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group whose description was an error was taken for one deleted since it was
    listed: a run Kafka said nothing of (its coordinator moved, an ACL) was listed as
    `stopped`, its group gone. Only "no such group" means gone."""
    monkeypatch.setattr(kafka_admin, "admin_client", lambda _b, **_: _DescribingAdmin(error))

    listing = replay_run_list.list_runs(Settings(data_dir=tmp_path))

    assert [(run.run_id, run.status, run.group) for run in listing.runs] == [
        ("8d47fa4045", "unknown", None)
    ]
    assert listing.kafka_error is not None
    assert "describe 1 consumer groups" in str(listing.kafka_error), listing.kafka_error


def test_a_group_deleted_since_it_was_listed_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = _DescribingAdmin("[Error 69] GroupIdNotFoundError: ")
    monkeypatch.setattr(kafka_admin, "admin_client", lambda _b, **_: gone)

    listing = replay_run_list.list_runs(Settings(data_dir=tmp_path))

    assert [(run.run_id, run.status, run.group) for run in listing.runs] == [
        ("8d47fa4045", "stopped", False)
    ]
    assert listing.kafka_error is None
