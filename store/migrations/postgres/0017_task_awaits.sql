-- The sub-tasks a suspended parent awaits, one row each, kept apart from
-- the sub-tasks' own rows (issue 24). The suspension used to mark each
-- awaited sub-task's row (`tasks.awaited`): on PostgreSQL a fan-out of
-- 10,000 then locked 10,000 rows that their executors were claiming and
-- ending at that very moment, and waited 3.8 s for them. Now the suspension
-- writes these rows under its parent's row lock only, and a sub-task's end
-- takes its row away under the same lock: the two are ordered by the
-- parent, and the sub-tasks' rows are left to their executors.
--
-- A row lives from the suspension that awaits the sub-task until the
-- sub-task's end; a new suspension of the parent replaces its rows, so the
-- parent's `awaiting` is exactly the number of its rows. No foreign keys:
-- their checks would lock the rows this table keeps away from.
CREATE TABLE task_awaits (
    child_id  UUID PRIMARY KEY,
    parent_id UUID NOT NULL
);
CREATE INDEX task_awaits_parent ON task_awaits (parent_id);

INSERT INTO task_awaits (child_id, parent_id)
    SELECT c.id, c.parent_id FROM tasks c
    WHERE c.awaited AND c.parent_id IS NOT NULL
      AND c.state NOT IN ('succeeded', 'failed', 'cancelled');
UPDATE tasks SET awaiting = (SELECT COUNT(*) FROM task_awaits a WHERE a.parent_id = tasks.id)
    WHERE state = 'suspended';

ALTER TABLE tasks DROP COLUMN awaited;
