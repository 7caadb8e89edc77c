"""The four worked examples of the spec, run through the in-memory oracle.

The cases and the comparison are tests/worked_examples.py's (the engine's replay
test runs the same ones on the broker).
"""

from __future__ import annotations

import pytest
from rules_builders import PLAN
from worked_examples import WORKED_EXAMPLES, WorkedExample, comparable

from streams.rules.oracle import run_scenario


@pytest.mark.parametrize("example", WORKED_EXAMPLES, ids=lambda e: e.name)
def test_worked_example_gives_the_expected_alerts(example: WorkedExample) -> None:
    result = run_scenario(example.scenario.read_bytes().splitlines(), PLAN, example.until)
    got = [alert.model_dump(mode="json") for alert in result.alerts]
    assert [comparable(a) for a in got] == [comparable(e) for e in example.expected()]
    assert result.dead_letters == example.dead_letters
