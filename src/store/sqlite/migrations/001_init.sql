-- sluice site store, version 1. One file per site.

-- The site's state as last left (one row).
CREATE TABLE site (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    state      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Each integration's lifecycle state, as a person set it.
CREATE TABLE integrations (
    name       TEXT    PRIMARY KEY,
    state      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Why an integration does not send: at most one hold of each kind.
CREATE TABLE holds (
    integration TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    placed_by   TEXT    NOT NULL,
    since       INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    PRIMARY KEY (integration, kind)
);

-- Each flow's status and the checkpoint 'Send Changed' continues after.
CREATE TABLE flows (
    name       TEXT    PRIMARY KEY,
    status     TEXT    NOT NULL DEFAULT '',
    checkpoint TEXT,
    updated_at INTEGER NOT NULL
);

-- The last sequence number given out per integration: never reused.
CREATE TABLE sequences (
    integration TEXT    PRIMARY KEY,
    last_seq    INTEGER NOT NULL
);

-- The queue. state: 0 queued, 2 sent, 3 error, 4 ignored (1, sending, is
-- never stored). Ordered by (integration, seq), which is also the key.
CREATE TABLE transactions (
    integration TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    flow        TEXT    NOT NULL,
    key         TEXT,
    payload     TEXT    NOT NULL,
    state       INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    PRIMARY KEY (integration, seq)
) WITHOUT ROWID;

-- Runs (iterations) of flows.
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    flow        TEXT    NOT NULL,
    mode        TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    result      TEXT,
    captured    INTEGER NOT NULL DEFAULT 0,
    error       TEXT
);
CREATE INDEX runs_by_flow ON runs (flow, id);

-- The site log (seed 000's lines), kept at or below the site's log level.
CREATE TABLE log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    ts      INTEGER NOT NULL,
    level   INTEGER NOT NULL,
    message TEXT    NOT NULL
);

-- Who did what, when, why, and how it ended.
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    ts      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    subject TEXT    NOT NULL,
    reason  TEXT,
    outcome TEXT    NOT NULL
);
