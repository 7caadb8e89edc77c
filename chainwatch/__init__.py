"""The composition root: the CLI, its settings, and what every process of ours sets up.

Importing this package makes every aiokafka client of the process ask for a topic's
metadata without asking Kafka to create the topic (`chainwatch.no_topic_creation`
says why that is process-wide). Every entry point imports it: the CLI and the
children it starts, the benches and the tests.
"""

from chainwatch.no_topic_creation import forbid_aiokafka_topic_creation

forbid_aiokafka_topic_creation()
