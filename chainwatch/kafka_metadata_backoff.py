"""An aiokafka client that reached no broker waits its retry backoff before it says so.

`AIOKafkaClient._metadata_update` (the client's metadata task, woken by
`force_metadata_update`) asks each known broker in turn and, when none answers
("Unable to update metadata from [...]"), returns at once. A producer holding a record
for a partition whose leader is unknown (what a broker that stopped leaves behind) loops
on `force_metadata_update` with nothing else to wait on (aiokafka's `Sender`: "try to
update cluster metadata and wait backoff time", which it never waits): with the broker
gone a refused connection answers in microseconds, so the loop spun. Seen 2026-12-07 on
the notifier, its delivery log's record pending while the broker was down (`chainwatch
kafka stop`): 87 % of a core for the whole outage, 130,000 metadata attempts every
30 s in its log; the gateway's producers and faust's are the same code.

`back_off_failed_metadata_updates` makes a failed update end only after the client's
`retry_backoff_ms` (100 ms by default), so every caller that retries at once retries at
that pace; one that answered is returned at once. Like `chainwatch.no_topic_creation`,
it applies to the whole process (aiokafka builds its clients inside its consumers' and
producers' constructors, faust's too), applied by `chainwatch/__init__.py`; a stop
cancels the metadata task, the wait with it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.client import AIOKafkaClient

_aiokafka_metadata_update = AIOKafkaClient._metadata_update


async def _metadata_update(self: AIOKafkaClient, cluster_metadata: Any, topics: Any) -> bool:
    """`AIOKafkaClient._metadata_update`, its failure returned after the retry backoff."""
    updated: bool = await _aiokafka_metadata_update(self, cluster_metadata, topics)
    if not updated:
        await asyncio.sleep(self._retry_backoff)
    return updated


def back_off_failed_metadata_updates() -> None:
    """Make every aiokafka client of this process wait its retry backoff after a metadata
    update that failed (idempotent; the module's docstring says why it is process-wide)."""
    AIOKafkaClient._metadata_update = _metadata_update
