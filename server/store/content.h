/* Content learning's side of the store: recording what suggestions showed and which visits
 * succeeded, and keeping a worker's copy of what was learned for visit:suggest to read.
 *
 * Recording rides the group commit (HS_WRITE_CONTENT). A content write is submitted right after
 * the write it belongs to (a session start, a completion, feedback), so both normally share one
 * transaction; in PostgreSQL it applies only when that write committed, so a completion that
 * lost to another node, or a start that lost to the same `ref`, counts nothing. A session
 * counts as one success at most, whether it reached a goal, got a rating of 4 or more, or both;
 * its success is credited to every item its suggestions showed.
 *
 * The posteriors: each worker keeps the counts of the processes its sessions suggest for, and
 * re-reads them from PostgreSQL every second, so every node follows what every other node
 * learned within about a second. Reads never wait: an unknown process answers zeros (priors
 * only) while its first read is in flight. */
#ifndef HS_STORE_CONTENT_H
#define HS_STORE_CONTENT_H

#include <stdint.h>
#include <uv.h>

#include "db/pool.h"
#include "engine/engine.h"
#include "store/commit.h"

/* Records what a session start or an accepted completion produced: the items its suggest
 * events showed, and a success when its events reached one of proc's goals or rating (a
 * customer's rating on the step, 0 for none) is 4 or more. A rating also stores a feedback row
 * (source customer) for that step. seq is 0 for a start, else the completed step; digest (32
 * bytes, NULL for a start) is the completion's, which the database matches before counting.
 * Nothing waits for these writes: a failure to queue them is logged and dropped (the
 * session's own events stay the record of what was shown). */
void hs_content_record(hs_committer_t *c, hs_process_t *proc, int64_t brand_id,
                       const char *session_id, uint32_t seq, const uint8_t *digest,
                       const hs_value_t *events, int rating);

/* Credits feedback with a rating of 4 or more to the session's suggestions (once per session).
 * Submit it right after the feedback row itself. */
void hs_content_feedback(hs_committer_t *c, int64_t brand_id, const char *session_id);

/* The content stats (GET /v1/content/stats and `handsel report` share them). Each query takes
 * $1 the brand id and $2 the process name. */
extern const char hs_content_process_sql[];  /* one row when the brand has the process */
extern const char hs_content_totals_sql[];   /* slot, item, shown, successes; by slot, item */
extern const char hs_content_feedback_sql[]; /* count, rated, positive (customer, 4 or more) */

/* Builds the stats value of hs_stats_build from the results of the totals and feedback
 * queries (borrowed), adding feedback = {count, rated, positive}. In a. */
int hs_content_stats_value(const char *process, PGresult *totals, PGresult *feedback, hs_arena_t *a,
                           hs_value_t **out);

typedef struct hs_posteriors hs_posteriors_t;

/* A worker's cache of content counts, refreshed every second from pool (borrowed) on loop.
 * Owned by the caller: hs_posteriors_close before the pool is closed. */
int hs_posteriors_new(uv_loop_t *loop, hs_db_pool_t *pool, hs_posteriors_t **out);
void hs_posteriors_close(hs_posteriors_t *p);

/* The engine's counts hook (hs_vm_set_counts) with ctx = the hs_posteriors_t. brand is the
 * VM's brand: the brand id in decimal. */
void hs_posteriors_counts(void *ctx, const char *brand, const char *process, const char *slot,
                          const char *context, const char *item, hs_content_counts_t *out);

#endif
