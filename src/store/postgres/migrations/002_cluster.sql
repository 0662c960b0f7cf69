-- Version 2: several nodes on one database. Times here are milliseconds of
-- the database's own clock (`clock_timestamp()`), the one clock every node
-- shares: a lease expires by it, whatever the nodes' clocks say.

-- Each node (`sluice serve --node NAME`) that ever ran on this database.
CREATE TABLE sluice_nodes (
    name         TEXT COLLATE "C" NOT NULL,
    address      TEXT   NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    PRIMARY KEY (name)
);

-- Who sends each integration: the holder of its lease, until `expires_at`
-- (renewed by the holder's heartbeat). `epoch` grows with every new holder;
-- the holder's acknowledgements and checkpoints are written only while
-- owner and epoch are still its own. `confirmed_at`: the latest moment up to
-- which the holder has taken in every change of the integration's state
-- (a pause asked on another node waits for it).
CREATE TABLE sluice_leases (
    site         TEXT COLLATE "C" NOT NULL,
    integration  TEXT COLLATE "C" NOT NULL,
    owner        TEXT COLLATE "C" NOT NULL,
    epoch        BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    confirmed_at BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (site, integration)
);

-- Which node wrote a line of a site's log or audit trail (null: before
-- version 2).
ALTER TABLE sluice_log ADD COLUMN node TEXT;
ALTER TABLE sluice_audit ADD COLUMN node TEXT;
