-- sluice site store, version 7: when each hold was on, for the charts'
-- bands. Kept by triggers on `holds`, so every write that places or lifts
-- a hold records it in the same transaction, whoever wrote it; deleted
-- with the history after the site's `keep_history`.
CREATE TABLE hold_periods (
    integration TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    placed_by   TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    since       INTEGER NOT NULL,
    until       INTEGER,          -- null while it lasts
    PRIMARY KEY (integration, kind, since)
) WITHOUT ROWID;
CREATE INDEX hold_periods_by_until ON hold_periods (until);

INSERT INTO hold_periods (integration, kind, placed_by, reason, since, until)
SELECT integration, kind, placed_by, reason, since, NULL FROM holds;

CREATE TRIGGER hold_placed AFTER INSERT ON holds BEGIN
    INSERT INTO hold_periods (integration, kind, placed_by, reason, since, until)
    VALUES (NEW.integration, NEW.kind, NEW.placed_by, NEW.reason, NEW.since, NULL)
    ON CONFLICT (integration, kind, since) DO UPDATE SET until = NULL;
END;

-- A hold replaced by one of its kind: the first ends as the second starts.
CREATE TRIGGER hold_replaced AFTER UPDATE ON holds BEGIN
    UPDATE hold_periods SET until = NEW.since
     WHERE integration = OLD.integration AND kind = OLD.kind AND since = OLD.since
       AND until IS NULL AND NEW.since <> OLD.since;
    INSERT INTO hold_periods (integration, kind, placed_by, reason, since, until)
    VALUES (NEW.integration, NEW.kind, NEW.placed_by, NEW.reason, NEW.since, NULL)
    ON CONFLICT (integration, kind, since) DO UPDATE SET
      placed_by = excluded.placed_by, reason = excluded.reason, until = NULL;
END;

CREATE TRIGGER hold_lifted AFTER DELETE ON holds BEGIN
    UPDATE hold_periods
       SET until = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
     WHERE integration = OLD.integration AND kind = OLD.kind AND until IS NULL;
END;
