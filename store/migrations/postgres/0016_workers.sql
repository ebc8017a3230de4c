-- Workers in other languages (issue 26): a worker is an executor row, so
-- dead-executor detection, takeover and fencing apply to it unchanged.
-- `language` is NULL for a Rust executor; `name` is the worker's own name.
ALTER TABLE executors ADD COLUMN language TEXT;
ALTER TABLE executors ADD COLUMN name TEXT;
