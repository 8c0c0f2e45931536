/* Group commit. Writes that arrive while a commit is in flight wait, and go together in the
 * next one: one transaction, one round trip, one WAL flush for all of them (SPEC §5). Each kind
 * of write is one statement for the whole batch: each column travels as one array parameter in
 * PostgreSQL's binary format, which the statement unnests. Nothing is parsed on either side:
 * a row's values are kept as array elements from the start, and a batch only copies them.
 *
 * A write's callback runs once its transaction committed (synchronous_commit on), so a 200
 * sent from it is durable. Writes are idempotent by key: a row whose key exists already is
 * skipped, not an error (`inserted` false), so one conflicting write never aborts the batch. */
#ifndef HS_STORE_COMMIT_H
#define HS_STORE_COMMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "audit/tap.h"
#include "codec/value.h"
#include "core/buf.h"
#include "db/pool.h"
#include "http/metrics.h"

typedef enum hs_write_kind {
  HS_WRITE_SESSION = 0, /* a new session: its row and start events (key: id, or brand+ref) */
  HS_WRITE_COMPLETION,  /* an accepted completion and its validation record (key: id+seq) */
  HS_WRITE_REJECTION,   /* a rejected attempt's validation record (never conflicts) */
  HS_WRITE_FEEDBACK,    /* feedback on a session (key: session+step_seq for a rating step) */
  HS_WRITE_CONTENT,     /* suggestions shown and rewards earned (store/content.h); runs after
                           the kinds above in a batch and only counts what they committed */
  HS_WRITE_KINDS
} hs_write_kind_t;

typedef struct hs_committer hs_committer_t;
typedef struct hs_write hs_write_t;

/* status: HS_OK (committed), HS_EUNAVAIL (database unreachable: the write may or may not have
 * committed; it is idempotent, so a retry is safe), HS_EIO (the batch failed). */
typedef void (*hs_write_cb)(void *ctx, int status, bool inserted);

/* Borrows pool; the committer is owned by the caller (hs_committer_close). Batches are sent
 * from a uv_check handle on loop, so every write submitted during one loop iteration (all the
 * requests one read delivered) shares one transaction. metrics (borrowed, may be NULL) counts
 * batches and writes. */
int hs_committer_new(uv_loop_t *loop, hs_db_pool_t *pool, hs_metrics_shard_t *metrics,
                     hs_committer_t **out);
/* Fails every queued write with HS_EUNAVAIL and frees the committer once its handle closed.
 * A transaction in flight still calls back when the pool finishes it (close the pool after). */
void hs_committer_close(hs_committer_t *c);

enum { HS_ROW_MAX_COLUMNS = 16 };

/* One row of a kind's columns (listed in commit.c), added in their order by name; a column
 * skipped, or left out at the end, is NULL. Every string is checked to be UTF-8 and every
 * integer to fit its column, so one bad value can only fail its own row, never the batch it
 * would join. The first failure sticks in rc and later additions do nothing. A name out of
 * order, unknown, or of the wrong type is a bug: it asserts, and fails the row. */
typedef struct hs_row {
  hs_buf_t cells; /* owned: one binary array element per column so far (int32 length, -1 for
                     NULL, then the bytes) */
  int rc;         /* HS_OK, HS_EINVAL (not UTF-8, out of range), HS_ELIMIT or HS_ENOMEM */
  hs_write_kind_t kind;
  unsigned next; /* the next column */
} hs_row_t;

void hs_row_init(hs_row_t *r, hs_write_kind_t kind);
void hs_row_free(hs_row_t *r);
void hs_row_str(hs_row_t *r, const char *key, const char *s); /* s NULL: NULL */
void hs_row_int(hs_row_t *r, const char *key, int64_t v);     /* an int2, int4 or int8 column */
void hs_row_bool(hs_row_t *r, const char *key, bool v);
void hs_row_bytes(hs_row_t *r, const char *key, const void *p, size_t n);
void hs_row_msgpack(hs_row_t *r, const char *key, const hs_value_t *v); /* its msgpack bytes */
/* A text column holding a PostgreSQL array literal, which the statement casts to text[]. */
void hs_row_strs(hs_row_t *r, const char *key, const char *const *items, size_t n);

/* Queues the row, taking its cells (the row is left empty and may be freed). On success cb is
 * called exactly once, later from the loop, unless cancelled. Fails with the row's own rc when
 * building it failed, and with HS_ELIMIT when too many writes wait (the database is not
 * keeping up): answer 503. */
int hs_commit_submit(hs_committer_t *c, hs_row_t *row, hs_write_cb cb, void *ctx, hs_write_t **out);

/* The request that waited is gone: cb will not be called. The write itself still happens. */
void hs_write_cancel(hs_write_t *w);

/* Hands every record this committer inserts with a completion to tap (borrowed, may be NULL,
 * must outlive the committer), so the node's sealer need not read it back. */
void hs_committer_set_tap(hs_committer_t *c, hs_audit_tap_t *tap);

/* Statistics for /metrics and benchmarks. */
typedef struct hs_commit_stats {
  uint64_t batches; /* transactions finished */
  uint64_t writes;  /* writes in them */
  uint64_t sent;    /* transactions sent (a batch's careful second attempt counts again) */
} hs_commit_stats_t;
void hs_committer_stats(const hs_committer_t *c, hs_commit_stats_t *out);

#endif
