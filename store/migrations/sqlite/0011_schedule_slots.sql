-- A schedule's slot has a uniqueness of its own. Slot tasks were kept
-- unique by the idempotency key `schedule:<name>:<slot>`, in the one index
-- that also holds clients' keys, so a client that sent that key first took
-- the slot: the schedule then made nothing for it. Clients' keys are now
-- unique among tasks that no schedule made, and slot keys among a
-- schedule's tasks; neither can take the other's.
DROP INDEX tasks_idempotency_key;
CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL AND schedule IS NULL;
CREATE UNIQUE INDEX tasks_schedule_slot ON tasks (schedule, idempotency_key)
    WHERE idempotency_key IS NOT NULL AND schedule IS NOT NULL;
