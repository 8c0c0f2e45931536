-- API tokens. A token belongs to one brand and has one role. The secret is shown once, when the
-- token is made, and only its SHA-256 is kept, so a stolen copy of this table opens nothing.
-- Revocation is a timestamp (the row stays, for the audit trail) and is announced on the
-- channel handsel_token so every node drops its cached copy at once.
CREATE TABLE tokens (
  id          text PRIMARY KEY,
  brand_id    bigint NOT NULL REFERENCES brands(id),
  role        text NOT NULL CHECK (role IN ('admin', 'author', 'contractor', 'compliance')),
  subject     text NOT NULL CHECK (length(subject) BETWEEN 1 AND 128),
  name        text NOT NULL DEFAULT '' CHECK (length(name) <= 128),
  hash        bytea NOT NULL UNIQUE,
  created_at  timestamptz NOT NULL DEFAULT now(),
  created_by  text NOT NULL DEFAULT '',
  revoked_at  timestamptz
);
CREATE INDEX tokens_brand ON tokens (brand_id, created_at);
