-- Stored replays (`chainwatch replay --sink`, docs/replay.md): the results of a
-- replay under its run id, so the dashboards and `chainwatch sql` can show a
-- replay whose topics are gone. Same pattern as the backtest tables (0006): the
-- result rows are written first, the run row last, and readers see a run's rows
-- only through its run row. Each storing is an `attempt` (a fresh id): the
-- run row names the attempt it completes and `replay_runs` keeps the latest
-- run row of a run id, so re-running a run id replaces its results as seen by
-- the *_current views (never doubles them), and an attempt stopped half-way is
-- invisible. Rows of replaced attempts stay until someone deletes them, like
-- the runs themselves (no TTL).
CREATE TABLE IF NOT EXISTS replay_runs (
    run_id          String,
    attempt         String,
    input_file      String,
    input_sha256    String,
    plan_name       String,
    plan_sha256     String,
    until           Nullable(DateTime64(3, 'UTC')),
    partitions      UInt16,
    workers         UInt16,
    input_records   UInt64,
    published       UInt64,
    dead_letters    UInt64,
    alerts          UInt64,
    orders          UInt64,
    started_at      DateTime64(3, 'UTC'),
    finished_at     DateTime64(3, 'UTC'),
    stored_at       DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(stored_at)
ORDER BY run_id;

-- The final state of each alert of the run, as `chainwatch replay` prints it
-- (retracted ones left out): the columns of `backtest_alerts`.
CREATE TABLE IF NOT EXISTS replay_alerts (
    run_id          String,
    attempt         String,
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
    details         String
)
ENGINE = MergeTree
ORDER BY (run_id, attempt, alert_id);

-- The last snapshot of each order of the run (`order-state`, highest version):
-- the columns of `order_state` without the Kafka coordinates.
CREATE TABLE IF NOT EXISTS replay_order_state (
    run_id          String,
    attempt         String,
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
    as_of           DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (run_id, attempt, order_id);

-- Every dead letter of the run once (bad scenario lines and what the engine
-- rejected): the columns of `dead_letters` without the Kafka coordinates.
CREATE TABLE IF NOT EXISTS replay_dead_letters (
    run_id           String,
    attempt          String,
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
    failed_at        DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (run_id, attempt, dead_letter_id);

-- What to read: each run's latest complete attempt, one row per run / alert /
-- order / dead letter. (GLOBAL IN: on a cluster both sides are Distributed.)
CREATE VIEW IF NOT EXISTS replay_runs_current AS
SELECT * FROM replay_runs FINAL;

CREATE VIEW IF NOT EXISTS replay_alerts_current AS
SELECT * EXCEPT (attempt) FROM replay_alerts
WHERE (run_id, attempt) GLOBAL IN (SELECT run_id, attempt FROM replay_runs FINAL);

CREATE VIEW IF NOT EXISTS replay_order_state_current AS
SELECT * EXCEPT (attempt) FROM replay_order_state
WHERE (run_id, attempt) GLOBAL IN (SELECT run_id, attempt FROM replay_runs FINAL);

CREATE VIEW IF NOT EXISTS replay_dead_letters_current AS
SELECT * EXCEPT (attempt) FROM replay_dead_letters
WHERE (run_id, attempt) GLOBAL IN (SELECT run_id, attempt FROM replay_runs FINAL);
