#include "db/pool.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/str.h"

enum {
  MAX_JOBS_PER_CONN = 4096, /* beyond this the database is not keeping up: shed load */
  MAX_PREPARED = 64,
  TICK_MS = 100,
  CONNECT_TIMEOUT_MS = 5000,
  BACKOFF_MIN_MS = 100,
  BACKOFF_MAX_MS = 5000,
};

typedef struct conn conn_t;

struct hs_db_job {
  hs_db_job_t *next;
  conn_t *conn;
  hs_db_done_cb cb; /* NULL once cancelled */
  void *ctx;
  size_t n;           /* statements */
  PGresult **results; /* owned: n entries */
  int *cmd_stmt;      /* per command sent: its statement index i, or -1 - i for its Prepare */
  /* owned, NULL unless the job sent a Prepare: per statement, the name it prepared (borrowed
     from conn.prepared), so that a Prepare which failed or was skipped is forgotten again */
  const char **prepares;
  size_t n_cmds;
  size_t cmd_done; /* commands whose results have ended */
  int status;
  char error[256];
  char sqlstate[6];
};

typedef enum conn_state { C_DOWN, C_CONNECTING, C_UP } conn_state_t;

struct conn {
  hs_db_pool_t *pool;
  PGconn *pg;      /* owned */
  uv_poll_t *poll; /* owned: heap, because a poll handle is bound to one fd and freed on close */
  int poll_fd;
  conn_state_t state;
  uint64_t since;    /* ms: connect started */
  uint64_t retry_at; /* ms: next connect attempt while DOWN */
  uint32_t backoff_ms;
  hs_db_job_t *head, *tail; /* owned: jobs in flight, in pipeline order */
  unsigned n_jobs;
  char *prepared[MAX_PREPARED]; /* owned copies of statement names prepared on this conn */
  unsigned n_prepared;
};

struct hs_db_pool {
  uv_loop_t *loop;
  uv_timer_t timer;
  char *conninfo; /* owned */
  unsigned n_conns;
  conn_t *conns; /* owned */
  bool closing;
  unsigned n_up;    /* connections in C_UP */
  int open_handles; /* the pool frees itself when this drops to 0 after close */
};

/* Open pools with no live connection, for /readyz: a worker whose pool has not connected yet
 * would answer 503 to everything, so the server is not ready until every pool has one. */
static atomic_uint g_pools_down;

unsigned hs_db_pools_down(void) {
  return atomic_load(&g_pools_down);
}

static void conn_watch(conn_t *c, int events);
static void conn_advance_connect(conn_t *c);
static int conn_send(conn_t *c, const hs_db_stmt_t *stmts, size_t n, hs_db_done_cb cb, void *ctx,
                     hs_db_job_t **job_out);

static void job_free(hs_db_job_t *j) {
  for (size_t i = 0; i < j->n; i++) {
    if (j->results[i] != NULL) {
      PQclear(j->results[i]);
    }
  }
  free(j->results);
  free(j->cmd_stmt);
  free(j->prepares);
  free(j);
}

static void job_finish(hs_db_job_t *j) {
  if (j->cb != NULL) {
    hs_db_result_t r = {.status = j->status,
                        .n_results = j->n,
                        .results = j->results,
                        .error = j->error,
                        .sqlstate = j->sqlstate};
    j->cb(j->ctx, &r);
  }
  job_free(j);
}

static void pool_handle_closed(uv_handle_t *h) {
  hs_db_pool_t *p = h->data;
  if (h->type == UV_POLL) {
    free(h);
  }
  if (--p->open_handles == 0) {
    for (unsigned i = 0; i < p->n_conns; i++) {
      for (unsigned k = 0; k < p->conns[i].n_prepared; k++) {
        free(p->conns[i].prepared[k]);
      }
    }
    free(p->conns);
    free(p->conninfo);
    free(p);
  }
}

static void conn_unpoll(conn_t *c) {
  if (c->poll != NULL) {
    uv_poll_stop(c->poll);
    c->poll->data = c->pool;
    c->pool->open_handles++;
    uv_close((uv_handle_t *)c->poll, pool_handle_closed);
    c->poll = NULL;
    c->poll_fd = -1;
  }
}

