-- Same-host liveness without guessing: an executor records the pid
-- namespace it runs in (boot id + namespace inode) and its process start
-- time. A sweeper reads /proc only for executors of its own namespace, and
-- a pid reused by another process is not taken for the executor.
ALTER TABLE executors ADD COLUMN pid_space TEXT;
ALTER TABLE executors ADD COLUMN pid_start BIGINT;

-- Each history line names the executor that held the task before the
-- change, so a takeover reads "running -> pending, held by A, changed by B".
ALTER TABLE task_history ADD COLUMN owner TEXT;

CREATE OR REPLACE FUNCTION courier_task_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO task_history (task_id, from_state, to_state, changed_by, owner, attempt, at)
        VALUES (NEW.id, NULL, NEW.state, NEW.changed_by, NULL, NEW.attempts, NEW.updated_at);
    ELSIF OLD.state IS DISTINCT FROM NEW.state THEN
        INSERT INTO task_history (task_id, from_state, to_state, changed_by, owner, attempt, at)
        VALUES (NEW.id, OLD.state, NEW.state, NEW.changed_by, OLD.executor_id, NEW.attempts, NEW.updated_at);
    END IF;
    RETURN NULL;
END;
$$;
