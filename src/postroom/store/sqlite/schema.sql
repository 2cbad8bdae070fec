-- postroom SQLite schema, version 8: the whole of the latest schema.
-- Every statement is idempotent; schema.py runs it at each start, after the upgrades
-- that bring an older database up to the point where it applies.

CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
INSERT INTO schema_version (version)
    SELECT 8 WHERE NOT EXISTS (SELECT 1 FROM schema_version);

-- Which store this is, made once when the database is created; the data directory keeps
-- the same id in its instance-id file, so that a lost or replaced database is noticed.
CREATE TABLE IF NOT EXISTS instance (
    id TEXT NOT NULL
);
INSERT INTO instance (id)
    SELECT lower(hex(randomblob(16))) WHERE NOT EXISTS (SELECT 1 FROM instance);

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
    held        INTEGER NOT NULL DEFAULT 0,
    dsn_of      TEXT                  -- a DSN postroom made: the queue id it reports on
) WITHOUT ROWID;

-- The log's "held" filter; empty most of the time.
CREATE INDEX IF NOT EXISTS messages_held ON messages (id) WHERE held = 1;

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
    claimed_until   REAL,             -- a delivery lease: not claimed again before this time
    delay_warned    INTEGER NOT NULL DEFAULT 0, -- a delay DSN went out for it
    held            INTEGER NOT NULL DEFAULT 0, -- copy of messages.held, so claims need no join
    PRIMARY KEY (message_id, position)
) WITHOUT ROWID;

-- The scheduler's question, which recipients are due now, is a range scan of this
-- index in due order; the lease is read from the index too. Final and held recipients
-- are not in it. Queries must repeat its WHERE clause literally (delivery.py CLAIMABLE).
CREATE INDEX IF NOT EXISTS recipients_pending ON recipients (next_attempt_at, claimed_until)
    WHERE status IN ('queued', 'deferred') AND held = 0;

-- Leases in force (claimed, not yet settled): next_due() and expiry of crashed claims.
CREATE INDEX IF NOT EXISTS recipients_leased ON recipients (claimed_until)
    WHERE claimed_until IS NOT NULL;

-- The email log: one row per attempt per recipient (per mailer of a failover chain).
CREATE TABLE IF NOT EXISTS attempts (
    id          INTEGER PRIMARY KEY,  -- insertion order breaks ties of "at"
    message_id  TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    recipient   TEXT NOT NULL,
    at          REAL NOT NULL,
    mailer      TEXT NOT NULL,
    disposition TEXT NOT NULL,        -- delivered | deferred | bounced
    code        INTEGER,
    enhanced    TEXT,
    text        TEXT NOT NULL,
    host        TEXT,
    ip          TEXT,
    port        INTEGER,
    tls         TEXT,
    provider_id TEXT,
    duration    REAL NOT NULL DEFAULT 0,
    route       TEXT,                 -- the route taken, as the router decided then
    route_reason TEXT                 -- why: the conditions that matched, default, failover
);
CREATE INDEX IF NOT EXISTS attempts_message ON attempts (message_id, at);
-- Each mailer's last success and error, and its recent deliveries (mailer status).
CREATE INDEX IF NOT EXISTS attempts_mailer ON attempts (mailer, disposition, at);
-- The latest failed attempts (postroom status); health.py repeats its WHERE literally.
CREATE INDEX IF NOT EXISTS attempts_failed ON attempts (at) WHERE disposition != 'delivered';
-- Provider callbacks name a message by the id its API gave (RemoteInfo.provider_id).
CREATE INDEX IF NOT EXISTS attempts_provider ON attempts (provider_id)
    WHERE provider_id IS NOT NULL;

