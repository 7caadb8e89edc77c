"""What importing one file gives, row by row, with the importer's own pieces.

The importer tests read outcomes without a Kafka or an output file: the tables the
command would open (`open_tables`), each row's outcome, the tables closed after.
"""

from __future__ import annotations

from pathlib import Path

from chainwatch.importer.mapper import RowMapper
from chainwatch.importer.pipeline import Accepted, Importer, Rejected
from chainwatch.importer.run import open_tables
from schemas.import_mapping import ImportMapping
from schemas.plan import load_plan

PLAN = load_plan()


def import_outcomes(
    kind: str, path: Path, mapping: ImportMapping | None = None
) -> list[Accepted | Rejected]:
    """Each row's outcome of importing `path` as records of `kind` (the default plan)."""
    mapping = mapping or ImportMapping()
    importer = Importer(RowMapper(mapping, kind), PLAN)
    tables = open_tables([path], mapping, importer)
    try:
        return [o for t in tables for o in importer.outcomes(t)]
    finally:
        for t in tables:
            t.close()
