-- Watchers that follow every state change (a dashboard, `watch` over SSE),
-- not only the end. `tasks.watched` tells a starting task actor, without an
-- extra query, that such watchers may exist.
ALTER TABLE task_watchers ADD COLUMN stream BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE tasks ADD COLUMN watched BOOLEAN NOT NULL DEFAULT FALSE;