/* Fails every job on the connection and schedules a reconnect. */
static void conn_broken(conn_t *c, const char *why) {
  char msg[200]; /* leaves room for the prefix in a job's 256-byte error */
  hs_strlcpy(msg, why != NULL && *why != '\0' ? why : "connection lost", sizeof msg);
  size_t len = strlen(msg);
  while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == ' ')) {
    msg[--len] = '\0';
  }
  if (c->state == C_UP) {
    if (!c->pool->closing) {
      hs_log(HS_LOG_WARN, "db_connection_lost", "{s:s}", "error", msg);
    }
    if (--c->pool->n_up == 0) {
      atomic_fetch_add(&g_pools_down, 1);
    }
  }
  conn_unpoll(c);
  if (c->pg != NULL) {
    PQfinish(c->pg);
    c->pg = NULL;
  }
  for (unsigned k = 0; k < c->n_prepared; k++) {
    free(c->prepared[k]);
  }
  c->n_prepared = 0;
  c->state = C_DOWN;
  uint64_t now = uv_now(c->pool->loop);
  c->backoff_ms = c->backoff_ms == 0                   ? BACKOFF_MIN_MS
                  : c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                       : c->backoff_ms * 2;
  c->retry_at = now + c->backoff_ms;
  hs_db_job_t *j = c->head;
  c->head = c->tail = NULL;
  c->n_jobs = 0;
  while (j != NULL) {
    hs_db_job_t *next = j->next;
    j->status = HS_EUNAVAIL;
    snprintf(j->error, sizeof j->error, "the database connection was lost: %s", msg);
    job_finish(j);
    j = next;
  }
}

static void conn_flush(conn_t *c) {
  int rc = PQflush(c->pg);
  if (rc < 0) {
    conn_broken(c, PQerrorMessage(c->pg));
    return;
  }
  conn_watch(c, rc == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
}

static void record_error(hs_db_job_t *j, const PGresult *r, const char *fallback) {
  if (j->status != HS_OK) {
    return;
  }
  j->status = HS_EIO;
  const char *msg = r != NULL ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  hs_strlcpy(j->error, msg != NULL ? msg : fallback, sizeof j->error);
  hs_strlcpy(j->sqlstate, state != NULL ? state : "", sizeof j->sqlstate);
}

/* name is borrowed from c->prepared and freed here. */
static void forget_prepared(conn_t *c, const char *name) {
  for (unsigned k = 0; k < c->n_prepared; k++) {
    if (c->prepared[k] == name) {
      free(c->prepared[k]);
      c->prepared[k] = c->prepared[--c->n_prepared];
      return;
    }
  }
}

static void conn_read_results(conn_t *c) {
  if (PQconsumeInput(c->pg) != 1) {
    conn_broken(c, PQerrorMessage(c->pg));
    return;
  }
  while (c->head != NULL && !PQisBusy(c->pg)) {
    hs_db_job_t *j = c->head;
    PGresult *r = PQgetResult(c->pg);
    if (j->cmd_done < j->n_cmds) {
      if (r == NULL) {
        j->cmd_done++; /* this command's results have ended */
        continue;
      }
      ExecStatusType st = PQresultStatus(r);
      int idx = j->cmd_stmt[j->cmd_done];
      if (st == PGRES_FATAL_ERROR) {
        record_error(j, r, "a statement failed");
      } else if (st == PGRES_PIPELINE_ABORTED) {
        record_error(j, NULL, "skipped after an earlier statement failed");
      }
      if (idx < 0 && (st == PGRES_FATAL_ERROR || st == PGRES_PIPELINE_ABORTED)) {
        /* The statement does not exist on the server (a Prepare after a failed statement of
           the same job is skipped, not run): the next job that uses it prepares it again. */
        forget_prepared(c, j->prepares != NULL ? j->prepares[-1 - idx] : NULL);
      }
      if (idx >= 0 && j->results[idx] == NULL && st != PGRES_PIPELINE_ABORTED) {
        j->results[idx] = r;
      } else {
        PQclear(r);
      }
      continue;
    }
    if (r == NULL) {
      break;
    }
    ExecStatusType st = PQresultStatus(r);
    PQclear(r);
    if (st != PGRES_PIPELINE_SYNC) {
      continue;
    }
    c->head = j->next;
    if (c->head == NULL) {
      c->tail = NULL;
    }
    c->n_jobs--;
    job_finish(j);
    if (c->pg == NULL) {
      return; /* a callback closed the pool */
    }
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  conn_t *c = h->data;
  if (status < 0) {
    conn_broken(c, uv_strerror(status));
    return;
  }
  if (c->state == C_CONNECTING) {
    conn_advance_connect(c);
    return;
  }
  if (events & UV_WRITABLE) {
    conn_flush(c);
    if (c->state != C_UP) {
      return;
    }
  }
  if (events & UV_READABLE) {
    conn_read_results(c);
  }
}

static void conn_watch(conn_t *c, int events) {
  int fd = PQsocket(c->pg);
  if (fd < 0) {
    conn_broken(c, "the database connection has no socket");
    return;
  }
  if (c->poll != NULL && c->poll_fd != fd) {
    conn_unpoll(c); /* libpq moved to another socket (another host in the conninfo) */
  }
  if (c->poll == NULL) {
    c->poll = malloc(sizeof *c->poll);
    if (c->poll == NULL || uv_poll_init(c->pool->loop, c->poll, fd) != 0) {
      free(c->poll);
      c->poll = NULL;
      conn_broken(c, "cannot watch the database socket");
      return;
    }
    c->poll->data = c;
    c->poll_fd = fd;
  }
  uv_poll_start(c->poll, events, on_poll);
}

static void conn_advance_connect(conn_t *c) {
  switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
      conn_watch(c, UV_READABLE);
      return;
    case PGRES_POLLING_WRITING:
      conn_watch(c, UV_WRITABLE);
      return;
    case PGRES_POLLING_OK:
      break;
    default:
      conn_broken(c, PQerrorMessage(c->pg));
      return;
  }
  if (PQsetnonblocking(c->pg, 1) != 0 || PQenterPipelineMode(c->pg) != 1) {
    conn_broken(c, PQerrorMessage(c->pg));
    return;
  }
  c->state = C_UP;
  if (c->pool->n_up++ == 0) {
    atomic_fetch_sub(&g_pools_down, 1);
  }
  c->backoff_ms = 0;
  /* An acknowledged write must be on disk, whatever the database's own default: this runs
   * first in the pipeline, so every later job on the connection sees it. */
  hs_db_stmt_t durable = {.sql = "SET synchronous_commit = on"};
  (void)conn_send(c, &durable, 1, NULL, NULL, NULL); /* flushes and watches; a failure resets */
}

static void conn_connect(conn_t *c) {
  c->pg = PQconnectStart(c->pool->conninfo);
  if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD) {
    conn_broken(c, c->pg != NULL ? PQerrorMessage(c->pg) : "out of memory");
    return;
  }
  c->state = C_CONNECTING;
  c->since = uv_now(c->pool->loop);
  conn_advance_connect(c);
}

