"""Compare `chainwatch replay` output with an `expected_*.ndjson` file of the examples.

    .venv/bin/python examples/compare.py alerts.ndjson examples/expected_2_late_handoff_qc.ndjson

The expected files list only the fields an acceptance check compares, with timestamps
written `2027-03-05T08:00:00Z`; replay prints every field of an alert, compactly, with
milliseconds (`2027-03-05T08:00:00.000Z`). So the files are not byte-identical: this
compares the expected fields only, timestamps as instants, alerts by `alert_id`.
Prints `same: N alerts` and exits 0, or one line per difference and exits 1.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any


def _load(path: Path) -> dict[str, dict[str, Any]]:
    alerts = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            alert = json.loads(line)
            alerts[alert["alert_id"]] = alert
    return alerts


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str) and a != b:
        try:
            return datetime.fromisoformat(a) == datetime.fromisoformat(b)
        except ValueError:
            return False
    return bool(a == b)


def differences(
    actual: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]]
) -> list[str]:
    found = []
    for alert_id in sorted(expected.keys() - actual.keys()):
        found.append(f"missing {alert_id[:12]} {expected[alert_id].get('type')}")
    for alert_id in sorted(actual.keys() - expected.keys()):
        if actual[alert_id].get("status") != "retracted":  # retracted ones are not listed
            found.append(f"extra {alert_id[:12]} {actual[alert_id].get('type')}")
    for alert_id in sorted(actual.keys() & expected.keys()):
        for key, want in expected[alert_id].items():
            got = actual[alert_id].get(key)
            if not _same(got, want):
                found.append(f"{alert_id[:12]} {key}: got {got!r}, expected {want!r}")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    actual, expected = _load(Path(argv[0])), _load(Path(argv[1]))
    found = differences(actual, expected)
    for line in found:
        print(line)
    if not found:
        print(f"same: {len(expected)} alerts")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
