-- postroom SQLite schema, version 1. Every statement is idempotent: run at each start.

CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
INSERT INTO schema_version (version)
    SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM schema_version);

CREATE TABLE IF NOT EXISTS messages (
    id          TEXT PRIMARY KEY,     -- queue id: time-ordered, so ORDER BY id is arrival order
    sender      TEXT NOT NULL,        -- '' for the null reverse-path
    ret         TEXT,                 -- RFC 3461 RET: FULL | HDRS
    envid       TEXT,                 -- RFC 3461 ENVID, xtext-decoded
    body_type   TEXT NOT NULL,        -- 7BIT | 8BITMIME
    smtputf8    INTEGER NOT NULL,
    size        INTEGER NOT NULL,     -- octets in message_bodies.data
    received_at REAL NOT NULL,
    source_kind TEXT NOT NULL,        -- smtp | api | sendmail | dsn
    principal   TEXT,
    client_ip   TEXT,
    client_port INTEGER,
    helo        TEXT,
    reverse_dns TEXT,
    protocol    TEXT,
    tls         TEXT,
    listener    TEXT,
    held        INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- A rowid table: Connection.blobopen() addresses a blob by rowid.
CREATE TABLE IF NOT EXISTS message_bodies (
    id   TEXT NOT NULL UNIQUE REFERENCES messages (id) ON DELETE CASCADE,
    data BLOB NOT NULL            -- trace headers, then the body, byte for byte
);

CREATE TABLE IF NOT EXISTS recipients (
    message_id      TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    position        INTEGER NOT NULL, -- RCPT order
    address         TEXT NOT NULL,
    notify          TEXT,             -- RFC 3461 NOTIFY, comma-separated; NULL when not given
    orcpt           TEXT,             -- RFC 3461 ORCPT, "addr-type;address"
    status          TEXT NOT NULL,    -- RecipientStatus
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    last_reply      TEXT,
    PRIMARY KEY (message_id, position)
) WITHOUT ROWID;

-- The scheduler's question: which recipients are due now?
CREATE INDEX IF NOT EXISTS recipients_due ON recipients (status, next_attempt_at);

CREATE TABLE IF NOT EXISTS domains (
    name       TEXT PRIMARY KEY COLLATE NOCASE, -- A-label form
    created_at REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS users (
    address        TEXT PRIMARY KEY,       -- Address.key
    password_hash  TEXT NOT NULL,
    sender_domains TEXT NOT NULL DEFAULT '', -- comma-separated; '' means any domain
    created_at     REAL NOT NULL
) WITHOUT ROWID;
