-- sluice site store, version 2: the queue's bookkeeping in one row per
-- integration, and indexes for the rare states.

-- One row per integration that ever queued, written in the same transaction
-- as every change to its transactions, so it is exact after any crash.
--   last_seq  the highest sequence number given out: never reused, not even
--             after the transactions holding it are pruned.
--   queued    how many of its transactions are Queued.
--   floor     the lowest Queued sequence number minus one (last_seq when
--             none is Queued): no Queued transaction has seq <= floor, so
--             reading the queue starts there instead of walking past every
--             Sent transaction behind it.
CREATE TABLE queues (
    integration TEXT    PRIMARY KEY,
    last_seq    INTEGER NOT NULL,
    queued      INTEGER NOT NULL,
    floor       INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO queues (integration, last_seq, queued, floor)
SELECT integration, MAX(last_seq), SUM(queued), MIN(floor) FROM (
    SELECT integration,
           MAX(seq) AS last_seq,
           SUM(state = 0) AS queued,
           COALESCE(MIN(CASE WHEN state = 0 THEN seq END) - 1, MAX(seq)) AS floor
      FROM transactions GROUP BY integration
    UNION ALL
    SELECT integration, last_seq, 0, last_seq FROM sequences
) GROUP BY integration;

DROP TABLE sequences;

-- Error and Ignored transactions are few: partial indexes find them without
-- scanning the queue, and cost nothing for the Queued and Sent majority.
CREATE INDEX transactions_error ON transactions (integration, seq) WHERE state = 3;
CREATE INDEX transactions_ignored ON transactions (integration, seq) WHERE state = 4;

-- Runs left open (by a crash) are found without reading the whole history.
CREATE INDEX runs_open ON runs (id) WHERE finished_at IS NULL;
