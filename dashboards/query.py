"""The ClickHouse query type the foundation SDK lacks, over its generic `Dataquery`.

A target of `grafana-clickhouse-datasource` 4.x in raw SQL mode carries
`editorType: "sql"`, `rawSql`, a numeric `format` (0 time series, 1 table, 2
logs) and a `queryType` the editor uses to pick its options. What a panel
expects back (`columns`) and whether the scenario must fill it (`may_be_empty`)
stay on the Python object for the tests; they are not part of the JSON.
"""

from __future__ import annotations

import enum
import textwrap
from typing import Any

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard

PLUGIN_ID = "grafana-clickhouse-datasource"
DATASOURCE_UID = "chainwatch-clickhouse"
DATASOURCE = dashboard.DataSourceRef(type_val=PLUGIN_ID, uid=DATASOURCE_UID)


class Format(enum.IntEnum):
    TIME_SERIES = 0
    TABLE = 1
    LOGS = 2


_QUERY_TYPES = {Format.TIME_SERIES: "timeseries", Format.TABLE: "table", Format.LOGS: "logs"}


class ClickHouseQuery(cogvariants.Dataquery):
    """One raw-SQL target; `columns` are what the panel reads, in order."""

    def __init__(
        self,
        raw_sql: str,
        *,
        columns: tuple[str, ...],
        format_val: Format = Format.TABLE,
        ref_id: str = "A",
        may_be_empty: bool = False,
    ) -> None:
        self.raw_sql = raw_sql
        self.columns = columns
        self.format_val = format_val
        self.ref_id = ref_id
        self.may_be_empty = may_be_empty

    def to_json(self) -> dict[str, object]:
        return {
            "datasource": DATASOURCE.to_json(),
            "editorType": "sql",
            "format": int(self.format_val),
            "queryType": _QUERY_TYPES[self.format_val],
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClickHouseQuery:
        return cls(
            str(data["rawSql"]),
            columns=(),
            format_val=Format(int(data.get("format", Format.TABLE))),
            ref_id=str(data.get("refId", "A")),
        )


class ClickHouseQueryBuilder(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builder form, so panels take it through the SDK's `with_target`."""

    def __init__(self, query: ClickHouseQuery) -> None:
        self._internal = query

    def build(self) -> ClickHouseQuery:
        return self._internal


def sql(
    raw_sql: str,
    *columns: str,
    series: bool = False,
    may_be_empty: bool = False,
    ref_id: str = "A",
) -> ClickHouseQueryBuilder:
    """A raw-SQL target; `series` = time-series format (first column is the time)."""
    return ClickHouseQueryBuilder(
        ClickHouseQuery(
            textwrap.dedent(raw_sql).strip(),
            columns=columns,
            format_val=Format.TIME_SERIES if series else Format.TABLE,
            ref_id=ref_id,
            may_be_empty=may_be_empty,
        )
    )
