-- `tasks` is a queue: every claim and every end leaves a dead row version
-- behind, and a dead entry in `tasks_ready` (the pending tasks' index) at
-- the head of the queue, which every claim walks past until a vacuum
-- removes it. With PostgreSQL's defaults autovacuum waits for 20 % of the
-- table to be dead: a million-row table gathers 200,000 such entries
-- first. Draining a backlog of 1,000,000 here (BENCHMARKS.md, "Backlog
-- growth"): 4,650 tasks/s with no vacuum, a claim's pick taking 56 ms to
-- find its first live entry; 6,600 tasks/s with autovacuum on and these
-- settings (1 %). Analysis is left at its defaults: courier's plans do not
-- depend on fresh statistics (tests/plans.rs).
--
-- Autovacuum itself must be on (PostgreSQL's default): a server that runs
-- without it (`autovacuum = off`) must vacuum `tasks` on a schedule of its
-- own.
ALTER TABLE tasks SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.01
);
