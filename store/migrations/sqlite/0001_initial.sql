-- courier schema, SQLite dialect. Kept column for column in step with
-- ../postgres/0001_initial.sql: the store runs the same SQL on both.
--
-- Types: ids are UUID v7 stored as 16-byte BLOBs (they sort by creation
-- time, so the primary key doubles as the paging cursor); JSON is TEXT;
-- times are RFC 3339 TEXT in UTC, which sorts correctly as text.

CREATE TABLE tasks (
    id               BLOB PRIMARY KEY NOT NULL,
    kind             TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending','running','suspended','succeeded','failed','cancelled')),
    input            TEXT NOT NULL,
    output           TEXT,
    error            TEXT,
    progress         TEXT,
    parent_id        BLOB REFERENCES tasks (id),
    -- The n-th sub-task its parent's run spawned: makes spawning idempotent
    -- when a parent is run again after a crash or a takeover.
    spawn_seq        INTEGER,
    -- The executor that owns the task while it runs or is suspended, and the
    -- fencing epoch of that ownership: every write of a run checks both.
    executor_id      TEXT,
    epoch            INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    idempotency_key  TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    trace_id         TEXT NOT NULL,
    -- Who made the last state change (an executor id or a web/client node);
    -- copied into task_history by the trigger below.
    changed_by       TEXT,
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT,
    updated_at       TEXT NOT NULL
);

CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX tasks_parent_spawn ON tasks (parent_id, spawn_seq) WHERE parent_id IS NOT NULL;
-- Claiming: the oldest pending tasks of a kind.
CREATE INDEX tasks_pending ON tasks (kind, id) WHERE state = 'pending';
-- Takeover and recovery: the tasks an executor owns.
CREATE INDEX tasks_executor ON tasks (executor_id) WHERE executor_id IS NOT NULL;
-- Listing with filters, newest first, paged by id.
CREATE INDEX tasks_state_id ON tasks (state, id);
CREATE INDEX tasks_kind_id ON tasks (kind, id);

-- The durable inbox: an event is committed here before it is sent.
CREATE TABLE task_events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id      BLOB NOT NULL REFERENCES tasks (id),
    name         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    -- Set when the task's actor has the event in memory; the recovery sweep
    -- re-sends events that stay undelivered.
    delivered_at TEXT
);
CREATE INDEX task_events_task ON task_events (task_id, seq);
CREATE INDEX task_events_undelivered ON task_events (seq) WHERE delivered_at IS NULL;

-- Bus addresses waiting for a task to finish (e.g. a web request).
CREATE TABLE task_watchers (
    task_id    BLOB NOT NULL REFERENCES tasks (id),
    address    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (task_id, address)
);

-- Every state change, with who made it and when. Written by triggers, so no
-- code path can change a state without leaving a line here.
CREATE TABLE task_history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id     BLOB NOT NULL,
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    changed_by  TEXT,
    attempt     INTEGER NOT NULL,
    at          TEXT NOT NULL
);
CREATE INDEX task_history_task ON task_history (task_id, id);

CREATE TRIGGER tasks_history_insert AFTER INSERT ON tasks
BEGIN
    INSERT INTO task_history (task_id, from_state, to_state, changed_by, attempt, at)
    VALUES (NEW.id, NULL, NEW.state, NEW.changed_by, NEW.attempts, NEW.updated_at);
END;

CREATE TRIGGER tasks_history_update AFTER UPDATE OF state ON tasks
WHEN OLD.state <> NEW.state
BEGIN
    INSERT INTO task_history (task_id, from_state, to_state, changed_by, attempt, at)
    VALUES (NEW.id, OLD.state, NEW.state, NEW.changed_by, NEW.attempts, NEW.updated_at);
END;

CREATE TABLE executors (
    id           TEXT PRIMARY KEY NOT NULL,
    node         TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('alive','stopped','dead')),
    kinds        TEXT NOT NULL,
    capacity     INTEGER NOT NULL,
    running      INTEGER NOT NULL DEFAULT 0,
    started_at   TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    ended_at     TEXT,
    -- The executor that declared this one dead and took its tasks over.
    ended_by     TEXT
);
CREATE INDEX executors_state ON executors (state, last_seen_at);