static void on_tick(uv_timer_t *t) {
  hs_db_pool_t *p = t->data;
  uint64_t now = uv_now(p->loop);
  for (unsigned i = 0; i < p->n_conns; i++) {
    conn_t *c = &p->conns[i];
    if (c->state == C_DOWN && now >= c->retry_at) {
      conn_connect(c);
    } else if (c->state == C_CONNECTING && now - c->since > CONNECT_TIMEOUT_MS) {
      conn_broken(c, "connecting to the database timed out");
    }
  }
}

int hs_db_pool_new(uv_loop_t *loop, const char *conninfo, unsigned n_conns, hs_db_pool_t **out,
                   hs_err_t *err) {
  hs_db_pool_t *p = calloc(1, sizeof *p);
  if (p == NULL) {
    return hs_err_set(err, HS_ENOMEM, "out of memory");
  }
  p->conninfo = strdup(conninfo);
  p->conns = calloc(n_conns, sizeof *p->conns);
  if (p->conninfo == NULL || p->conns == NULL) {
    free(p->conninfo);
    free(p->conns);
    free(p);
    return hs_err_set(err, HS_ENOMEM, "out of memory");
  }
  p->loop = loop;
  p->n_conns = n_conns;
  for (unsigned i = 0; i < n_conns; i++) {
    p->conns[i].pool = p;
    p->conns[i].poll_fd = -1;
  }
  uv_timer_init(loop, &p->timer);
  p->timer.data = p;
  p->open_handles = 1;
  atomic_fetch_add(&g_pools_down, 1);
  uv_timer_start(&p->timer, on_tick, 0, TICK_MS);
  *out = p;
  return HS_OK;
}

