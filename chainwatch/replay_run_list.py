"""`chainwatch runs list`: the replay runs on Kafka and on this disk, by reading only.

A run is named by its topics (`replay-<id>.*`, `replay-<id>-*`), its consumer group
(`replay-<id>`) and its workers' state dirs (`<data_dir>/worker<N>/faust/replay-<id>`):
`chainwatch.replay_runs`. Listing them creates nothing. The topics come from a Metadata
request for every topic, which creates none (kafka-python's admin client asks with
`allow_auto_topic_creation=False`); the groups from ListGroups, which each broker answers
from what it coordinates. Describing a group first asks for its coordinator, and on a
cluster where no group ever was that made the broker create `__consumer_offsets`: only
the groups ListGroups named are described, for their members. The disk is globbed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from kafka import KafkaAdminClient
from kafka.errors import GroupIdNotFoundError, KafkaError, for_code

from chainwatch.errors import UserError
from chainwatch.kafka_admin import (
    KafkaUnreachable,
    close_admin,
    kafka_call,
    settings_admin_client,
    settings_call_timeout_s,
)
from chainwatch.logs import silenced
from chainwatch.settings import Settings
from schemas.topics import INPUT_TOPICS, OUTPUT_TOPICS

RUN_PREFIX: Final = "replay-"
"""What a run's app id (its group, its state dir, its topics' names) starts with."""

RUN_ID = re.compile(r"[A-Za-z0-9._-]+")
"""A run's id: in the characters of a Kafka topic name, so one plain name."""

_CONTRACT_SUFFIXES = tuple(f".{name}" for name in (*INPUT_TOPICS, *OUTPUT_TOPICS))


@dataclass(frozen=True)
class RunFound:
    """One run as found; None where Kafka did not say."""

    run_id: str
    topics: int | None
    members: int | None
    """Members of its consumer group now (0: an empty group, or none)."""
    group: bool | None
    """Whether its consumer group (and the offsets it committed) is there."""
    state: tuple[Path, ...]
    """Its workers' table state dirs on this disk."""

    @property
    def status(self) -> str:
        """running (its group has members), stopped, or unknown (Kafka did not say)."""
        if self.members is None:
            return "unknown"
        return "running" if self.members else "stopped"

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "topics": self.topics,
            "status": self.status,
            "members": self.members,
            "consumer_group": self.group,
            "worker_state": [str(p) for p in self.state],
        }


@dataclass(frozen=True)
class RunListing:
    runs: list[RunFound]
    kafka_error: UserError | None
    """Why Kafka's part is missing, or None."""


def list_runs(settings: Settings, timeout_s: float | None = None) -> RunListing:
    """Every run on Kafka or on this disk, by run id; each Kafka call (connecting, the
    topics, the groups, their members) within `timeout_s` (default: the admin calls' own,
    `kafka.request_timeout_s` and a margin).
    When Kafka does not answer or refuses, the runs on disk are still listed, their
    Kafka part unknown, and `kafka_error` says why."""
    on_disk = runs_on_disk(settings.data_path)
    topics: list[str] | None = None
    groups: dict[str, int] | None = None
    error: UserError | None = None
    kafka = settings.kafka
    call_s = settings_call_timeout_s(kafka, timeout_s)
    with silenced("kafka"):  # one line of ours, not kafka-python's per connection
        try:
            admin = settings_admin_client(kafka, timeout_s)
        except KafkaUnreachable as exc:
            error = exc
        else:
            try:
                topics, groups, error = _kafka_part(admin, kafka.bootstrap, call_s)
            finally:
                close_admin(admin)
    known = {*on_disk, *(groups or {})}
    known.update(r for r in map(_contract_topic_run, topics or []) if r is not None)
    by_topic: dict[str, int] = {}
    for topic in topics or []:
        run_id = run_of_topic(topic, known)
        if run_id is not None:
            by_topic[run_id] = by_topic.get(run_id, 0) + 1
    runs = [
        RunFound(
            run_id,
            topics=None if topics is None else by_topic.get(run_id, 0),
            members=None if groups is None else groups.get(run_id, 0),
            group=None if groups is None else run_id in groups,
            state=on_disk.get(run_id, ()),
        )
        for run_id in sorted({*known, *by_topic})
    ]
    return RunListing(runs, error)


def _kafka_part(
    admin: KafkaAdminClient, bootstrap: str, timeout_s: float
) -> tuple[list[str] | None, dict[str, int] | None, UserError | None]:
    """The broker's topic names and the runs' groups (run id -> members); what Kafka did
    not give is None, with the first error. Once it does not answer, nothing more is
    asked (each call would wait out its deadline)."""
    topics: list[str] | None = None
    first: UserError | None = None
    try:
        topics = kafka_call(
            admin.list_topics, bootstrap=bootstrap, what="list its topics", timeout_s=timeout_s
        )
    except KafkaUnreachable as exc:
        return None, None, exc
    except UserError as exc:  # refused: the groups may still be listed
        first = exc
    try:
        groups = _run_groups(admin, bootstrap, timeout_s)
    except UserError as exc:
        return topics, None, first or exc
    return topics, groups, first


