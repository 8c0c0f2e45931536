#include "audit/sealer.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/record.h"
#include "audit/rows.h"
#include "core/buf.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/str.h"

enum {
  /* Ids per round, and so at most as many records hashed: a few milliseconds of the loop. A
   * longer backlog takes several rounds, run back to back. */
  ROUND_MAX = 5000,
};

typedef enum phase { IDLE, PROBING, FENCING, WAITING, READING, WRITING } phase_t;

/* One brand's chain as a round extends it. */
typedef struct chain {
  int64_t brand_id;
  char brand[65]; /* the brand's name (at most 64 characters, see brands.name) */
  int64_t size;
  uint8_t head[32];
  int64_t through_id;
  bool grew;
} chain_t;

struct hs_sealer {
  uv_timer_t timer;            /* first: the sealer is freed in its close callback */
  hs_db_pool_t *pool;          /* borrowed */
  const hs_audit_key_t *key;   /* borrowed */
  hs_metrics_shard_t *metrics; /* borrowed; may be NULL */
  unsigned interval_ms;
  phase_t phase;
  hs_db_job_t *job; /* the job in flight (cancelled on close) */
  int64_t horizon;  /* sealed_through as read by this round */
  int64_t fence;    /* every id up to this is final */
  int64_t fence_us; /* the database's time when the fence was taken: the checkpoints' time */
  char xid[32];     /* the fence's own xid: every transaction below it must have finished */
  unsigned waited;  /* polls of those transactions so far */
  int64_t through;  /* the horizon this round moves to */
  uint64_t sealed;  /* records in this round's checkpoints */
  uint64_t checkpoints;
  bool more; /* the round stopped short of the fence (ROUND_MAX ids): go again at once */
  /* Every brand's chain head as this sealer's last round left it, valid while the horizon is
   * still where that round moved it (no other node sealed since): a round then needs only its
   * records, not the heads read back. Owned. */
  chain_t *known;
  size_t n_known;
  int64_t known_through;
  bool known_valid;
  chain_t *pending; /* owned: the heads of the round being written; known once it won */
  size_t n_pending;
};

static void on_timer(uv_timer_t *t);

static void schedule(hs_sealer_t *s, uint64_t ms) {
  s->phase = IDLE;
  s->job = NULL;
  uv_timer_start(&s->timer, on_timer, ms, 0);
}

static void fail(hs_sealer_t *s, const char *what, const hs_db_result_t *r) {
  free(s->pending);
  s->pending = NULL;
  s->known_valid = false; /* the outcome of a write in flight is unknown */
  /* The database is away or a race was lost: nothing was written, so the next round simply
   * starts again from what the database holds. */
  if (r->status != HS_EUNAVAIL) {
    hs_log(HS_LOG_WARN, "audit_seal_failed", "{s:s, s:s}", "step", what, "error",
           r->error != NULL ? r->error : "");
  }
  schedule(s, s->interval_ms);
}

