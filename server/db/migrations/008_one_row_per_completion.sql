-- One row per accepted completion where there were two. A completion wrote its events to
-- step_completions and its compliance record to validation_records, in the same transaction,
-- keyed by the same (session_id, seq); the second heap row, with its own statement, was about
-- a seventh of PostgreSQL's work per completion. The accepted record now carries what the
-- event log needs (the request's digest, the script's events, whether the session ended), and
-- step_completions becomes a view of it, so replay and every other reader are unchanged.
--
-- The columns a record is sealed with (hs_audit_record_hash) are not touched: the new columns
-- are the engine's own log, which `handsel audit replay` checks against the script.

ALTER TABLE validation_records ADD COLUMN digest bytea, ADD COLUMN events bytea,
  ADD COLUMN ended boolean;

-- Every existing completion must already have its accepted record (both were written in one
-- transaction). Stop here, changing nothing, if one does not.
DO $$
DECLARE
  missing bigint;
BEGIN
  SELECT count(*) INTO missing FROM step_completions c WHERE NOT EXISTS (
    SELECT 1 FROM validation_records v
    WHERE v.session_id = c.session_id AND v.seq = c.seq AND v.result = 'accepted');
  IF missing > 0 THEN
    RAISE EXCEPTION '% stored completions have no accepted validation record', missing
      USING HINT = 'list them with: SELECT session_id, seq FROM step_completions c WHERE NOT'
                   ' EXISTS (SELECT 1 FROM validation_records v WHERE v.session_id ='
                   ' c.session_id AND v.seq = c.seq AND v.result = ''accepted'')';
  END IF;
END
$$;

-- Filling the new columns of the existing accepted records is the one update the compliance
-- log ever gets: the append-only trigger and the revoked privilege are lifted for this
-- transaction only, and only the new columns are written.
ALTER TABLE validation_records DISABLE TRIGGER validation_records_no_update;
GRANT UPDATE (digest, events, ended) ON validation_records TO CURRENT_USER;
UPDATE validation_records v SET digest = c.digest, events = c.events, ended = c.ended
  FROM step_completions c
  WHERE v.result = 'accepted' AND v.session_id = c.session_id AND v.seq = c.seq;
REVOKE UPDATE (digest, events, ended) ON validation_records FROM CURRENT_USER;
ALTER TABLE validation_records ENABLE TRIGGER validation_records_no_update;

-- An accepted record is a completion and carries its log; a rejected one carries none.
ALTER TABLE validation_records ADD CONSTRAINT validation_records_completion CHECK (
  CASE WHEN result = 'accepted'
       THEN digest IS NOT NULL AND events IS NOT NULL AND ended IS NOT NULL
       ELSE digest IS NULL AND events IS NULL AND ended IS NULL END);

-- One accepted completion per (session, seq): what made a retried POST safe is now this index.
-- Replay reads a session's completions in seq order through it.
CREATE UNIQUE INDEX validation_records_step ON validation_records (session_id, seq)
  WHERE result = 'accepted';

DROP TABLE step_completions;
CREATE VIEW step_completions AS
  SELECT session_id, seq, digest, events, ended, device_time, server_time AS created_at
  FROM validation_records WHERE result = 'accepted';
