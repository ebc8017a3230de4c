-- The PostgreSQL transport (`--bus postgres`, courier-bus's
-- transport/postgres.rs); kept in step with ../sqlite/0007_bus.sql, which
-- has nothing to create (the transport needs PostgreSQL).

-- Envelopes in flight: `channel` is `pool/<queue>` (competing consumers,
-- `taken_until` while one holds it) or `node/<node>` (one node's messages).
CREATE TABLE bus_messages (
    id          BIGSERIAL PRIMARY KEY,
    channel     TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    taken_until TIMESTAMPTZ
);
CREATE INDEX bus_messages_channel ON bus_messages (channel, id);
-- Rows are inserted and deleted all the time: the transport vacuums the
-- table every few seconds (one node at a time); autovacuum is a backstop.
ALTER TABLE bus_messages SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);

-- The nodes that listen now: a `task/…` or `executor/…` envelope is written
-- once for each.
CREATE TABLE bus_nodes (
    node    TEXT PRIMARY KEY,
    seen_at TIMESTAMPTZ NOT NULL
);
