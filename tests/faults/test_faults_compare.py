"""The fault bench's verdicts: what it calls lost, duplicated and differing, and which hostile
inputs it expects refused (bench/faults.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench_scripts import load_bench

from chainwatch.settings import conflicting_variables
from schemas.plan import load_plan
from streams.ingest.batch import ENDPOINTS, judge_value

faults = load_bench("faults", "faults_bench")


def _scan(event_id: str, offset: int) -> dict[str, Any]:
    return {"event_id": event_id, "order_id": "PO-1", "kafka_offset": offset, "ingested_at": "t"}


def _alert(alert_id: str, status: str, version: int = 1) -> dict[str, Any]:
    return {"alert_id": alert_id, "status": status, "version": version, "kafka_offset": version}


def _state(scans: list[dict[str, Any]], alerts: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[str, Any] = {t: [] for t in (*faults.RAW_TABLES, *faults.FINAL_TABLES)}
    state["scans"] = scans
    state["alerts"] = alerts
    return state


def _diff(diffs: list[Any], table: str) -> Any:
    return next(d for d in diffs if d.table == table)


def test_a_record_stored_twice_is_a_duplicate_and_a_missing_one_is_lost() -> None:
    ref = _state([_scan("a", 0), _scan("b", 1), _scan("c", 2)], [])
    got = _state([_scan("a", 5), _scan("b", 6), _scan("b", 7)], [])  # offsets differ by run
    scans = _diff(faults.compare(ref, got), "scans")
    assert (scans.lost, scans.duplicated) == (1, 1)


def test_latest_state_is_compared_by_key_and_content_but_not_version() -> None:
    ref = _state([], [_alert("x", "open", 1), _alert("y", "resolved", 1)])
    got = _state([], [_alert("x", "open", 9), _alert("y", "open", 9), _alert("z", "open", 9)])
    alerts = _diff(faults.compare(ref, got), "alerts")
    assert (alerts.lost, alerts.duplicated, alerts.differ) == (0, 1, 1)


def test_an_alert_that_ends_retracted_counts_as_no_alert() -> None:
    ref = _state([], [_alert("x", "open"), _alert("r", "retracted")])
    got = _state([], [_alert("x", "open")])
    alerts = _diff(faults.compare(ref, got), "alerts")
    assert (alerts.lost, alerts.duplicated, alerts.differ) == (0, 0, 0)


def test_records_the_client_dropped_after_503s_are_not_the_pipelines_loss() -> None:
    ref = _state([_scan("a", 0), _scan("b", 1), _scan("c", 2)], [])
    got = _state([_scan("a", 0)], [])
    result = faults.Result("broker", "", diffs=faults.compare(ref, got, {"scans": 1}))
    assert _diff(result.diffs, "scans").lost == 2
    assert (result.lost, result.client_gave_up) == (1, 1)
    assert not result.passed


def test_a_hostile_case_the_gateway_refuses_is_one_the_bench_expects_refused() -> None:
    """The hostile scenario passes a case expected "any" whatever the gateway answers: a
    case the contract refuses on every path (a key written twice, nesting in `attributes`)
    must be expected "4xx", or a gateway that published it again would go unnoticed."""
    by_path = {e.path: e for e in ENDPOINTS.values()}
    plan = load_plan(None)
    for name, path, expected, items in faults.hostile_cases():
        if path not in by_path or expected == "4xx":
            continue  # EPCIS documents are judged whole
        endpoint = by_path[path]
        verdicts = [
            judge_value(i, item.encode("utf-8", "surrogatepass"), endpoint.topic,
                        endpoint.key_field, plan)
            for i, item in enumerate(items)
        ]  # fmt: skip
        assert any(v.accepted for v in verdicts), f"{name}: refused, but expected {expected!r}"


def test_the_bench_runs_its_processes_without_any_spelling_of_the_operators_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The bench gives its processes its own settings: an operator's lower-case spelling of
    one (names are matched ignoring case) was left beside the bench's, and each process
    refused to start on two values for one setting."""
    monkeypatch.setenv("chainwatch_data_dir", str(tmp_path / "mine"))
    monkeypatch.setenv("chainwatch_hook_ops", "https://hooks/x")
    env = faults.Broker(tmp_path / "bench", 1, 2).env()
    assert env["CHAINWATCH_DATA_DIR"] == str(tmp_path / "bench")
    assert conflicting_variables(env) == []
    assert not [
        name for name in env if name.upper().startswith("CHAINWATCH_") and not name.isupper()
    ]


def test_the_replay_runs_until_the_last_event_time_past_a_truncated_record(
    tmp_path: Path,
) -> None:
    """The simulator writes a truncated record as its raw text cut inside its value: the
    bench read every line as JSON for the replay's `--until` and ended in a traceback
    (JSONDecodeError) after its results, the replay check never run."""
    scenario = tmp_path / "input.ndjson"
    scenario.write_text(
        '{"topic":"scans","key":"PO-1","value":{"event_time":"2026-11-10T19:00:00Z"}}\n'
        '{"topic":"scans","key":"PO-2","value":{"event_id":"e","event_time":"2026-11-10T19:3\n'
        '{"topic":"crm.customers","key":"C-1","value":null}\n'
        '{"topic":"scans","key":"PO-3","value":{"event_time":"2026-11-11T08:00:00Z"}}\n'
    )
    assert faults.last_event_time(scenario) == "2026-11-11T08:00:00Z"
