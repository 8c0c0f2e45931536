-- A completion's answer is no longer stored. It was {status, next}, and next is the step the
-- script reached after the completion: replaying the session's record up to that completion
-- reaches the same step (replay holds the script to its record), so a retry is answered from
-- the record alone. The answer was the largest column of the row written for every completion,
-- and it repeated the whole next step each time.
ALTER TABLE step_completions DROP COLUMN response;
