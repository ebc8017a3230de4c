-- A suspended parent's count of the awaited sub-tasks not yet final, kept
-- by the suspension (set) and by each awaited sub-task's end (minus one):
-- a sub-task's end wakes its parent in O(1) instead of looking at every
-- open sibling (a fan-out of 10,000 was quadratic: 59 s on PostgreSQL).
-- Only at zero does the end look at the siblings, once, to be sure.
ALTER TABLE tasks ADD COLUMN awaiting INTEGER NOT NULL DEFAULT 0;
