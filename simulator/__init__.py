"""A seeded simulator of the knitwear chain, a library of its own (`chainwatch simulate`).

The public API (docs/simulator.md, "Python API"); everything else in the package is internal:

- `simulate(config, plan=None)`: every record of a run, lazily, in publication order;
  pure (no I/O) and byte-identical per seed.
- `write_scenario(path, config, plan=None, *, max_records=None)`: a run as a scenario
  file (CONTRACT.md, replay files); returns the run's `Summary`.
- `write_lines(records, out, summary)`: the streaming writer under `write_scenario`, for
  any text stream (stdout) and any iterable of records (a filtered run).
- `run_live(records, publisher, summary, rate=..., ...)`: paced publishing through a
  `Publisher` (the Kafka and gateway publishers are in `chainwatch.simulator_outputs`).

The simulator imports nothing of `chainwatch` (pyproject [tool.importlinter]).
"""

from simulator.config import DEFAULT_START, AnomalyRates, SimConfig
from simulator.generator import generate as simulate
from simulator.live import LiveResult, Progress, Publisher, run_live
from simulator.records import SimRecord, format_ms
from simulator.scenario_file import write_lines, write_scenario
from simulator.summary import Summary

__all__ = [
    "DEFAULT_START",
    "AnomalyRates",
    "LiveResult",
    "Progress",
    "Publisher",
    "SimConfig",
    "SimRecord",
    "Summary",
    "format_ms",
    "run_live",
    "simulate",
    "write_lines",
    "write_scenario",
]
