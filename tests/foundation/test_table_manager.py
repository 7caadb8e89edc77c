"""The worker's table manager starts recovery at once (streams/table_manager.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from streams.app import create_app
from streams.table_manager import PromptTableManager


def test_the_app_starts_its_tables_recovery_without_fausts_pause(tmp_path: Path) -> None:
    app = create_app("prompt-tables", bootstrap="localhost:1", partitions=2, data_dir=tmp_path)
    app.Table("orders", key_type=str, value_type=bytes)
    manager: Any = app.tables
    assert isinstance(manager, PromptTableManager)
    steps: list[str] = []

    async def pause(seconds: float) -> None:
        steps.append(f"sleep {seconds}")

    async def wire() -> None:
        steps.append("changelogs wired")

    async def recover() -> None:
        steps.append("recovery started")

    manager.sleep = pause
    manager._update_channels = wire
    manager.recovery.start = recover

    asyncio.run(manager.on_start())
    assert steps == ["changelogs wired", "recovery started"]  # faust's own sleeps 1.0 s first
