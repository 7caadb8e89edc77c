"""Every panel's SQL, macros expanded, runs on chDB against a store the real pipeline filled."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from chainwatch.settings import Settings
from dashboards import backtest, replay
from dashboards.export import build_all, queries, to_json
from dashboards.macros import ALL, QueryContext, expand
from dashboards.query import DATASOURCE_UID
from schemas.plan import load_plan
from sinks.clickhouse.connection import open_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Wide enough for the simulated event times (2027) and the sink's ingest times (now).
WHOLE_RANGE = (datetime(2020, 1, 1, tzinfo=UTC), datetime(2035, 1, 1, tzinfo=UTC))


def _clickhouse_targets(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The ClickHouse targets of exported panels (rows' nested panels too), read from the JSON
    Grafana gets rather than through `queries`, so a target `queries` skipped is noticed."""
    for panel in panels:
        yield from _clickhouse_targets(panel.get("panels", []))
        for target in panel.get("targets", []):
            uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid")
            if uid == DATASOURCE_UID:
                yield target


def test_every_panel_query_runs_and_returns_what_the_panel_reads(filled_store: Settings) -> None:
    client = open_client(filled_store)
    try:
        # the drill-down is checked on an order that has open alerts and visits
        order_id = client.query(
            "SELECT order_id FROM alerts_current WHERE status = 'open' AND order_id IS NOT NULL "
            "AND order_id IN (SELECT order_id FROM stage_visits_current) ORDER BY order_id LIMIT 1"
        ).result_rows[0][0]
        tiers = [
            r[0] for r in client.query("SELECT DISTINCT tier FROM customers_current").result_rows
        ]
        contexts = [
            QueryContext(*WHOLE_RANGE, 3600, {"tier": ALL, "unit": ALL, "order_id": [order_id]}),
            QueryContext(*WHOLE_RANGE, 60, {"tier": tiers, "unit": ALL, "order_id": [order_id]}),
        ]
        checked, expected = 0, 0
        for board in build_all(load_plan(None)):
            if board.uid in (backtest.UID, replay.UID):
                continue  # the pipeline writes no backtests or replays: their own tests
            targets = list(_clickhouse_targets(to_json(board)["panels"]))
            expected += len(contexts) * len(targets)
            for title, query in queries(board):
                for ctx in contexts:
                    sql = expand(query.raw_sql, ctx)
                    described = client.query(f"DESCRIBE TABLE ({sql})").result_rows
                    assert tuple(r[0] for r in described) == query.columns, (board.uid, title)
                    rows = client.query(sql).result_rows
                    if not query.may_be_empty:
                        assert rows, f"{board.uid} / {title}: no rows\n{sql}"
                    checked += 1
        assert expected > 0
        assert checked == expected
    finally:
        client.close()


def test_a_single_tier_filters_rows(filled_store: Settings) -> None:
    """`$__conditionalAll` keeps the condition when a tier is chosen: only that tier comes back."""
    client = open_client(filled_store)
    try:
        overview = next(b for b in build_all(load_plan(None)) if b.uid == "cw-overview")
        title, query = next(q for q in queries(overview) if q[0] == "Open alerts")
        tier_at = query.columns.index("customer_tier")

        def tiers(chosen: list[str] | None) -> list[str]:
            sql = expand(query.raw_sql, QueryContext(*WHOLE_RANGE, 3600, {"tier": chosen}))
            return [r[tier_at] for r in client.query(sql).result_rows]

        every = tiers(ALL)
        assert len(set(every)) >= 2, f"{title}: the store needs open alerts of two tiers"
        chosen = sorted(set(every))[0]
        only = tiers([chosen])
        assert only, title
        assert set(only) == {chosen}, title
        assert len(only) == every.count(chosen), title
    finally:
        client.close()
