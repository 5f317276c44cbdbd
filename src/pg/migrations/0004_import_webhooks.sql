-- What `herald migrate` copied of the webhook tables. Endpoints and
-- deliveries change in the file after they were copied (an attempt is
-- recorded, a delivery settles or is recovered, an endpoint is edited), so
-- every run goes over all of them again and writes only the rows that
-- differ. The counts add up the rows written over every run.
ALTER TABLE herald_import
    ADD COLUMN endpoints_copied bigint NOT NULL DEFAULT 0,
    ADD COLUMN deliveries_copied bigint NOT NULL DEFAULT 0,
    -- The last delivery id the latest run went through: where a run that
    -- was cut short stopped.
    ADD COLUMN deliveries_through bigint NOT NULL DEFAULT 0;
