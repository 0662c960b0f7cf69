-- Version 5: alerts (as SQLite's src/store/sqlite/migrations/006_alerts.sql).
-- On a cluster every node watches for conditions; the primary key of
-- `sluice_alert_conditions` makes one of them the one that queues an alert,
-- and a node sending from the outbox first pushes the row's `next_at` on,
-- so no other node sends it meanwhile.
CREATE TABLE sluice_alert_conditions (
    site      TEXT COLLATE "C" NOT NULL,
    channel   TEXT COLLATE "C" NOT NULL,
    key       TEXT COLLATE "C" NOT NULL,
    condition TEXT   NOT NULL,
    last_sent BIGINT NOT NULL,
    PRIMARY KEY (site, channel, key)
);

CREATE TABLE sluice_alert_outbox (
    site       TEXT COLLATE "C" NOT NULL,
    id         BIGINT GENERATED ALWAYS AS IDENTITY,
    channel    TEXT COLLATE "C" NOT NULL,
    document   TEXT   NOT NULL,
    queued_at  BIGINT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    BIGINT NOT NULL,
    last_error TEXT,
    PRIMARY KEY (id)
);
CREATE INDEX sluice_alert_outbox_due ON sluice_alert_outbox (site, next_at);
