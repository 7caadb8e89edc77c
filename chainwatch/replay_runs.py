"""A replay's run as it stands on Kafka and on disk: its names, and its deletion.

A replay (a backtest's run per plan too) lives in three places: its topics
(`replay-<id>.*`, the contract's seven, and `replay-<id>-*`, the engine's inboxes,
changelogs and `__assignor`), its consumer group `replay-<id>` with the offsets its
workers committed, and its workers' table state `<data_dir>/worker<N>/faust/replay-<id>`.
A finished run deletes all three (`delete_stopped_run`, after it stopped its workers);
a kept or failed one is deleted by `chainwatch runs delete` (`delete_runs`).

Whether a run still runs is whether its group has members, and Kafka decides it in
the same step as the deletion: the group goes first, and the broker refuses to delete
a group with members (NON_EMPTY_GROUP). Asking first and deleting after (describe, then
delete) let a worker join in between, and its topics and state were deleted under it.
Only once the group is gone are the topics and the state deleted. What Kafka cannot
close: a worker that joins after the group is gone makes the group again (a replay
replacing stuck workers stops them before it starts the new ones: its group is empty
for that moment), and its topics are then deleted under it.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import kafka.errors
from kafka import KafkaAdminClient
from kafka.errors import GroupIdNotFoundError, KafkaError, NonEmptyGroupError

from chainwatch.errors import UsageError, UserError
from chainwatch.kafka_admin import (
    KafkaRefused,
    KafkaUnreachable,
    close_admin,
    kafka_call,
    not_now,
    settings_admin_client,
    settings_call_timeout_s,
)
from chainwatch.logs import silenced
from chainwatch.replay_run_list import RUN_PREFIX, run_id_of, run_topics
from chainwatch.settings import Settings
from sinks.backoff import Backoff


def replay_settings(settings: Settings, *, partitions: int, run_id: str) -> Settings:
    """The settings of one run: fresh topics, its own app id, event-time clock."""
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={"topic_prefix": f"{RUN_PREFIX}{run_id}.", "partitions": partitions}
            ),
            "engine": settings.engine.model_copy(
                update={
                    "app_id": f"{RUN_PREFIX}{run_id}",
                    "clock": "event",
                    "standby_replicas": 0,
                    "commit_interval_s": 0.2,
                    # a replay's worker that died is known dead after 10 s, not faust's 60
                    "session_timeout_s": 10,
                }
            ),
        }
    )


def run_settings(settings: Settings, run_id: str) -> Settings:
    """The settings that name run `run_id`'s topics, group and state (to delete it: its
    partition count does not matter there)."""
    return replay_settings(settings, partitions=1, run_id=run_id)


def run_app_id(settings: Settings) -> str:
    """The run's app id, refused unless a run could have it: the run id is taken as
    typed, and a `*` in it matched every run's state dir (a running one's too), an
    `a/../..` reached out of the data dir."""
    app_id = settings.engine.app_id
    if run_id_of(app_id) is None:
        raise UserError(
            f"run id {app_id.removeprefix(RUN_PREFIX)!r}: a run's id is letters, digits, "
            "'.', '_' or '-' (the one `chainwatch runs list` shows)"
        )
    return app_id


class RunStillRunning(UserError):
    """A run asked to be deleted still has workers in its consumer group."""


@dataclass(frozen=True)
class RunDeleted:
    """What the deletion of one run found and deleted."""

    run_id: str
    group: bool
    """Its consumer group was there (and is gone)."""
    topics: tuple[str, ...]
    state: tuple[Path, ...]
    """Its workers' table state dirs, removed."""

    @property
    def found(self) -> bool:
        return self.group or bool(self.topics) or bool(self.state)

    def describe(self) -> str:
        """One line: what was deleted."""
        parts = [f"consumer group {RUN_PREFIX}{self.run_id}"] if self.group else []
        if self.topics:
            parts.append(f"{len(self.topics)} topics")
        if self.state:
            workers = ", ".join(sorted(p.parent.parent.name for p in self.state))
            parts.append(f"worker state ({workers})")
        return f"deleted run {self.run_id}: {', '.join(parts)}"


