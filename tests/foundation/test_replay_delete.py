"""A run's deletion (`chainwatch runs delete`, a finished replay's own clean-up) deletes
its consumer group with its topics and state, and never a running run.

It deleted the topics and the table state of a run whose workers were still in its
consumer group, and left every run's group and committed offsets on the broker. Checked
on the suite's real broker: a member in the run's group stops the deletion (Kafka's own
refusal to delete a group with members); once it has left, the run is deleted, its group
too.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dead_servers import DeadServer, outcome_within
from kafka import TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaTimeoutError
from kafka.structs import OffsetAndMetadata
from kafka_groups import group_on_broker, joined_member
from readable import line_within

from chainwatch import kafka_admin, replay, replay_runs
from chainwatch.errors import UserError
from chainwatch.kafka_admin import KafkaRefused, KafkaUnreachable, admin_client
from chainwatch.runners import prepare_topics
from chainwatch.settings import Settings


def _until(
    condition: Callable[[], Any], timeout_s: float, what: str, said: list[str] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s; the run said {said}"
        time.sleep(0.1)  # poll interval of the condition


def _run(settings: Settings) -> tuple[Settings, Path]:
    """A run's settings and the table state its worker 0 wrote."""
    run = replay_runs.run_settings(settings, uuid.uuid4().hex[:10])
    state = run.data_path / "worker0" / "faust" / run.engine.app_id
    state.mkdir(parents=True)
    return run, state


def _topics(run: Settings) -> set[str]:
    admin = admin_client(run.kafka.bootstrap, request_timeout_s=15)
    try:
        return {t for t in admin.list_topics() if t.startswith(run.kafka.topic_prefix)}
    finally:
        admin.close()


def test_a_run_whose_group_has_a_member_is_refused_and_deleted_with_its_group_once_it_left(
    settings_factory: Callable[..., Settings],
) -> None:
    run, state = _run(settings_factory())
    prepare_topics(run)
    topics = _topics(run)
    scans = TopicPartition(f"{run.kafka.topic_prefix}scans", 0)
    group = run.engine.app_id
    worker = joined_member(run.kafka.bootstrap, group, scans.topic)
    try:
        worker.commit({scans: OffsetAndMetadata(0, "", -1)})  # what a worker commits
        before = group_on_broker(run.kafka.bootstrap, group)
        with pytest.raises(replay_runs.RunStillRunning) as refused:
            replay_runs.delete_run(run)
        assert (_topics(run), state.exists()) == (topics, True)
        assert group_on_broker(run.kafka.bootstrap, group) == before
        assert before[0]
        assert scans in before[1]
    finally:
        worker.close()  # leaves the group, as a stopped worker does
    run_id = run.engine.app_id.removeprefix("replay-")
    assert str(refused.value).startswith(
        f"run {run_id} is still running: its consumer group {group} has "
        "1 active member(s); nothing deleted"
    )

    deleted = replay_runs.delete_run(run)

    assert (deleted.group, set(deleted.topics), deleted.state) == (True, topics, (state,))
    assert not state.exists()
    assert group_on_broker(run.kafka.bootstrap, group) == (False, {})
    _until(lambda: not _topics(run), 60, "deletion of the run's topics")


_KILLED_MEMBER = """
import sys
import time
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaTimeoutError
from kafka.structs import OffsetAndMetadata
bootstrap, group, topic = sys.argv[1:]
consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                         session_timeout_ms=45000)
while not consumer.partitions_for_topic(topic):  # as kafka_groups.joined_member, for its reason
    time.sleep(0.1)
consumer.subscribe([topic])
while not consumer.assignment():
    consumer.poll(1000)
consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(0, "", -1)})
print("joined", flush=True)
sys.stdin.read()
"""


