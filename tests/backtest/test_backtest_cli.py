"""`chainwatch backtest` as a user runs it, up to the point where it would need Kafka.

A plan that fails validation is a one-line error before anything runs: the
broker address points at a port nothing listens on, so an error that mentions
the plan proves no step that talks to Kafka or the store came first.
"""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from child_env import environ_without_settings
from cli_in_process import Answer, cli_in_process
from rich.console import Console

from chainwatch.backtest import run as backtest_run
from chainwatch.backtest.compare import AlertFacts, compare
from chainwatch.backtest.run import load_plan_files, run_backtest
from chainwatch.backtest.store import RunRecord
from chainwatch.commands.backtest import SHOWN_DIFFERENCES, duration, print_comparison
from chainwatch.errors import UsageError, UserError
from chainwatch.replay import ReplayResult, scenario_lines
from chainwatch.settings import Settings
from schemas.plan import PlanError, load_plan

ROOT = Path(__file__).resolve().parents[2]
HISTORY = ROOT / "examples" / "example_2_late_handoff_qc.ndjson"
GOOD_PLAN = (ROOT / "schemas" / "plans" / "knitwear.yaml").read_text(encoding="utf-8")


def run_backtest_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = environ_without_settings()
    env |= {
        "CHAINWATCH_DATA_DIR": str(tmp_path / "data"),
        "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
    }
    return subprocess.run(
        [sys.executable, "-m", "chainwatch", "backtest", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


def backtest_in_process(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> Answer:
    """`run_backtest_cli` through the CLI's `main` in this process (`tests/cli_in_process.py`):
    for the refusals that come before anything runs, settings included."""
    env = {
        "CHAINWATCH_DATA_DIR": str(tmp_path / "data"),
        "CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
    }
    return cli_in_process(["backtest", *args], env, monkeypatch, capsys, settings_built=False)


def test_a_plan_failing_validation_is_one_line_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "handoff: 12h" in GOOD_PLAN
    good = tmp_path / "current.yaml"
    good.write_text(GOOD_PLAN, encoding="utf-8")
    bad = tmp_path / "proposed.yaml"
    bad.write_text(GOOD_PLAN.replace("handoff: 12h", "handoff: 12"), encoding="utf-8")
    argv = [str(HISTORY), "--plan", str(good), "--plan", str(bad)]
    result = backtest_in_process(tmp_path, monkeypatch, capsys, *argv)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: SLA plan {bad}: plan key 'handoff'"), lines[0]
    assert result.stdout == ""
    assert not (tmp_path / "data" / "clickhouse").exists()


@pytest.mark.slow
def test_a_store_held_by_a_sink_is_one_line_before_anything_runs(tmp_path: Path) -> None:
    """The embedded store is one process's: the backtest says so and how to go on."""
    plan = tmp_path / "current.yaml"
    plan.write_text(GOOD_PLAN, encoding="utf-8")
    store = tmp_path / "data" / "clickhouse"
    store.mkdir(parents=True)
    with (store / "status").open("wb") as status:
        fcntl.flock(status, fcntl.LOCK_EX)  # what a running chDB holds
        result = run_backtest_cli(tmp_path, str(HISTORY), "--plan", str(plan))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "is held by another process; a backtest writes its runs there" in lines[0]
    assert "CHAINWATCH_CLICKHOUSE__URL" in lines[0]


def test_a_plan_that_is_not_yaml_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "proposed.yaml"
    bad.write_text("route: [yarn_sourcing\n", encoding="utf-8")
    with pytest.raises(PlanError, match=r"^SLA plan .*proposed.yaml is not valid YAML") as caught:
        load_plan_files([bad])
    assert "\n" not in str(caught.value)


def test_a_plan_that_is_not_utf8_is_refused_as_the_engine_refuses_it(tmp_path: Path) -> None:
    """The replay and the worker refuse it (`load_plan`): a backtest must not run a plan
    with replacement characters in it that no worker would ever run."""
    bad = tmp_path / "proposed.yaml"
    bad.write_bytes(GOOD_PLAN.encode() + b'contingency: {dyeing: "caf\xe9"}\n')
    with pytest.raises(PlanError, match=r"is not UTF-8 text \(byte \d+\)$"):
        load_plan_files([bad])
    with pytest.raises(PlanError, match="is not UTF-8 text"):
        load_plan(bad)


def test_two_plans_with_the_same_name_are_refused(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "plan.yaml").write_text(GOOD_PLAN, encoding="utf-8")
    with pytest.raises(UsageError, match=r"^--plan: two plans are named 'plan'"):
        load_plan_files([tmp_path / "a" / "plan.yaml", tmp_path / "b" / "plan.yaml"])


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--plan", "a/plan.yaml", "--plan", "b/plan.yaml"], "--plan: two plans are named 'plan'"),
        (
            ["--plan", "a/plan.yaml", "--until", "2027-03-12"],
            "--until '2027-03-12': timestamp must",
        ),
    ],
)
def test_bad_options_are_a_usage_error_before_anything_runs(
    tmp_path: Path,
    options: list[str],
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The command line's fault, so exit 2 and where help is, as click's own (it was 1)."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "plan.yaml").write_text(GOOD_PLAN, encoding="utf-8")
    paths = [str(tmp_path / o) if o.endswith(".yaml") else o for o in options]
    result = backtest_in_process(tmp_path, monkeypatch, capsys, str(HISTORY), *paths)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {said}"), lines[0]
    assert lines[0].endswith("(see `chainwatch backtest --help`)"), lines[0]
    assert not (tmp_path / "data" / "clickhouse").exists()


def test_plan_files_keep_their_bytes_hash_and_name(tmp_path: Path) -> None:
    path = tmp_path / "proposed.yaml"
    path.write_text(GOOD_PLAN, encoding="utf-8")
    (loaded,) = load_plan_files([path])
    assert loaded.name == "proposed"
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.plan.handoff == timedelta(hours=12)


def _facts(type: str, order: str, lateness_s: float | None = None) -> AlertFacts:
    at = datetime(2027, 3, 5, tzinfo=UTC)
    return AlertFacts(
        f"{type}-{order}",
        type,
        "critical",
        "resolved" if lateness_s is not None else "open",
        order,
        "dyeing" if type == "stage_overdue" else None,
        at,
        at,
        lateness_s,
    )


def test_the_comparison_prints_one_column_per_plan_and_the_first_differences() -> None:
    many = [_facts("stage_overdue", f"PO-{n:02d}", 3600.0 * n) for n in range(1, 26)]
    comparison = compare([("current", []), ("proposed[v2]", many)])
    console = Console(record=True, width=200)
    print_comparison(console, comparison)
    text = console.export_text()
    assert "current" in text
    assert "proposed[v2]" in text  # a file name, not markup
    assert "stage_overdue (critical)" in text
    assert f"Orders whose outcome differs: 25 (first {SHOWN_DIFFERENCES} shown)" in text
    assert "PO-20" in text
    assert "PO-21" not in text
    # dyeing: 25 late visits, median index 12 -> 13h, p95 index 23 -> 24h = 1d 00h
    assert "25: 13h 00m / 1d 00h" in text


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "-"), (12, "12s"), (-2700, "-45m"), (19800, "5h 30m"), (187200, "2d 04h")],
)
def test_durations_read_like_a_schedule(seconds: float | None, shown: str) -> None:
    assert duration(seconds) == shown


