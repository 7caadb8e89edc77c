-- Raw scan events, append-only. kafka_* columns locate each row in its source
-- topic: the sink resumes after the highest stored offset, so a crash between
-- insert and offset commit never duplicates rows.
CREATE TABLE IF NOT EXISTS scans (
    event_id        String,
    order_id        String,
    stage           LowCardinality(String),
    action          LowCardinality(String),
    unit_id         LowCardinality(String),
    event_time      DateTime64(3, 'UTC'),
    quantity        Nullable(Float64),
    uom             LowCardinality(Nullable(String)),
    lot_id          Nullable(String),
    attributes      String,
    kafka_topic     LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (stage, event_time, order_id, event_id)
TTL toDateTime(event_time) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;
