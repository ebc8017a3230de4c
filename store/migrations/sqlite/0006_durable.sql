-- Durable execution (kept in step with ../postgres/0006_durable.sql): a
-- journal of each task's steps; suspended tasks kept in the database, not
-- in an executor's memory, and woken by what they wait for; recurring
-- schedules.

-- A suspended task is held by no executor (`executor_id` NULL). What wakes
-- it: the event it waits for, its awaited sub-tasks all final, a cancel, or its
-- `run_at` (a durable timer). Woken, it is `pending`, and the next claim
-- replays its run from its journal: `resume` says that claim continues the
-- current attempt rather than start a new one.
ALTER TABLE tasks ADD COLUMN resume INTEGER NOT NULL DEFAULT 0;
-- On a sub-task: its parent's run waits for it.
ALTER TABLE tasks ADD COLUMN awaited INTEGER NOT NULL DEFAULT 0;
-- What a suspended task waits for, for people (`event booted`, `2 sub-tasks`,
-- `timer`); NULL otherwise.
ALTER TABLE tasks ADD COLUMN waiting TEXT;
-- The name of the event a suspended task waits for (an event of another
-- name is kept in its inbox but does not wake it); NULL when it waits for
-- no event.
ALTER TABLE tasks ADD COLUMN wake_event TEXT;
-- When the current attempt's `timeout_ms` runs out: set when its run first
-- suspends (a suspended attempt's time counts too), so a replay keeps the
-- attempt's deadline; a suspension's `run_at` is no later than it.
ALTER TABLE tasks ADD COLUMN timeout_at TEXT;
-- The schedule that created the task.
ALTER TABLE tasks ADD COLUMN schedule TEXT;
CREATE INDEX tasks_schedule ON tasks (schedule, id) WHERE schedule IS NOT NULL;

-- Timers: scheduled tasks and suspended ones with a due time.
DROP INDEX tasks_due;
CREATE INDEX tasks_due ON tasks (run_at) WHERE run_at IS NOT NULL;

-- The journal: one row per step of a task, the last run of it.
CREATE TABLE task_steps (
    task_id     BLOB NOT NULL REFERENCES tasks (id),
    name        TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('succeeded','failed')),
    output      TEXT,
    error       TEXT,
    started_at  TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    PRIMARY KEY (task_id, name)
);

-- Recurring tasks. `options` holds the queue options of its tasks as given.
CREATE TABLE schedules (
    name         TEXT PRIMARY KEY NOT NULL,
    cron         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    input        TEXT NOT NULL,
    options      TEXT NOT NULL DEFAULT '{}',
    catch_up     TEXT NOT NULL DEFAULT 'skip' CHECK (catch_up IN ('skip','one','all')),
    enabled      INTEGER NOT NULL DEFAULT 1,
    next_run_at  TEXT,
    last_run_at  TEXT,
    last_task_id BLOB,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE enabled;
