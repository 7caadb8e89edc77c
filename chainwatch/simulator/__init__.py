"""A seeded simulator of the knitwear chain (`chainwatch simulate`).

`generate(SimConfig(...))` is the pure part: records in publication order,
byte-identical per seed. The writers (`scenario_file`, `kafka_out`,
`http_out`) and the pacing loop (`live`) only move those records somewhere.
"""

from chainwatch.simulator.config import DEFAULT_START, AnomalyRates, SimConfig
from chainwatch.simulator.generator import generate
from chainwatch.simulator.records import SimRecord
from chainwatch.simulator.summary import Summary

__all__ = ["DEFAULT_START", "AnomalyRates", "SimConfig", "SimRecord", "Summary", "generate"]
