"""Our Kafka clients never ask the broker to create a topic.

A Metadata request that names a topic can also ask the broker to create it if it
is missing (`allow_auto_topic_creation`, from v4 on). A broker with
`auto.create.topics.enable=true`, which is Kafka's default and so the setting of
many users' own brokers, then creates it with its own `num.partitions`. A client
that still asked about a deleted run's topic brought that topic back this way
(docs/reliability.md, "a deleted run's topic came back"). Every process creates the
topics it uses, with their partition counts, so no client of ours needs the broker
to create one.

aiokafka 0.14 has no option for this. `AIOKafkaClient._metadata_update` builds
`MetadataRequest(topics)`, and its `build` asks for creation unless told otherwise.
Every consumer and producer, faust's included, makes its own client inside its
constructor, so there is no per-client place to say so without copying that method.
`forbid_aiokafka_topic_creation` therefore rebinds the name the client module (and
aiokafka's admin client) builds the request with to a `MetadataRequest` that asks
for no creation. This applies to the whole process. `chainwatch/__init__.py`
applies it, and every entry point imports that file: the CLI and the children it
starts, the benches and the tests.

kafka-python 3.0.12 takes `allow_auto_create_topics` on its producer and consumer,
then drops it: `KafkaConnectionManager` makes the `ClusterMetadata` that builds the
request without it, so the request always asked for creation.
`forward_topic_creation` gives each network client `kafka_start.started` makes the
value its client was configured with (False: `started` passes it).

A broker older than 0.11 (Metadata below v4) has no such flag and creates a topic
whenever its setting says so; Kafka 4 no longer answers those versions.
"""

from __future__ import annotations

from typing import Any, Final

from aiokafka import client as aiokafka_client
from aiokafka.admin import client as aiokafka_admin_client
from aiokafka.protocol.metadata import MetadataRequest

ALLOW_AUTO_CREATE: Final = "allow_auto_create_topics"
"""kafka-python's option for it (its producer's and consumer's, its cluster metadata's)."""


class MetadataRequestWithoutCreation(MetadataRequest):  # type: ignore[misc]  # aiokafka is untyped
    """aiokafka's Metadata request, which asks for no missing topic to be created
    unless the caller asks for it."""

    def __init__(
        self, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = None
    ) -> None:
        asked = False if allow_auto_topic_creation is None else allow_auto_topic_creation
        super().__init__(topics, asked)


REQUEST_BUILDERS: Final = (aiokafka_client, aiokafka_admin_client)
"""The aiokafka modules that build Metadata requests naming topics through their
module's `MetadataRequest` (`AIOKafkaClient._metadata_update`,
`AIOKafkaAdminClient._get_cluster_metadata`)."""


def forbid_aiokafka_topic_creation() -> None:
    """Make every aiokafka client of this process ask for metadata without creation
    (idempotent; see the module's docstring for why it is process-wide)."""
    for module in REQUEST_BUILDERS:
        module.MetadataRequest = MetadataRequestWithoutCreation


def forward_topic_creation(network_client: Any, client_configs: dict[str, Any]) -> None:
    """Give a kafka-python network client's cluster metadata the client's
    `allow_auto_create_topics` (False when not given), which kafka-python drops."""
    network_client.cluster.config[ALLOW_AUTO_CREATE] = bool(
        client_configs.get(ALLOW_AUTO_CREATE, False)
    )
