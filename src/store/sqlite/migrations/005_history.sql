-- sluice site store, version 5: each integration's history, for charts.
-- One row per integration per minute (`span` 60000), written by the engine
-- once the minute is over from counters it keeps in memory; minutes older
-- than two days are rolled into hours (`span` 3600000), and rows older than
-- the site's `keep_history` deleted. `at`: the period's start, milliseconds
-- since the epoch; `depth`: transactions Queued at its end.
CREATE TABLE history (
    integration TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    span        INTEGER NOT NULL,
    queued      INTEGER NOT NULL,
    delivered   INTEGER NOT NULL,
    failed      INTEGER NOT NULL,
    retried     INTEGER NOT NULL,
    depth       INTEGER NOT NULL,
    PRIMARY KEY (integration, at, span)
) WITHOUT ROWID;
CREATE INDEX history_by_time ON history (at);
