#include "audit/sealer.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/record.h"
#include "audit/rows.h"
#include "audit/tap.h"
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

/* A record of a round, in chain order: the tap's, or row `row` of a read of whole rows. */
typedef struct item {
  int64_t brand_id, id;
  const hs_audit_record_t *tapped; /* borrowed from the tap until its next sync; or NULL */
  int row;
} item_t;

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
  hs_audit_tap_t *tap; /* borrowed; may be NULL */
  bool listed;         /* this round read the range's ids only (the tap holds some records) */
  bool unread;         /* this round read no record: the tap held every id of its range */
  /* The round being read: every brand's chain, and its records in chain order. Owned. */
  chain_t *chains;
  size_t n_chains;
  bool heads_known; /* the chains are the known heads, not read this round */
  item_t *items;
  size_t n_items;
  uint64_t tapped; /* of the round's records, those the tap held */
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
  if (s->metrics != NULL && s->tap != NULL) {
    /* This node's workers' count, whichever node's sealer won the round. */
    hs_audit_tap_stats_t ts;
    hs_audit_tap_stats(s->tap, &ts);
    atomic_store_explicit(&s->metrics->audit_tap_dropped, ts.dropped, memory_order_relaxed);
  }
  if (won) {
    if (s->metrics != NULL) {
      atomic_fetch_add_explicit(&s->metrics->audit_sealed, s->sealed, memory_order_relaxed);
      atomic_fetch_add_explicit(&s->metrics->audit_sealed_tapped, s->tapped, memory_order_relaxed);
      atomic_fetch_add_explicit(&s->metrics->audit_checkpoints, s->checkpoints,
                                memory_order_relaxed);
      atomic_fetch_add_explicit(&s->metrics->audit_rounds_unread, s->unread, memory_order_relaxed);
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

static void round_free(hs_sealer_t *s) {
  free(s->chains);
  free(s->items);
  s->chains = NULL;
  s->items = NULL;
  s->n_chains = s->n_items = 0;
}

/* The round's chains: every brand's, from the heads just read, or (heads NULL) as this sealer's
 * last round left them. A brand with no checkpoint yet starts at size 0 and a head of zeros. */
static bool load_chains(hs_sealer_t *s, PGresult *heads) {
  size_t n = heads != NULL ? (size_t)PQntuples(heads) : s->n_known;
  s->chains = calloc(n + 1, sizeof *s->chains);
  if (s->chains == NULL) {
    return false;
  }
  s->n_chains = n;
  s->heads_known = heads == NULL;
  for (size_t i = 0; i < n; i++) {
    chain_t *c = &s->chains[i];
    if (heads == NULL) {
      *c = s->known[i];
      c->grew = false;
      continue;
    }
    int row = (int)i;
    c->brand_id = hs_audit_be64(PQgetvalue(heads, row, 0));
    hs_strlcpy(c->brand, PQgetvalue(heads, row, 1), sizeof c->brand);
    c->size = hs_audit_be64(PQgetvalue(heads, row, 2));
    if (PQgetlength(heads, row, 3) == 32) { /* NULL for a brand with no checkpoint yet */
      memcpy(c->head, PQgetvalue(heads, row, 3), 32);
    }
  }
  return true;
}

static void round_error(hs_sealer_t *s, const char *error) {
  round_free(s);
  hs_log(HS_LOG_ERROR, "audit_seal_failed", "{s:s}", "error", error);
  schedule(s, s->interval_ms);
}

/* Hashes the round's records into their brands' chains, in order, and writes the checkpoints.
 * A record the tap did not hold is row item.row of rows (HS_AUDIT_ROW_SELECT, binary). */
static void seal(hs_sealer_t *s, const PGresult *rows) {
  s->sealed = 0;
  uint64_t tapped = 0;
  hs_buf_t scratch;
  hs_buf_init(&scratch, 0);
  for (size_t i = 0; i < s->n_items; i++) {
    const item_t *it = &s->items[i];
    hs_audit_record_t rec;
    int64_t brand_id = it->brand_id;
    uint8_t h[32];
    int rc = HS_OK;
    if (it->tapped != NULL) {
      rec = *it->tapped;
      tapped++;
    } else {
      rc = rows != NULL ? hs_audit_row_parse(rows, it->row, &rec, &brand_id) : HS_EINVAL;
    }
    chain_t *c = rc == HS_OK && brand_id == it->brand_id && rec.id == it->id
                     ? find_chain(s->chains, s->n_chains, brand_id)
                     : NULL;
    if (rc == HS_OK && c == NULL && s->heads_known) {
      /* A brand created since the heads were read: read them again, names and all. */
      hs_buf_free(&scratch);
      round_free(s);
      s->known_valid = false;
      schedule(s, 0);
      return;
    }
    if (c != NULL) {
      rec.brand = c->brand; /* neither the rows nor the tap carry the name: one join saved */
      rc = hs_audit_record_hash(&rec, &scratch, h);
    }
    if (rc != HS_OK || c == NULL) {
      hs_buf_free(&scratch);
      round_error(s, c == NULL && rc == HS_OK ? "a record names a brand that does not exist"
                                              : "a record could not be read");
      return;
    }
    hs_audit_chain_next(c->head, h, c->head);
    c->size++;
    c->through_id = rec.id;
    c->grew = true;
    s->sealed++;
  }
  hs_buf_free(&scratch);
  s->tapped = tapped;
  free(s->items);
  s->items = NULL;
  s->n_items = 0;
  write_round(s, s->chains, s->n_chains);
  free(s->pending);
  s->pending = s->chains; /* known once the write wins */
  s->n_pending = s->n_chains;
  s->chains = NULL;
  s->n_chains = 0;
}

static int cmp_item(const void *a, const void *b) {
  const item_t *x = a, *y = b;
  if (x->brand_id != y->brand_id) {
    return x->brand_id < y->brand_id ? -1 : 1;
  }
  return x->id < y->id ? -1 : x->id > y->id;
}

/* The whole rows of the records the tap did not hold arrived: each is the next such item. */
static void on_fetched(void *ctx, const hs_db_result_t *r) {
  hs_sealer_t *s = ctx;
  s->job = NULL;
  if (r->status != HS_OK || r->n_results != 1) {
    round_free(s);
    fail(s, "read", r);
    return;
  }
  PGresult *rows = r->results[0];
  hs_audit_row_order_t *order = hs_audit_rows_order(rows);
  if (order == NULL) {
    round_error(s, "out of memory, or a record without its ids");
    return;
  }
  size_t n_rows = (size_t)PQntuples(rows), k = 0;
  bool ok = true;
  for (size_t i = 0; ok && i < s->n_items; i++) {
    item_t *it = &s->items[i];
    if (it->tapped != NULL) {
      continue;
    }
    /* Records are never removed, so every id listed is read back. */
    ok = k < n_rows && order[k].brand_id == it->brand_id && order[k].id == it->id;
    it->row = ok ? order[k++].row : -1;
  }
  free(order);
  if (!ok || k != n_rows) {
    round_error(s, "a record listed in the range could not be read back");
    return;
  }
  seal(s, rows);
}

/* Reads the whole rows of the items the tap did not hold, one index probe each. */
static void start_fetch(hs_sealer_t *s, size_t missing) {
  hs_buf_t brands, ids;
  hs_buf_init(&brands, 0);
  hs_buf_init(&ids, 0);
  int rc = hs_buf_puts(&brands, "{") | hs_buf_puts(&ids, "{");
  size_t k = 0;
  for (size_t i = 0; rc == HS_OK && i < s->n_items; i++) {
    const item_t *it = &s->items[i];
    if (it->tapped != NULL) {
      continue;
    }
    const char *sep = k++ > 0 ? "," : "";
    rc |= hs_buf_printf(&brands, "%s%" PRId64, sep, it->brand_id);
    rc |= hs_buf_printf(&ids, "%s%" PRId64, sep, it->id);
  }
  rc |= hs_buf_append(&brands, "}", 2) | hs_buf_append(&ids, "}", 2); /* with their NULs */
  if (rc != HS_OK || k != missing) {
    hs_buf_free(&brands);
    hs_buf_free(&ids);
    round_error(s, "out of memory");
    return;
  }
  const char *params[] = {(const char *)brands.data, (const char *)ids.data};
  hs_db_stmt_t st = {.name = "hs_seal_fetch",
                     .sql = "SELECT " HS_AUDIT_ROW_SELECT
                            " FROM unnest($1::int8[], $2::int8[]) AS m(brand_id, id)"
                            " JOIN validation_records r ON r.brand_id = m.brand_id AND r.id = m.id,"
                            " (SELECT NULL::text AS name) b",
                     .n_params = 2,
                     .values = params,
                     .binary_result = true};
  s->phase = READING;
  rc = hs_db_exec(s->pool, &st, 1, on_fetched, s, &s->job);
  hs_buf_free(&brands);
  hs_buf_free(&ids);
  if (rc != HS_OK) {
    round_free(s);
    schedule(s, s->interval_ms);
  }
}

/* Items from the range's list (brand_id, id): the tap's records where it holds them. Returns
 * how many it did not hold, or -1 when out of memory. */
static long list_items(hs_sealer_t *s, PGresult *list) {
  size_t n = (size_t)PQntuples(list);
  s->items = malloc((n > 0 ? n : 1) * sizeof *s->items);
  if (s->items == NULL || PQnfields(list) != 2) {
    return -1;
  }
  /* Records whose commit this node's workers saw after the round started are in by now. */
  bool tap = hs_audit_tap_sync(s->tap, s->horizon) == HS_OK;
  long missing = 0;
  for (size_t i = 0; i < n; i++) {
    int row = (int)i;
    if (PQgetlength(list, row, 0) != 8 || PQgetlength(list, row, 1) != 8) {
      return -1;
    }
    item_t *it = &s->items[s->n_items++];
    it->brand_id = hs_audit_be64(PQgetvalue(list, row, 0));
    it->id = hs_audit_be64(PQgetvalue(list, row, 1));
    it->tapped = tap ? hs_audit_tap_find(s->tap, it->brand_id, it->id) : NULL;
    it->row = -1;
    missing += it->tapped == NULL;
  }
  /* Each brand's chain takes its records in id order. They arrive so (one index scan per
   * brand, the brands usually in the order of their ids), which a look confirms for less than
   * sorting them. */
  bool sorted = true;
  for (size_t i = 1; sorted && i < s->n_items; i++) {
    sorted = cmp_item(&s->items[i - 1], &s->items[i]) < 0;
  }
  if (!sorted) {
    qsort(s->items, s->n_items, sizeof *s->items, cmp_item);
  }
  return missing;
}

/* Items from the range's whole rows, in chain order. */
static bool row_items(hs_sealer_t *s, PGresult *rows) {
  hs_audit_row_order_t *order = hs_audit_rows_order(rows);
  size_t n = (size_t)PQntuples(rows);
  s->items = order != NULL ? malloc((n > 0 ? n : 1) * sizeof *s->items) : NULL;
  for (size_t i = 0; s->items != NULL && i < n; i++) {
    s->items[i] = (item_t){.brand_id = order[i].brand_id, .id = order[i].id, .row = order[i].row};
  }
  s->n_items = s->items != NULL ? n : 0;
  free(order);
  return s->items != NULL;
}

static void on_read(void *ctx, const hs_db_result_t *r) {
  hs_sealer_t *s = ctx;
  s->job = NULL;
  if (r->status != HS_OK || r->n_results < 1 || r->n_results > 2) {
    round_free(s); /* an unread round's items */
    fail(s, "read", r);
    return;
  }
  PGresult *heads = r->n_results == 2 ? r->results[1] : NULL; /* NULL: the known heads hold */
  if (s->unread) {
    heads = r->results[0]; /* the items are the tap's already; only the heads were read */
  }
  if (!load_chains(s, heads)) {
    round_error(s, "out of memory");
    return;
  }
  if (s->unread) {
    seal(s, NULL);
    return;
  }
  if (!s->listed) {
    if (!row_items(s, r->results[0])) {
      round_error(s, "out of memory, or a record without its ids");
      return;
    }
    seal(s, r->results[0]);
    return;
  }
  long missing = list_items(s, r->results[0]);
  if (missing < 0) {
    round_error(s, "out of memory, or a listed record without its ids");
  } else if (missing == 0) {
    seal(s, NULL);
  } else {
    start_fetch(s, (size_t)missing);
  }
}

/* The round's items straight from the tap, when it holds every id of (horizon, through]. Ids
 * are unique, so the range then holds no other record, and nothing need be asked of PostgreSQL:
 * on one node whose writes all went through the committers' fast path, that is every round.
 * Listing the range instead took 9-10 ms per 5000 records under load (its index scan visits
 * each heap tuple, the newest pages being not yet all-visible), half of the sealer's database
 * time. held: how many of the range's records the tap holds. False (and no items) when an id is
 * missing or out of memory. */
static bool tap_items(hs_sealer_t *s, size_t held) {
  size_t n = (size_t)(s->through - s->horizon);
  if (n == 0 || held < n) {
    return false;
  }
  s->items = malloc(n * sizeof *s->items);
  if (s->items == NULL) {
    return false;
  }
  bool sorted = true;
  for (int64_t id = s->horizon + 1; id <= s->through; id++) {
    int64_t brand_id = 0;
    const hs_audit_record_t *rec = hs_audit_tap_get(s->tap, id, &brand_id);
    if (rec == NULL) {
      free(s->items);
      s->items = NULL;
      s->n_items = 0;
      return false;
    }
    item_t *it = &s->items[s->n_items++];
    *it = (item_t){.brand_id = brand_id, .id = id, .tapped = rec, .row = -1};
    sorted = sorted && (s->n_items == 1 || it[-1].brand_id <= brand_id);
  }
  if (!sorted) {
    qsort(s->items, s->n_items, sizeof *s->items, cmp_item); /* each brand's chain in id order */
  }
  return true;
}

static void start_read(hs_sealer_t *s) {
  /* Ids are unique, so a range of ROUND_MAX of them holds at most that many records. */
  s->through = s->fence - s->horizon > ROUND_MAX ? s->horizon + ROUND_MAX : s->fence;
  s->more = s->through < s->fence;
  /* When the tap holds records of the range, only the range's ids are read, and the whole rows
   * of just those it does not hold; otherwise every whole row at once. */
  size_t held = s->tap != NULL && hs_audit_tap_sync(s->tap, s->horizon) == HS_OK
                    ? hs_audit_tap_holds(s->tap, s->horizon, s->through)
                    : 0;
  s->listed = held > 0;
  s->unread = s->listed && tap_items(s, held);
  bool known = s->known_valid && s->known_through == s->horizon;
  if (s->unread && known) {
    if (!load_chains(s, NULL)) {
      round_error(s, "out of memory");
      return;
    }
    seal(s, NULL);
    return;
  }
  char from[24], to[24];
  snprintf(from, sizeof from, "%" PRId64, s->horizon);
  snprintf(to, sizeof to, "%" PRId64, s->through);
  const char *params[] = {from, to};
  hs_db_stmt_t st[] = {
      /* Each brand's records in the range, through the (brand_id, id) key. In no particular
         order: PostgreSQL sorting these wide rows was half of the query's time, so the round
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
  if (s->listed) {
    /* Only the ids, from the key alone: a fraction of the whole rows' cost. */
    st[0].name = "hs_seal_list";
    st[0].sql = "SELECT r.brand_id, r.id FROM brands k CROSS JOIN LATERAL"
                " (SELECT brand_id, id FROM validation_records r WHERE r.brand_id = k.id"
                " AND r.id > $1::int8 AND r.id <= $2::int8) r";
  }
  s->phase = READING;
  /* Unread, only the heads are wanted; otherwise the records, and the heads unless known. */
  if (hs_db_exec(s->pool, s->unread ? &st[1] : st, s->unread || known ? 1 : 2, on_read, s,
                 &s->job) != HS_OK) {
    round_free(s);
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
                  unsigned interval_ms, hs_audit_tap_t *tap, hs_metrics_shard_t *metrics,
                  hs_sealer_t **out) {
  hs_sealer_t *s = calloc(1, sizeof *s);
  if (s == NULL) {
    return HS_ENOMEM;
  }
  s->pool = pool;
  s->key = key;
  s->metrics = metrics;
  s->tap = tap;
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
  round_free(s);
  uv_timer_stop(&s->timer);
  uv_close((uv_handle_t *)&s->timer, on_closed);
}