def delete_runs(
    settings: Settings, run_ids: Iterable[str], timeout_s: float | None = None
) -> list[RunDeleted | UserError]:
    """`chainwatch runs delete`: each run's group, then its topics and state, refused
    while the run still runs (`RunStillRunning`); one outcome per run, in order.

    Every id is checked before Kafka is asked (a bad one is a `UsageError` raised, nothing
    deleted: the ids are `runs delete`'s arguments as typed). One admin connection for
    all; each Kafka call within `timeout_s` (default: the admin calls' own). Once Kafka stops
    answering, the runs left are not tried: each would wait out the deadline again."""
    runs = [run_settings(settings, run_id) for run_id in dict.fromkeys(run_ids)]
    for run in runs:
        try:
            run_app_id(run)  # refused before Kafka is asked
        except UserError as exc:  # an id as given: the command line's fault, as click's are
            raise UsageError(str(exc)) from None
    with silenced("kafka"):  # our line per run, not kafka-python's per connection
        try:
            admin = settings_admin_client(settings.kafka, timeout_s)
        except KafkaUnreachable as exc:
            return [_unknown(run, exc) for run in runs]
        try:
            outcomes: list[RunDeleted | UserError] = []
            gone: KafkaUnreachable | None = None
            for run in runs:
                if gone is not None:
                    outcomes.append(_unknown(run, gone))
                    continue
                try:
                    outcomes.append(_delete_run(admin, run, timeout_s))
                except KafkaUnreachable as exc:
                    gone = exc
                    outcomes.append(exc)
                except UserError as exc:  # refused (running, an ACL): the next run may pass
                    outcomes.append(exc)
            return outcomes
        finally:
            close_admin(admin)


def delete_run(settings: Settings, timeout_s: float | None = None) -> RunDeleted:
    """`delete_runs` of the one run `settings` names (`run_settings`), its refusal raised."""
    app_id = run_app_id(settings)
    (outcome,) = delete_runs(settings, [app_id.removeprefix(RUN_PREFIX)], timeout_s)
    if isinstance(outcome, UserError):
        raise outcome
    return outcome


def _unknown(run: Settings, exc: KafkaUnreachable) -> KafkaUnreachable:
    run_id = run.engine.app_id.removeprefix(RUN_PREFIX)
    return KafkaUnreachable(f"run {run_id} not deleted: whether it still runs is unknown, {exc}")


def _delete_run(admin: KafkaAdminClient, run: Settings, timeout_s: float | None) -> RunDeleted:
    """The group (refused while it has members: nothing deleted), then the topics and the
    state; the state goes even when the topics' deletion fails, as the run is stopped."""
    app_id = run_app_id(run)
    run_id = app_id.removeprefix(RUN_PREFIX)
    try:
        group = delete_run_group(admin, run, timeout_s)
    except KafkaUnreachable as exc:
        raise _unknown(run, exc) from None
    except KafkaRefused as exc:
        raise KafkaRefused(f"run {run_id} not deleted: {exc}") from None
    try:
        # exactly the topics `chainwatch runs list` counts as the run's: by the patterns,
        # `<run>.crm` took `<run>`'s `crm.customers` and `<run>-order` its inboxes, and as
        # neither had a group they went with `<run>` running
        topics = delete_run_topics(
            run, timeout_s, admin=admin, owned=lambda listed: run_topics(run, listed, group)
        )
    except UserError as exc:
        state = remove_worker_state(run)
        done = [what for what, was in (("its consumer group", group), ("its state", state)) if was]
        said = f" ({' and '.join(done)} deleted)" if done else ""
        kind = KafkaUnreachable if isinstance(exc, KafkaUnreachable) else UserError
        raise kind(f"run {run_id}: its topics not deleted{said}: {exc}") from None
    return RunDeleted(run_id, group, tuple(topics), tuple(remove_worker_state(run)))


def delete_stopped_run(settings: Settings, timeout_s: float | None = None) -> None:
    """A stopped run's group, topics and workers' table state; the state goes even when
    Kafka's part fails (Kafka gone: the state is on this disk). Its workers must be
    stopped (`ReplayRun.close` stopped its own). A group that still has members (of its
    workers killed without leaving it: Kafka drops them after their session timeout) is
    kept, and `RunGroupKept` says so after the topics and state went: removing those
    members by force and deleting the group at once was seen to stall the broker's group
    coordinator for over a minute (every join, and the topics' deletion, waited on it)."""
    run_app_id(settings)  # refused before anything is deleted
    try:
        delete_run_on_kafka(settings, timeout_s)
    finally:
        remove_worker_state(settings)


class RunGroupKept(UserError):
    """A finished run's topics and state were deleted, its consumer group not: it still
    had members of workers killed without leaving it."""


def delete_run_on_kafka(settings: Settings, timeout_s: float | None = None) -> None:
    """A stopped run's consumer group (unless members of killed workers are still in
    it: `RunGroupKept`, raised after the topics went) and its topics, each Kafka call
    within `timeout_s` (default: the admin calls' own)."""
    admin = settings_admin_client(settings.kafka, timeout_s)
    try:
        try:
            delete_run_group(admin, settings, timeout_s)
        except RunStillRunning as exc:
            delete_run_topics(settings, timeout_s, admin=admin)
            run_id = settings.engine.app_id.removeprefix(RUN_PREFIX)
            raise RunGroupKept(
                f"run {run_id}: its topics were deleted, its consumer group "
                f"{settings.engine.app_id} not: it still has members of workers killed "
                f"without leaving it ({exc}); Kafka drops them after "
                f"{settings.engine.session_timeout_s:g} s, then `chainwatch runs delete "
                f"{run_id}` deletes the group"
            ) from None
        delete_run_topics(settings, timeout_s, admin=admin)
    finally:
        close_admin(admin)


