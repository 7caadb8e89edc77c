"""The contract's topic names under a deployment's prefix.

The names themselves are defined in `schemas.topics` (re-exported here for the
engine and the runners). Deployments may prefix every name
(`CHAINWATCH_KAFKA__TOPIC_PREFIX`); replays use a fresh prefix per run so they
never read another run's records.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.topics import (
    ALERTS,
    APPEND_TIME_TOPICS,
    COMPACTED_TOPICS,
    CUSTOMERS,
    DEAD_LETTER,
    INPUT_TOPICS,
    ORDER_STATE,
    ORDERS,
    OUTPUT_TOPICS,
    SCANS,
    UNIT_STATUS,
)

__all__ = [
    "ALERTS",
    "APPEND_TIME_TOPICS",
    "COMPACTED_TOPICS",
    "CUSTOMERS",
    "DEAD_LETTER",
    "INPUT_TOPICS",
    "ORDERS",
    "ORDER_STATE",
    "OUTPUT_TOPICS",
    "SCANS",
    "UNIT_STATUS",
    "TopicNames",
]


@dataclass(frozen=True)
class TopicNames:
    """The contract's topic names under one deployment prefix."""

    prefix: str = ""

    def __call__(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def strip(self, full_name: str) -> str:
        """The contract name of a prefixed topic."""
        return full_name[len(self.prefix) :] if full_name.startswith(self.prefix) else full_name

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(self(n) for n in (*INPUT_TOPICS, *OUTPUT_TOPICS))
