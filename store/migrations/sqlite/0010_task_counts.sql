-- Counters for the dashboard and /metrics (issue 15): how many finished
-- tasks each queue keeps in each final state, and how many finished each
-- minute. Counting the finished tasks themselves scans them all (every
-- task retention keeps); these tables hold a few rows a queue.
--
-- The same tables as on PostgreSQL (0012 there), kept more sparingly, as
-- SQLite's one writer pays every trigger statement for every row: a task
-- that finishes adds one upsert, to its minute in `task_throughput`;
-- `task_counts` holds the finished tasks of the minutes older than that
-- table keeps (folded in by the retention pass) less those deleted or
-- retried since, and a final state's count is the two added up. The
-- unfinished states are counted from their indexes when read. Every row is
-- in shard 0. (Measured in BENCHMARKS.md, "Counters".)

-- Finished tasks of the minutes `task_throughput` no longer holds, less
-- those deleted or retried since, by queue and final state (on PostgreSQL:
-- the tasks in every state).
CREATE TABLE task_counts (
    queue TEXT    NOT NULL,
    state TEXT    NOT NULL,
    shard INTEGER NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (queue, state, shard)
) WITHOUT ROWID;

-- Tasks that became final in each minute (Unix time / 60), by queue.
CREATE TABLE task_throughput (
    minute    INTEGER NOT NULL,
    queue     TEXT    NOT NULL,
    shard     INTEGER NOT NULL,
    succeeded INTEGER NOT NULL,
    failed    INTEGER NOT NULL,
    cancelled INTEGER NOT NULL,
    PRIMARY KEY (minute, queue, shard)
) WITHOUT ROWID;

INSERT INTO task_counts (queue, state, shard, n)
SELECT queue, state, 0, COUNT(*) FROM tasks
WHERE state IN ('succeeded', 'failed', 'cancelled') GROUP BY queue, state;

-- Into a final state: its minute. Out of one (a task retried): one less
-- in `task_counts`, so the minute keeps what finished in it. Both ride in
-- the history's trigger (0005), whose line they add to: one trigger a
-- change of state. A task's queue is set when it is created and never
-- changes.
DROP TRIGGER tasks_history_update;
CREATE TRIGGER tasks_history_update AFTER UPDATE OF state ON tasks
WHEN OLD.state <> NEW.state
BEGIN
    INSERT INTO task_history (task_id, from_state, to_state, changed_by, owner, attempt, at)
    VALUES (NEW.id, OLD.state, NEW.state, NEW.changed_by, OLD.executor_id,
            CASE WHEN OLD.state IN ('running','suspended') THEN OLD.attempts ELSE NEW.attempts END,
            NEW.updated_at);
    INSERT INTO task_throughput (minute, queue, shard, succeeded, failed, cancelled)
    SELECT unixepoch() / 60, NEW.queue, 0,
           NEW.state = 'succeeded', NEW.state = 'failed', NEW.state = 'cancelled'
    WHERE NEW.state IN ('succeeded', 'failed', 'cancelled')
      AND OLD.state NOT IN ('succeeded', 'failed', 'cancelled')
    ON CONFLICT (minute, queue, shard) DO UPDATE SET
        succeeded = succeeded + excluded.succeeded,
        failed = failed + excluded.failed,
        cancelled = cancelled + excluded.cancelled;
    INSERT INTO task_counts (queue, state, shard, n)
    SELECT OLD.queue, OLD.state, 0, -1
    WHERE OLD.state IN ('succeeded', 'failed', 'cancelled')
    ON CONFLICT (queue, state, shard) DO UPDATE SET n = n - 1;
END;

CREATE TRIGGER tasks_counts_delete AFTER DELETE ON tasks
WHEN OLD.state IN ('succeeded', 'failed', 'cancelled')
BEGIN
    INSERT INTO task_counts (queue, state, shard, n) VALUES (OLD.queue, OLD.state, 0, -1)
    ON CONFLICT (queue, state, shard) DO UPDATE SET n = n - 1;
END;
