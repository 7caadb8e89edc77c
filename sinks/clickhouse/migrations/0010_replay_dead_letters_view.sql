-- `replay_dead_letters_current` again: a view made with `SELECT *` keeps the
-- columns its table had when it was made, so the one 0007 made lacked what 0008
-- added to `replay_dead_letters` (the scenario file and line of a bad line, and
-- a cut envelope's `truncated`, sizes and SHA-256): a stored replay's view named
-- no line to fix. Made again, it shows them (the table lost nothing).
DROP VIEW IF EXISTS replay_dead_letters_current;

CREATE VIEW IF NOT EXISTS replay_dead_letters_current AS
SELECT * EXCEPT (attempt) FROM replay_dead_letters
WHERE (run_id, attempt) GLOBAL IN (SELECT run_id, attempt FROM replay_runs FINAL);
