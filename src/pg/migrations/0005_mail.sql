-- Mail: messages with their lease, idempotency keys, the suppression
-- lists, soft-bounce days, the relay's ids, and what the reputation guard
-- keeps per stream. `record` columns hold the same encoded records as the
-- redb file; the columns beside them are what queries select on.
CREATE TABLE herald_emails (
    id bigint PRIMARY KEY,
    tenant text,
    recipient text NOT NULL,
    stream text NOT NULL,
    -- The redb file's status codes: 1 queued, 2 deferred, 3 sent,
    -- 4 failed, 5 bounced.
    status smallint NOT NULL,
    next_attempt_ms bigint,
    -- A node sending it holds a lease: its token, until a time. One that
    -- dies holding it loses nothing: the lease runs out and another node
    -- sends the message.
    lease_token bigint,
    lease_until_ms bigint NOT NULL DEFAULT 0,
    record bytea NOT NULL
);
-- A claim reads each stream's earliest due message through this, so a
-- paused stream's backlog is never scanned past.
CREATE INDEX herald_emails_due ON herald_emails (stream, next_attempt_ms, id)
    WHERE status IN (1, 2);
CREATE INDEX herald_emails_by_recipient ON herald_emails (recipient, id);
CREATE INDEX herald_emails_by_tenant ON herald_emails (tenant, id);
CREATE INDEX herald_emails_by_status ON herald_emails (status, stream, id);

-- A send request's idempotency key: the messages it queued.
CREATE TABLE herald_email_keys (
    tenant text NOT NULL,
    key text NOT NULL,
    first_id bigint NOT NULL,
    count integer NOT NULL,
    fingerprint bigint NOT NULL,
    PRIMARY KEY (tenant, key)
);

-- The global list (tenant '') and the tenants' own; stream '' covers every
-- stream.
CREATE TABLE herald_suppressions (
    tenant text NOT NULL,
    address text NOT NULL,
    stream text NOT NULL,
    reason text NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (tenant, address, stream)
);

CREATE TABLE herald_soft_bounces (
    address text PRIMARY KEY,
    record bytea NOT NULL
);

CREATE TABLE herald_provider_message_ids (
    provider_id text PRIMARY KEY,
    email_id bigint NOT NULL
);

CREATE TABLE herald_stream_states (
    stream text PRIMARY KEY,
    paused boolean NOT NULL,
    record bytea NOT NULL
);

-- Sent, hard bounces and complaints per 5-minute bucket: the 24-hour window.
CREATE TABLE herald_stream_tally (
    stream text NOT NULL,
    bucket_ms bigint NOT NULL,
    sent integer NOT NULL,
    hard_bounces integer NOT NULL,
    complaints integer NOT NULL,
    PRIMARY KEY (stream, bucket_ms)
);

-- A stream's recent sends and what became of each (0 sent, 1 hard bounce,
-- 2 complaint): the last-1,000 window.
CREATE TABLE herald_stream_sends (
    stream text NOT NULL,
    email_id bigint NOT NULL,
    outcome smallint NOT NULL,
    PRIMARY KEY (stream, email_id)
);

-- What nodes share to release a stream's mail: its rate limit's token
-- bucket, and its messages released on `day` against the warm-up cap. Read
-- and changed only under the row's lock, so the limits hold across nodes.
CREATE TABLE herald_stream_gates (
    stream text PRIMARY KEY,
    tokens double precision NOT NULL DEFAULT 0,
    tokens_at_ms bigint NOT NULL DEFAULT 0,
    day bigint NOT NULL DEFAULT 0,
    released_on_day bigint NOT NULL DEFAULT 0
);

-- ESP feedback: each provider event once, by the provider's own id.
CREATE TABLE herald_feedback (
    id bigint PRIMARY KEY,
    provider text NOT NULL,
    event_id text NOT NULL,
    kind text NOT NULL,
    address text NOT NULL,
    email_id bigint,
    tenant text,
    received_at_ms bigint NOT NULL,
    record bytea NOT NULL,
    UNIQUE (provider, event_id)
);
CREATE INDEX herald_feedback_by_email ON herald_feedback (email_id, id);
CREATE INDEX herald_feedback_unmatched ON herald_feedback (id) WHERE email_id IS NULL;

CREATE TABLE herald_replay_tokens (
    provider text NOT NULL,
    token text NOT NULL,
    spent_at_ms bigint NOT NULL,
    PRIMARY KEY (provider, token)
);

-- Secrets every node must share: the unsubscribe links' signing key (a
-- link one node wrote is checked by another).
CREATE TABLE herald_secrets (
    name text PRIMARY KEY,
    secret bytea NOT NULL
);