def _run_groups(admin: KafkaAdminClient, bootstrap: str, timeout_s: float) -> dict[str, int]:
    """Run id -> members now, of every run group the brokers list."""
    listed = kafka_call(
        admin.list_groups, bootstrap=bootstrap, what="list its consumer groups", timeout_s=timeout_s
    )
    names = sorted(
        {str(g.get("group_id")) for g in listed if run_id_of(str(g.get("group_id"))) is not None}
    )
    if not names:  # nothing to describe: no coordinator asked for
        return {}
    described: dict[str, Any] = kafka_call(
        lambda: _described(admin, names),
        bootstrap=bootstrap,
        what=f"describe {len(names)} consumer groups",
        timeout_s=timeout_s,
    )
    found: dict[str, int] = {}
    for name in names:
        info = described.get(name) or {}
        if info.get("error") is None:  # "no such group": deleted since it was listed
            found[name.removeprefix(RUN_PREFIX)] = len(info.get("members") or [])
    return found


_ERROR_CODE = re.compile(r"^\[Error (-?\d+)\]")
"""How kafka-python starts the error it puts in a group's description (not raised)."""


def _described(admin: KafkaAdminClient, names: list[str]) -> dict[str, Any]:
    """The groups' descriptions (blocking); a group's error raised unless it is "no such
    group": any error was taken for that, and a run whose group Kafka did not describe
    (its coordinator moved, an ACL) was listed as stopped, its group gone."""
    described: dict[str, Any] = admin.describe_groups(names)
    for name in names:
        error = (described.get(name) or {}).get("error")
        if error is None:
            continue
        code = _ERROR_CODE.match(str(error))
        kind = for_code(int(code[1])) if code else KafkaError
        if kind is not GroupIdNotFoundError:
            raise kind(f"{str(error).strip()} (consumer group {name})")
    return described


def run_id_of(app_id: str) -> str | None:
    """The run id of a run's app id (a group's or state dir's name), or None when no run
    could have it (`replay_runs.run_app_id` refuses those)."""
    run_id = app_id.removeprefix(RUN_PREFIX)
    return run_id if app_id.startswith(RUN_PREFIX) and RUN_ID.fullmatch(run_id) else None


def runs_on_disk(data_path: Path) -> dict[str, tuple[Path, ...]]:
    """Run id -> its workers' state dirs under `data_path` (globbed, nothing made)."""
    found: dict[str, list[Path]] = {}
    for state in sorted(data_path.glob(f"worker*/faust/{RUN_PREFIX}*")):
        run_id = run_id_of(state.name)
        if run_id is not None and state.is_dir():
            found.setdefault(run_id, []).append(state)
    return {run_id: tuple(dirs) for run_id, dirs in found.items()}


def run_of_topic(topic: str, known: Iterable[str] = ()) -> str | None:
    """The run a topic is of, or None: `replay-<id>.<a contract topic>`, or
    `replay-<id>-<an engine topic>` of the longest `known` run id it begins with, else of
    the id before its first `-` (a run's own ids have none: ten hex digits)."""
    if not topic.startswith(RUN_PREFIX):
        return None
    run_id = _contract_topic_run(topic)
    if run_id is not None:
        return run_id
    rest = topic.removeprefix(RUN_PREFIX)
    owners = [run_id for run_id in known if rest.startswith(f"{run_id}-")]
    if owners:
        return max(owners, key=len)
    run_id, dash, _ = rest.partition("-")
    return run_id if dash and RUN_ID.fullmatch(run_id) else None


def run_topics(run: Settings, topics: Iterable[str], has_group: bool) -> list[str]:
    """Of the broker's `topics`, run `run`'s as `run_of_topic` tells them (what deleting it
    deletes): the runs known are those of the contract topics and the state dirs, and
    `run` itself when its group was there. An id that only begins another run's names
    (`<run>-order`, `<run>.crm`: a replay's own id has neither) owns none of its topics."""
    topics = list(topics)
    run_id = run.engine.app_id.removeprefix(RUN_PREFIX)
    known = {*runs_on_disk(run.data_path), *filter(None, map(_contract_topic_run, topics))}
    if has_group:
        known.add(run_id)
    return [topic for topic in topics if run_of_topic(topic, known) == run_id]


def _contract_topic_run(topic: str) -> str | None:
    """The run of `replay-<id>.<a contract topic>`, or None."""
    if not topic.startswith(RUN_PREFIX):
        return None
    rest = topic.removeprefix(RUN_PREFIX)
    for suffix in _CONTRACT_SUFFIXES:
        if rest.endswith(suffix):
            run_id = rest.removesuffix(suffix)
            return run_id if RUN_ID.fullmatch(run_id) else None
    return None
