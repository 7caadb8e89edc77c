"""The macro expansion matches the ClickHouse plugin's documented output."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dashboards.macros import ALL, MacroError, QueryContext, expand

CTX = QueryContext(
    datetime(2027, 3, 1, tzinfo=UTC),
    datetime(2027, 3, 2, tzinfo=UTC),
    300,
    {"tier": ["gold", "o'brien"], "unit": ALL, "order_id": ["PO-1"]},
)


def test_time_macros_as_the_plugin_writes_them() -> None:
    sql = "SELECT $__timeInterval(t) AS time FROM x WHERE $__timeFilter(t) AND y > $__fromTime"
    assert expand(sql, CTX) == (
        "SELECT toStartOfInterval(toDateTime(t), INTERVAL 300 second) AS time FROM x "
        "WHERE t >= toDateTime(1803859200) AND t <= toDateTime(1803945600) "
        "AND y > toDateTime(1803859200)"
    )
    assert expand("$__timeFilter_ms(t) / $__interval_s", CTX) == (
        "t >= fromUnixTimestamp64Milli(1803859200000) AND "
        "t <= fromUnixTimestamp64Milli(1803945600000) / 300"
    )


def test_conditional_all_and_variable_formats() -> None:
    sql = (
        "$__conditionalAll(tier IN (${tier:sqlstring}), $tier) AND "
        "$__conditionalAll(unit_id IN (${unit:sqlstring}), $unit) AND o = ${order_id:sqlstring}"
    )
    assert expand(sql, CTX) == "tier IN ('gold','o''brien') AND 1=1 AND o = 'PO-1'"


@pytest.mark.parametrize(
    "sql",
    ["$__bogus(x)", "${nope}", "$__timeFilter(a, b)", "$__conditionalAll(x)", "${unit:sqlstring}"],
)
def test_what_cannot_be_expanded_is_an_error(sql: str) -> None:
    with pytest.raises(MacroError):
        expand(sql, CTX)
