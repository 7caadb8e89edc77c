-- The user Grafana reads with: SELECT on the Chainwatch database only, and
-- readonly = 2 (no writes or DDL, but the per-query settings Grafana's
-- ClickHouse plugin sends are allowed). Run once as an admin user, e.g.
--   clickhouse-client --multiquery < deploy/grafana/clickhouse-readonly.sql
-- after replacing the password.
CREATE USER IF NOT EXISTS chainwatch_grafana
    IDENTIFIED WITH sha256_password BY 'change-me'
    SETTINGS readonly = 2;
GRANT SELECT ON chainwatch.* TO chainwatch_grafana;
