-- The compliance log's chain and its signed checkpoints (SPEC §6).
--
-- Records are chained per brand in the order of their id: record n of a brand commits to record
-- n-1 through chain_n = SHA-256(chain_{n-1} || record_hash_n), chain_0 = 32 zero bytes. Nothing
-- about the chain is written on the request path: a sealer (one at a time across every node,
-- see audit_horizon) waits until every record up to an id is final (see validation_record_id),
-- hashes the new records of each brand and stores one signed checkpoint per brand, as a
-- Certificate Transparency log merges entries after a delay. The chain itself is never stored: an export recomputes it from
-- the nearest checkpoint, and `handsel verify` recomputes it again from the export.

-- What a record keeps besides the data: the document each ack field was about (msgpack
-- {field = {id, hash, version?}}) and the names of the step's pii fields, which an export
-- redacts for readers who may not see them.
ALTER TABLE validation_records ADD COLUMN documents bytea, ADD COLUMN pii text[];

-- The few records with a large data member (a request body may be up to HANDSEL_MAX_BODY): an
-- export ends a page at the next of them, so a page of records stays a few megabytes without
-- summing sizes row by row.
CREATE INDEX validation_records_large ON validation_records (brand_id, id)
  WHERE octet_length(data) > 4096;

-- A record's id is drawn only once its transaction has an xid. The sealer reads the id
-- sequence and then takes an xid of its own; with this order guaranteed, every transaction that
-- drew an id up to the value read has a smaller xid, so once every smaller xid has finished the
-- range of ids is final and can be chained, with no lock writers would wait for. (Left to
-- itself, PostgreSQL draws the default before the row's insert assigns the xid.)
CREATE FUNCTION validation_record_id() RETURNS bigint LANGUAGE sql VOLATILE AS $$
  SELECT CASE WHEN pg_current_xact_id() IS NOT NULL
              THEN nextval('validation_records_id_seq') END
$$;
ALTER TABLE validation_records ALTER COLUMN id SET DEFAULT validation_record_id();

-- The highest record id already sealed. Every record with a smaller id is final (committed or
-- never to exist), so ids, not commit times, fix the chain's order. Sealers on several nodes
-- race to move it with a compare-and-set; the loser's work is discarded.
CREATE TABLE audit_horizon (
  only_row        boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  sealed_through  bigint NOT NULL
);
INSERT INTO audit_horizon (sealed_through) VALUES (0);

-- Public keys that have signed checkpoints, by key id (the first 16 hex digits of the SHA-256
-- of the raw Ed25519 public key). Private keys never reach the database.
CREATE TABLE audit_keys (
  key_id      text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),
  public_key  bytea NOT NULL CHECK (length(public_key) = 32),
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- A signed checkpoint: the brand's chain has `size` records and its head is `head`; the last
-- of them is record `through_id`. signed_us is the signing time (microseconds since the Unix
-- epoch), part of the signed text.
CREATE TABLE audit_checkpoints (
  brand_id    bigint NOT NULL REFERENCES brands(id),
  size        bigint NOT NULL CHECK (size > 0),
  head        bytea NOT NULL CHECK (length(head) = 32),
  through_id  bigint NOT NULL,
  signed_us   bigint NOT NULL,
  -- Not a foreign key: checking one locks the referenced row (FOR KEY SHARE), which needs the
  -- UPDATE privilege this role gives up on audit_keys below. The sealer registers its key in
  -- the same transaction as its checkpoints.
  key_id      text NOT NULL CHECK (key_id ~ '^[0-9a-f]{16}$'),
  signature   bytea NOT NULL CHECK (length(signature) = 64),
  PRIMARY KEY (brand_id, size)
);
CREATE INDEX audit_checkpoints_time ON audit_checkpoints (brand_id, signed_us);

-- Checkpoints and keys are as append-only as the records they seal.
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE OR DELETE ON audit_checkpoints
  FOR EACH ROW EXECUTE FUNCTION validation_records_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
  FOR EACH STATEMENT EXECUTE FUNCTION validation_records_append_only();
CREATE TRIGGER audit_keys_no_update BEFORE UPDATE OR DELETE ON audit_keys
  FOR EACH ROW EXECUTE FUNCTION validation_records_append_only();
CREATE TRIGGER audit_keys_no_truncate BEFORE TRUNCATE ON audit_keys
  FOR EACH STATEMENT EXECUTE FUNCTION validation_records_append_only();

-- Besides the triggers (which bind even the owner), the role that runs the migrations, and so
-- the server, gives up the privileges themselves. A role that is not a superuser then gets
-- "permission denied"; a superuser still meets the triggers.
REVOKE UPDATE, DELETE, TRUNCATE ON validation_records, audit_checkpoints, audit_keys
  FROM PUBLIC, CURRENT_USER;
