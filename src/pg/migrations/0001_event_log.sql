-- The event log. Positions are handed out from herald_log_head, whose one
-- row each appending transaction locks until it commits: positions become
-- visible in order, so a reader past position N has seen every event at or
-- below N (docs/design.md, "Several nodes on PostgreSQL").
CREATE TABLE herald_log_head (
    id smallint PRIMARY KEY CHECK (id = 1),
    next_seq bigint NOT NULL,
    last_received_ms bigint NOT NULL
);
INSERT INTO herald_log_head (id, next_seq, last_received_ms) VALUES (1, 1, 0);

-- `record` is the event as the redb backend stores it (a version byte and
-- bincode), so both backends read it with one decoder and `herald migrate`
-- copies it byte for byte. The columns beside it are what queries filter on.
CREATE TABLE herald_events (
    seq bigint PRIMARY KEY,
    event_type text NOT NULL,
    tenant text,
    received_at_ms bigint NOT NULL,
    record bytea NOT NULL
);
CREATE INDEX herald_events_by_type ON herald_events (event_type, seq);
CREATE INDEX herald_events_by_tenant ON herald_events (tenant, seq) WHERE tenant IS NOT NULL;
-- received_at never decreases along seq: a time bound is a position bound.
CREATE INDEX herald_events_by_received ON herald_events (received_at_ms, seq);

-- One row per idempotency key: the primary key is what decides, inside the
-- appending transaction, that a key names one event only. `tenant` is ''
-- for events without one.
CREATE TABLE herald_event_keys (
    tenant text NOT NULL,
    key text NOT NULL,
    seq bigint NOT NULL,
    fingerprint bigint NOT NULL,
    PRIMARY KEY (tenant, key)
);
