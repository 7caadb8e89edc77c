-- `replay_dead_letters_current` again: a view made with `SELECT *` keeps the
-- columns its table had when it was made, so the one 0007 made lacked what 0008
-- added to `replay_dead_letters` (the scenario file and line of a bad line, and
-- a cut envelope's `truncated`, sizes and SHA-256): a stored replay's view named
-- no line to fix. Made again, it shows them (the table lost nothing).
-- Replaced in one statement, not dropped and created in two: a reader of the
-- view between those (a dashboard, on a server the sink migrates) was told it
-- does not exist. Running it again is harmless, as `IF NOT EXISTS` is elsewhere.
CREATE OR REPLACE VIEW replay_dead_letters_current AS
SELECT * EXCEPT (attempt) FROM replay_dead_letters
WHERE (run_id, attempt) GLOBAL IN (SELECT run_id, attempt FROM replay_runs FINAL);
