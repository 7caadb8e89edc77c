"""`chainwatch.collector`: what a worker does to Python's garbage collector at start-up.

Each case runs in a fresh interpreter: freezing the test process's own objects
would change how every later test collects its garbage.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import gc, json, sys, weakref
from chainwatch.collector import settle_collector

class Node:
    pass

before = gc.get_threshold()
held = [Node() for _ in range(100)]  # alive at start-up: frozen with the rest
settled = settle_collector(int(sys.argv[1]))
a, b = Node(), Node()  # a cycle made after settling: garbage once dropped
a.other, b.other = b, a
ref = weakref.ref(a)
del a, b
gc.collect()
print(json.dumps({
    "before": before,
    "frozen": settled.frozen,
    "reported": settled.thresholds,
    "now": gc.get_threshold(),
    "freeze_count": gc.get_freeze_count(),
    "cycle_collected": ref() is None,
}))
"""


def _probe(threshold: int) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(threshold)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_settling_freezes_what_start_up_built_and_raises_only_the_young_threshold() -> None:
    result = _probe(20_000)
    before = result["before"]
    assert isinstance(before, list)
    assert result["now"] == [20_000, before[1], before[2]]  # only the young threshold moves
    assert result["reported"] == result["now"]
    frozen = result["frozen"]
    assert isinstance(frozen, int)
    assert frozen >= 100  # at least the objects held at start-up
    assert result["freeze_count"] == frozen
    assert result["cycle_collected"] is True  # garbage made later is still collected


def test_zero_leaves_the_collector_as_python_has_it() -> None:
    result = _probe(0)
    assert result["now"] == result["before"]
    assert result["frozen"] == 0
    assert result["freeze_count"] == 0
    assert result["cycle_collected"] is True
