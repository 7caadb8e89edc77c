"""`chainwatch backtest`: the same history replayed once per SLA plan, every run stored.

Each plan gets its own `chainwatch replay` run (fresh topics, event-time
clock, `chainwatch.replay.run_replay`) with that plan as the engine's plan;
its final alerts go to `backtest_alerts`, then its row to `backtest_runs`.
The comparison is computed from what was stored (`compare.compare`), so the
printed figures are exactly the stored runs' figures.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from chainwatch.backtest.compare import Comparison, compare
from chainwatch.backtest.store import RunRecord, Store, load_alerts, store_run
from chainwatch.errors import UsageError, UserError
from chainwatch.replay import Progress, run_replay, scenario_lines, scenario_size
from chainwatch.settings import Settings
from schemas.alerts import Alert
from schemas.files import not_a_file, read_config_bytes
from schemas.plan import PlanError, SlaPlan, parse_plan


@dataclass(frozen=True)
class PlanFile:
    """A validated plan file; `name` is the file name without `.yaml`."""

    name: str
    path: Path
    plan: SlaPlan
    text: str
    sha256: str


def load_plan_files(paths: Sequence[Path]) -> list[PlanFile]:
    """Read and validate every plan before anything runs; raises `PlanError` for a plan
    file, `UsageError` for the `--plan` options themselves."""
    if not paths:
        raise UsageError("give at least one --plan FILE")
    plans: list[PlanFile] = []
    for path in paths:
        try:
            raw = read_config_bytes(path)
        except OSError as exc:
            raise PlanError(f"cannot read plan {path}: {exc.strerror or exc}") from None
        plan, text = parse_plan(raw, str(path))
        name = path.name.removesuffix(".yaml").removesuffix(".yml")
        if any(p.name == name for p in plans):
            raise UsageError(
                f"--plan: two plans are named {name!r}: the comparison names plans by file "
                "name, so give the files different names"
            )
        plans.append(PlanFile(name, path, plan, text, hashlib.sha256(raw).hexdigest()))
    return plans


def file_sha256(path: Path, size: int | None = None) -> str:
    """SHA-256 of the file, or of its first `size` bytes (what a run read of it)."""
    digest, left = hashlib.sha256(), size
    with path.open("rb") as handle:
        while left is None or left > 0:
            block = handle.read(1 << 20 if left is None else min(1 << 20, left))
            if not block:
                break
            digest.update(block)
            if left is not None:
                left -= len(block)
    return digest.hexdigest()


def count_records(path: Path, size: int | None = None) -> int:
    """Non-blank lines, as `chainwatch replay` counts the scenario's records (and as
    bounded: a line of gigabytes is not held to be counted); of its first `size` bytes."""
    return sum(1 for _ in scenario_lines(path, size))


def _now() -> datetime:
    """UTC now to the millisecond, as `DateTime64(3)` stores it."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class _Labelled:
    """A `Progress` that prefixes every message with the plan's name."""

    def __init__(self, progress: Progress, label: str) -> None:
        self._progress = progress
        self._label = label

    def __call__(
        self, message: str, /, *, done: int | None = None, total: int | None = None
    ) -> None:
        self._progress(f"{self._label}: {message}", done=done, total=total)


@dataclass(frozen=True)
class BacktestResult:
    backtest_id: str
    runs: list[RunRecord]
    comparison: Comparison


def run_backtest(
    settings: Settings,
    history: Path,
    plans: Sequence[PlanFile],
    store: Store,
    *,
    until: datetime | None,
    name: str | None,
    progress: Progress,
    workers: int = 1,
    partitions: int = 4,
    timeout_s: float = 1800,
) -> BacktestResult:
    """Replay `history` once per plan, store each run, compare the stored runs."""
    why = not_a_file(history)
    if why is not None:
        raise UserError(f"history {history}: {why}")
    backtest_id = uuid.uuid4().hex
    # Every plan's run reads the same bytes: the history as it is now. A file still
    # being written to gave each later plan more records, and the comparison put down
    # to the plans what the writer added, under one input_sha256.
    size = scenario_size(history)
    input_sha256 = file_sha256(history, size)
    input_records = count_records(history, size)
    runs: list[RunRecord] = []
    for index, plan in enumerate(plans):
        run_settings = settings.model_copy(
            update={"engine": settings.engine.model_copy(update={"plan": plan.path.resolve()})}
        )
        started = _now()
        result = run_replay(
            run_settings,
            history,
            until=until,
            workers=workers,
            partitions=partitions,
            progress=_Labelled(progress, plan.name),
            timeout_s=timeout_s,
            size=size,
        )
        if file_sha256(history, size) != input_sha256:
            raise UserError(
                f"history {history} changed while the backtest read it (its first {size:,} "
                f"bytes are no longer those it began with): plan {plan.name!r}'s run is not "
                "stored, as its alerts could not be compared; run the backtest on a copy of the "
                "file that nothing writes to"
            )
        alerts = [Alert.model_validate(a) for a in result.alerts]
        run = RunRecord(
            run_id=uuid.uuid4().hex,
            backtest_id=backtest_id,
            name=name or history.name,
            plan_index=index,
            plan_name=plan.name,
            plan_sha256=plan.sha256,
            plan_yaml=plan.text,
            input_file=history.name,
            input_sha256=input_sha256,
            until=until,
            input_records=input_records,
            published=result.published,
            dead_letters=result.dead_letters,
            alerts=len(alerts),
            started_at=started,
            finished_at=_now(),
        )
        store_run(store, run, alerts)
        progress(f"{plan.name}: stored run {run.run_id} ({len(alerts)} alerts)")
        runs.append(run)
    route = plans[0].plan.route if plans else ()
    comparison = compare([(r.plan_name, load_alerts(store, r.run_id)) for r in runs], route)
    return BacktestResult(backtest_id, runs, comparison)
