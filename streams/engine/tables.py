"""The engine's tables, by name.

faust names a table's changelog topic `<app_id>-<table>-changelog`; the worker checks
their partition counts before it starts (`chainwatch.topic_partitions`), and `chainwatch
doctor` reads the same topics without building a faust app. Both take the names from
here, so doctor never mistakes another app's topics for the engine's (filtered by prefix,
an app id `cw` also matched `cw-b-orders-changelog`).
"""

from __future__ import annotations

ORDERS = "orders"
CUSTOMERS = "customers"
SUBSCRIPTIONS = "customer-subscriptions"
UNITS = "units"
OCCUPANCY = "unit-occupancy"

TABLES = (ORDERS, CUSTOMERS, SUBSCRIPTIONS, UNITS, OCCUPANCY)


def changelog_topic(app_id: str, table: str) -> str:
    """faust's name for `table`'s changelog topic in the app `app_id`."""
    return f"{app_id}-{table}-changelog"
