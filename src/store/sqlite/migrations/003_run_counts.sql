-- sluice site store, version 3: what a run did, for the dashboard's counts.
--   pages      pages read from the source (a page that queued nothing too)
--   first_seq, last_seq
--              the sequence numbers the run's records were given (null
--              until it queues one): its failures are the Error
--              transactions in that range, found by transactions_error.
ALTER TABLE runs ADD COLUMN pages INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN first_seq INTEGER;
ALTER TABLE runs ADD COLUMN last_seq INTEGER;
