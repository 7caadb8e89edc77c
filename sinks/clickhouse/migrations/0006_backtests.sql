-- Plan backtests (`chainwatch backtest`, docs/backtest.md): one row per replay of
-- the history under one plan, and that replay's final alerts. The run row is
-- written last, after all of its alerts: a backtest stopped half-way leaves
-- alerts without a run, which every reader ignores (they join on the runs).
-- `backtest_id` groups the runs of one command (one per --plan, `plan_index` in
-- the order given). No TTL: runs are kept until someone deletes them.
CREATE TABLE IF NOT EXISTS backtest_runs (
    run_id          String,
    backtest_id     String,
    name            String,
    plan_index      UInt16,
    plan_name       String,
    plan_sha256     String,
    plan_yaml       String,
    input_file      String,
    input_sha256    String,
    until           Nullable(DateTime64(3, 'UTC')),
    input_records   UInt64,
    published       UInt64,
    dead_letters    UInt64,
    alerts          UInt64,
    started_at      DateTime64(3, 'UTC'),
    finished_at     DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (backtest_id, plan_index, run_id);

-- The alert columns of `alerts`, without the Kafka coordinates: the final state
-- of each alert of the run (retracted ones left out, as `chainwatch replay` prints).
CREATE TABLE IF NOT EXISTS backtest_alerts (
    run_id          String,
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
ORDER BY (run_id, alert_id);
