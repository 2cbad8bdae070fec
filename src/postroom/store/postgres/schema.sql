-- postroom PostgreSQL schema, version 8: the whole of the latest schema.
-- Every statement is idempotent; schema.py runs it when it creates or upgrades a
-- database, after the upgrades that bring an older one up to where it applies.
-- Times are seconds since the epoch (double precision), as the SQLite schema keeps them.

CREATE TABLE IF NOT EXISTS schema_version (
    version integer NOT NULL
);
INSERT INTO schema_version (version)
    SELECT 9 WHERE NOT EXISTS (SELECT 1 FROM schema_version);

-- Which store this is, made once when the database is created; each node's data
-- directory keeps the same id in its instance-id file.
CREATE TABLE IF NOT EXISTS instance (
    id text NOT NULL
);
INSERT INTO instance (id)
    SELECT replace(gen_random_uuid()::text, '-', '')
    WHERE NOT EXISTS (SELECT 1 FROM instance);

CREATE TABLE IF NOT EXISTS messages (
    id          text PRIMARY KEY COLLATE "C", -- queue id: time-ordered, bytewise order
    sender      text NOT NULL,        -- '' for the null reverse-path
    ret         text,
    envid       text,
    body_type   text NOT NULL,
    smtputf8    boolean NOT NULL,
    size        bigint NOT NULL,
    received_at double precision NOT NULL,
    source_kind text NOT NULL,
    principal   text,
    client_ip   text,
    client_port integer,
    helo        text,
    reverse_dns text,
    protocol    text,
    tls         text,
    listener    text,
    held        boolean NOT NULL DEFAULT false,
    dsn_of      text COLLATE "C"      -- a DSN postroom made: the queue id it reports on
);
CREATE INDEX IF NOT EXISTS messages_held ON messages (id) WHERE held;

CREATE TABLE IF NOT EXISTS message_bodies (
    id    text PRIMARY KEY COLLATE "C" REFERENCES messages (id) ON DELETE CASCADE,
    data  bytea,                      -- trace headers, then the body, byte for byte
    large oid,                        -- or, above inline_body_max, this large object
    CONSTRAINT message_bodies_one_place CHECK ((data IS NULL) <> (large IS NULL))
);
-- Bodies are written once and read whole: no compression attempt on the accept path.
ALTER TABLE message_bodies ALTER COLUMN data SET STORAGE EXTERNAL;

-- ---- schema version 4: large bodies as large objects (see also schema.py) ----
-- A large object lives as long as its row: whatever deletes the row (a delete, a purge,
-- the messages row's ON DELETE CASCADE) unlinks it in the same transaction, so no path
-- leaves an orphan. (TRUNCATE fires no row trigger: postroom never truncates.)
CREATE OR REPLACE FUNCTION postroom_unlink_body() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.large IS NOT NULL THEN
        PERFORM lo_unlink(OLD.large);
    END IF;
    RETURN OLD;
END $$;
CREATE OR REPLACE TRIGGER message_bodies_unlink AFTER DELETE ON message_bodies
    FOR EACH ROW EXECUTE FUNCTION postroom_unlink_body();
-- ---- end of schema version 4 ----

CREATE TABLE IF NOT EXISTS recipients (
    message_id      text NOT NULL COLLATE "C" REFERENCES messages (id) ON DELETE CASCADE,
    position        integer NOT NULL,
    address         text NOT NULL,
    notify          text,
    orcpt           text,
    status          text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at double precision,
    last_reply      text,
    claimed_until   double precision, -- a delivery lease: not claimed again before this time
    delay_warned    boolean NOT NULL DEFAULT false,
    held            boolean NOT NULL DEFAULT false, -- copy of messages.held: claims need no join
    PRIMARY KEY (message_id, position)
);
-- The claim's scan in due order; final and held recipients are not in it.
CREATE INDEX IF NOT EXISTS recipients_pending ON recipients (next_attempt_at, claimed_until)
    WHERE status IN ('queued', 'deferred') AND NOT held;
CREATE INDEX IF NOT EXISTS recipients_leased ON recipients (claimed_until)
    WHERE claimed_until IS NOT NULL;

CREATE TABLE IF NOT EXISTS attempts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- breaks ties of "at"
    message_id  text NOT NULL COLLATE "C" REFERENCES messages (id) ON DELETE CASCADE,
    recipient   text NOT NULL,
    at          double precision NOT NULL,
    mailer      text NOT NULL,
    disposition text NOT NULL,
    code        integer,
    enhanced    text,
    text        text NOT NULL,
    host        text,
    ip          text,
    port        integer,
    tls         text,
    provider_id text,
    duration    double precision NOT NULL DEFAULT 0,
    route       text,                 -- the route taken, as the router decided then
    route_reason text                 -- why: the conditions that matched, default, failover
);
CREATE INDEX IF NOT EXISTS attempts_message ON attempts (message_id, at);
CREATE INDEX IF NOT EXISTS attempts_mailer ON attempts (mailer, disposition, at);
-- The latest failed attempts (postroom status); delivery.py repeats its WHERE.
CREATE INDEX IF NOT EXISTS attempts_failed ON attempts (at, id) WHERE disposition <> 'delivered';
CREATE INDEX IF NOT EXISTS attempts_provider ON attempts (provider_id)
    WHERE provider_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS provider_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  text COLLATE "C" REFERENCES messages (id) ON DELETE CASCADE,
    attempt_id  bigint,
    mailer      text NOT NULL,
    provider_id text NOT NULL,
    recipient   text NOT NULL,
    status      text NOT NULL,
    kind        text NOT NULL,
    at          double precision NOT NULL,
    detail      text NOT NULL,
    received_at double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS provider_events_message ON provider_events (message_id, at);

