"""What a request publishes, and where Kafka stored it: the types the publisher and its
group commit share (in a module of their own, so neither imports the other for them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Placement:
    """Where Kafka stored a record."""

    partition: int
    offset: int