void hs_db_pool_close(hs_db_pool_t *p) {
  p->closing = true;
  for (unsigned i = 0; i < p->n_conns; i++) {
    conn_broken(&p->conns[i], "the server is shutting down");
  }
  atomic_fetch_sub(&g_pools_down, 1); /* every connection is down now: the pool was counted */
  uv_close((uv_handle_t *)&p->timer, pool_handle_closed);
}

bool hs_db_pool_ready(const hs_db_pool_t *p) {
  return p->n_up > 0;
}

static bool is_prepared(conn_t *c, const char *name) {
  for (unsigned k = 0; k < c->n_prepared; k++) {
    if (strcmp(c->prepared[k], name) == 0) {
      return true;
    }
  }
  return false;
}

/* Sends a job on one connection; see hs_db_exec. */
static int conn_send(conn_t *c, const hs_db_stmt_t *stmts, size_t n, hs_db_done_cb cb, void *ctx,
                     hs_db_job_t **job_out) {
  hs_db_job_t *j = calloc(1, sizeof *j);
  if (j == NULL) {
    return HS_ENOMEM;
  }
  j->results = calloc(n, sizeof *j->results);
  j->cmd_stmt = calloc(2 * n, sizeof *j->cmd_stmt);
  if (j->results == NULL || j->cmd_stmt == NULL) {
    job_free(j);
    return HS_ENOMEM;
  }
  j->n = n;
  j->cb = cb;
  j->ctx = ctx;
  j->conn = c;
  bool ok = true;
  for (size_t i = 0; i < n && ok; i++) {
    const hs_db_stmt_t *s = &stmts[i];
    if (s->name != NULL) {
      if (!is_prepared(c, s->name)) {
        if (j->prepares == NULL) {
          j->prepares = calloc(n, sizeof *j->prepares);
          ok = j->prepares != NULL;
        }
        ok = ok && PQsendPrepare(c->pg, s->name, s->sql, s->n_params, NULL) == 1;
        j->cmd_stmt[j->n_cmds++] = -1 - (int)i;
        if (ok && c->n_prepared < MAX_PREPARED) {
          c->prepared[c->n_prepared] = strdup(s->name);
          if (c->prepared[c->n_prepared] != NULL) {
            j->prepares[i] = c->prepared[c->n_prepared++];
          }
        }
      }
      ok = ok && PQsendQueryPrepared(c->pg, s->name, s->n_params, s->values, s->lengths, s->formats,
                                     s->binary_result ? 1 : 0) == 1;
    } else {
      ok = PQsendQueryParams(c->pg, s->sql, s->n_params, NULL, s->values, s->lengths, s->formats,
                             s->binary_result ? 1 : 0) == 1;
    }
    j->cmd_stmt[j->n_cmds++] = (int)i;
  }
  ok = ok && PQpipelineSync(c->pg) == 1;
  /* Queue it even on failure: conn_broken then fails it like every other job in flight. */
  if (c->tail != NULL) {
    c->tail->next = j;
  } else {
    c->head = j;
  }
  c->tail = j;
  c->n_jobs++;
  if (!ok) {
    j->cb = NULL; /* the caller learns of the failure from the return value instead */
    conn_broken(c, PQerrorMessage(c->pg));
    return HS_EUNAVAIL;
  }
  if (job_out != NULL) {
    *job_out = j;
  }
  conn_flush(c);
  return HS_OK;
}

int hs_db_exec(hs_db_pool_t *p, const hs_db_stmt_t *stmts, size_t n, hs_db_done_cb cb, void *ctx,
               hs_db_job_t **job_out) {
  if (p->closing || n == 0) {
    return HS_EUNAVAIL;
  }
  /* The least busy live connection keeps pipelines short. */
  conn_t *c = NULL;
  for (unsigned i = 0; i < p->n_conns; i++) {
    conn_t *k = &p->conns[i];
    if (k->state == C_UP && (c == NULL || k->n_jobs < c->n_jobs)) {
      c = k;
    }
  }
  if (c == NULL) {
    return HS_EUNAVAIL;
  }
  if (c->n_jobs >= MAX_JOBS_PER_CONN) {
    return HS_ELIMIT;
  }
  return conn_send(c, stmts, n, cb, ctx, job_out);
}

void hs_db_job_cancel(hs_db_job_t *job) {
  if (job != NULL) {
    job->cb = NULL;
  }
}
