-- Lighter writes for a task's life; see ../postgres/0008_lighter_task_writes.sql.
-- SQLite keeps its row triggers (it has no others, and they run
-- in-process), and its history already has one index (`id` is the rowid).

-- Retention reads finished tasks only.
DROP INDEX tasks_retention;
CREATE INDEX tasks_retention ON tasks (state, finished_at)
    WHERE parent_id IS NULL AND finished_at IS NOT NULL;

-- The takeover and an executor's own held tasks read held tasks only.
DROP INDEX tasks_executor;
CREATE INDEX tasks_executor ON tasks (executor_id)
    WHERE executor_id IS NOT NULL AND state IN ('running','suspended');
