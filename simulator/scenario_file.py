"""Writing a run as a scenario file (CONTRACT.md, replay files): one line per record.

Streams: nothing is held beyond the writer's buffer, so the size of a run is
bounded by the disk, not by memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import TextIO

from schemas.plan import SlaPlan
from simulator.config import SimConfig
from simulator.generator import generate
from simulator.records import SimRecord
from simulator.summary import Summary


def write_lines(records: Iterable[SimRecord], out: TextIO, summary: Summary) -> int:
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


def write_scenario(
    path: Path | str,
    config: SimConfig,
    plan: SlaPlan | None = None,
    *,
    max_records: int | None = None,
) -> Summary:
    """The run of `config` (its first `max_records`) as a scenario file at `path`.

    Needs a finite run (`config.days` set) or `max_records`; `OSError` when the
    file cannot be written.
    """
    if config.days is None and max_records is None:
        raise ValueError("an endless run (days=None) needs max_records")
    records: Iterable[SimRecord] = generate(config, plan)
    if max_records is not None:
        records = islice(records, max_records)
    summary = Summary()
    with Path(path).open("w", encoding="utf-8", newline="\n") as out:
        write_lines(records, out, summary)
    return summary