def test_a_finished_run_keeps_only_a_group_its_killed_worker_is_still_a_member_of(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """A worker killed (its stop's grace run out, or a crash) stays a member until its
    session times out, and Kafka refuses to delete a group with members. Its members
    removed by force and the group deleted at once stalled the broker's group
    coordinator for over a minute (later joins and topic deletions waited on it, in
    the suite's runs): the run deletes its topics, keeps the group, and says so."""
    scenario = tmp_path / "empty.ndjson"
    scenario.write_text("")
    said: list[str] = []
    run = replay.ReplayRun(
        settings_factory(), scenario, partitions=1, progress=lambda m, **_c: said.append(m)
    )
    run.prepare_topics()
    group, bootstrap = run.settings.engine.app_id, run.settings.kafka.bootstrap
    with subprocess.Popen(
        [sys.executable, "-c", _KILLED_MEMBER, bootstrap, group, f"{group}.scans"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as member:
        try:
            assert member.stdout is not None
            assert line_within(member.stdout, 120, "the killed member's join") == b"joined\n"
        finally:
            member.kill()  # no LeaveGroup: a member for its session's 45 s
            member.wait()
    assert group_on_broker(bootstrap, group)[0]

    run.close()

    _until(lambda: not _topics(run.settings), 60, "deletion of the run's topics", said)
    assert group_on_broker(bootstrap, group)[0]  # kept: it expires by itself
    (kept,) = [m for m in said if "consumer group" in m]
    assert kept.startswith(f"run {run.run_id}: its topics were deleted, its consumer group")
    assert f"chainwatch runs delete {run.run_id}" in kept


@pytest.mark.parametrize("kind", ["closed", "silent"])
def test_a_kafka_that_does_not_answer_whether_the_run_runs_deletes_nothing(
    tmp_path: Path, kind: str
) -> None:
    """Without an answer the run may be running: its state stays, and the error says
    which run and why, by the deadline (2 s for the connection and 2 s for the call)."""
    server = DeadServer(kind)
    try:
        bootstrap = f"127.0.0.1:{server.port}"
        run, state = _run(Settings(data_dir=tmp_path, kafka={"bootstrap_servers": bootstrap}))  # type: ignore[arg-type]
        outcome = outcome_within(30, lambda: replay_runs.delete_run(run, timeout_s=2))
    finally:
        server.close()
    assert isinstance(outcome, KafkaUnreachable), outcome
    run_id = run.engine.app_id.removeprefix("replay-")
    assert str(outcome).startswith(
        f"run {run_id} not deleted: whether it still runs is unknown, "
        f"cannot reach Kafka at {bootstrap}"
    ), outcome
    assert state.exists()


@pytest.mark.parametrize("run_id", ["a/../../../../outside", "*", "[a]", ""])
def test_deleting_a_run_by_an_odd_id_deletes_nothing_and_asks_kafka_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, run_id: str
) -> None:
    """The run id is taken as typed: `a/../../../../outside` deleted a directory beside
    the data dir, and `*` every run's state, a running one's too. Refused before Kafka is
    asked (the other ids given with it too)."""
    asked: list[str] = []

    def no_kafka(bootstrap: str, **_: float | None) -> None:
        asked.append(bootstrap)
        raise AssertionError("Kafka asked")

    monkeypatch.setattr(kafka_admin, "admin_client", no_kafka)
    faust = tmp_path / "data" / "worker0" / "faust"
    kept = [faust / "replay-a", faust / "replay-running", tmp_path / "outside"]
    for folder in kept:
        folder.mkdir(parents=True)
    settings = Settings(data_dir=tmp_path / "data")

    with pytest.raises(UserError, match="run id"):
        replay_runs.delete_runs(settings, ["a", run_id])

    assert (asked, [folder.exists() for folder in kept]) == ([], [True, True, True])


class _GroupAdmin:
    """An admin client whose group deletions answer `answers` in turn (kafka-python's
    result names: "OK" or an error class)."""

    def __init__(self, answers: list[str], topics: list[str]) -> None:
        self.answers, self.topics = answers, topics
        self.deleted: list[str] = []
        self.topics_error: Exception | None = None

    def delete_groups(self, groups: list[str]) -> dict[str, str]:
        return {groups[0]: self.answers.pop(0)}

    def describe_groups(self, groups: list[str]) -> dict[str, Any]:
        return {groups[0]: {"error": None, "members": []}}

    def list_topics(self) -> list[str]:
        return self.topics

    def delete_topics(self, names: list[str]) -> None:
        if self.topics_error is not None:
            raise self.topics_error
        self.deleted += names

    def close(self) -> None:
        pass


def _with_admin(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, answers: list[str]
) -> tuple[Settings, Path, _GroupAdmin]:
    run, state = _run(Settings(data_dir=tmp_path))
    admin = _GroupAdmin(answers, [f"{run.kafka.topic_prefix}scans", "replay-other.scans"])
    monkeypatch.setattr(kafka_admin, "admin_client", lambda _b, **_: admin)
    return run, state, admin


def test_a_coordinator_not_ready_yet_is_waited_for_within_the_deadline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A cluster's first group has no coordinator for a moment ("not now")."""
    run, state, admin = _with_admin(monkeypatch, tmp_path, ["CoordinatorLoadInProgressError", "OK"])

    deleted = replay_runs.delete_run(run)

    assert (deleted.group, deleted.topics, deleted.state) == (True, tuple(admin.deleted), (state,))
    assert admin.deleted == [f"{run.kafka.topic_prefix}scans"]


def test_a_group_kafka_will_not_delete_leaves_the_whole_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Refused the group (an ACL), the run's topics and state stay: whether it runs is
    unknown, and a run deleted but for its group would be listed for ever."""
    run, state, admin = _with_admin(monkeypatch, tmp_path, ["GroupAuthorizationFailedError"])

    with pytest.raises(KafkaRefused) as refused:
        replay_runs.delete_run(run)

    run_id = run.engine.app_id.removeprefix("replay-")
    assert str(refused.value).startswith(
        f"run {run_id} not deleted: Kafka refused to delete consumer group replay-{run_id} "
        "(GroupAuthorizationFailedError)"
    ), refused.value
    assert (admin.deleted, state.exists()) == ([], True)


def test_topics_kafka_does_not_delete_once_the_group_is_gone_are_named_state_still_goes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The run is stopped (its group is gone): its state goes, and the line says what did."""
    run, state, admin = _with_admin(monkeypatch, tmp_path, ["OK"])
    admin.topics_error = KafkaTimeoutError("Request timed out")

    with pytest.raises(KafkaUnreachable) as failed:
        replay_runs.delete_run(run)

    run_id = run.engine.app_id.removeprefix("replay-")
    assert str(failed.value).startswith(
        f"run {run_id}: its topics not deleted (its consumer group and its state deleted): "
        f"Kafka at {run.kafka.bootstrap} did not delete the run's 1 topics"
    ), failed.value
    assert not state.exists()


@pytest.mark.parametrize("suffix", [".crm", "-order", "-__assignor"])
def test_an_id_that_only_begins_another_runs_names_deletes_nothing_of_that_run(
    settings_factory: Callable[..., Settings], suffix: str
) -> None:
    """`replay-<id>.*` and `replay-<id>-*` matched as prefixes: the id `<run>.crm` took
    `<run>`'s `replay-<run>.crm.customers`, `<run>-order` its inboxes, and as neither has
    a group the check whether `<run>` runs never came: its topics went (under its workers
    if it ran),
    reported as `deleted run <run>-order: 1 topics`. No run has such an id (a run's is ten
    hex digits); a run's topics are those `chainwatch runs list` counts as its."""
    run, state = _run(settings_factory())
    prepare_topics(run)
    app_id = run.engine.app_id
    admin = admin_client(run.kafka.bootstrap, request_timeout_s=15)
    try:
        admin.create_topics(
            [NewTopic(f"{app_id}-{name}", 1, 1) for name in ("order-inbox", "__assignor-__leader")]
        )
    finally:
        admin.close()
    _until(lambda: len(_topics_of(run)) == 9, 60, "the run's 9 topics listed")
    topics = _topics_of(run)
    # no worker joined to `<run>`'s group: the id asked for names another group (none),
    # so a member of `<run>`'s was never asked about; joining one only slowed the test
    # (beside two CPU hogs a kafka-python consumer at times took over 60 s to join: the
    # kafka-python race kafka_groups.joined_member avoids)
    (outcome,) = replay_runs.delete_runs(run, [f"{app_id.removeprefix('replay-')}{suffix}"])
    assert _topics_of(run) == topics
    assert state.exists()
    assert isinstance(outcome, replay_runs.RunDeleted), outcome
    assert not outcome.found, outcome


def _topics_of(run: Settings) -> set[str]:
    """The run's topics by either pattern (`_topics` takes the contract's only)."""
    admin = admin_client(run.kafka.bootstrap, request_timeout_s=15)
    try:
        app_id = run.engine.app_id
        return {t for t in admin.list_topics() if t.startswith((f"{app_id}.", f"{app_id}-"))}
    finally:
        admin.close()
