-- What an owner's alert needs beside the failing streak's count: the UTC
-- day of the last alert (at most one a day per endpoint, across runs) and
-- the run's latest failure as JSON, quoted in the alert.
ALTER TABLE herald_endpoints ADD COLUMN alerted_day bigint;
ALTER TABLE herald_endpoints ADD COLUMN last_failure text;
