"""`chainwatch replay --sink`: a replay's results in ClickHouse under its run id.

The tables are migration 0007's (`replay_runs`, `replay_alerts`,
`replay_order_state`, `replay_dead_letters`) and follow the backtest tables'
pattern (`chainwatch.backtest.store`): the result rows first, the run row
last. Each storing is a fresh `attempt`; the `*_current` views show only the
attempt named by the latest run row of a run id. So, as seen by queries:

* a run is all there or not there (a storing stopped half-way is invisible);
* storing the same run id again replaces that run's results, never doubles them.

The rows are the sink's own rows of the same records (`AlertRows`'s columns via
`backtest.store.alert_row`, `OrderStateRows`, `DeadLetterRows`) without the Kafka
coordinates, which mean nothing once the run's topics are deleted.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from aiokafka import ConsumerRecord

from chainwatch.backtest.run import count_records, file_sha256
from chainwatch.backtest.store import ALERT_COLUMNS as RUN_ALERT_COLUMNS
from chainwatch.backtest.store import Store, alert_row
from chainwatch.errors import UsageError
from chainwatch.replay import Progress, ReplayResult, ReplayRun, read_records
from schemas.alerts import Alert
from schemas.plan import load_plan
from sinks.clickhouse.mapping import KAFKA_COLUMNS, RecordInvalid, Row
from sinks.clickhouse.rows_outputs import DeadLetterRows, OrderStateRows
from streams.topics import DEAD_LETTER, ORDER_STATE

RUNS_TABLE = "replay_runs"
ALERTS_TABLE = "replay_alerts"
ORDER_STATE_TABLE = "replay_order_state"
DEAD_LETTERS_TABLE = "replay_dead_letters"

_COORDINATES = len(KAFKA_COLUMNS)
ORDER_STATE_COLUMNS = ("run_id", "attempt", *OrderStateRows.order_state.columns[:-_COORDINATES])
DEAD_LETTER_COLUMNS = ("run_id", "attempt", *DeadLetterRows.table.columns[:-_COORDINATES])
ALERT_COLUMNS = ("run_id", "attempt", *RUN_ALERT_COLUMNS[1:])

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


def check_run_id(run_id: str) -> str:
    """A run id a user may give: letters, digits, `.`, `_`, `:`, `-`; at most 64."""
    if not _RUN_ID.match(run_id):
        raise UsageError(
            f"--run-id {run_id!r}: use 1-64 letters, digits, '.', '_', ':' or '-' "
            "(starting with a letter or digit)"
        )
    return run_id


@dataclass(frozen=True)
class StoredRun:
    """One row of `replay_runs`: one storing (`attempt`) of a replay's results."""

    run_id: str
    attempt: str
    input_file: str
    input_sha256: str
    plan_name: str
    plan_sha256: str
    until: datetime | None
    partitions: int
    workers: int
    input_records: int
    published: int
    dead_letters: int
    alerts: int
    orders: int
    started_at: datetime
    finished_at: datetime
    stored_at: datetime


RUN_COLUMNS = tuple(f.name for f in fields(StoredRun))


@dataclass(frozen=True)
class Outputs:
    """The rows of a run's output topics, ready to store (without run id and attempt)."""

    order_state: list[Row]
    dead_letters: list[Row]
    invalid: int
    """Records that broke the contract (an engine bug): skipped and counted."""


def output_rows(
    order_records: Sequence[ConsumerRecord[bytes, bytes]],
    letter_records: Sequence[ConsumerRecord[bytes, bytes]],
    order_mapper: OrderStateRows,
) -> Outputs:
    """The last snapshot of each order (highest version, then offset) and each dead letter once.

    Records come in partition order; the snapshots of one order share a
    partition (keyed by order id), so a later record of the same version wins.
    A dead letter re-published after a crash has the same deterministic id.
    """
    invalid = 0
    latest: dict[str, Row] = {}
    version_at = ORDER_STATE_COLUMNS.index("version") - 2
    for record in order_records:
        try:
            row = order_mapper.rows(record)["order_state"][0][:-_COORDINATES]
        except RecordInvalid:
            invalid += 1
            continue
        seen = latest.get(row[0])
        if seen is None or row[version_at] >= seen[version_at]:
            latest[row[0]] = row
    letters: dict[str, Row] = {}
    letter_mapper = DeadLetterRows()
    for record in letter_records:
        try:
            row = letter_mapper.rows(record)["dead_letters"][0][:-_COORDINATES]
        except RecordInvalid:
            invalid += 1
            continue
        letters.setdefault(row[0], row)
    return Outputs(
        [latest[k] for k in sorted(latest)], [letters[k] for k in sorted(letters)], invalid
    )


