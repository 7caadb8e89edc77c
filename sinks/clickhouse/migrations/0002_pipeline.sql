-- Every table the sink writes besides `scans`. Conventions (docs/sinks.md):
-- * kafka_topic/kafka_partition/kafka_offset locate each row in its source log;
--   the sink skips offsets already stored, so a crash between insert and offset
--   commit never duplicates rows, and retried inserts carry a de-duplication
--   token honoured thanks to non_replicated_deduplication_window.
-- * Raw events are append-only MergeTree tables with monthly partitions and a TTL.
-- * Latest-state tables are ReplacingMergeTree(version) without partitions (FINAL
--   only collapses rows inside one partition); read them through the *_current views.

-- Raw order desk records (`orders` topic), as sent: absent fields are NULL.
CREATE TABLE IF NOT EXISTS order_events (
    order_id        String,
    op              LowCardinality(String),
    customer_id     Nullable(String),
    product         Nullable(String),
    quantity        Nullable(Float64),
    placed_at       Nullable(DateTime64(3, 'UTC')),
    due_at          Nullable(DateTime64(3, 'UTC')),
    route           Array(LowCardinality(String)),
    event_time      DateTime64(3, 'UTC'),
    kafka_topic     LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (order_id, event_time, kafka_partition, kafka_offset)
TTL toDateTime(event_time) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- Raw unit status changes (`unit-status` topic).
CREATE TABLE IF NOT EXISTS unit_status (
    event_id        String,
    unit_id         LowCardinality(String),
    stage           LowCardinality(Nullable(String)),
    status          LowCardinality(String),
    reason          LowCardinality(Nullable(String)),
    event_time      DateTime64(3, 'UTC'),
    expected_up_at  Nullable(DateTime64(3, 'UTC')),
    kafka_topic     LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (unit_id, event_time, event_id)
TTL toDateTime(event_time) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- CRM profiles (`crm.customers`, compacted). version = Kafka offset: the topic is
-- keyed by customer_id, so the later record of a customer has the higher offset.
-- A tombstone is stored as is_deleted = 1 and disappears from FINAL reads.
CREATE TABLE IF NOT EXISTS customers (
    customer_id     String,
    name            String,
    tier            LowCardinality(String),
    region          Nullable(String),
    account_manager Nullable(String),
    updated_at      Nullable(DateTime64(3, 'UTC')),
    extra           String,
    is_deleted      UInt8,
    version         UInt64,
    kafka_topic     LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY customer_id
SETTINGS non_replicated_deduplication_window = 1000;

CREATE VIEW IF NOT EXISTS customers_current AS
SELECT customer_id, name, tier, region, account_manager, updated_at, extra, version
FROM customers FINAL;

-- The latest known attributes of each order, as folded by the engine (`order-state`
-- snapshots): an `updated` record only carries what changed, the snapshot has it all.
CREATE TABLE IF NOT EXISTS orders (
    order_id        String,
    customer_id     Nullable(String),
    customer_name   Nullable(String),
    customer_tier   LowCardinality(String),
    product         Nullable(String),
    quantity        Nullable(Float64),
    placed_at       Nullable(DateTime64(3, 'UTC')),
    due_at          Nullable(DateTime64(3, 'UTC')),
    cancelled_at    Nullable(DateTime64(3, 'UTC')),
    status          LowCardinality(String),
    version         UInt64,
    as_of           DateTime64(3, 'UTC'),
    kafka_topic     LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY order_id
SETTINGS non_replicated_deduplication_window = 1000;

CREATE VIEW IF NOT EXISTS orders_current AS
SELECT * EXCEPT (kafka_topic, kafka_partition, kafka_offset, ingested_at) FROM orders FINAL;

-- Progress of each order (`order-state`); version is the engine's snapshot version.
CREATE TABLE IF NOT EXISTS order_state (
    order_id        String,
    status          LowCardinality(String),
    stage           LowCardinality(Nullable(String)),
    visit           Nullable(UInt16),
    eta             Nullable(DateTime64(3, 'UTC')),
    due_at          Nullable(DateTime64(3, 'UTC')),
    customer_tier   LowCardinality(String),
    open_alert_ids  Array(String),
    visits          String,
    version         UInt64,
    as_of           DateTime64(3, 'UTC'),
    kafka_topic     LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY order_id
SETTINGS non_replicated_deduplication_window = 1000;

CREATE VIEW IF NOT EXISTS order_state_current AS
SELECT * EXCEPT (kafka_topic, kafka_partition, kafka_offset, ingested_at) FROM order_state FINAL;

-- One row per visit of an order to a stage, from the visits list of the snapshots.
CREATE TABLE IF NOT EXISTS stage_visits (
    order_id        String,
    stage           LowCardinality(String),
    visit           UInt16,
    unit_id         LowCardinality(String),
    started_at      Nullable(DateTime64(3, 'UTC')),
    ended_at        Nullable(DateTime64(3, 'UTC')),
    duration_s      Nullable(Float64),
    budget_s        Nullable(Float64),
    on_time         Nullable(UInt8),
    outcome         LowCardinality(Nullable(String)),
    quantity        Nullable(Float64),
    uom             LowCardinality(Nullable(String)),
    customer_id     Nullable(String),
    customer_tier   LowCardinality(String),
    product         Nullable(String),
    version         UInt64,
    kafka_topic     LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (order_id, stage, visit)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE VIEW IF NOT EXISTS stage_visits_current AS
SELECT * EXCEPT (kafka_topic, kafka_partition, kafka_offset, ingested_at) FROM stage_visits FINAL;

-- Alerts (`alerts`), re-published on every status change. version = Kafka offset:
-- the topic is keyed by alert_id, so the latest record of an alert in its
-- partition log has the highest offset, whatever its timestamps say.
CREATE TABLE IF NOT EXISTS alerts (
    alert_id        String,
    type            LowCardinality(String),
    severity        LowCardinality(String),
    status          LowCardinality(String),
    order_id        Nullable(String),
    unit_id         Nullable(String),
    stage           LowCardinality(Nullable(String)),
    visit           Nullable(UInt16),
    deadline        DateTime64(3, 'UTC'),
    detected_at     DateTime64(3, 'UTC'),
    fulfilled_at    Nullable(DateTime64(3, 'UTC')),
    lateness_s      Nullable(Float64),
    customer_id     Nullable(String),
    customer_name   Nullable(String),
    customer_tier   LowCardinality(String),
    cause_unit_id   Nullable(String),
    cause_reason    LowCardinality(Nullable(String)),
    cause_since     Nullable(DateTime64(3, 'UTC')),
    details         String,
    version         UInt64,
    kafka_topic     LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY alert_id
SETTINGS non_replicated_deduplication_window = 1000;

CREATE VIEW IF NOT EXISTS alerts_current AS
SELECT * EXCEPT (kafka_topic, kafka_partition, kafka_offset, ingested_at) FROM alerts FINAL;

-- Rejected input records (`dead-letter`), append-only.
CREATE TABLE IF NOT EXISTS dead_letters (
    dead_letter_id   String,
    source_kind      LowCardinality(String),
    source_topic     LowCardinality(Nullable(String)),
    source_partition Nullable(Int32),
    source_offset    Nullable(Int64),
    request_id       Nullable(String),
    reason_code      LowCardinality(String),
    reason           String,
    errors           String,
    key_b64          Nullable(String),
    value_b64        Nullable(String),
    failed_at        DateTime64(3, 'UTC'),
    kafka_topic      LowCardinality(String),
    kafka_partition  UInt16,
    kafka_offset     UInt64,
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(failed_at)
ORDER BY (reason_code, failed_at, dead_letter_id)
TTL toDateTime(failed_at) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per finished webhook delivery (delivered or given up), written by
-- `chainwatch notify` to the `webhook-deliveries` topic and sunk from there.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    webhook_id       String,
    alert_id         String,
    alert_status     LowCardinality(String),
    alert_type       LowCardinality(String),
    endpoint         LowCardinality(String),
    url_host         LowCardinality(String),
    outcome          LowCardinality(String),
    attempts         UInt16,
    status_codes     Array(UInt16),
    last_error       String,
    first_attempt_at DateTime64(3, 'UTC'),
    finished_at      DateTime64(3, 'UTC'),
    latency_ms       Float64,
    kafka_topic      LowCardinality(String),
    kafka_partition  UInt16,
    kafka_offset     UInt64,
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(finished_at)
ORDER BY (endpoint, finished_at, webhook_id)
TTL toDateTime(finished_at) + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- Hourly rollups. A retried (de-duplicated) insert does not fire the views again.
-- Scan throughput per stage, unit and action.
CREATE TABLE IF NOT EXISTS scans_hourly (
    hour    DateTime('UTC'),
    stage   LowCardinality(String),
    unit_id LowCardinality(String),
    action  LowCardinality(String),
    events  UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, stage, unit_id, action)
TTL hour + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS scans_hourly_mv TO scans_hourly AS
SELECT toStartOfHour(event_time) AS hour, stage, unit_id, action, count() AS events
FROM scans GROUP BY hour, stage, unit_id, action;

-- Ended visits and SLA compliance per stage, unit and customer tier, by the
-- hour the visit ended. Every snapshot repeats an order's visits, so the counts
-- are exact distinct counts of (order_id, visit), not row counts.
CREATE TABLE IF NOT EXISTS stage_sla_hourly (
    hour            DateTime('UTC'),
    stage           LowCardinality(String),
    unit_id         LowCardinality(String),
    customer_tier   LowCardinality(String),
    completed       AggregateFunction(uniqExact, String, UInt16),
    on_time         AggregateFunction(uniqExactIf, String, UInt16, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, stage, unit_id, customer_tier)
TTL hour + INTERVAL {ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS stage_sla_hourly_mv TO stage_sla_hourly AS
SELECT
    toStartOfHour(assumeNotNull(ended_at)) AS hour,
    stage,
    unit_id,
    customer_tier,
    uniqExactState(order_id, visit) AS completed,
    uniqExactIfState(order_id, visit, toUInt8(ifNull(on_time, 0) = 1)) AS on_time
FROM stage_visits
WHERE ended_at IS NOT NULL
GROUP BY hour, stage, unit_id, customer_tier;

CREATE VIEW IF NOT EXISTS stage_sla_hourly_view AS
SELECT
    hour,
    stage,
    unit_id,
    customer_tier,
    uniqExactMerge(completed) AS completed_visits,
    uniqExactIfMerge(on_time) AS on_time_visits,
    on_time_visits / completed_visits AS sla_compliance
FROM stage_sla_hourly
GROUP BY hour, stage, unit_id, customer_tier;
