-- sluice's PostgreSQL store, version 1. One database holds many sites: every
-- table's key starts with `site`, and a store reads and writes its own site
-- only. Text keys compare byte by byte (COLLATE "C"), as SQLite's do, so
-- listings come in the same order on both backends whatever the database's
-- locale.

-- Each site's state as last left.
CREATE TABLE sluice_sites (
    site       TEXT COLLATE "C" NOT NULL,
    state      TEXT   NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (site)
);

-- Each integration's lifecycle state, as a person set it.
CREATE TABLE sluice_integrations (
    site       TEXT COLLATE "C" NOT NULL,
    name       TEXT COLLATE "C" NOT NULL,
    state      TEXT   NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (site, name)
);

-- Why an integration does not send: at most one hold of each kind.
CREATE TABLE sluice_holds (
    site        TEXT COLLATE "C" NOT NULL,
    integration TEXT COLLATE "C" NOT NULL,
    kind        TEXT COLLATE "C" NOT NULL,
    placed_by   TEXT   NOT NULL,
    since       BIGINT NOT NULL,
    reason      TEXT   NOT NULL,
    PRIMARY KEY (site, integration, kind)
);

-- Each flow's status and the checkpoint 'Send Changed' continues after.
CREATE TABLE sluice_flows (
    site       TEXT COLLATE "C" NOT NULL,
    name       TEXT COLLATE "C" NOT NULL,
    status     TEXT   NOT NULL DEFAULT '',
    checkpoint TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (site, name)
);

-- The highest sequence number given out per integration: never reused, not
-- even after the transactions holding it are pruned. `enqueue` raises it in
-- the transaction that inserts the records; its row lock orders concurrent
-- enqueues (of this node or another) and a rolled-back enqueue gives its
-- numbers back, so the numbers have no gap.
CREATE TABLE sluice_sequences (
    site        TEXT COLLATE "C" NOT NULL,
    integration TEXT COLLATE "C" NOT NULL,
    last_seq    BIGINT NOT NULL,
    PRIMARY KEY (site, integration)
);

-- The queue. state: 0 queued, 2 sent, 3 error, 4 ignored (1, sending, is
-- never stored). The key keeps each integration's transactions in order.
CREATE TABLE sluice_transactions (
    site        TEXT COLLATE "C" NOT NULL,
    integration TEXT COLLATE "C" NOT NULL,
    seq         BIGINT   NOT NULL,
    flow        TEXT     NOT NULL,
    key         TEXT,
    payload     TEXT     NOT NULL,
    state       SMALLINT NOT NULL DEFAULT 0,
    created_at  BIGINT   NOT NULL,
    updated_at  BIGINT   NOT NULL,
    attempts    BIGINT   NOT NULL DEFAULT 0,
    last_error  TEXT,
    PRIMARY KEY (site, integration, seq)
);
-- Partial indexes on the states that are looked for: the Queued ones (the
-- head of the queue, and their count, without walking past what was sent),
-- the few Error and Ignored ones.
CREATE INDEX sluice_transactions_queued ON sluice_transactions (site, integration, seq) WHERE state = 0;
CREATE INDEX sluice_transactions_error ON sluice_transactions (site, integration, seq) WHERE state = 3;
CREATE INDEX sluice_transactions_ignored ON sluice_transactions (site, integration, seq) WHERE state = 4;

-- Runs (iterations) of flows. Ids come from one sequence for the whole
-- database: unique, increasing in each site.
CREATE TABLE sluice_runs (
    site        TEXT COLLATE "C" NOT NULL,
    id          BIGINT GENERATED ALWAYS AS IDENTITY,
    flow        TEXT COLLATE "C" NOT NULL,
    mode        TEXT   NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    result      TEXT,
    captured    BIGINT NOT NULL DEFAULT 0,
    error       TEXT,
    pages       BIGINT NOT NULL DEFAULT 0,
    first_seq   BIGINT,
    last_seq    BIGINT,
    PRIMARY KEY (site, id)
);
CREATE INDEX sluice_runs_by_flow ON sluice_runs (site, flow, id);
-- Runs left open (by a crash) are found without reading the whole history.
CREATE INDEX sluice_runs_open ON sluice_runs (site, id) WHERE finished_at IS NULL;

-- Record links (Unifi's bonds): per flow, the key of a record -> the id the
-- target gave it when it was created.
CREATE TABLE sluice_links (
    site       TEXT COLLATE "C" NOT NULL,
    flow       TEXT COLLATE "C" NOT NULL,
    key        TEXT COLLATE "C" NOT NULL,
    link       TEXT   NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (site, flow, key)
);

-- The site log (seed 000's lines). Appends of one site are serialised (an
-- advisory lock per site), so ids are committed in the order given out and
-- a reader following `id > after` misses none.
CREATE TABLE sluice_log (
    site    TEXT COLLATE "C" NOT NULL,
    id      BIGINT GENERATED ALWAYS AS IDENTITY,
    ts      BIGINT  NOT NULL,
    level   INTEGER NOT NULL,
    message TEXT    NOT NULL,
    PRIMARY KEY (site, id)
);

-- Who did what, when, why, and how it ended.
CREATE TABLE sluice_audit (
    site    TEXT COLLATE "C" NOT NULL,
    id      BIGINT GENERATED ALWAYS AS IDENTITY,
    ts      BIGINT NOT NULL,
    actor   TEXT   NOT NULL,
    action  TEXT   NOT NULL,
    subject TEXT   NOT NULL,
    reason  TEXT,
    outcome TEXT   NOT NULL,
    PRIMARY KEY (site, id)
);
