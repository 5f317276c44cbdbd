-- Webhook endpoints and their deliveries. `record` columns hold the same
-- encoded records as the redb file; the columns beside them are what
-- queries select on and the delivery state every node shares.
CREATE TABLE herald_endpoints (
    id bytea PRIMARY KEY,
    tenant text,
    enabled boolean NOT NULL,
    record bytea NOT NULL,
    -- The endpoint's failed attempts in a row, across nodes: the failing
    -- streak and the circuit breaker's count.
    failed_attempts integer NOT NULL DEFAULT 0,
    -- Whether the current streak was announced (delivery.failing).
    announced boolean NOT NULL DEFAULT false,
    -- An open breaker admits nothing before this, then one probe at a time.
    open_until_ms bigint NOT NULL DEFAULT 0,
    -- The rate limit's token bucket, refilled lazily by whoever claims.
    tokens double precision NOT NULL DEFAULT 0,
    tokens_at_ms bigint NOT NULL DEFAULT 0
);

-- Bumped by every change to an endpoint, in the same transaction: a group
-- committer reloads the endpoints it fans out to only when this moved.
CREATE TABLE herald_endpoints_version (
    id smallint PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL
);
INSERT INTO herald_endpoints_version (id, version) VALUES (1, 0);

-- One event on its way to one endpoint. A node attempting it holds a
-- lease: its token, until a time. A node that dies holding one loses
-- nothing: the lease runs out and another node claims the delivery.
CREATE TABLE herald_deliveries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id bytea NOT NULL,
    event_seq bigint NOT NULL,
    -- 0 pending, 1 succeeded, 2 failed (a dead letter).
    status smallint NOT NULL,
    next_attempt_ms bigint,
    lease_token bigint,
    lease_until_ms bigint NOT NULL DEFAULT 0,
    record bytea NOT NULL,
    UNIQUE (endpoint_id, event_seq)
);
CREATE INDEX herald_deliveries_due ON herald_deliveries (endpoint_id, next_attempt_ms)
    WHERE status = 0;
CREATE INDEX herald_deliveries_by_status ON herald_deliveries (status, id);
-- A claim counts an endpoint's unexpired leases: only those rows, not
-- every pending delivery of a backlog.
CREATE INDEX herald_deliveries_leased ON herald_deliveries (endpoint_id, lease_until_ms)
    WHERE status = 0;
