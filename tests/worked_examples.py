"""The spec's four worked examples (`examples/`): the cases and how an alert is compared.

Shared by the oracle's test (tests/rules) and the engine's replay test (tests/engine).
Compared on exactly the fields the examples README lists; times as instants, because
the expected files write `...:00Z` and alerts `...:00.000Z`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.alerts import UNIT_ALERT_TYPES
from schemas.common import truncate_ms

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
COMPARED = (
    "alert_id", "type", "severity", "status", "order_id", "unit_id", "stage", "visit",
    "deadline", "fulfilled_at", "lateness_s",
)  # fmt: skip
TIMES = ("deadline", "fulfilled_at")


@dataclass(frozen=True)
class WorkedExample:
    name: str
    until: datetime
    dead_letters: int

    @property
    def scenario(self) -> Path:
        return EXAMPLES / f"{self.name}.ndjson"

    def expected(self) -> list[dict[str, Any]]:
        path = EXAMPLES / f"{self.name.replace('example_', 'expected_', 1)}.ndjson"
        return [json.loads(line) for line in path.read_text().splitlines() if line]


WORKED_EXAMPLES = [
    WorkedExample("example_1_on_time", datetime(2027, 3, 31, tzinfo=UTC), 0),
    WorkedExample("example_2_late_handoff_qc", datetime(2027, 3, 12, tzinfo=UTC), 0),
    WorkedExample("example_3_unit_down", datetime(2027, 3, 31, tzinfo=UTC), 0),
    WorkedExample("example_4_bad_input", datetime(2027, 3, 31, tzinfo=UTC), 6),
]
BY_NAME = {example.name: example for example in WORKED_EXAMPLES}


def comparable(alert: dict[str, Any]) -> dict[str, Any]:
    """The README's fields of an alert: `order_id`, or `unit_id` for a unit alert."""
    unit_alert = alert["type"] in UNIT_ALERT_TYPES
    keep = [f for f in COMPARED if f != ("order_id" if unit_alert else "unit_id")]
    result = {f: alert.get(f) for f in keep}
    for key in TIMES:
        if result[key] is not None:
            result[key] = truncate_ms(datetime.fromisoformat(result[key].replace("Z", "+00:00")))
    return result