-- What provider callbacks (webhooks) said about sent messages: delivered, bounced later,
-- complained, opened. message_id is NULL when no attempt carried that provider id.
CREATE TABLE IF NOT EXISTS provider_events (
    id          INTEGER PRIMARY KEY,
    message_id  TEXT REFERENCES messages (id) ON DELETE CASCADE,
    attempt_id  INTEGER,              -- the attempt whose provider_id matched
    mailer      TEXT NOT NULL,
    provider_id TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    status      TEXT NOT NULL,        -- delivered | bounced | deferred | complained | opened | clicked | other
    kind        TEXT NOT NULL,        -- the provider's event name
    at          REAL NOT NULL,
    detail      TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS provider_events_message ON provider_events (message_id, at);

CREATE TABLE IF NOT EXISTS domains (
    name       TEXT PRIMARY KEY COLLATE NOCASE, -- A-label form
    created_at REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS users (
    address        TEXT PRIMARY KEY,       -- Address.key
    password_hash  TEXT NOT NULL,
    sender_domains TEXT NOT NULL DEFAULT '', -- comma-separated A-labels, besides its own domain
    created_at     REAL NOT NULL,
    any_sender     INTEGER NOT NULL DEFAULT 0 -- 1: may send as any domain
) WITHOUT ROWID;

-- HTTP API keys: only a SHA-256 of the high-entropy secret is kept; key_id finds the row.
CREATE TABLE IF NOT EXISTS api_keys (
    name           TEXT PRIMARY KEY,
    key_id         TEXT NOT NULL UNIQUE,
    secret_hash    TEXT NOT NULL,         -- hex SHA-256 of the secret part of the key
    sender_domains TEXT NOT NULL DEFAULT '', -- comma-separated A-labels, besides the local domains
    created_at     REAL NOT NULL,
    scopes         TEXT NOT NULL DEFAULT 'send,read', -- comma-separated: send, read, read-all, queue
    any_sender     INTEGER NOT NULL DEFAULT 0 -- 1: may send as any domain
) WITHOUT ROWID;

-- What intake knows of a message beyond its envelope: Message-ID, Subject, tags, metadata.
CREATE TABLE IF NOT EXISTS message_meta (
    id         TEXT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    message_id TEXT,                  -- the Message-ID header value
    subject    TEXT,
    tags       TEXT NOT NULL DEFAULT '[]', -- JSON array of strings
    metadata   TEXT NOT NULL DEFAULT '{}'  -- JSON object of strings
) WITHOUT ROWID;

-- Idempotency-Key answers: the first 202 for (API key, Idempotency-Key), for replay.
CREATE TABLE IF NOT EXISTS idempotency (
    key_name     TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,       -- hex SHA-256 of the request (content type and body)
    status       INTEGER NOT NULL,
    body         BLOB NOT NULL,       -- the answer's JSON bytes
    created_at   REAL NOT NULL,
    PRIMARY KEY (key_name, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_age ON idempotency (created_at);

-- >>> events (version 5): the event outbox, outgoing webhook deliveries, suppression list.
-- Events are written in the transaction of what caused them; fanned = 1 once each
-- configured webhook that wants one has a delivery row. No foreign key to messages:
-- a provider's event may name no message we know, and history outlives retention.
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY,   -- commit order: one writer at a time
    id         TEXT NOT NULL UNIQUE,  -- "ev_...": the id receivers see
    type       TEXT NOT NULL,         -- mail.events.EventType
    at         REAL NOT NULL,
    queue_id   TEXT,
    recipient  TEXT NOT NULL,
    mailer     TEXT,
    reply      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    origin     TEXT NOT NULL,
    details    TEXT NOT NULL,         -- JSON object of strings
    fanned     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_new ON events (seq) WHERE fanned = 0;
CREATE INDEX IF NOT EXISTS events_message ON events (queue_id, seq);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    webhook       TEXT NOT NULL,      -- the [[webhooks]] name
    seq           INTEGER NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    queue_id      TEXT,               -- the event's: one message's events go in order
    state         TEXT NOT NULL,      -- pending | delivered | failed
    attempts      INTEGER NOT NULL,
    created_at    REAL NOT NULL,      -- when it was fanned out: retries are counted from it
    next_at       REAL NOT NULL,
    claimed_until REAL,               -- a lease, as recipients have
    last_at       REAL,
    last_status   INTEGER,            -- the receiver's HTTP status
    last_error    TEXT,
    PRIMARY KEY (webhook, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_at)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_order ON webhook_deliveries (webhook, queue_id, seq)
    WHERE state = 'pending';
-- >>> version 7: the overview's complaints per slot; a message's webhook deliveries
CREATE INDEX IF NOT EXISTS events_complained ON events (at) WHERE type = 'complained';
CREATE INDEX IF NOT EXISTS webhook_deliveries_message ON webhook_deliveries (queue_id, seq);
-- <<< version 7

CREATE TABLE IF NOT EXISTS suppressions (
    address    TEXT NOT NULL,         -- lower case
    scope      TEXT NOT NULL,         -- '' for every sender, else a sender domain (A-label)
    reason     TEXT NOT NULL,         -- hard_bounce | complaint | unsubscribe | manual
    source     TEXT NOT NULL,
    created_at REAL NOT NULL,
    detail     TEXT NOT NULL,
    PRIMARY KEY (address, scope)
) WITHOUT ROWID;
-- <<< events
-- dashboard (admins) ------------------------------------------------------------------
-- The dashboard's administrators: logins of their own, never mail users.
CREATE TABLE IF NOT EXISTS admins (
    name           TEXT PRIMARY KEY,
    password_hash  TEXT NOT NULL,        -- argon2id
    created_at     REAL NOT NULL,
    sessions_after REAL NOT NULL DEFAULT 0 -- sessions begun at or before this are over
) WITHOUT ROWID;

-- The audit log: who did what in the dashboard, and when.
CREATE TABLE IF NOT EXISTS admin_actions (
    at     REAL NOT NULL,
    admin  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    client TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS admin_actions_at ON admin_actions (at);
-- end dashboard (admins) --------------------------------------------------------------

-- >>> log speed (version 6): the log's searches by recipient, the overview's counts, the
-- queue's depth.
-- A recipient search finds addresses from their start or by their domain (lower() folds
-- ASCII, as domains are A-labels); log.py repeats these expressions literally.
CREATE INDEX IF NOT EXISTS recipients_address ON recipients (lower(address));
CREATE INDEX IF NOT EXISTS recipients_domain
    ON recipients (lower(substr(address, instr(address, '@') + 1)));
-- Attempts by time: the summary report's window, the latest attempts.
CREATE INDEX IF NOT EXISTS attempts_at ON attempts (at);
-- Each mailer's messages delivered since a time, from the index alone (disposition too:
-- SQLite answers from an index alone only when it has every column the query names).
CREATE INDEX IF NOT EXISTS attempts_delivered ON attempts (mailer, at, message_id, disposition)
    WHERE disposition = 'delivered';

-- Attempts counted per 5-minute and per hour slot, mailer, sender domain and outcome,
-- kept by the trigger below in the transaction that records the attempt, so that the
-- overview reads a row per slot instead of the log. Rows outlive the attempts they
-- count (retention removes attempts, not history); 5-minute rows are kept two days.
CREATE TABLE IF NOT EXISTS attempt_rollups (
    period        INTEGER NOT NULL,   -- 300 or 3600 seconds
    slot          INTEGER NOT NULL,   -- the slot's start, seconds since the epoch
    mailer        TEXT NOT NULL,
    sender_domain TEXT NOT NULL,      -- lower case; '' for the null sender
    disposition   TEXT NOT NULL,
    shard         INTEGER NOT NULL DEFAULT 0, -- PostgreSQL spreads writers; always 0 here
    count         INTEGER NOT NULL,
    PRIMARY KEY (period, slot, mailer, sender_domain, disposition, shard)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS attempts_rollup AFTER INSERT ON attempts BEGIN
    INSERT INTO attempt_rollups (period, slot, mailer, sender_domain, disposition, count)
        SELECT p.period, CAST(NEW.at / p.period AS INTEGER) * p.period, NEW.mailer,
               lower(substr(m.sender, instr(m.sender, '@') + 1)), NEW.disposition, 1
        FROM messages m, (SELECT 300 AS period UNION ALL SELECT 3600) p
        WHERE m.id = NEW.message_id
        ON CONFLICT DO UPDATE SET count = count + 1;
    DELETE FROM attempt_rollups
        WHERE period = 300 AND slot < CAST(NEW.at / 3600 AS INTEGER) * 3600 - 172800;
END;

-- The queue's depth without reading the queue: waiting recipients counted per status and
-- held, kept by the triggers below in the transaction that changes them. The oldest
-- waiting message, and the waiting messages (counted up to a bound), from the index.
CREATE TABLE IF NOT EXISTS queue_totals (
    status     TEXT NOT NULL,         -- queued | deferred
    held       INTEGER NOT NULL,
    shard      INTEGER NOT NULL DEFAULT 0, -- PostgreSQL spreads writers; always 0 here
    recipients INTEGER NOT NULL,
    PRIMARY KEY (status, held, shard)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recipients_waiting ON recipients (message_id, status)
    WHERE status IN ('queued', 'deferred');
CREATE TRIGGER IF NOT EXISTS recipients_count_new AFTER INSERT ON recipients
    WHEN NEW.status IN ('queued', 'deferred') BEGIN
    INSERT INTO queue_totals (status, held, recipients) VALUES (NEW.status, NEW.held, 1)
        ON CONFLICT DO UPDATE SET recipients = recipients + 1;
END;
CREATE TRIGGER IF NOT EXISTS recipients_count_gone AFTER DELETE ON recipients
    WHEN OLD.status IN ('queued', 'deferred') BEGIN
    INSERT INTO queue_totals (status, held, recipients) VALUES (OLD.status, OLD.held, -1)
        ON CONFLICT DO UPDATE SET recipients = recipients - 1;
END;
CREATE TRIGGER IF NOT EXISTS recipients_count_moved AFTER UPDATE OF status, held ON recipients
    WHEN (OLD.status IS NOT NEW.status OR OLD.held IS NOT NEW.held)
        AND (OLD.status IN ('queued', 'deferred') OR NEW.status IN ('queued', 'deferred')) BEGIN
    INSERT INTO queue_totals (status, held, recipients)
        SELECT OLD.status, OLD.held, -1 WHERE OLD.status IN ('queued', 'deferred')
        ON CONFLICT DO UPDATE SET recipients = recipients - 1;
    INSERT INTO queue_totals (status, held, recipients)
        SELECT NEW.status, NEW.held, 1 WHERE NEW.status IN ('queued', 'deferred')
        ON CONFLICT DO UPDATE SET recipients = recipients + 1;
END;
-- <<< log speed

-- >>> recorded routes and DSN links (version 8): attempts.route and route_reason,
-- messages.dsn_of (columns: schema.py's upgrade step), and a DSN found by its original.
CREATE INDEX IF NOT EXISTS messages_dsn_of ON messages (dsn_of, id) WHERE dsn_of IS NOT NULL;
-- <<< recorded routes and DSN links