static int64_t int_at(PGresult *res, int row, int col) {
  return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static void start_probe(hs_sealer_t *s);
static void start_fence(hs_sealer_t *s);
static void start_read(hs_sealer_t *s);

static const char k_probe_sql[] =
    "SELECT CASE WHEN q.is_called THEN q.last_value ELSE 0 END, h.sealed_through"
    " FROM validation_records_id_seq q, audit_horizon h";

static void on_probe(void *ctx, const hs_db_result_t *r) {
  hs_sealer_t *s = ctx;
  s->job = NULL;
  if (r->status != HS_OK || PQntuples(r->results[0]) != 1) {
    fail(s, "probe", r);
    return;
  }
  int64_t last = int_at(r->results[0], 0, 0);
  s->horizon = int_at(r->results[0], 0, 1);
  if (last <= s->horizon) {
    schedule(s, s->interval_ms);
    return;
  }
  start_fence(s);
}

static void start_probe(hs_sealer_t *s) {
  hs_db_stmt_t st = {.name = "hs_seal_probe", .sql = k_probe_sql};
  s->phase = PROBING;
  if (hs_db_exec(s->pool, &st, 1, on_probe, s, &s->job) != HS_OK) {
    schedule(s, s->interval_ms);
  }
}

static void start_wait(hs_sealer_t *s);

static void on_fence(void *ctx, const hs_db_result_t *r) {
  hs_sealer_t *s = ctx;
  s->job = NULL;
  if (r->status != HS_OK || r->n_results != 2 || PQntuples(r->results[0]) != 1 ||
      PQntuples(r->results[1]) != 1) {
    fail(s, "fence", r);
    return;
  }
  s->fence = int_at(r->results[0], 0, 0);
  hs_strlcpy(s->xid, PQgetvalue(r->results[1], 0, 0), sizeof s->xid);
  /* The database's clock, not this node's: every record up to the fence began (server_time)
   * before this instant, which is what lets an export start at the last checkpoint signed
   * before its `from`. */
  s->fence_us = int_at(r->results[1], 0, 1);
  s->waited = 0;
  start_wait(s);
}

/* The fence reads the id sequence, then takes an xid of its own. Every id up to the value read
 * was drawn by a transaction that already had its xid (validation_record_id() takes one before
 * it draws), and so a smaller xid than the fence's. Once every transaction with a smaller xid
 * has finished, no id up to the fence can still appear: the range is final, without any lock
 * that writers would wait for. */
static void start_fence(hs_sealer_t *s) {
  hs_db_stmt_t st[] = {
      {.name = "hs_seal_fence",
       .sql = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END"
              " FROM validation_records_id_seq"},
      {.name = "hs_seal_xid",
       .sql = "SELECT pg_current_xact_id()::text,"
              " (extract(epoch FROM clock_timestamp()) * 1000000)::int8"},
  };
  s->phase = FENCING;
  if (hs_db_exec(s->pool, st, 2, on_fence, s, &s->job) != HS_OK) {
    schedule(s, s->interval_ms);
  }
}

static void on_waited(void *ctx, const hs_db_result_t *r) {
  hs_sealer_t *s = ctx;
  s->job = NULL;
  if (r->status != HS_OK || PQntuples(r->results[0]) != 1) {
    fail(s, "wait", r);
    return;
  }
  if (int_at(r->results[0], 0, 0) == 1) {
    start_read(s);
    return;
  }
  /* Some are still running: look again shortly. A transaction that stays open for long (an
   * operator's psql session that wrote something) holds sealing back, never the writers. */
  if (++s->waited == 5000) {
    hs_log(HS_LOG_WARN, "audit_seal_waiting", "{s:s}", "detail",
           "a transaction open since the last fence keeps new records from being sealed");
  }
  s->phase = WAITING;
  uv_timer_start(&s->timer, on_timer, 2, 0);
}

/* Finished means finished for a new snapshot, not merely marked committed: PostgreSQL marks a
 * commit in its log a moment before it takes the transaction out of the running set, and a
 * snapshot taken in between still hides its rows. So the question is put to a snapshot: does it
 * see every xid below the fence's as completed (its xmax is past the fence's xid, and none below
 * is on its running list)? The read that follows takes a later snapshot, which sees as much. */
static void start_wait(hs_sealer_t *s) {
  const char *params[] = {s->xid};
  hs_db_stmt_t st = {.name = "hs_seal_wait",
                     .sql = "SELECT (pg_snapshot_xmax(q) > $1::xid8 AND NOT EXISTS (SELECT 1"
                            " FROM pg_snapshot_xip(q) x WHERE x < $1::xid8))::int"
                            " FROM pg_current_snapshot() q",
                     .n_params = 1,
                     .values = params};
  s->phase = WAITING;
  if (hs_db_exec(s->pool, &st, 1, on_waited, s, &s->job) != HS_OK) {
    schedule(s, s->interval_ms);
  }
}

/* chains are in the order of brand_id (the heads are read that way), so a round with many
 * brands costs a binary search per record. */
static chain_t *find_chain(chain_t *c, size_t n, int64_t brand_id) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (c[mid].brand_id == brand_id) {
      return &c[mid];
    }
    if (c[mid].brand_id < brand_id) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return NULL;
}

