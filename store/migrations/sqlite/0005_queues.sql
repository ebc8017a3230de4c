-- Queue semantics (kept in step with ../postgres/0005_queues.sql): tasks
-- belong to a queue and have a priority; they may wait in `scheduled` for
-- their `run_at` (a delayed start, or a retry's backoff); a failed attempt
-- with attempts left is retried; an attempt may have a timeout. Queues
-- carry deployment-wide limits, enforced where tasks are claimed.
--
-- SQLite cannot change a CHECK constraint in place, so `tasks` is rebuilt
-- (https://sqlite.org/lang_altertable.html#otheralter). Migrations run in a
-- transaction with foreign keys on, where they cannot be switched off; so
-- the two tables that reference `tasks` are rebuilt with it, each new table
-- referencing the new `tasks_new`, and the old ones are dropped children
-- first. The renames then point every reference at the new `tasks`.


CREATE TABLE tasks_new (
    id               BLOB PRIMARY KEY NOT NULL,
    kind             TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('scheduled','pending','running','suspended','succeeded','failed','cancelled')),
    input            TEXT NOT NULL,
    output           TEXT,
    error            TEXT,
    progress         TEXT,
    parent_id        BLOB REFERENCES tasks_new (id),
    spawn_seq        INTEGER,
    executor_id      TEXT,
    epoch            INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    idempotency_key  TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    trace_id         TEXT NOT NULL,
    changed_by       TEXT,
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT,
    updated_at       TEXT NOT NULL,
    watched          INTEGER NOT NULL DEFAULT 0,
    takeovers        INTEGER NOT NULL DEFAULT 0,
    queue            TEXT NOT NULL DEFAULT 'default',
    priority         INTEGER NOT NULL DEFAULT 0,
    -- Not before this time (state `scheduled`); NULL once it may start.
    run_at           TEXT,
    max_attempts     INTEGER NOT NULL DEFAULT 1,
    backoff_ms       INTEGER NOT NULL DEFAULT 1000,
    timeout_ms       INTEGER,
    -- One {"attempt", "error", "at", "code"} per failed attempt, oldest first.
    errors           TEXT NOT NULL DEFAULT '[]',
    -- The parent's attempt that spawned this sub-task: a retried parent
    -- spawns afresh, a parent run again after a takeover (same attempt)
    -- finds the sub-tasks it spawned before.
    parent_attempt   INTEGER
);

INSERT INTO tasks_new (id, kind, state, input, output, error, progress, parent_id, spawn_seq,
    executor_id, epoch, attempts, idempotency_key, cancel_requested, trace_id, changed_by,
    created_at, started_at, finished_at, updated_at, watched, takeovers, parent_attempt)
SELECT t.id, t.kind, t.state, t.input, t.output, t.error, t.progress, t.parent_id, t.spawn_seq,
    t.executor_id, t.epoch, t.attempts, t.idempotency_key, t.cancel_requested, t.trace_id, t.changed_by,
    t.created_at, t.started_at, t.finished_at, t.updated_at, t.watched, t.takeovers,
    (SELECT p.attempts FROM tasks p WHERE p.id = t.parent_id)
FROM tasks t;

CREATE TABLE task_events_new (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id      BLOB NOT NULL REFERENCES tasks_new (id),
    name         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    delivered_at TEXT
);
INSERT INTO task_events_new SELECT seq, task_id, name, payload, created_at, delivered_at FROM task_events;
CREATE TABLE task_watchers_new (
    task_id    BLOB NOT NULL REFERENCES tasks_new (id),
    address    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    stream     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, address)
);
INSERT INTO task_watchers_new SELECT task_id, address, created_at, stream FROM task_watchers;
DROP TABLE task_events;
DROP TABLE task_watchers;
DROP TABLE tasks;
ALTER TABLE tasks_new RENAME TO tasks;
ALTER TABLE task_events_new RENAME TO task_events;
ALTER TABLE task_watchers_new RENAME TO task_watchers;
CREATE INDEX task_events_task ON task_events (task_id, seq);
CREATE INDEX task_events_undelivered ON task_events (seq) WHERE delivered_at IS NULL;

CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX tasks_parent_spawn ON tasks (parent_id, parent_attempt, spawn_seq) WHERE parent_id IS NOT NULL;
CREATE INDEX tasks_executor ON tasks (executor_id) WHERE executor_id IS NOT NULL;
CREATE INDEX tasks_state_id ON tasks (state, id);
CREATE INDEX tasks_kind_id ON tasks (kind, id);
-- Claiming: within a queue, the highest priority first, then the oldest.
CREATE INDEX tasks_ready ON tasks (queue, priority DESC, id) WHERE state = 'pending';
-- Timers: what is due next.
CREATE INDEX tasks_due ON tasks (run_at) WHERE state = 'scheduled';
-- A queue's concurrency limit counts its running tasks.
CREATE INDEX tasks_queue_running ON tasks (queue) WHERE state = 'running';
-- Listing by queue, newest first.
CREATE INDEX tasks_queue_id ON tasks (queue, id);
-- Retention: finished task trees by root, oldest first.
CREATE INDEX tasks_retention ON tasks (state, finished_at) WHERE parent_id IS NULL;

CREATE TRIGGER tasks_history_insert AFTER INSERT ON tasks
BEGIN
    INSERT INTO task_history (task_id, from_state, to_state, changed_by, owner, attempt, at)
    VALUES (NEW.id, NULL, NEW.state, NEW.changed_by, NULL, NEW.attempts, NEW.updated_at);
END;

-- A line leaving `running` or `suspended` belongs to the run that ends
-- there, so it carries that run's attempt; a run that did not end (a
-- takeover, a clean stop) gives its attempt back, and the next claim runs
-- the same attempt again.
CREATE TRIGGER tasks_history_update AFTER UPDATE OF state ON tasks
WHEN OLD.state <> NEW.state
BEGIN
    INSERT INTO task_history (task_id, from_state, to_state, changed_by, owner, attempt, at)
    VALUES (NEW.id, OLD.state, NEW.state, NEW.changed_by, OLD.executor_id,
            CASE WHEN OLD.state IN ('running','suspended') THEN OLD.attempts ELSE NEW.attempts END,
            NEW.updated_at);
END;

-- Settings of a queue that hold across every executor; a queue without a
-- row has no limits. `tokens` and `tokens_at` are the rate limit's bucket.
CREATE TABLE queues (
    name        TEXT PRIMARY KEY NOT NULL,
    concurrency INTEGER,
    rate_per_s  REAL,
    paused      INTEGER NOT NULL DEFAULT 0,
    tokens      REAL NOT NULL DEFAULT 0,
    tokens_at   TEXT,
    updated_at  TEXT NOT NULL
);

-- The queues an executor serves, and each kind's default options (so a
-- node without the kind, a web node, applies them too).
ALTER TABLE executors ADD COLUMN queues TEXT NOT NULL DEFAULT '["default"]';
ALTER TABLE executors ADD COLUMN kind_options TEXT NOT NULL DEFAULT '{}';
