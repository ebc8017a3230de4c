-- Watchers that follow every state change (a dashboard, `watch` over SSE),
-- not only the end. `tasks.watched` tells a starting task actor, without an
-- extra query, that such watchers may exist.
ALTER TABLE task_watchers ADD COLUMN stream INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN watched INTEGER NOT NULL DEFAULT 0;