static void on_written(void *ctx, const hs_db_result_t *r) {
  hs_sealer_t *s = ctx;
  s->job = NULL;
  if (r->status != HS_OK) {
    fail(s, "write", r);
    return;
  }
  /* The last statement returns the horizon row only when this sealer moved it. */
  bool won = r->n_results >= 2 && PQntuples(r->results[r->n_results - 1]) == 1;
  free(s->known);
  s->known = won ? s->pending : NULL;
  s->n_known = won ? s->n_pending : 0;
  s->known_through = s->through;
  s->known_valid = won;
  if (!won) {
    free(s->pending);
  }
  s->pending = NULL;
  if (won) {
    if (s->metrics != NULL) {
      atomic_fetch_add_explicit(&s->metrics->audit_sealed, s->sealed, memory_order_relaxed);
      atomic_fetch_add_explicit(&s->metrics->audit_checkpoints, s->checkpoints,
                                memory_order_relaxed);
    }
    hs_log(HS_LOG_DEBUG, "audit_sealed", "{s:f, s:i, s:i}", "through", (double)s->through,
           "records", (int)s->sealed, "checkpoints", (int)s->checkpoints);
  }
  schedule(s, s->more ? 0 : s->interval_ms);
}

static void write_round(hs_sealer_t *s, chain_t *chains, size_t n) {
  hs_buf_t rows;
  hs_buf_init(&rows, 0);
  int rc = hs_buf_puts(&rows, "[");
  bool first = true;
  s->checkpoints = 0;
  for (size_t i = 0; rc == HS_OK && i < n; i++) {
    chain_t *c = &chains[i];
    if (!c->grew) {
      continue;
    }
    hs_audit_checkpoint_t cp = {.brand = c->brand, .size = c->size, .signed_us = 0};
    memcpy(cp.head, c->head, 32);
    cp.signed_us = s->fence_us;
    hs_buf_t text;
    hs_buf_init(&text, 0);
    rc = hs_audit_checkpoint_text(&cp, &text);
    rc = rc == HS_OK ? hs_audit_key_sign(s->key, text.data, text.len, cp.signature) : rc;
    hs_buf_free(&text);
    char head[65], sig[129];
    hs_hex(cp.head, 32, head);
    hs_hex(cp.signature, 64, sig);
    if (rc == HS_OK) {
      rc = hs_buf_printf(
          &rows,
          "%s{\"brand_id\":%" PRId64 ",\"size\":%" PRId64 ",\"head\":\"%s\","
          "\"through_id\":%" PRId64 ",\"signed_us\":%" PRId64 ",\"signature\":\"%s\"}",
          first ? "" : ",", c->brand_id, c->size, head, c->through_id, cp.signed_us, sig);
      first = false;
      s->checkpoints++;
    }
  }
  rc = rc == HS_OK ? hs_buf_append(&rows, "]", 2) : rc; /* with the NUL */
  if (rc != HS_OK) {
    hs_buf_free(&rows);
    hs_log(HS_LOG_ERROR, "audit_seal_failed", "{s:s}", "error", "cannot sign a checkpoint");
    schedule(s, s->interval_ms);
    return;
  }
  char from[24], to[24], pub[65];
  snprintf(from, sizeof from, "%" PRId64, s->horizon);
  snprintf(to, sizeof to, "%" PRId64, s->through);
  hs_hex(hs_audit_key_public(s->key), 32, pub);
  const char *key_params[] = {hs_audit_key_id(s->key), pub};
  const char *params[] = {from, to, hs_audit_key_id(s->key), (const char *)rows.data};
  hs_db_stmt_t st[] = {
      {.name = "hs_seal_key",
       .sql = "INSERT INTO audit_keys (key_id, public_key) VALUES ($1, decode($2, 'hex'))"
              " ON CONFLICT DO NOTHING",
       .n_params = 2,
       .values = key_params},
      /* The compare-and-set: the checkpoints go in only if the horizon is still where this
       * round read it. Data-modifying CTEs always run, so the horizon moves even when the
       * range held no record (ids of rolled-back transactions). */
      {.name = "hs_seal_write",
       .sql = "WITH u AS (UPDATE audit_horizon SET sealed_through = $2::int8"
              " WHERE sealed_through = $1::int8 RETURNING sealed_through),"
              " c AS (INSERT INTO audit_checkpoints (brand_id, size, head, through_id, signed_us,"
              " key_id, signature) SELECT brand_id, size, decode(head, 'hex'), through_id,"
              " signed_us, $3, decode(signature, 'hex') FROM json_to_recordset($4::json)"
              " AS t(brand_id bigint, size bigint, head text, through_id bigint, signed_us"
              " bigint, signature text) WHERE EXISTS (SELECT 1 FROM u) RETURNING size)"
              " SELECT sealed_through FROM u WHERE (SELECT count(*) FROM c) >= 0",
       .n_params = 4,
       .values = params},
  };
  s->phase = WRITING;
  rc = hs_db_exec(s->pool, st, 2, on_written, s, &s->job);
  hs_buf_free(&rows);
  if (rc != HS_OK) {
    schedule(s, s->interval_ms);
  }
}

