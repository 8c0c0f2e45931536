-- The core schema: tenants, process versions, sessions and their event logs, evidence,
-- feedback and the validation records of the compliance log.
--
-- Conventions: every row belongs to one brand (brand_id) and every query filters on it;
-- message payloads are stored as the msgpack bytes the engine produced (bytea), so a replay
-- reads back exactly what was recorded; times are timestamptz set by the server.
--
-- The two tables written for every completion (step_completions, validation_records) carry no
-- foreign keys: checking them was a third of the database's work per completion, and the
-- server writes a completion only for a session it has already read from, or committed to,
-- this database.

CREATE TABLE brands (
  id          bigserial PRIMARY KEY,
  name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,63}$'),
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- A version is the SHA-256 of the source, so versions are immutable by construction.
CREATE TABLE process_versions (
  brand_id    bigint NOT NULL REFERENCES brands(id),
  name        text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,63}$'),
  version     text NOT NULL CHECK (version ~ '^[0-9a-f]{64}$'),
  title       text NOT NULL DEFAULT '',
  source      text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  created_by  text NOT NULL DEFAULT '',
  PRIMARY KEY (brand_id, name, version)
);

CREATE TABLE processes (
  brand_id        bigint NOT NULL REFERENCES brands(id),
  name            text NOT NULL,
  active_version  text NOT NULL,
  updated_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (brand_id, name),
  FOREIGN KEY (brand_id, name, active_version)
    REFERENCES process_versions (brand_id, name, version)
);

-- A session is pinned to the version it started on until it ends.
CREATE TABLE sessions (
  id             text PRIMARY KEY,
  brand_id       bigint NOT NULL REFERENCES brands(id),
  process        text NOT NULL,
  version        text NOT NULL,
  contractor_id  text NOT NULL,
  ref            text,
  customer       bytea NOT NULL,
  contractor     bytea NOT NULL,
  seed           bigint NOT NULL,
  events         bytea NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (brand_id, process, version) REFERENCES process_versions (brand_id, name, version)
);
-- Starting a visit again with the same ref returns the same session.
CREATE UNIQUE INDEX sessions_ref ON sessions (brand_id, contractor_id, ref) WHERE ref IS NOT NULL;
CREATE INDEX sessions_brand ON sessions (brand_id, created_at);

-- The session's event log, which replay reads back: the events of the start call live in
-- sessions.events, and those of each accepted completion in its step_completions row, so one
-- completion is one row. One accepted completion per (session, seq) is also the key that makes a
-- retried POST safe: the digest of the request tells a retry of the same completion (same
-- answer) from a different one (409).
CREATE TABLE step_completions (
  session_id   text NOT NULL,
  seq          integer NOT NULL,
  digest       bytea NOT NULL,
  response     bytea NOT NULL,
  events       bytea NOT NULL,
  ended        boolean NOT NULL DEFAULT false,
  device_time  timestamptz,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (session_id, seq)
);

-- Evidence, content-addressed: the key is the SHA-256 of the bytes.
CREATE TABLE blobs (
  brand_id     bigint NOT NULL REFERENCES brands(id),
  hash         text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
  size         bigint NOT NULL,
  content_type text NOT NULL DEFAULT 'application/octet-stream',
  content      bytea NOT NULL,
  uploaded_by  text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (brand_id, hash)
);

CREATE TABLE feedback (
  id          bigserial PRIMARY KEY,
  brand_id    bigint NOT NULL REFERENCES brands(id),
  session_id  text NOT NULL REFERENCES sessions(id),
  source      text NOT NULL CHECK (source IN ('customer', 'contractor')),
  rating      smallint CHECK (rating BETWEEN 1 AND 5),
  comment     text,
  tags        text[] NOT NULL DEFAULT '{}',
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feedback_session ON feedback (session_id);

-- The compliance log: one record per completion attempt, accepted or rejected, written in the
-- same transaction as the completion. Rows are only ever inserted (see the trigger below).
CREATE TABLE validation_records (
  id             bigserial PRIMARY KEY,
  brand_id       bigint NOT NULL,
  session_id     text NOT NULL,
  process        text NOT NULL,
  version        text NOT NULL,
  step_id        text NOT NULL,
  seq            integer NOT NULL,
  contractor_id  text NOT NULL,
  server_time    timestamptz NOT NULL DEFAULT now(),
  device_time    timestamptz,
  result         text NOT NULL CHECK (result IN ('accepted', 'rejected')),
  errors         bytea,
  data_digest    bytea NOT NULL,
  data           bytea NOT NULL
);
CREATE INDEX validation_records_brand ON validation_records (brand_id, id);

-- Nothing, not even the server's own role, may rewrite the compliance log.
CREATE FUNCTION validation_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'validation records are append-only: % is not allowed', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER validation_records_no_update BEFORE UPDATE OR DELETE ON validation_records
  FOR EACH ROW EXECUTE FUNCTION validation_records_append_only();
CREATE TRIGGER validation_records_no_truncate BEFORE TRUNCATE ON validation_records
  FOR EACH STATEMENT EXECUTE FUNCTION validation_records_append_only();
