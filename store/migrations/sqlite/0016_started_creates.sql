-- A task can be created already claimed (issue 24, point 6: an eager start,
-- `Store::create_task_started`): a sync-wait request on a process whose
-- executor has a free slot inserts the task `running`, held by that
-- executor, and saves the claim's statement and commit. Its history shows
-- what a claim would have written: created `pending` by its creator, then
-- `pending → running` by the executor, in that order. Rows inserted in any
-- other state get one line, as before; the counters count the row's state.
DROP TRIGGER tasks_history_insert;
CREATE TRIGGER tasks_history_insert AFTER INSERT ON tasks
BEGIN
    INSERT INTO task_history (task_id, from_state, to_state, changed_by, owner, attempt, at)
    VALUES (NEW.id, NULL, CASE WHEN NEW.state = 'running' THEN 'pending' ELSE NEW.state END,
            NEW.changed_by, NULL, CASE WHEN NEW.state = 'running' THEN 0 ELSE NEW.attempts END,
            NEW.updated_at);
    INSERT INTO task_history (task_id, from_state, to_state, changed_by, owner, attempt, at)
    SELECT NEW.id, 'pending', 'running', NEW.executor_id, NULL, NEW.attempts, NEW.updated_at
    WHERE NEW.state = 'running';
    INSERT INTO task_counts (queue, state, shard, n) VALUES (NEW.queue, NEW.state, 0, 1)
    ON CONFLICT (queue, state, shard) DO UPDATE SET n = n + 1;
END;