static void on_read(void *ctx, const hs_db_result_t *r) {
  hs_sealer_t *s = ctx;
  s->job = NULL;
  if (r->status != HS_OK || r->n_results < 1 || r->n_results > 2) {
    fail(s, "read", r);
    return;
  }
  PGresult *recs = r->results[0];
  PGresult *heads = r->n_results == 2 ? r->results[1] : NULL; /* NULL: the known heads hold */
  size_t n_heads = heads != NULL ? (size_t)PQntuples(heads) : s->n_known;
  int n_recs = PQntuples(recs);
  /* One chain per brand, every brand; one with no checkpoint yet starts at size 0 and a head
   * of zeros. */
  size_t n = 0;
  chain_t *chains = calloc(n_heads + 1, sizeof *chains);
  if (chains == NULL) {
    schedule(s, s->interval_ms);
    return;
  }
  if (heads == NULL) {
    for (size_t i = 0; i < n_heads; i++) {
      chains[n] = s->known[i];
      chains[n++].grew = false;
    }
  }
  for (size_t i = 0; heads != NULL && i < n_heads; i++) {
    chain_t *c = &chains[n++];
    int row = (int)i;
    c->brand_id = hs_audit_be64(PQgetvalue(heads, row, 0));
    hs_strlcpy(c->brand, PQgetvalue(heads, row, 1), sizeof c->brand);
    c->size = hs_audit_be64(PQgetvalue(heads, row, 2));
    if (PQgetlength(heads, row, 3) == 32) { /* NULL for a brand with no checkpoint yet */
      memcpy(c->head, PQgetvalue(heads, row, 3), 32);
    }
  }
  s->sealed = 0;
  hs_audit_row_order_t *order = hs_audit_rows_order(recs);
  if (order == NULL) {
    free(chains);
    hs_log(HS_LOG_ERROR, "audit_seal_failed", "{s:s}", "error",
           "out of memory, or a record without its ids");
    schedule(s, s->interval_ms);
    return;
  }
  hs_buf_t scratch;
  hs_buf_init(&scratch, 0);
  for (int i = 0; i < n_recs; i++) {
    hs_audit_record_t rec;
    int64_t brand_id = 0;
    uint8_t h[32];
    int rc = hs_audit_row_parse(recs, order[i].row, &rec, &brand_id);
    chain_t *c = rc == HS_OK ? find_chain(chains, n, brand_id) : NULL;
    if (rc == HS_OK && c == NULL && heads == NULL) {
      /* A brand created since the heads were read: read them again, names and all. */
      hs_buf_free(&scratch);
      free(order);
      free(chains);
      s->known_valid = false;
      schedule(s, 0);
      return;
    }
    if (c != NULL) {
      rec.brand = c->brand; /* the rows leave the name out: one join per record saved */
      rc = hs_audit_record_hash(&rec, &scratch, h);
    }
    if (rc != HS_OK || c == NULL) {
      hs_buf_free(&scratch);
      free(order);
      free(chains);
      hs_log(HS_LOG_ERROR, "audit_seal_failed", "{s:s}", "error",
             c == NULL && rc == HS_OK ? "a record names a brand that does not exist"
                                      : "a record could not be read");
      schedule(s, s->interval_ms);
      return;
    }
    hs_audit_chain_next(c->head, h, c->head);
    c->size++;
    c->through_id = rec.id;
    c->grew = true;
    s->sealed++;
  }
  hs_buf_free(&scratch);
  free(order);
  write_round(s, chains, n);
  free(s->pending);
  s->pending = chains; /* known once the write wins */
  s->n_pending = n;
}

