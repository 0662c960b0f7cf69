-- sluice site store, version 6: alerts. Per alert channel, the conditions
-- it was alerted of that have not ended (one alert per condition, not per
-- record: a condition already here is not alerted again, a reminder aside),
-- and the outbox: alerts waiting to be sent, retried until they are.
CREATE TABLE alert_conditions (
    channel   TEXT    NOT NULL,
    key       TEXT    NOT NULL, -- kind|integration|endpoint
    condition TEXT    NOT NULL, -- the condition as JSON, for its "resolved"
    last_sent INTEGER NOT NULL, -- when its alert or last reminder was queued
    PRIMARY KEY (channel, key)
) WITHOUT ROWID;

CREATE TABLE alert_outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    channel    TEXT    NOT NULL,
    document   TEXT    NOT NULL, -- the alert's JSON document
    queued_at  INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL, -- not tried before this
    last_error TEXT
);
CREATE INDEX alert_outbox_due ON alert_outbox (next_at);
