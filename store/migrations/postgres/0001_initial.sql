-- courier schema, PostgreSQL dialect. Kept column for column in step with
-- ../sqlite/0001_initial.sql: the store runs the same SQL on both.

CREATE TABLE tasks (
    id               UUID PRIMARY KEY,
    kind             TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending','running','suspended','succeeded','failed','cancelled')),
    input            JSONB NOT NULL,
    output           JSONB,
    error            TEXT,
    progress         JSONB,
    parent_id        UUID REFERENCES tasks (id),
    spawn_seq        INTEGER,
    executor_id      TEXT,
    epoch            BIGINT NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    idempotency_key  TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    trace_id         TEXT NOT NULL,
    changed_by       TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL
);

CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX tasks_parent_spawn ON tasks (parent_id, spawn_seq) WHERE parent_id IS NOT NULL;
CREATE INDEX tasks_pending ON tasks (kind, id) WHERE state = 'pending';
CREATE INDEX tasks_executor ON tasks (executor_id) WHERE executor_id IS NOT NULL;
CREATE INDEX tasks_state_id ON tasks (state, id);
CREATE INDEX tasks_kind_id ON tasks (kind, id);

CREATE TABLE task_events (
    seq          BIGSERIAL PRIMARY KEY,
    task_id      UUID NOT NULL REFERENCES tasks (id),
    name         TEXT NOT NULL,
    payload      JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    delivered_at TIMESTAMPTZ
);
CREATE INDEX task_events_task ON task_events (task_id, seq);
CREATE INDEX task_events_undelivered ON task_events (seq) WHERE delivered_at IS NULL;

CREATE TABLE task_watchers (
    task_id    UUID NOT NULL REFERENCES tasks (id),
    address    TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (task_id, address)
);

CREATE TABLE task_history (
    id          BIGSERIAL PRIMARY KEY,
    task_id     UUID NOT NULL,
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    changed_by  TEXT,
    attempt     INTEGER NOT NULL,
    at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX task_history_task ON task_history (task_id, id);

CREATE FUNCTION courier_task_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO task_history (task_id, from_state, to_state, changed_by, attempt, at)
        VALUES (NEW.id, NULL, NEW.state, NEW.changed_by, NEW.attempts, NEW.updated_at);
    ELSIF OLD.state IS DISTINCT FROM NEW.state THEN
        INSERT INTO task_history (task_id, from_state, to_state, changed_by, attempt, at)
        VALUES (NEW.id, OLD.state, NEW.state, NEW.changed_by, NEW.attempts, NEW.updated_at);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_history AFTER INSERT OR UPDATE OF state ON tasks
FOR EACH ROW EXECUTE FUNCTION courier_task_history();

CREATE TABLE executors (
    id           TEXT PRIMARY KEY,
    node         TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('alive','stopped','dead')),
    kinds        JSONB NOT NULL,
    capacity     INTEGER NOT NULL,
    running      INTEGER NOT NULL DEFAULT 0,
    started_at   TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL,
    ended_at     TIMESTAMPTZ,
    ended_by     TEXT
);
CREATE INDEX executors_state ON executors (state, last_seen_at);
