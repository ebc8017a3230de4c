-- The unfinished states are counted by the triggers too (issue 24): until
-- now SQLite counted them from `tasks` when read, and with a million
-- waiting tasks one read of the queues' depths (the dashboard polls it)
-- took about a second of the machine's two cores. Measured before the
-- counters were first built, counting every state cost the writer no more
-- than counting the final ones only (BENCHMARKS.md, "Counters"); each
-- state change here is still one upsert statement (two rows: the old
-- state's -1, the new unfinished state's +1).
--
-- What `task_counts` holds now, per queue and state: an unfinished state's
-- count; a final state's count less what the minutes of `task_throughput`
-- still hold (the retention pass folds those in).

INSERT INTO task_counts (queue, state, shard, n)
SELECT queue, state, 0, COUNT(*) FROM tasks
WHERE state IN ('scheduled', 'pending', 'running', 'suspended') GROUP BY queue, state;

DROP TRIGGER tasks_history_insert;
CREATE TRIGGER tasks_history_insert AFTER INSERT ON tasks
BEGIN
    INSERT INTO task_history (task_id, from_state, to_state, changed_by, owner, attempt, at)
    VALUES (NEW.id, NULL, NEW.state, NEW.changed_by, NULL, NEW.attempts, NEW.updated_at);
    INSERT INTO task_counts (queue, state, shard, n) VALUES (NEW.queue, NEW.state, 0, 1)
    ON CONFLICT (queue, state, shard) DO UPDATE SET n = n + 1;
END;

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
    -- The old state's count, whatever it was (a final one: a retry, which
    -- its minute still holds); the new one's if unfinished (a final one
    -- counts in its minute).
    INSERT INTO task_counts (queue, state, shard, n)
    SELECT OLD.queue, OLD.state, 0, -1 WHERE TRUE
    UNION ALL
    SELECT NEW.queue, NEW.state, 0, 1
    WHERE NEW.state IN ('scheduled', 'pending', 'running', 'suspended')
    ON CONFLICT (queue, state, shard) DO UPDATE SET n = n + excluded.n;
END;

DROP TRIGGER tasks_counts_delete;
CREATE TRIGGER tasks_counts_delete AFTER DELETE ON tasks
BEGIN
    INSERT INTO task_counts (queue, state, shard, n) VALUES (OLD.queue, OLD.state, 0, -1)
    ON CONFLICT (queue, state, shard) DO UPDATE SET n = n - 1;
END;
