-- Lighter writes for a task's life (issue 14; measured with
-- `cargo bench --bench throughput` and `perf`, see BENCHMARKS.md). A task's
-- state changes twice (claim, finish) and PostgreSQL cannot update a row in
-- place when an indexed column changes, so every change adds an entry to
-- every index whose predicate the new row matches: index insertions and the
-- history trigger were most of the database's time a task.
--
-- 1. History lines written once a statement, not once a row.
--
-- The row trigger ran a PL/pgSQL call and a one-row INSERT for every task a
-- statement touched: measured on a batch of 1,000 creates, 12.5 ms of the
-- INSERT's 32 ms; on a claim of 60, 1.1 of 3 ms. Statement triggers with
-- transition tables write the same lines with one INSERT … SELECT a
-- statement (4.1 ms for the 1,000, 0.6 for the 60). The lines are the same
-- as before (see 0005_queues.sql): a line for every insert, and a line for
-- every update that changed the state, with the owner it had and, for a
-- run that ends there, that run's attempt.
--
-- PostgreSQL allows transition tables only on a trigger for one event and
-- without a column list, so there are two triggers, and the update trigger
-- fires for every UPDATE of tasks (one that changes no state writes
-- nothing: the join keeps only rows whose state changed).
DROP TRIGGER tasks_history ON tasks;
DROP FUNCTION courier_task_history();

CREATE FUNCTION courier_task_history_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_history (task_id, from_state, to_state, changed_by, owner, attempt, at)
    SELECT n.id, NULL, n.state, n.changed_by, NULL, n.attempts, n.updated_at FROM new_rows n;
    RETURN NULL;
END;
$$;

CREATE FUNCTION courier_task_history_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_history (task_id, from_state, to_state, changed_by, owner, attempt, at)
    SELECT n.id, o.state, n.state, n.changed_by, o.executor_id,
           CASE WHEN o.state IN ('running', 'suspended') THEN o.attempts ELSE n.attempts END,
           n.updated_at
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE o.state IS DISTINCT FROM n.state;
    RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_history_inserted AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION courier_task_history_inserted();
CREATE TRIGGER tasks_history_updated AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION courier_task_history_updated();

-- 2. Indexes that hold only the rows their queries read.
--
-- `tasks_retention` serves retention, which reads finished tasks only
-- (`finished_at < $2`): rows that have not finished no longer enter it,
-- which spares an entry at the create and at the claim.
DROP INDEX tasks_retention;
CREATE INDEX tasks_retention ON tasks (state, finished_at)
    WHERE parent_id IS NULL AND finished_at IS NOT NULL;

-- `tasks_executor` serves the takeover and an executor's own held tasks,
-- which read held tasks only: a finished task (which keeps the executor
-- that ran it) no longer enters it.
DROP INDEX tasks_executor;
CREATE INDEX tasks_executor ON tasks (executor_id)
    WHERE executor_id IS NOT NULL AND state IN ('running','suspended');

-- 3. One index for the history, not two: lines are only ever read by task,
-- in order, so `(task_id, id)` is the key, and the separate index on `id`
-- alone (three entries a task) goes.
ALTER TABLE task_history DROP CONSTRAINT task_history_pkey;
DROP INDEX task_history_task;
ALTER TABLE task_history ADD PRIMARY KEY (task_id, id);
