-- Which Kafka the stored offsets belong to: per topic, the cluster id and topic
-- id the sink consumed, and the offset base of the current epoch. A rebuilt
-- Kafka (or a deleted and re-created topic) restarts offsets at 0; the sink
-- compares ids at start and refuses, or (`chainwatch sink --new-kafka-epoch`)
-- starts a new epoch whose offsets are stored after every offset already stored.
CREATE TABLE IF NOT EXISTS kafka_sources (
    topic        String,
    epoch        UInt32,
    cluster_id   String,
    topic_id     String,
    offset_base  UInt64,
    recorded_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(epoch)
ORDER BY topic;
