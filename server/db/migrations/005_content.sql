-- Learning which content works (SPEC §3 visit:suggest, §4 content stats).
--
-- content_shown has one row per item a suggestion put in front of a customer; content_rewards
-- one row per session that succeeded (reached a goal outcome, or got a rating of 4 or more),
-- so a session counts once even with both. content_counts keeps the running totals per item
-- that the posteriors and the stats route read, updated in the same transaction as the rows.

CREATE TABLE content_shown (
  brand_id    bigint NOT NULL REFERENCES brands(id),
  process     text NOT NULL,
  slot        text NOT NULL,
  context     text NOT NULL DEFAULT '',
  item        text NOT NULL,
  session_id  text NOT NULL REFERENCES sessions(id),
  seq         integer NOT NULL,          -- the step after which the suggestion was made
  rank        integer NOT NULL,          -- 0, 1, ...: the items shown after that step, in order
  propensity  double precision NOT NULL, -- the chance the item had of being picked
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (session_id, seq, rank)
);
CREATE INDEX content_shown_process ON content_shown (brand_id, process, created_at);

CREATE TABLE content_rewards (
  session_id  text PRIMARY KEY REFERENCES sessions(id),
  brand_id    bigint NOT NULL REFERENCES brands(id),
  source      text NOT NULL CHECK (source IN ('goal', 'feedback')),
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE content_counts (
  brand_id    bigint NOT NULL REFERENCES brands(id),
  process     text NOT NULL,
  slot        text NOT NULL,
  context     text NOT NULL,
  item        text NOT NULL,
  shown       bigint NOT NULL DEFAULT 0,
  successes   bigint NOT NULL DEFAULT 0,
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (brand_id, process, slot, context, item)
);

-- A customer's rating given on a step of the process is feedback too, keyed by that step so a
-- retried completion stores it once.
ALTER TABLE feedback ADD COLUMN step_seq integer;
CREATE UNIQUE INDEX feedback_step ON feedback (session_id, step_seq) WHERE step_seq IS NOT NULL;
