-- Replay delivers an event to an endpoint again as a new delivery, so an
-- endpoint may hold several deliveries of one event.
ALTER TABLE herald_deliveries DROP CONSTRAINT herald_deliveries_endpoint_id_event_seq_key;
CREATE INDEX herald_deliveries_by_event ON herald_deliveries (endpoint_id, event_seq);
-- An endpoint's deliveries in each status: its stats, and recover.
CREATE INDEX herald_deliveries_by_endpoint_status
    ON herald_deliveries (endpoint_id, status, id);

-- Attempts per endpoint and minute, as the redb file tallies them, for an
-- endpoint's stats. A minute's tally is split over a few shards, picked by
-- delivery, so that nodes recording attempts to one busy endpoint do not
-- queue on one row; the stats add the shards up.
CREATE TABLE herald_attempt_tally (
    endpoint_id bytea NOT NULL,
    minute bigint NOT NULL,
    shard smallint NOT NULL,
    tally bytea NOT NULL,
    PRIMARY KEY (endpoint_id, minute, shard)
);
