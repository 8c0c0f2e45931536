-- A session's rejected attempts, by session. `handsel audit replay` reads every attempt of one
-- session, accepted and rejected; the accepted ones come through validation_records_step, and
-- without this index the rejected ones meant reading all of the brand's records. Rejected
-- attempts are a small part of the log, and an accepted completion costs it only the check of
-- the index's predicate.
CREATE INDEX validation_records_rejected ON validation_records (session_id, seq)
  WHERE result = 'rejected';