CREATE TABLE IF NOT EXISTS domains (
    name       text PRIMARY KEY,      -- A-label form
    created_at double precision NOT NULL
);
-- Domain names compare without case, as SQLite's COLLATE NOCASE.
CREATE UNIQUE INDEX IF NOT EXISTS domains_name ON domains (lower(name));

CREATE TABLE IF NOT EXISTS users (
    address        text PRIMARY KEY,
    password_hash  text NOT NULL,
    sender_domains text NOT NULL DEFAULT '',
    created_at     double precision NOT NULL,
    any_sender     boolean NOT NULL DEFAULT false
);

CREATE TABLE IF NOT EXISTS api_keys (
    name           text PRIMARY KEY,
    key_id         text NOT NULL UNIQUE,
    secret_hash    text NOT NULL,
    sender_domains text NOT NULL DEFAULT '',
    created_at     double precision NOT NULL,
    scopes         text NOT NULL DEFAULT 'send,read',
    any_sender     boolean NOT NULL DEFAULT false
);

CREATE TABLE IF NOT EXISTS message_meta (
    id         text PRIMARY KEY COLLATE "C" REFERENCES messages (id) ON DELETE CASCADE,
    message_id text,
    subject    text,
    tags       text NOT NULL DEFAULT '[]', -- JSON text: metadata keeps its order
    metadata   text NOT NULL DEFAULT '{}'
);

CREATE TABLE IF NOT EXISTS idempotency (
    key_name     text NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    status       integer NOT NULL,
    body         bytea NOT NULL,
    created_at   double precision NOT NULL,
    PRIMARY KEY (key_name, key)
);
CREATE INDEX IF NOT EXISTS idempotency_age ON idempotency (created_at);

-- >>> events (version 5): the event outbox, outgoing webhook deliveries, suppression list.
-- As on SQLite. Claims lock rows FOR UPDATE SKIP LOCKED, so nodes never take one twice.
CREATE TABLE IF NOT EXISTS events (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         text NOT NULL UNIQUE,
    type       text NOT NULL,
    at         double precision NOT NULL,
    queue_id   text COLLATE "C",
    recipient  text NOT NULL,
    mailer     text,
    reply      text NOT NULL,
    reason     text NOT NULL,
    origin     text NOT NULL,
    details    text NOT NULL,         -- JSON object of strings
    fanned     smallint NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_new ON events (seq) WHERE fanned = 0;
CREATE INDEX IF NOT EXISTS events_message ON events (queue_id, seq);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    webhook       text NOT NULL,
    seq           bigint NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    queue_id      text COLLATE "C",
    state         text NOT NULL,
    attempts      integer NOT NULL,
    created_at    double precision NOT NULL,
    next_at       double precision NOT NULL,
    claimed_until double precision,
    last_at       double precision,
    last_status   integer,
    last_error    text,
    PRIMARY KEY (webhook, seq)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_at)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_order ON webhook_deliveries (webhook, queue_id, seq)
    WHERE state = 'pending';
-- >>> version 7: the overview's complaints per slot; a message's webhook deliveries
CREATE INDEX IF NOT EXISTS events_complained ON events (at) WHERE type = 'complained';
CREATE INDEX IF NOT EXISTS webhook_deliveries_message ON webhook_deliveries (queue_id, seq);
-- <<< version 7

