"""faust's aiokafka transport, reading only committed records.

The ingest gateway publishes each request as one Kafka transaction and aborts
it when Kafka fails mid-request, so records of a request answered `503` sit in
the log as aborted. faust reads `read_uncommitted` unless it runs exactly-once
(which we avoid: faust #323, #517); this transport makes the worker's consumer
read `read_committed`, so aborted records never reach the engine. Its producer
is idempotent with acks=all, like every other producer of the project.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver


class _ReadCommittedThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"  # read by aiokafka at start()
        return consumer


class _ReadCommittedConsumer(driver.Consumer):
    def _new_consumer_thread(self) -> Any:
        return _ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)


class _IdempotentProducer(driver.Producer):
    """acks=all and idempotence on every send (faust turns them on only in exactly_once).

    Without idempotence a produce retried after a lost acknowledgement (a broker
    or leader change, routine on a cluster) writes the record twice.
    """

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class ReadCommittedTransport(driver.Transport):
    Consumer = _ReadCommittedConsumer
    Producer = _IdempotentProducer


class ChainwatchApp(faust.App):
    """A faust App whose worker consumer reads committed records only."""

    def _new_transport(self) -> Any:
        return ReadCommittedTransport(self.conf.broker_consumer, self, loop=self.loop)
