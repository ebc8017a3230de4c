-- Counters for the dashboard and /metrics (issue 15): how many tasks each
-- queue has in each state, and how many finished each minute. Counting the
-- tasks table itself scans it (160-250 ms for a million rows here, growing
-- with the retained history); these tables hold a few rows a queue.
--
-- Written by the history's statement triggers over transition tables (one
-- upsert a statement whatever its number of rows; see below). Each
-- database session writes its own rows (`shard` = its backend's pid), so
-- two sessions never wait on each other's counter rows and cannot deadlock
-- on them; a reader sums the shards. The retention sweep folds the rows of
-- sessions that are gone into shard 0 and drops minutes past three hours.
--
-- Writers are held for the migration's transaction: the tasks are counted
-- and the triggers put in place with no write in between, so a task
-- written meanwhile by a running deployment cannot be missed by both.
LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE;

-- Tasks now in each state, by queue.
CREATE TABLE task_counts (
    queue TEXT    NOT NULL,
    state TEXT    NOT NULL,
    shard INTEGER NOT NULL,
    n     BIGINT  NOT NULL,
    PRIMARY KEY (queue, state, shard)
);

-- Tasks that became final in each minute (Unix time / 60), by queue.
CREATE TABLE task_throughput (
    minute    BIGINT  NOT NULL,
    queue     TEXT    NOT NULL,
    shard     INTEGER NOT NULL,
    succeeded BIGINT  NOT NULL,
    failed    BIGINT  NOT NULL,
    cancelled BIGINT  NOT NULL,
    PRIMARY KEY (minute, queue, shard)
);

INSERT INTO task_counts (queue, state, shard, n)
SELECT queue, state, 0, COUNT(*) FROM tasks GROUP BY queue, state;

-- The history's statement triggers (0008) keep the counters too, in the
-- same pass over the statement's rows: one trigger call a statement. A
-- task's queue is set when it is created and never changes.
CREATE OR REPLACE FUNCTION courier_task_history_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_history (task_id, from_state, to_state, changed_by, owner, attempt, at)
    SELECT n.id, NULL, n.state, n.changed_by, NULL, n.attempts, n.updated_at FROM new_rows n;
    INSERT INTO task_counts AS c (queue, state, shard, n)
    SELECT queue, state, pg_backend_pid(), COUNT(*) FROM new_rows
    GROUP BY queue, state ORDER BY queue, state
    ON CONFLICT (queue, state, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END;
$$;

-- The rows whose state changed, found once (the join 0009 and 0010 keep a
-- hash join), give the history lines, the counters' changes and the
-- minute's finishes. A line leaving `running` or `suspended` carries that
-- run's attempt (as in 0008). Entries into a final state count in their
-- minute; a task that leaves one (retried) does not take its count back.
CREATE OR REPLACE FUNCTION courier_task_history_updated() RETURNS trigger LANGUAGE plpgsql
SET enable_nestloop = off SET enable_hashjoin = on AS $$
BEGIN
    WITH changed AS MATERIALIZED (
        SELECT n.id, o.state AS from_state, n.state AS to_state, n.changed_by,
               o.executor_id AS owner,
               CASE WHEN o.state IN ('running', 'suspended') THEN o.attempts ELSE n.attempts END AS attempt,
               n.updated_at, n.queue
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE o.state IS DISTINCT FROM n.state
    ), history AS (
        INSERT INTO task_history (task_id, from_state, to_state, changed_by, owner, attempt, at)
        SELECT id, from_state, to_state, changed_by, owner, attempt, updated_at FROM changed
    ), counts AS (
        INSERT INTO task_counts AS c (queue, state, shard, n)
        SELECT queue, state, pg_backend_pid(), SUM(d) FROM (
            SELECT queue, to_state AS state, 1 AS d FROM changed
            UNION ALL
            SELECT queue, from_state, -1 FROM changed
        ) x
        GROUP BY queue, state HAVING SUM(d) <> 0 ORDER BY queue, state
        ON CONFLICT (queue, state, shard) DO UPDATE SET n = c.n + excluded.n
    )
    INSERT INTO task_throughput AS t (minute, queue, shard, succeeded, failed, cancelled)
    SELECT floor(EXTRACT(EPOCH FROM now()) / 60)::bigint, queue, pg_backend_pid(),
           COUNT(*) FILTER (WHERE to_state = 'succeeded'),
           COUNT(*) FILTER (WHERE to_state = 'failed'),
           COUNT(*) FILTER (WHERE to_state = 'cancelled')
    FROM changed
    WHERE to_state IN ('succeeded', 'failed', 'cancelled')
      AND from_state NOT IN ('succeeded', 'failed', 'cancelled')
    GROUP BY queue ORDER BY queue
    ON CONFLICT (minute, queue, shard) DO UPDATE SET
        succeeded = t.succeeded + excluded.succeeded,
        failed = t.failed + excluded.failed,
        cancelled = t.cancelled + excluded.cancelled;
    RETURN NULL;
END;
$$;

CREATE FUNCTION courier_task_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_counts AS c (queue, state, shard, n)
    SELECT queue, state, pg_backend_pid(), -COUNT(*) FROM old_rows
    GROUP BY queue, state ORDER BY queue, state
    ON CONFLICT (queue, state, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_counts_deleted AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION courier_task_counts_deleted();
