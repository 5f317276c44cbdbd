-- What `herald migrate` copied from a redb file, so that a run can resume
-- where the last one stopped and a different file is refused. One row: a
-- database receives the log of one install. The first event's seq and id
-- identify the file (a backup and the live file it came from share them);
-- the path is only for people reading the row.
CREATE TABLE herald_import (
    id smallint PRIMARY KEY CHECK (id = 1),
    source_path text NOT NULL,
    first_seq bigint NOT NULL,
    first_event_id text NOT NULL,
    copied_through_seq bigint NOT NULL,
    events_copied bigint NOT NULL,
    keys_copied bigint NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    -- NULL while a run is copying: a run cut short leaves it so.
    finished_at timestamptz
);
