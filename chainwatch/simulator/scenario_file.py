"""Writing a run as a scenario file (CONTRACT.md, replay files): one line per record.

Streams: nothing is held beyond the writer's buffer, so the size of a run is
bounded by the disk, not by memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO

from chainwatch.simulator.records import SimRecord
from chainwatch.simulator.summary import Summary


def write_scenario(records: Iterable[SimRecord], out: TextIO, summary: Summary) -> int:
    """Write every record as an NDJSON line (a truncated one as its raw text); return the count."""
    written = 0
    batch: list[str] = []
    for record in records:
        summary.add(record)
        batch.append(record.line())
        if len(batch) >= 4096:
            out.write("\n".join(batch) + "\n")
            written += len(batch)
            batch.clear()
    if batch:
        out.write("\n".join(batch) + "\n")
        written += len(batch)
    return written
