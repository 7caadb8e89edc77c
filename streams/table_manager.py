"""faust's table manager, without its one-second pause at start-up.

faust's `TableManager.on_start` sleeps 1 s before it wires the tables'
changelogs and starts recovery, so tables defined late (after the app starts)
are still picked up. Every Chainwatch table is defined when the app is built
(`streams.engine.runtime.EngineRuntime`), before the worker starts, so the
pause only delayed every worker's first assignment by a second: a fifth of the
start-up-to-first-commit budget of issue 9 (measured in the worker's log:
`TableManager: Starting...` to `Table: orders: Starting...`, 1.00 s).
"""

from __future__ import annotations

from faust.tables import TableManager


class PromptTableManager(TableManager):
    """Starts recovery as soon as it starts: the tables are all registered by then."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()