def store_replay(
    store: Store,
    run: StoredRun,
    alerts: Sequence[Alert],
    outputs: Outputs,
) -> None:
    """The run's rows under its attempt, then its run row (which makes them visible)."""
    ids = (run.run_id, run.attempt)
    batches: list[tuple[str, tuple[str, ...], list[Row]]] = [
        (ALERTS_TABLE, ALERT_COLUMNS, [(*ids, *alert_row(run.run_id, a)[1:]) for a in alerts]),
        (ORDER_STATE_TABLE, ORDER_STATE_COLUMNS, [(*ids, *r) for r in outputs.order_state]),
        (DEAD_LETTERS_TABLE, DEAD_LETTER_COLUMNS, [(*ids, *r) for r in outputs.dead_letters]),
    ]
    for table, columns, rows in batches:
        if rows:
            store.insert(table, rows, column_names=list(columns))
    store.insert(RUNS_TABLE, [astuple(run)], column_names=list(RUN_COLUMNS))


def stored_counts(store: Store, run_id: str) -> dict[str, int]:
    """Rows of a run as the views show them (alerts, orders, dead letters; runs is 0 or 1)."""
    where = "WHERE run_id = {run:String}"
    counts = store.query(
        f"SELECT (SELECT count() FROM replay_runs_current {where}), "  # noqa: S608 - constants
        f"(SELECT count() FROM replay_alerts_current {where}), "
        f"(SELECT count() FROM replay_order_state_current {where}), "
        f"(SELECT count() FROM replay_dead_letters_current {where})",
        parameters={"run": run_id},
    ).result_rows[0]
    return dict(zip(("runs", "alerts", "orders", "dead_letters"), map(int, counts), strict=True))


def _now() -> datetime:
    return datetime.now(UTC)


def _ms(value: datetime) -> datetime:
    """To the millisecond, as `DateTime64(3)` stores it."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _plan_identity(plan: Path | None) -> tuple[str, str]:
    """(name, sha256) of the plan the engine ran: its file, or the shipped default."""
    if plan is None:
        raw = resources.files("schemas").joinpath("plans", "knitwear.yaml").read_bytes()
        return "knitwear (shipped)", hashlib.sha256(raw).hexdigest()
    return Path(plan).name, file_sha256(Path(plan))


class ReplaySink:
    """The `on_results` of `run_replay` that stores the run (`chainwatch replay --sink`).

    `run_id` names the stored run (default: the run's own id, which also names
    its topics); giving the same one again replaces that run's stored results.
    """

    def __init__(
        self,
        store: Store,
        *,
        scenario: Path,
        until: datetime | None,
        workers: int,
        partitions: int,
        progress: Progress,
        run_id: str | None = None,
    ) -> None:
        self.store = store
        self.scenario = scenario
        self.until = until
        self.workers = workers
        self.partitions = partitions
        self.progress = progress
        self.run_id = run_id
        self.started_at = _ms(_now())
        self.stored: StoredRun | None = None
        self.seconds = 0.0
        """How long reading the output topics and storing took."""

    def __call__(self, run: ReplayRun, result: ReplayResult) -> None:
        began = time.monotonic()
        settings = run.settings
        order_records = asyncio.run(read_records(settings, ORDER_STATE))
        letter_records = asyncio.run(read_records(settings, DEAD_LETTER))
        outputs = output_rows(
            order_records, letter_records, OrderStateRows(load_plan(settings.engine.plan))
        )
        if outputs.invalid:
            self.progress(f"{outputs.invalid} output records broke the contract (not stored)")
        alerts = [Alert.model_validate(a) for a in result.alerts]
        plan_name, plan_sha256 = _plan_identity(settings.engine.plan)
        stored = StoredRun(
            run_id=self.run_id or run.run_id,
            attempt=uuid.uuid4().hex,
            input_file=self.scenario.name,
            input_sha256=file_sha256(self.scenario, run.size),
            plan_name=plan_name,
            plan_sha256=plan_sha256,
            until=self.until,
            partitions=self.partitions,
            workers=self.workers,
            input_records=count_records(self.scenario, run.size),
            published=result.published,
            dead_letters=len(outputs.dead_letters),
            alerts=len(alerts),
            orders=len(outputs.order_state),
            started_at=self.started_at,
            finished_at=_ms(_now()),
            stored_at=_now(),
        )
        self.progress(f"storing run {stored.run_id} in ClickHouse")
        store_replay(self.store, stored, alerts, outputs)
        self.stored = stored
        self.seconds = time.monotonic() - began