static void start_read(hs_sealer_t *s) {
  /* Ids are unique, so a range of ROUND_MAX of them holds at most that many records. */
  s->through = s->fence - s->horizon > ROUND_MAX ? s->horizon + ROUND_MAX : s->fence;
  s->more = s->through < s->fence;
  char from[24], to[24];
  snprintf(from, sizeof from, "%" PRId64, s->horizon);
  snprintf(to, sizeof to, "%" PRId64, s->through);
  const char *params[] = {from, to};
  hs_db_stmt_t st[] = {
      /* Each brand's records in the range, through the (brand_id, id) key. In no particular
         order: PostgreSQL sorting these wide rows was half of the query's time, so on_read
         orders them itself (hs_audit_rows_order). */
      {.name = "hs_seal_records",
       .sql = "SELECT " HS_AUDIT_ROW_SELECT " FROM brands k CROSS JOIN LATERAL"
              " (SELECT * FROM validation_records r WHERE r.brand_id = k.id"
              " AND r.id > $1::int8 AND r.id <= $2::int8) r,"
              " (SELECT NULL::text AS name) b",
       .n_params = 2,
       .values = params,
       .binary_result = true},
      /* Every brand's name and head, one index probe each; only when this sealer does not
         know them already (its first round, another node sealed since its last, or a record
         of a brand it has not seen). Read after the records, so every brand they name is
         here. */
      {.name = "hs_seal_heads",
       .sql = "SELECT b.id, b.name, coalesce(c.size, 0), c.head FROM brands b LEFT JOIN LATERAL"
              " (SELECT size, head FROM audit_checkpoints WHERE brand_id = b.id"
              " ORDER BY size DESC LIMIT 1) c ON true ORDER BY b.id",
       .binary_result = true},
  };
  s->phase = READING;
  bool known = s->known_valid && s->known_through == s->horizon;
  if (hs_db_exec(s->pool, st, known ? 1 : 2, on_read, s, &s->job) != HS_OK) {
    schedule(s, s->interval_ms);
  }
}

static void on_timer(uv_timer_t *t) {
  hs_sealer_t *s = t->data;
  if (s->phase == IDLE) {
    start_probe(s);
  } else if (s->phase == WAITING) {
    start_wait(s);
  }
}

int hs_sealer_new(uv_loop_t *loop, hs_db_pool_t *pool, const hs_audit_key_t *key,
                  unsigned interval_ms, hs_metrics_shard_t *metrics, hs_sealer_t **out) {
  hs_sealer_t *s = calloc(1, sizeof *s);
  if (s == NULL) {
    return HS_ENOMEM;
  }
  s->pool = pool;
  s->key = key;
  s->metrics = metrics;
  s->interval_ms = interval_ms > 0 ? interval_ms : 1;
  uv_timer_init(loop, &s->timer);
  s->timer.data = s;
  uv_timer_start(&s->timer, on_timer, s->interval_ms, 0);
  *out = s;
  return HS_OK;
}

static void on_closed(uv_handle_t *h) {
  free(h->data);
}

void hs_sealer_close(hs_sealer_t *s) {
  if (s == NULL) {
    return;
  }
  if (s->job != NULL) {
    hs_db_job_cancel(s->job);
    s->job = NULL;
  }
  free(s->known);
  free(s->pending);
  s->known = s->pending = NULL;
  uv_timer_stop(&s->timer);
  uv_close((uv_handle_t *)&s->timer, on_closed);
}
