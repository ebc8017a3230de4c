-- When a claimed task had become pending (issue 15: the queue-wait
-- histogram). The claim sets it from the row's `updated_at` as it was
-- before the claim (every move to pending sets `updated_at`), in the same
-- UPDATE, and returns it: SQLite's RETURNING sees only the new row, so the
-- old value has to land in a column of its own. Nothing else writes it.
ALTER TABLE tasks ADD COLUMN pending_since TIMESTAMPTZ;
