"""What the broker holds of a consumer group, for tests of what deletes one."""

from __future__ import annotations

from typing import Any

from chainwatch.kafka_admin import admin_client


def group_on_broker(bootstrap: str, group: str) -> tuple[bool, dict[Any, Any]]:
    """Whether Kafka knows `group` (its description), and the offsets it has committed."""
    admin = admin_client(bootstrap, request_timeout_s=15)
    try:
        described = admin.describe_groups([group])[group]
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return "GroupIdNotFound" not in str(described.get("error")), dict(offsets)