def delete_run_group(
    admin: KafkaAdminClient, run: Settings, timeout_s: float | None = None
) -> bool:
    """Delete the run's consumer group (its committed offsets with it); False when there
    was none. A group with members is `RunStillRunning` (the broker's own refusal,
    NON_EMPTY_GROUP, so no check-then-act). "Not now" (a coordinator loading) is tried
    again within the call's deadline."""
    limit = settings_call_timeout_s(run.kafka, timeout_s)
    app_id = run.engine.app_id
    return kafka_call(
        lambda: _deleted_group(admin, run, until=time.monotonic() + limit * 0.75),
        bootstrap=run.kafka.bootstrap,
        what=f"delete consumer group {app_id}",
        timeout_s=limit,
    )


def _deleted_group(admin: KafkaAdminClient, run: Settings, *, until: float) -> bool:
    """`delete_run_group`'s requests (blocking, on `kafka_call`'s thread)."""
    group = run.engine.app_id
    pause = Backoff(initial_s=0.1, max_s=1.0)
    while True:
        try:
            said = str(admin.delete_groups([group]).get(group, "OK"))
            if said == "OK":
                return True
            error = getattr(kafka.errors, said, None)
            if error is GroupIdNotFoundError:
                return False
            if error is not NonEmptyGroupError:
                kind = error if isinstance(error, type) and issubclass(error, KafkaError) else None
                raise (kind or KafkaError)(f"{said}: deleting consumer group {group}")
            raise _still_running(admin, run)
        except KafkaError as exc:  # "not now" (no coordinator yet, one loading): again
            delay = pause.next()
            if not not_now(exc) or time.monotonic() + delay > until:
                raise
            time.sleep(delay)


def _still_running(admin: KafkaAdminClient, run: Settings) -> RunStillRunning:
    """The refusal, with the group's member count when Kafka gives it."""
    app_id = run.engine.app_id
    members = "active members"
    with contextlib.suppress(KafkaError, OSError):  # the refusal stands without the count
        described = admin.describe_groups([app_id]).get(app_id) or {}
        members = f"{len(described.get('members') or [])} active member(s)"
    return RunStillRunning(
        f"run {app_id.removeprefix(RUN_PREFIX)} is still running: its consumer group "
        f"{app_id} has {members}; nothing deleted. Stop its replay first (the workers of a "
        f"replay that was killed stop by themselves within {run.engine.stop_timeout_s:g} s; a "
        f"worker killed without leaving the group is dropped from it after "
        f"{run.engine.session_timeout_s:g} s)"
    )


def delete_run_topics(
    settings: Settings,
    timeout_s: float | None = None,
    *,
    admin: KafkaAdminClient | None = None,
    owned: Callable[[list[str]], list[str]] | None = None,
) -> list[str]:
    """Delete the run's topics (`<prefix>*` and `<app_id>-*`, or those of the broker's
    that `owned` picks) and return their names, each Kafka call (connecting unless given
    `admin`, listing, deleting) within `timeout_s` (default: the admin calls' own)."""
    bootstrap = settings.kafka.bootstrap
    own = admin is None
    client = settings_admin_client(settings.kafka, timeout_s) if admin is None else admin
    call_s = settings_call_timeout_s(settings.kafka, timeout_s)
    try:
        prefix, app_id = settings.kafka.topic_prefix, settings.engine.app_id
        listed = kafka_call(
            client.list_topics, bootstrap=bootstrap, what="list its topics", timeout_s=call_s
        )
        doomed = sorted(
            owned(listed)
            if owned is not None
            else (t for t in listed if t.startswith((prefix, f"{app_id}-")))
        )
        if doomed:
            kafka_call(
                lambda: client.delete_topics(doomed),
                bootstrap=bootstrap,
                what=f"delete the run's {len(doomed)} topics",
                timeout_s=call_s,
            )
        return doomed
    finally:
        if own:
            close_admin(client)


def worker_state_dirs(settings: Settings, app_id: str) -> list[Path]:
    """The table state of app `app_id` in the replay workers' data dirs
    (`<data_dir>/worker<N>/faust/<app_id>`) that is there (reading only)."""
    faust_dirs = settings.data_path.glob("worker*/faust")
    return sorted(state for state in (f / app_id for f in faust_dirs) if state.is_dir())


def remove_worker_state(settings: Settings) -> list[Path]:
    """The run's table state in its workers' data dirs, and those dirs once empty: gone
    with the run's topics, it was left behind per run. Returns the state dirs removed."""
    app_id = run_app_id(settings)  # a name, not a pattern: joined, never globbed
    removed = worker_state_dirs(settings, app_id)
    for state in removed:
        shutil.rmtree(state, ignore_errors=True)
        for parent in (state.parent, state.parent.parent):
            with contextlib.suppress(OSError):  # not empty: another run's, or a user's
                parent.rmdir()
    return removed
