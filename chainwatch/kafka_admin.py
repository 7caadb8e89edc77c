"""Topic administration with kafka-python (tooling, not the hot path)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from kafka import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError

from chainwatch.errors import UserError
from streams.topics import COMPACTED_TOPICS, TopicNames


def admin_client(bootstrap: str) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    except (KafkaError, OSError) as exc:
        raise UserError(
            f"cannot reach Kafka at {bootstrap} ({type(exc).__name__}); start it with "
            "`chainwatch kafka start` or set CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS"
        ) from None


def ensure_named_topics(
    bootstrap: str, full_names: Iterable[str], *, partitions: int, replication_factor: int = 1
) -> None:
    """Create topics by their full names (the engine's internal topics) when missing."""
    admin = admin_client(bootstrap)
    try:
        existing = set(admin.list_topics())
        wanted: dict[str, dict[str, object]] = {
            name: {"num_partitions": partitions, "replication_factor": replication_factor}
            for name in full_names
            if name not in existing
        }
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(wanted, timeout_ms=30000, wait_for_metadata=True)
    finally:
        admin.close()


def ensure_topics(
    bootstrap: str,
    names: TopicNames,
    contract_names: Iterable[str],
    *,
    partitions: int,
    replication_factor: int = 1,
) -> None:
    """Create the topics that do not exist yet (CRM compacted); existing ones are kept."""
    admin = admin_client(bootstrap)
    try:
        existing = set(admin.list_topics())
        wanted: dict[str, dict[str, object]] = {}
        for name in contract_names:
            full = names(name)
            if full in existing:
                continue
            configs = {"cleanup.policy": "compact"} if name in COMPACTED_TOPICS else {}
            wanted[full] = {
                "num_partitions": partitions,
                "replication_factor": replication_factor,
                "configs": configs,
            }
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent creator won
                admin.create_topics(wanted, timeout_ms=30000, wait_for_metadata=True)
    finally:
        admin.close()
