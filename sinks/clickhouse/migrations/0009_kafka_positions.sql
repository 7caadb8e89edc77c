-- The sink's read-back of what is stored (`sinks/clickhouse/stored_offsets.py`,
-- `read_stored`: per newly assigned partition and table, the offsets at or
-- after the committed one) filters on kafka_topic, kafka_partition and
-- kafka_offset, which no table's ORDER BY leads with: it scanned the whole
-- table at every start and rebalance, and on months of events ran into the
-- request deadline. A projection keeps those three columns sorted by them, so
-- the read reads only the partition's granules from the offset on: 2 of 24
-- granules of a merged 200,000-row `alerts`, where a minmax/set skip index
-- still read 26 of 27 (a table sorted by id mixes every partition and offset
-- in each granule). (`kafka_source.py`'s highest offset of a topic, run only
-- with `--new-kafka-epoch`, is not helped: it reads 24 of 24.)
--
-- ReplacingMergeTree tables refuse a projection unless told what a
-- de-duplicating merge does with it: `rebuild` (ClickHouse 24.8+) builds it
-- again from the rows the merge keeps, so it never names a row no longer there.
ALTER TABLE customers MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';
ALTER TABLE orders MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';
ALTER TABLE order_state MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';
ALTER TABLE stage_visits MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';
ALTER TABLE alerts MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';

-- A lightweight `DELETE FROM` must not leave the projection naming deleted
-- rows: the read-back would report their offsets as stored and the sink would
-- skip those records. Set before the projection is added: on a server whose
-- default is `rebuild`, this migration stopped between the two would leave a
-- window. `rebuild` does exactly that (ClickHouse issue #111791, open; a
-- later MATERIALIZE PROJECTION too: chDB 26.9), `drop` leaves the parts it
-- touched without the projection, unable to merge with the others. So a table
-- refuses a lightweight delete (`throw`, ClickHouse's default, set here so a
-- server's merge_tree defaults cannot change it), and a clean-up (e.g. of one
-- customer's data) is an `ALTER TABLE t DELETE WHERE ...` mutation, which
-- rewrites the parts with their projection (docs/sinks.md).
ALTER TABLE scans MODIFY SETTING lightweight_mutation_projection_mode = 'throw';
ALTER TABLE order_events MODIFY SETTING lightweight_mutation_projection_mode = 'throw';
ALTER TABLE unit_status MODIFY SETTING lightweight_mutation_projection_mode = 'throw';
ALTER TABLE customers MODIFY SETTING lightweight_mutation_projection_mode = 'throw';
ALTER TABLE orders MODIFY SETTING lightweight_mutation_projection_mode = 'throw';
ALTER TABLE order_state MODIFY SETTING lightweight_mutation_projection_mode = 'throw';
ALTER TABLE stage_visits MODIFY SETTING lightweight_mutation_projection_mode = 'throw';
ALTER TABLE alerts MODIFY SETTING lightweight_mutation_projection_mode = 'throw';
ALTER TABLE dead_letters MODIFY SETTING lightweight_mutation_projection_mode = 'throw';
ALTER TABLE webhook_deliveries MODIFY SETTING lightweight_mutation_projection_mode = 'throw';

-- Rows deleted by a lightweight `DELETE FROM` before this migration are only
-- masked, still in the parts: MATERIALIZE PROJECTION builds the projection from
-- every row, masked ones included (ClickHouse issue #111791), so the read-back
-- would name their offsets as stored and the sink skip those records if they
-- come again (offsets reset to reload them). The mask is applied first (the
-- masked rows removed from the parts): a mutation queued before the projection's
-- build, and a table's mutations run in order (on a part with nothing masked it
-- changes nothing). In the background, as the build below.
ALTER TABLE scans APPLY DELETED MASK SETTINGS mutations_sync = 0;
ALTER TABLE order_events APPLY DELETED MASK SETTINGS mutations_sync = 0;
ALTER TABLE unit_status APPLY DELETED MASK SETTINGS mutations_sync = 0;
ALTER TABLE customers APPLY DELETED MASK SETTINGS mutations_sync = 0;
ALTER TABLE orders APPLY DELETED MASK SETTINGS mutations_sync = 0;
ALTER TABLE order_state APPLY DELETED MASK SETTINGS mutations_sync = 0;
ALTER TABLE stage_visits APPLY DELETED MASK SETTINGS mutations_sync = 0;
ALTER TABLE alerts APPLY DELETED MASK SETTINGS mutations_sync = 0;
ALTER TABLE dead_letters APPLY DELETED MASK SETTINGS mutations_sync = 0;
ALTER TABLE webhook_deliveries APPLY DELETED MASK SETTINGS mutations_sync = 0;

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
-- the rows are not changed). `mutations_sync = 0` on each statement: chDB's
-- session (and a server profile may) defaults to waiting for a mutation, which
-- would hold `chainwatch db migrate` and the sink's start, unstoppable, for the
-- whole rebuild of every table (and, on a server, run into the 300 s deadline of
-- a schema change, each retry queueing another rebuild). Until a part has it,
-- that part is read as before (and merges only with parts without it), so the
-- read-back is right throughout and fast once the mutations are done (`SELECT *
-- FROM system.mutations WHERE NOT is_done`; on a cluster, which builds each
-- replica's own, `clusterAllReplicas('<cluster>', system.mutations)`). Running
-- this migration again (one that failed half-way) queues another build of each
-- table, a scan of its three kafka columns: harmless, and such a duplicate may
-- be ended with `KILL MUTATION`. Kill only a duplicate: a table's only build
-- killed, or failed for good, leaves the parts stored before this migration
-- without the projection for ever (read in full at every read-back, never
-- merged with newer parts), and `chainwatch db migrate` will not run it again
-- (0009 is recorded): queue it again with `ALTER TABLE t MATERIALIZE
-- PROJECTION kafka_positions SETTINGS mutations_sync = 0` (docs/sinks.md).
ALTER TABLE scans MATERIALIZE PROJECTION kafka_positions SETTINGS mutations_sync = 0;
ALTER TABLE order_events MATERIALIZE PROJECTION kafka_positions SETTINGS mutations_sync = 0;
ALTER TABLE unit_status MATERIALIZE PROJECTION kafka_positions SETTINGS mutations_sync = 0;
ALTER TABLE customers MATERIALIZE PROJECTION kafka_positions SETTINGS mutations_sync = 0;
ALTER TABLE orders MATERIALIZE PROJECTION kafka_positions SETTINGS mutations_sync = 0;
ALTER TABLE order_state MATERIALIZE PROJECTION kafka_positions SETTINGS mutations_sync = 0;
ALTER TABLE stage_visits MATERIALIZE PROJECTION kafka_positions SETTINGS mutations_sync = 0;
ALTER TABLE alerts MATERIALIZE PROJECTION kafka_positions SETTINGS mutations_sync = 0;
ALTER TABLE dead_letters MATERIALIZE PROJECTION kafka_positions SETTINGS mutations_sync = 0;
ALTER TABLE webhook_deliveries MATERIALIZE PROJECTION kafka_positions SETTINGS mutations_sync = 0;
