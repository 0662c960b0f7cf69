-- Version 6: when each hold was on, for the charts' bands (as SQLite's
-- src/store/sqlite/migrations/007_hold_periods.sql): kept by a trigger on
-- `sluice_holds`, in the transaction that places or lifts the hold.
CREATE TABLE sluice_hold_periods (
    site        TEXT COLLATE "C" NOT NULL,
    integration TEXT COLLATE "C" NOT NULL,
    kind        TEXT COLLATE "C" NOT NULL,
    placed_by   TEXT   NOT NULL,
    reason      TEXT   NOT NULL,
    since       BIGINT NOT NULL,
    until       BIGINT,
    PRIMARY KEY (site, integration, kind, since)
);
CREATE INDEX sluice_hold_periods_by_until ON sluice_hold_periods (site, until);

INSERT INTO sluice_hold_periods (site, integration, kind, placed_by, reason, since, until)
SELECT site, integration, kind, placed_by, reason, since, NULL FROM sluice_holds;

CREATE FUNCTION sluice_hold_period() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE sluice_hold_periods
           SET until = CASE WHEN TG_OP = 'UPDATE' THEN NEW.since
                            ELSE (extract(epoch FROM clock_timestamp()) * 1000)::bigint END
         WHERE site = OLD.site AND integration = OLD.integration AND kind = OLD.kind
           AND until IS NULL
           AND (TG_OP = 'DELETE' OR NEW.since <> OLD.since);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO sluice_hold_periods (site, integration, kind, placed_by, reason, since, until)
        VALUES (NEW.site, NEW.integration, NEW.kind, NEW.placed_by, NEW.reason, NEW.since, NULL)
        ON CONFLICT (site, integration, kind, since) DO UPDATE SET
          placed_by = excluded.placed_by, reason = excluded.reason, until = NULL;
        RETURN NEW;
    END IF;
    RETURN OLD;
END $$;

CREATE TRIGGER sluice_hold_period AFTER INSERT OR UPDATE OR DELETE ON sluice_holds
    FOR EACH ROW EXECUTE FUNCTION sluice_hold_period();
