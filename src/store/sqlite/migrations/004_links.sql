-- sluice site store, version 4: record links (Unifi's bonds). Per flow, the
-- key of a record → the id the target gave it when it was created; every
-- later record of that key is delivered as an update of that id.
CREATE TABLE links (
    flow       TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    link       TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (flow, key)
) WITHOUT ROWID;
