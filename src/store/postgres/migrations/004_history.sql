-- Version 4: each integration's history, for charts (as SQLite's
-- `history`, src/store/sqlite/migrations/005_history.sql). One row per
-- integration per minute (`span` 60000); on a cluster every node adds its
-- own counts of a minute to the same row. Minutes older than two days are
-- rolled into hours (`span` 3600000); rows older than the site's
-- `keep_history` are deleted.
CREATE TABLE sluice_history (
    site        TEXT COLLATE "C" NOT NULL,
    integration TEXT COLLATE "C" NOT NULL,
    at          BIGINT NOT NULL,
    span        BIGINT NOT NULL,
    queued      BIGINT NOT NULL,
    delivered   BIGINT NOT NULL,
    failed      BIGINT NOT NULL,
    retried     BIGINT NOT NULL,
    depth       BIGINT NOT NULL,
    PRIMARY KEY (site, integration, at, span)
);
CREATE INDEX sluice_history_by_time ON sluice_history (site, at);