CREATE TABLE IF NOT EXISTS suppressions (
    address    text NOT NULL COLLATE "C",
    scope      text NOT NULL COLLATE "C",
    reason     text NOT NULL,
    source     text NOT NULL,
    created_at double precision NOT NULL,
    detail     text NOT NULL,
    PRIMARY KEY (address, scope)
);
-- <<< events
-- ---- version 2: shared limits (store/limitops.py) -------------------------------------
-- Counters, not mail: UNLOGGED (no WAL, so a commit that touches only these does not
-- wait for a WAL flush; PostgreSQL empties them after a crash of the database).
CREATE UNLOGGED TABLE IF NOT EXISTS limit_windows (
    key     text PRIMARY KEY,
    ends_at double precision NOT NULL,
    used    bigint NOT NULL
);
CREATE UNLOGGED TABLE IF NOT EXISTS limit_buckets (
    key    text PRIMARY KEY,
    tokens double precision NOT NULL,
    at     double precision NOT NULL
);
CREATE UNLOGGED TABLE IF NOT EXISTS limit_hits (
    key     text NOT NULL,
    tag     text NOT NULL,
    at      double precision NOT NULL,
    expires double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS limit_hits_key ON limit_hits (key, at);
CREATE INDEX IF NOT EXISTS limit_hits_expires ON limit_hits (expires);
CREATE UNLOGGED TABLE IF NOT EXISTS limit_slots (
    key    text NOT NULL,
    holder text NOT NULL,
    held   integer NOT NULL,
    until  double precision NOT NULL,
    PRIMARY KEY (key, holder)
);
CREATE INDEX IF NOT EXISTS limit_slots_holder ON limit_slots (holder);
-- ---- end of version 2 -----------------------------------------------------------------

-- ---- version 3: the dashboard's admins -----------------------------------------------
-- The dashboard's administrators: logins of their own, never mail users.
CREATE TABLE IF NOT EXISTS admins (
    name           text PRIMARY KEY,
    password_hash  text NOT NULL,        -- argon2id
    created_at     double precision NOT NULL,
    sessions_after double precision NOT NULL DEFAULT 0 -- sessions begun at or before this are over
);

-- The audit log: who did what in the dashboard, and when.
CREATE TABLE IF NOT EXISTS admin_actions (
    at     double precision NOT NULL,
    admin  text NOT NULL,
    action text NOT NULL,
    target text NOT NULL DEFAULT '',
    client text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS admin_actions_at ON admin_actions (at);
-- ---- end of version 3 -----------------------------------------------------------------

-- ---- version 6 (log speed): the log's searches by recipient, the overview's counts ----
-- As on SQLite. A recipient search finds addresses from their start or by their domain,
-- compared bytewise (COLLATE "C"); log.py repeats these expressions literally.
CREATE INDEX IF NOT EXISTS recipients_address ON recipients ((lower(address)) COLLATE "C");
CREATE INDEX IF NOT EXISTS recipients_domain
    ON recipients ((lower(split_part(address, '@', 2))) COLLATE "C");
CREATE INDEX IF NOT EXISTS attempts_at ON attempts (at);
-- Each mailer's messages delivered since a time, from the index alone (disposition too:
-- SQLite answers from an index alone only when it has every column the query names).
CREATE INDEX IF NOT EXISTS attempts_delivered ON attempts (mailer, at, message_id, disposition)
    WHERE disposition = 'delivered';

-- Attempts counted per 5-minute and per hour slot, mailer, sender domain and outcome,
-- kept by the trigger below in the transaction that records the attempt. Each writing
-- session counts into its own row (shard = its backend pid), so concurrent deliveries
-- never wait for one another on a counter; readers add the shards up. Rows outlive the
-- attempts they count; 5-minute rows are kept two days.
CREATE TABLE IF NOT EXISTS attempt_rollups (
    period        integer NOT NULL,   -- 300 or 3600 seconds
    slot          bigint NOT NULL,    -- the slot's start, seconds since the epoch
    mailer        text NOT NULL,
    sender_domain text NOT NULL,      -- lower case; '' for the null sender
    disposition   text NOT NULL,
    shard         integer NOT NULL DEFAULT 0,
    count         bigint NOT NULL,
    PRIMARY KEY (period, slot, mailer, sender_domain, disposition, shard)
);
-- A statement trigger over the rows it added: a batch of outcomes is one upsert per
-- counter row, not one per attempt.
CREATE OR REPLACE FUNCTION postroom_rollup_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO attempt_rollups AS r
            (period, slot, mailer, sender_domain, disposition, shard, count)
        SELECT p.period, (floor(a.at / p.period) * p.period)::bigint, a.mailer,
               lower(split_part(m.sender, '@', 2)), a.disposition, pg_backend_pid(), count(*)
        FROM added a JOIN messages m ON m.id = a.message_id,
             (VALUES (300), (3600)) AS p (period)
        GROUP BY 1, 2, 3, 4, 5
        ON CONFLICT (period, slot, mailer, sender_domain, disposition, shard)
        DO UPDATE SET count = r.count + EXCLUDED.count;
    -- SKIP LOCKED: two sessions pruning the same old rows neither wait nor deadlock.
    DELETE FROM attempt_rollups WHERE ctid IN (
        SELECT ctid FROM attempt_rollups
        WHERE period = 300
          AND slot < (SELECT (floor(max(at) / 3600) * 3600)::bigint - 172800 FROM added)
        FOR UPDATE SKIP LOCKED);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS attempts_rollup ON attempts;
DROP FUNCTION IF EXISTS postroom_rollup_attempt();
CREATE OR REPLACE TRIGGER attempts_rollups AFTER INSERT ON attempts
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION postroom_rollup_attempts();

-- The queue's depth without reading the queue: waiting recipients counted per status and
-- held, kept by the triggers below (a row per writing session, as above; readers sum).
CREATE TABLE IF NOT EXISTS queue_totals (
    status     text NOT NULL,
    held       boolean NOT NULL,
    shard      integer NOT NULL DEFAULT 0,
    recipients bigint NOT NULL,
    PRIMARY KEY (status, held, shard)
);
CREATE INDEX IF NOT EXISTS recipients_waiting ON recipients (message_id, status)
    WHERE status IN ('queued', 'deferred');
CREATE OR REPLACE FUNCTION postroom_count_waiting() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.status IN ('queued', 'deferred') THEN
        INSERT INTO queue_totals AS q (status, held, shard, recipients)
            VALUES (OLD.status, OLD.held, pg_backend_pid(), -1)
            ON CONFLICT (status, held, shard) DO UPDATE SET recipients = q.recipients - 1;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.status IN ('queued', 'deferred') THEN
        INSERT INTO queue_totals AS q (status, held, shard, recipients)
            VALUES (NEW.status, NEW.held, pg_backend_pid(), 1)
            ON CONFLICT (status, held, shard) DO UPDATE SET recipients = q.recipients + 1;
    END IF;
    RETURN NULL;
END $$;
-- Accepting inserts a batch's recipients in one statement: counted by one upsert per
-- (status, held), from the statement's new rows, not one per recipient.
CREATE OR REPLACE FUNCTION postroom_count_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO queue_totals AS q (status, held, shard, recipients)
        SELECT status, held, pg_backend_pid(), count(*) FROM added
        WHERE status IN ('queued', 'deferred')
        GROUP BY status, held
        ON CONFLICT (status, held, shard)
        DO UPDATE SET recipients = q.recipients + EXCLUDED.recipients;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS recipients_count_new ON recipients;
CREATE OR REPLACE TRIGGER recipients_count_added AFTER INSERT ON recipients
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION postroom_count_added();
CREATE OR REPLACE TRIGGER recipients_count_gone AFTER DELETE ON recipients
    FOR EACH ROW WHEN (OLD.status IN ('queued', 'deferred'))
    EXECUTE FUNCTION postroom_count_waiting();
CREATE OR REPLACE TRIGGER recipients_count_moved AFTER UPDATE OF status, held ON recipients
    FOR EACH ROW WHEN ((OLD.status, OLD.held) IS DISTINCT FROM (NEW.status, NEW.held)
        AND (OLD.status IN ('queued', 'deferred') OR NEW.status IN ('queued', 'deferred')))
    EXECUTE FUNCTION postroom_count_waiting();
-- ---- end of version 6 ----
-- ---- version 8: every change to the directory NOTIFYs the nodes (their RCPT caches) ----
-- A statement trigger, so every writer counts (a node, the CLI, psql, db copy), and one
-- notification per statement; PostgreSQL sends a transaction's at its commit.
CREATE OR REPLACE FUNCTION postroom_directory_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('postroom_directory', '');
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER domains_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON domains FOR EACH STATEMENT EXECUTE FUNCTION postroom_directory_changed();
CREATE OR REPLACE TRIGGER users_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON users FOR EACH STATEMENT EXECUTE FUNCTION postroom_directory_changed();
-- ---- end of version 8 ----

-- ---- version 9 (recorded routes and DSN links): attempts.route and route_reason,
-- messages.dsn_of (columns: schema.py's upgrade step), and a DSN found by its original.
CREATE INDEX IF NOT EXISTS messages_dsn_of ON messages (dsn_of, id) WHERE dsn_of IS NOT NULL;
-- ---- end of version 9
