-- The PostgreSQL transport's tables (../postgres/0007_bus.sql) have no
-- SQLite counterpart: `--bus postgres` needs a PostgreSQL database. This
-- file keeps the two migration sequences in step.
SELECT 1;
