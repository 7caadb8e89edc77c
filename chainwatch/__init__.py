"""The composition root: the CLI, its settings, and what every process of ours sets up.

Importing this package makes every aiokafka client of the process ask for a topic's
metadata without asking Kafka to create the topic (`chainwatch.no_topic_creation`
says why that is process-wide), and close the connection of a start cut short while it
bootstrapped (`chainwatch.kafka_bootstrap_close`), and wait its retry backoff after a
metadata update no broker answered (`chainwatch.kafka_metadata_backoff`). Every entry
point imports it: the CLI and the children it starts, the benches and the tests.
"""

from chainwatch.kafka_bootstrap_close import close_cut_bootstraps
from chainwatch.kafka_metadata_backoff import back_off_failed_metadata_updates
from chainwatch.no_topic_creation import forbid_aiokafka_topic_creation

forbid_aiokafka_topic_creation()
close_cut_bootstraps()
back_off_failed_metadata_updates()
