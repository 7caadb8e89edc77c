-- TTL counts from arrival (`ingested_at`), not from event time: a backfill of
-- events dated 2000 is kept `ttl_days` like any other row instead of being
-- deleted at the next merge, and an event time outside DateTime's 1970-2106
-- range can never wrap the TTL arithmetic (`toDateTime(event_time)` did).
ALTER TABLE scans MODIFY TTL toDateTime(ingested_at) + INTERVAL {ttl_days} DAY;
ALTER TABLE order_events MODIFY TTL toDateTime(ingested_at) + INTERVAL {ttl_days} DAY;
ALTER TABLE unit_status MODIFY TTL toDateTime(ingested_at) + INTERVAL {ttl_days} DAY;
ALTER TABLE dead_letters MODIFY TTL toDateTime(ingested_at) + INTERVAL {ttl_days} DAY;
ALTER TABLE webhook_deliveries MODIFY TTL toDateTime(ingested_at) + INTERVAL {ttl_days} DAY;

-- Hourly rollups are a few rows per hour and are keyed by event hour: they keep
-- no TTL (one keyed by event time would delete a backfill's rollups at once).
ALTER TABLE scans_hourly REMOVE TTL;
ALTER TABLE stage_sla_hourly REMOVE TTL;

-- Their `hour` is a DateTime (1970-2106): rows outside that range stay in the
-- raw tables (DateTime64) and are left out of the rollups rather than wrapped.
-- The contract (v1.2) bounds timestamps to 1971-2100, so none should arrive.
DROP VIEW IF EXISTS scans_hourly_mv;
CREATE MATERIALIZED VIEW IF NOT EXISTS scans_hourly_mv TO scans_hourly AS
SELECT toStartOfHour(event_time) AS hour, stage, unit_id, action, count() AS events
FROM scans
WHERE event_time >= toDateTime64('1970-01-01 00:00:00', 3, 'UTC')
  AND event_time < toDateTime64('2106-01-01 00:00:00', 3, 'UTC')
GROUP BY hour, stage, unit_id, action;

DROP VIEW IF EXISTS stage_sla_hourly_mv;
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
  AND ended_at >= toDateTime64('1970-01-01 00:00:00', 3, 'UTC')
  AND ended_at < toDateTime64('2106-01-01 00:00:00', 3, 'UTC')
GROUP BY hour, stage, unit_id, customer_tier;
