-- The counts of 0012, taken again with writers held: 0012 counted the
-- tasks before its triggers were in place, so a task written meanwhile by
-- a running deployment was counted by neither. Here the triggers are
-- already at work, and the count replaces every shard while no one writes.
LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE;
DELETE FROM task_counts;
INSERT INTO task_counts (queue, state, shard, n)
SELECT queue, state, 0, COUNT(*) FROM tasks GROUP BY queue, state;
