-- How many times the task was taken over from an executor that died while
-- holding it: a task that kills its executor every time is failed after a
-- limit instead of being run forever (a poison task).
ALTER TABLE tasks ADD COLUMN takeovers INTEGER NOT NULL DEFAULT 0;
