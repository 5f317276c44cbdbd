-- What the retention passes (src/pg/retention.rs) read.

-- An event stays while a delivery of it is pending or failed. Only those
-- rows are in this index: settling a delivery takes it out, and the
-- succeeded ones, the bulk of the table, are never in it.
CREATE INDEX herald_deliveries_unsettled_by_event ON herald_deliveries (event_seq)
    WHERE status <> 1;

-- Attempt tallies older than the stats look back, found without reading
-- every endpoint's.
CREATE INDEX herald_attempt_tally_by_minute ON herald_attempt_tally (minute);

-- Where a sweep continues when its rows cannot tell: `through` an id or
-- seq, `at_ms` the time it goes with, if any. `mail_bodies_purged_to`:
-- every message up to that id is settled and bodiless.
-- `dedup_expired_to`: tracked calls up to (at_ms, through) had their
-- messageId keys expired.
CREATE TABLE herald_retention_marks (
    name text PRIMARY KEY,
    at_ms bigint NOT NULL,
    through bigint NOT NULL
);
