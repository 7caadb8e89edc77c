-- Dead letters keep all of their envelope (CONTRACT v1.2): where a replay line
-- or an imported row came from (file, line, and the position in an EPCIS body),
-- and, for an envelope cut to fit Kafka's message limit, that it was cut with
-- the original's size and SHA-256. Before, the sink refused dead letters of
-- `chainwatch import` (source kind `import`) as invalid records, and dropped
-- these fields of the others. Stored replays (`replay_dead_letters`, 0007)
-- keep the same columns: a replay's bad lines are named by file and line.
ALTER TABLE dead_letters
    ADD COLUMN IF NOT EXISTS source_file Nullable(String) AFTER request_id,
    ADD COLUMN IF NOT EXISTS source_line Nullable(UInt32) AFTER source_file,
    ADD COLUMN IF NOT EXISTS source_index Nullable(UInt32) AFTER source_line,
    ADD COLUMN IF NOT EXISTS truncated Bool DEFAULT false AFTER value_b64,
    ADD COLUMN IF NOT EXISTS original_size Nullable(UInt64) AFTER truncated,
    ADD COLUMN IF NOT EXISTS original_sha256 Nullable(String) AFTER original_size,
    ADD COLUMN IF NOT EXISTS original_key_size Nullable(UInt64) AFTER original_sha256,
    ADD COLUMN IF NOT EXISTS original_key_sha256 Nullable(String) AFTER original_key_size;

ALTER TABLE replay_dead_letters
    ADD COLUMN IF NOT EXISTS source_file Nullable(String) AFTER request_id,
    ADD COLUMN IF NOT EXISTS source_line Nullable(UInt32) AFTER source_file,
    ADD COLUMN IF NOT EXISTS source_index Nullable(UInt32) AFTER source_line,
    ADD COLUMN IF NOT EXISTS truncated Bool DEFAULT false AFTER value_b64,
    ADD COLUMN IF NOT EXISTS original_size Nullable(UInt64) AFTER truncated,
    ADD COLUMN IF NOT EXISTS original_sha256 Nullable(String) AFTER original_size,
    ADD COLUMN IF NOT EXISTS original_key_size Nullable(UInt64) AFTER original_sha256,
    ADD COLUMN IF NOT EXISTS original_key_sha256 Nullable(String) AFTER original_key_size;
