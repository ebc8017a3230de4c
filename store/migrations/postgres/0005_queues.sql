-- Queue semantics (kept in step with ../sqlite/0005_queues.sql): tasks
-- belong to a queue and have a priority; they may wait in `scheduled` for
-- their `run_at` (a delayed start, or a retry's backoff); a failed attempt
-- with attempts left is retried; an attempt may have a timeout. Queues
-- carry deployment-wide limits, enforced where tasks are claimed.

ALTER TABLE tasks DROP CONSTRAINT tasks_state_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_state_check
    CHECK (state IN ('scheduled','pending','running','suspended','succeeded','failed','cancelled'));

ALTER TABLE tasks ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
-- Not before this time (state `scheduled`); NULL once it may start.
ALTER TABLE tasks ADD COLUMN run_at TIMESTAMPTZ;
ALTER TABLE tasks ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tasks ADD COLUMN backoff_ms BIGINT NOT NULL DEFAULT 1000;
ALTER TABLE tasks ADD COLUMN timeout_ms BIGINT;
-- One {"attempt", "error", "at", "code"} per failed attempt, oldest first.
ALTER TABLE tasks ADD COLUMN errors JSONB NOT NULL DEFAULT '[]';
-- The parent's attempt that spawned this sub-task: a retried parent spawns
-- afresh, a parent run again after a takeover (same attempt) finds the
-- sub-tasks it spawned before.
ALTER TABLE tasks ADD COLUMN parent_attempt INTEGER;
UPDATE tasks c SET parent_attempt = p.attempts FROM tasks p WHERE c.parent_id = p.id;

DROP INDEX tasks_parent_spawn;
CREATE UNIQUE INDEX tasks_parent_spawn ON tasks (parent_id, parent_attempt, spawn_seq) WHERE parent_id IS NOT NULL;
-- Claiming: within a queue, the highest priority first, then the oldest.
DROP INDEX tasks_pending;
CREATE INDEX tasks_ready ON tasks (queue, priority DESC, id) WHERE state = 'pending';
-- Timers: what is due next.
CREATE INDEX tasks_due ON tasks (run_at) WHERE state = 'scheduled';
-- A queue's concurrency limit counts its running tasks.
CREATE INDEX tasks_queue_running ON tasks (queue) WHERE state = 'running';
-- Listing by queue, newest first.
CREATE INDEX tasks_queue_id ON tasks (queue, id);
-- Retention: finished task trees by root, oldest first.
CREATE INDEX tasks_retention ON tasks (state, finished_at) WHERE parent_id IS NULL;

-- Settings of a queue that hold across every executor; a queue without a
-- row has no limits. `tokens` and `tokens_at` are the rate limit's bucket.
CREATE TABLE queues (
    name        TEXT PRIMARY KEY,
    concurrency INTEGER,
    rate_per_s  DOUBLE PRECISION,
    paused      BOOLEAN NOT NULL DEFAULT FALSE,
    tokens      DOUBLE PRECISION NOT NULL DEFAULT 0,
    tokens_at   TIMESTAMPTZ,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- The queues an executor serves, and each kind's default options (so a
-- node without the kind, a web node, applies them too).
ALTER TABLE executors ADD COLUMN queues JSONB NOT NULL DEFAULT '["default"]';
ALTER TABLE executors ADD COLUMN kind_options JSONB NOT NULL DEFAULT '{}';

-- A line leaving `running` or `suspended` belongs to the run that ends
-- there, so it carries that run's attempt; a run that did not end (a
-- takeover, a clean stop) gives its attempt back, and the next claim runs
-- the same attempt again.
CREATE OR REPLACE FUNCTION courier_task_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO task_history (task_id, from_state, to_state, changed_by, owner, attempt, at)
        VALUES (NEW.id, NULL, NEW.state, NEW.changed_by, NULL, NEW.attempts, NEW.updated_at);
    ELSIF OLD.state IS DISTINCT FROM NEW.state THEN
        INSERT INTO task_history (task_id, from_state, to_state, changed_by, owner, attempt, at)
        VALUES (NEW.id, OLD.state, NEW.state, NEW.changed_by, OLD.executor_id,
                CASE WHEN OLD.state IN ('running','suspended') THEN OLD.attempts ELSE NEW.attempts END,
                NEW.updated_at);
    END IF;
    RETURN NULL;
END;
$$;
