"""The connections aiokafka clients open in a test, for tests of what closes them."""

from __future__ import annotations

import pytest
from aiokafka.conn import AIOKafkaConnection


def held_connections(monkeypatch: pytest.MonkeyPatch) -> list[AIOKafkaConnection]:
    """Every connection an aiokafka client opens from now on (for the test), held here."""
    conns: list[AIOKafkaConnection] = []
    connect = AIOKafkaConnection.connect

    async def held(self: AIOKafkaConnection) -> object:
        conns.append(self)
        return await connect(self)

    monkeypatch.setattr(AIOKafkaConnection, "connect", held)
    return conns
