"""`chainwatch status`: the ops picture on a terminal, refreshed from ClickHouse.

Reads through `open_reader`, so it works while a sink owns the embedded store
(loopback query server) and against a ClickHouse server alike. The store is
opened per refresh and closed in between, so `status` never keeps a sink from
taking the embedded store. `--once` prints one snapshot and exits.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from chainwatch.cli_context import cell_text, float_option, out, settings
from chainwatch.settings import Settings

LIMIT = 15
OBLIGATIONS = "('start_overdue', 'stage_overdue', 'handoff_overdue', 'order_overdue')"


@dataclass(frozen=True)
class Section:
    title: str
    columns: list[str]
    rows: list[Sequence[Any]]
    total: int | None = None


def _route_sql(settings: Settings) -> str:
    from schemas.plan import load_plan

    return "[" + ", ".join(f"'{s}'" for s in load_plan(settings.engine.plan).route) + "]"


def queries(route_sql: str) -> dict[str, str]:
    """The snapshot's SQL, section by section (plain SQL: no Grafana macros)."""
    return {
        "Work in progress per stage": f"""
            SELECT stage, countIf(status = 'on_track') AS on_track,
                   countIf(status = 'at_risk') AS at_risk,
                   countIf(status = 'breached') AS breached, count() AS orders
            FROM order_state_current
            WHERE status IN ('on_track', 'at_risk', 'breached') AND stage IS NOT NULL
            GROUP BY stage ORDER BY indexOf({route_sql}, stage)""",
        "Open breaches": f"""
            SELECT type, severity, order_id, stage, visit, unit_id, customer_name AS customer,
                   customer_tier AS tier, deadline, cause_reason AS cause,
                   count() OVER () AS total
            FROM alerts_current
            WHERE status = 'open' AND type IN {OBLIGATIONS}
            ORDER BY severity = 'critical' DESC, deadline LIMIT {LIMIT}""",
        "At-risk orders": f"""
            SELECT s.order_id AS order_id, o.customer_name AS customer,
                   s.customer_tier AS tier, s.stage AS stage, s.eta AS eta,
                   s.due_at AS due_at, count() OVER () AS total
            FROM order_state_current AS s
            LEFT JOIN orders_current AS o ON o.order_id = s.order_id
            WHERE s.status = 'at_risk'
            ORDER BY s.due_at LIMIT {LIMIT}""",
        "Units down or degraded": f"""
            SELECT unit_id, argMax(stage, event_time) AS unit_stage,
                   argMax(status, event_time) AS current_status,
                   argMax(reason, event_time) AS reason, max(event_time) AS since,
                   argMax(expected_up_at, event_time) AS expected_up,
                   count() OVER () AS total
            FROM unit_status GROUP BY unit_id HAVING current_status != 'up'
            ORDER BY since LIMIT {LIMIT}""",
        "Latest events": f"""
            SELECT time, kind, subject, what FROM (
                (SELECT event_time AS time, 'scan' AS kind, order_id AS subject,
                        concat(stage, ' ', action, ' @ ', unit_id) AS what
                 FROM scans ORDER BY event_time DESC LIMIT {LIMIT})
                UNION ALL
                (SELECT event_time, 'unit', unit_id,
                        concat(status, if(reason IS NULL, '', concat(' (', reason, ')')))
                 FROM unit_status ORDER BY event_time DESC LIMIT {LIMIT})
                UNION ALL
                (SELECT detected_at, 'alert', ifNull(order_id, ifNull(unit_id, '')),
                        concat(status, ' ', type, ' ', ifNull(stage, ''))
                 FROM alerts_current WHERE status != 'retracted'
                 ORDER BY detected_at DESC LIMIT {LIMIT})
            ) ORDER BY time DESC, kind LIMIT {LIMIT}""",
    }


def snapshot(settings: Settings) -> list[Section]:
    """Every section, read in one short session with the store."""
    from sinks.clickhouse.readers import open_reader

    statements = queries(_route_sql(settings))  # the plan first: a bad one is the error to show
    reader = open_reader(settings)
    try:
        sections = []
        for title, sql in statements.items():
            result = reader.query(sql)
            columns = list(result.columns)
            rows: list[Sequence[Any]] = [list(r) for r in result.rows]
            total = None
            if columns and columns[-1] == "total":
                total = int(rows[0][-1]) if rows else 0
                columns, rows = columns[:-1], [r[:-1] for r in rows]
            sections.append(Section(title, columns, rows, total))
        return sections
    finally:
        reader.close()


def _cell(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return cell_text(value)


_STYLES = {"critical": "red", "breached": "red", "down": "red", "at_risk": "yellow",
           "warning": "yellow", "degraded": "yellow", "alert": "magenta"}  # fmt: skip


def render(sections: list[Section], *, refreshed: datetime) -> Group:
    parts: list[Any] = [Text(f"chainwatch status  (refreshed {refreshed:%Y-%m-%d %H:%M:%S} UTC)")]
    for section in sections:
        if not section.rows:
            parts.append(Text(f"{section.title}: none", style="dim"))
            continue
        title = section.title if section.total is None else f"{section.title} ({section.total})"
        table = Table(*section.columns, title=title, title_justify="left", expand=False)
        for row in section.rows:
            table.add_row(*(Text(_cell(v), style=_STYLES.get(_cell(v), "")) for v in row))
        parts.append(table)
    return Group(*parts)


def register(app: typer.Typer) -> None:
    @app.command("status")
    def status(
        once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
        interval: Annotated[
            float,
            float_option("--interval", min=0.5, max=3600, help="Seconds between refreshes."),
        ] = 2.0,
    ) -> None:
        """Live terminal view: WIP per stage, open breaches, at-risk orders, units down, events."""
        cfg = settings()
        if once:
            out.print(render(snapshot(cfg), refreshed=datetime.now(UTC)))
            return
        from rich.live import Live

        with Live(console=out, auto_refresh=False, screen=False) as live:
            try:
                while True:
                    live.update(render(snapshot(cfg), refreshed=datetime.now(UTC)), refresh=True)
                    time.sleep(interval)
            except KeyboardInterrupt:
                return  # Ctrl-C is how a live view is left: no error, exit 0
