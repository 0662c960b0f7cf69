-- Version 3: the API tokens, the dashboard's sessions and the audit trail of
-- token changes, one set for the whole database (not per site): every node
-- on it accepts the same tokens and sessions. SQLite keeps the same in
-- `tokens.db` (src/store/tokens.rs). Only digests are stored, never a token
-- or a session id. Times are milliseconds of the database's own clock, the
-- one clock every node shares: a session expires by it.

-- The tokens, by name; a request finds its token by `hash` (unique index).
CREATE TABLE sluice_tokens (
    name         TEXT COLLATE "C" NOT NULL,
    role         TEXT   NOT NULL,
    hash         TEXT   NOT NULL UNIQUE, -- SHA-256 of the token, hex
    created_at   BIGINT NOT NULL,
    created_by   TEXT   NOT NULL,
    last_used_at BIGINT,                  -- written at most once a minute
    PRIMARY KEY (name)
);

-- The dashboard's sessions. A session cannot outlive its token: revoking
-- the token deletes them (the foreign key), even one being opened at that
-- moment on another node.
CREATE TABLE sluice_sessions (
    hash       TEXT   NOT NULL, -- SHA-256 of the cookie's session id, hex
    token      TEXT COLLATE "C" NOT NULL
               REFERENCES sluice_tokens (name) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (hash)
);
CREATE INDEX sluice_sessions_by_token ON sluice_sessions (token);
-- The expired ones are swept when a session opens.
CREATE INDEX sluice_sessions_by_expiry ON sluice_sessions (expires_at);

-- Who created or revoked which token, when, and how it ended; `node`: the
-- node whose API was asked (null: the command line).
CREATE TABLE sluice_token_audit (
    id      BIGINT GENERATED ALWAYS AS IDENTITY,
    ts      BIGINT NOT NULL,
    actor   TEXT   NOT NULL,
    action  TEXT   NOT NULL,
    subject TEXT   NOT NULL,
    reason  TEXT,
    outcome TEXT   NOT NULL,
    node    TEXT,
    PRIMARY KEY (id)
);
