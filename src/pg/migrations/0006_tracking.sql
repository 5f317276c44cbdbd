-- Tracking (Segment-compatible calls). The calls themselves are events of
-- herald_events, appended in log order under the head's lock; these tables
-- are the indexes the redb file keeps beside them. Persons and type keys
-- are the 64-bit hashes of store::tracking, stored as the bigint of their
-- bits: they are only ever compared for equality.

-- A (source, messageId) seen: its 16-byte digest, the call it named and
-- when. The primary key is what decides, inside the appending transaction,
-- that a messageId within the dedup window is stored once, whichever node
-- receives it; a key older than the window may be taken over by a new call.
CREATE TABLE herald_track_keys (
    message_key bytea PRIMARY KEY,
    seq bigint NOT NULL,
    received_ms bigint NOT NULL
);

-- One row per tracked call.
CREATE TABLE herald_tracked (
    seq bigint PRIMARY KEY,
    received_ms bigint NOT NULL,
    -- NULL when Herald made the messageId up.
    message_key bytea,
    person bigint NOT NULL,
    type_key bigint NOT NULL,
    timestamp_ms bigint NOT NULL,
    -- context.campaign, when any field of it is set ('' for the others).
    campaign_source text,
    campaign_medium text,
    campaign_name text
);
-- The export, in arrival order.
CREATE INDEX herald_tracked_by_received ON herald_tracked (received_ms, seq);
-- A user's history.
CREATE INDEX herald_tracked_by_person ON herald_tracked (person, seq);
-- Counts, funnels and conversions of one event name in a time range.
CREATE INDEX herald_tracked_by_event ON herald_tracked (type_key, timestamp_ms, seq)
    INCLUDE (person);
-- Campaign touches of a person, for attribution.
CREATE INDEX herald_tracked_touches ON herald_tracked (person, timestamp_ms, seq)
    WHERE campaign_source IS NOT NULL;

-- An anonymous id (or an aliased id) → the user it was linked to.
CREATE TABLE herald_person_links (
    person bigint PRIMARY KEY,
    user_person bigint NOT NULL
);
CREATE INDEX herald_person_links_by_user ON herald_person_links (user_person);

-- Identify's traits and linked ids per user; tenant '' for users of
-- sources bound to no tenant. `record` is the redb file's ProfileRecord.
CREATE TABLE herald_profiles (
    tenant text NOT NULL,
    user_id text NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (tenant, user_id)
);
