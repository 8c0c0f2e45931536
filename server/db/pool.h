/* A worker's PostgreSQL connections: non-blocking libpq in pipeline mode, driven by the
 * worker's libuv loop. Nothing here ever blocks the loop.
 *
 * A job is one or more statements sent back to back and closed by one Sync, so PostgreSQL runs
 * them as one implicit transaction: all commit or none does. Many jobs ride one connection at
 * once (pipelining); results come back in order and each job's callback runs once its Sync
 * arrives, which is after its transaction committed (synchronous_commit on).
 *
 * Failure: a connection that breaks fails every job on it with HS_EUNAVAIL (the outcome of a
 * commit in flight is then unknown; callers make writes idempotent), and reconnects with backoff.
 * While no connection is up, hs_db_exec fails at once with HS_EUNAVAIL: callers answer 503. */
#ifndef HS_DB_POOL_H
#define HS_DB_POOL_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "core/error.h"

typedef struct hs_db_pool hs_db_pool_t;
typedef struct hs_db_job hs_db_job_t;

/* One statement. Parameters are text unless formats[i] is 1 (binary); values[i] NULL is SQL
 * NULL. Everything is copied by libpq during hs_db_exec: it may live on the caller's stack. */
typedef struct hs_db_stmt {
  const char *name; /* non-NULL: prepared once per connection under this name, then reused */
  const char *sql;
  int n_params;
  const char *const *values;
  const int *lengths; /* may be NULL when every parameter is text */
  const int *formats; /* may be NULL: all text */
  bool binary_result; /* results in binary format (bytea as raw bytes, not hex text) */
} hs_db_stmt_t;

/* What a job's callback gets. results[i] is statement i's result (NULL if it never ran because
 * an earlier one failed); borrowed: cleared right after the callback returns. */
typedef struct hs_db_result {
  int status; /* HS_OK, HS_EUNAVAIL (connection lost), or HS_EIO (a statement failed) */
  size_t n_results;
  PGresult **results;
  const char *error;    /* borrowed; a message when status != HS_OK */
  const char *sqlstate; /* borrowed; "" when unknown (e.g. 23505 unique violation) */
} hs_db_result_t;

typedef void (*hs_db_done_cb)(void *ctx, const hs_db_result_t *res);

/* Creates a pool of n_conns connections on loop and starts connecting. conninfo is copied.
 * The pool is owned by the caller; hs_db_pool_close frees it once its handles are closed. */
int hs_db_pool_new(uv_loop_t *loop, const char *conninfo, unsigned n_conns, hs_db_pool_t **out,
                   hs_err_t *err);

/* Stops everything: in-flight jobs get HS_EUNAVAIL, then the pool frees itself. */
void hs_db_pool_close(hs_db_pool_t *pool);

/* True when at least one connection is up. */
bool hs_db_pool_ready(const hs_db_pool_t *pool);
/* How many open pools of this process have no connection up (any thread). */
unsigned hs_db_pools_down(void);

/* Sends stmts[0..n) as one transaction. On success *job (if not NULL) identifies it for
 * hs_db_job_cancel and cb will be called exactly once. On failure (HS_EUNAVAIL: no connection;
 * HS_ELIMIT: too many jobs queued) cb is never called. */
int hs_db_exec(hs_db_pool_t *pool, const hs_db_stmt_t *stmts, size_t n, hs_db_done_cb cb, void *ctx,
               hs_db_job_t **job);

/* The caller no longer wants the result (its stream was reset): cb will not be called. The
 * statements still run; a transaction already sent cannot be recalled. NULL is ignored. */
void hs_db_job_cancel(hs_db_job_t *job);

#endif
