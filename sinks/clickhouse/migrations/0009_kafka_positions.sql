-- The sink's read-back of what is stored (`sinks/clickhouse/sink.py`,
-- `load_stored_offsets`: per newly assigned partition and table, the offsets at
-- or after the committed one) filters on kafka_topic, kafka_partition and
-- kafka_offset, which no table's ORDER BY leads with: it scanned the whole
-- table at every start and rebalance, and on months of events ran into the
-- request deadline. A projection keeps those three columns sorted by them, so
-- the read (and `kafka_source.py`'s highest offset of a topic) reads only the
-- partition's granules from the offset on: 2 of 24 granules of a merged
-- 200,000-row `alerts`, where a minmax/set skip index still read 26 of 27 (a
-- table sorted by id mixes every partition and offset in each granule).
--
-- ReplacingMergeTree tables refuse a projection unless told what a
-- de-duplicating merge does with it: `rebuild` (ClickHouse 24.8+) builds it
-- again from the rows the merge keeps, so it never names a row no longer there.
ALTER TABLE customers MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';
ALTER TABLE orders MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';
ALTER TABLE order_state MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';
ALTER TABLE stage_visits MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';
ALTER TABLE alerts MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';

ALTER TABLE scans ADD PROJECTION IF NOT EXISTS kafka_positions
    (SELECT kafka_topic, kafka_partition, kafka_offset ORDER BY kafka_topic, kafka_partition, kafka_offset);
ALTER TABLE order_events ADD PROJECTION IF NOT EXISTS kafka_positions
    (SELECT kafka_topic, kafka_partition, kafka_offset ORDER BY kafka_topic, kafka_partition, kafka_offset);
ALTER TABLE unit_status ADD PROJECTION IF NOT EXISTS kafka_positions
    (SELECT kafka_topic, kafka_partition, kafka_offset ORDER BY kafka_topic, kafka_partition, kafka_offset);
ALTER TABLE customers ADD PROJECTION IF NOT EXISTS kafka_positions
    (SELECT kafka_topic, kafka_partition, kafka_offset ORDER BY kafka_topic, kafka_partition, kafka_offset);
ALTER TABLE orders ADD PROJECTION IF NOT EXISTS kafka_positions
    (SELECT kafka_topic, kafka_partition, kafka_offset ORDER BY kafka_topic, kafka_partition, kafka_offset);
ALTER TABLE order_state ADD PROJECTION IF NOT EXISTS kafka_positions
    (SELECT kafka_topic, kafka_partition, kafka_offset ORDER BY kafka_topic, kafka_partition, kafka_offset);
ALTER TABLE stage_visits ADD PROJECTION IF NOT EXISTS kafka_positions
    (SELECT kafka_topic, kafka_partition, kafka_offset ORDER BY kafka_topic, kafka_partition, kafka_offset);
ALTER TABLE alerts ADD PROJECTION IF NOT EXISTS kafka_positions
    (SELECT kafka_topic, kafka_partition, kafka_offset ORDER BY kafka_topic, kafka_partition, kafka_offset);
ALTER TABLE dead_letters ADD PROJECTION IF NOT EXISTS kafka_positions
    (SELECT kafka_topic, kafka_partition, kafka_offset ORDER BY kafka_topic, kafka_partition, kafka_offset);
ALTER TABLE webhook_deliveries ADD PROJECTION IF NOT EXISTS kafka_positions
    (SELECT kafka_topic, kafka_partition, kafka_offset ORDER BY kafka_topic, kafka_partition, kafka_offset);

-- Rows stored before this migration: built for every existing part by a
-- background mutation (it reads the three columns and writes the sorted copy;
-- the rows are not changed). The migration does not wait for it; until a part
-- has it, that part is read as before, so the read-back is right throughout and
-- fast once the mutations are done (`SELECT * FROM system.mutations WHERE NOT
-- is_done`). On a replicated cluster each replica builds its own.
ALTER TABLE scans MATERIALIZE PROJECTION kafka_positions;
ALTER TABLE order_events MATERIALIZE PROJECTION kafka_positions;
ALTER TABLE unit_status MATERIALIZE PROJECTION kafka_positions;
ALTER TABLE customers MATERIALIZE PROJECTION kafka_positions;
ALTER TABLE orders MATERIALIZE PROJECTION kafka_positions;
ALTER TABLE order_state MATERIALIZE PROJECTION kafka_positions;
ALTER TABLE stage_visits MATERIALIZE PROJECTION kafka_positions;
ALTER TABLE alerts MATERIALIZE PROJECTION kafka_positions;
ALTER TABLE dead_letters MATERIALIZE PROJECTION kafka_positions;
ALTER TABLE webhook_deliveries MATERIALIZE PROJECTION kafka_positions;
