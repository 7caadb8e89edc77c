"""How many examples a property test draws: a quarter by default, all with CHAINWATCH_FUZZ=full.

The suite runs on every change and must stay fast on a loaded 2-core CI box;
a quarter of the examples still fails on any systematic defect (every run
draws new inputs, and hypothesis replays its saved failures first). Before a
release, or after touching the contract, run the full counts:
`CHAINWATCH_FUZZ=full .venv/bin/pytest tests/schemas tests/gateway tests/engine`
(tests/engine: the occupancy index's random walks, `FULL` alone).
"""

from __future__ import annotations

import os

FULL = os.environ.get("CHAINWATCH_FUZZ", "").lower() == "full"


def examples(full: int) -> int:
    """`full` under CHAINWATCH_FUZZ=full, else a quarter of it (at least 25)."""
    return full if FULL else max(25, full // 4)
