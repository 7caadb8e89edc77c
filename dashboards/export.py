"""Every dashboard, as deterministic JSON: fixed uids, numbered panels, sorted keys.

The same bytes for the same plan on every run, so the exported files in
`deploy/grafana/dashboards/` diff cleanly and `publish` is idempotent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as models

from dashboards import (
    backtest,
    customers,
    drilldown,
    overview,
    pipeline,
    prometheus,
    replay,
    units,
)
from dashboards.errors import ExportError
from dashboards.query import ClickHouseQuery
from schemas.files import write_text_atomically
from schemas.plan import SlaPlan

Builder = Callable[[SlaPlan], models.Dashboard]
BUILDERS: tuple[Builder, ...] = (
    overview.build,
    drilldown.build,
    units.build,
    customers.build,
    pipeline.build,
    backtest.build,
    replay.build,
    prometheus.build,
)


def build_all(plan: SlaPlan) -> list[models.Dashboard]:
    """The dashboards as SDK models, panels numbered 1..n in layout order."""
    boards = []
    for build in BUILDERS:
        board = build(plan)
        for number, panel in enumerate(board.panels or [], start=1):
            panel.id_val = number
        boards.append(board)
    return boards


def to_json(board: models.Dashboard) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(board, cls=JSONEncoder))
    return data


def dumps(board: models.Dashboard) -> str:
    return json.dumps(to_json(board), sort_keys=True, indent=2) + "\n"


def file_name(board: models.Dashboard) -> str:
    return f"{board.uid}.json"


def export(directory: Path, plan: SlaPlan) -> list[Path]:
    """Write one `<uid>.json` per dashboard; return the paths written.

    The directory is created with its missing parents (as `mkdir -p`); existing
    `<uid>.json` files are replaced whole (`write_text_atomically`: a FIFO there hung the
    export, a symbolic link there was written through); in a directory that cannot be
    written, a regular file there that can is written in place (the next export rebuilds
    it, so a crash mid-write costs nothing that is not remade). A path that cannot be a
    directory or written (a file, a dangling link, no permission) raises ExportError.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(
            f"cannot create the directory {str(directory)!r}: {_reason(exc)}"
        ) from None
    written = []
    for board in build_all(plan):
        path = directory / file_name(board)
        try:
            write_text_atomically(path, dumps(board), in_place_fallback=True)
        except OSError as exc:
            raise ExportError(f"cannot write {str(path)!r}: {_reason(exc)}") from None
        written.append(path)
    return written


def _reason(exc: OSError) -> str:
    if isinstance(exc, FileExistsError):
        return "it exists and is not a directory"
    return exc.strerror or type(exc).__name__


def queries(board: models.Dashboard) -> Iterator[tuple[str, ClickHouseQuery]]:
    """(panel title, target) for every ClickHouse target of a dashboard."""
    for panel in board.panels or []:
        if not isinstance(panel, models.Panel):
            continue
        for target in panel.targets or []:
            if isinstance(target, ClickHouseQuery):
                yield panel.title or "", target
