-- A task can be created already claimed (issue 24, point 6: an eager start,
-- `Store::create_task_started`): a sync-wait request on a process whose
-- executor has a free slot inserts the task `running`, held by that
-- executor, and saves the claim's statement and commit. Its history shows
-- what a claim would have written: created `pending` by its creator, then
-- `pending → running` by the executor, in that order. Rows inserted in any
-- other state get one line, as before; the counters count the row's state.
CREATE OR REPLACE FUNCTION courier_task_history_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_history (task_id, from_state, to_state, changed_by, owner, attempt, at)
    SELECT id, from_state, to_state, changed_by, NULL, attempt, at FROM (
        SELECT n.id, NULL AS from_state,
               CASE WHEN n.state = 'running' THEN 'pending' ELSE n.state END AS to_state,
               n.changed_by, CASE WHEN n.state = 'running' THEN 0 ELSE n.attempts END AS attempt,
               n.updated_at AS at, 0 AS step
        FROM new_rows n
        UNION ALL
        SELECT n.id, 'pending', 'running', n.executor_id, n.attempts, n.updated_at, 1
        FROM new_rows n WHERE n.state = 'running'
    ) lines ORDER BY step;
    INSERT INTO task_counts AS c (queue, state, shard, n)
    SELECT queue, state, pg_backend_pid(), COUNT(*) FROM new_rows
    GROUP BY queue, state ORDER BY queue, state
    ON CONFLICT (queue, state, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END;
$$;
