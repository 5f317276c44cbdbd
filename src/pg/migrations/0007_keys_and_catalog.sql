-- API keys created through the API, and the event catalog. A key is kept
-- as the hash of the key with what it grants, as the redb file keeps it.
CREATE TABLE herald_api_keys (
    id bytea PRIMARY KEY,
    record bytea NOT NULL
);

-- Bumped by every change to the keys, in the same transaction, and locked
-- by it first: changes are decided one at a time (the last admin key is
-- never revoked by two nodes at once), and every node reloads its keys
-- when this moved.
CREATE TABLE herald_api_keys_version (
    id smallint PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL
);
INSERT INTO herald_api_keys_version (id, version) VALUES (1, 0);

-- The event catalog: event types by name with their payload versions,
-- schemas and samples, as the redb file keeps them.
CREATE TABLE herald_event_types (
    name text PRIMARY KEY,
    record bytea NOT NULL
);

-- As for the keys: changes one at a time, and every node recompiles its
-- catalog when this moved.
CREATE TABLE herald_event_types_version (
    id smallint PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL
);
INSERT INTO herald_event_types_version (id, version) VALUES (1, 0);