def test_every_plan_replays_the_history_as_it_was_when_the_backtest_began(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A history still being written to (an export, a log): each plan's run read what was
    added by then, and the comparison put down to the plans what the writer added, under
    the one input_sha256 and input_records stored with every run. Each run now reads the
    bytes the backtest began with; a history rewritten under it stops it, unstored."""
    history = tmp_path / "history.ndjson"
    history.write_bytes(HISTORY.read_bytes())
    began = history.read_bytes()
    plans = []
    for name in ("current", "proposed"):
        (tmp_path / f"{name}.yaml").write_text(GOOD_PLAN, encoding="utf-8")
        plans.append(tmp_path / f"{name}.yaml")
    read: list[int] = []
    stored: list[RunRecord] = []

    def replaying(_settings: Settings, path: Path, **options: Any) -> ReplayResult:
        read.append(sum(1 for _ in scenario_lines(path, options.get("size"))))
        with path.open("ab") as handle:  # the writer goes on while the run reads
            handle.write(began.splitlines(keepends=True)[0])
        return ReplayResult([], 0, read[-1])

    monkeypatch.setattr(backtest_run, "run_replay", replaying)
    monkeypatch.setattr(backtest_run, "store_run", lambda _s, run, _a: stored.append(run))
    monkeypatch.setattr(backtest_run, "load_alerts", lambda _s, _id: [])
    files = load_plan_files(plans)
    result = run_backtest(
        Settings(data_dir=tmp_path), history, files, None, until=None, name=None,  # type: ignore[arg-type]
        progress=lambda *_a, **_k: None,
    )  # fmt: skip
    assert read == [len(began.splitlines())] * 2
    assert {r.input_records for r in result.runs} == {read[0]}
    assert {r.input_sha256 for r in result.runs} == {hashlib.sha256(began).hexdigest()}

    history.write_bytes(began.replace(b"PO-", b"PX-", 1))  # rewritten under a run
    monkeypatch.setattr(
        backtest_run,
        "run_replay",
        lambda _s, path, **_o: history.write_bytes(began) or ReplayResult([], 0, 0),
    )
    stored.clear()
    with pytest.raises(UserError, match="changed while the backtest read it"):
        run_backtest(
            Settings(data_dir=tmp_path), history, files, None, until=None, name=None,  # type: ignore[arg-type]
            progress=lambda *_a, **_k: None,
        )  # fmt: skip
    assert stored == []
