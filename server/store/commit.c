#include "store/commit.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"

enum {
  MAX_BATCH = 1024,   /* writes in one transaction */
  MAX_QUEUED = 16384, /* writes waiting for a transaction before we shed load */
};

/* One statement per kind. Each takes $1, a JSON array of rows each carrying "i" (its index in
 * the batch), and returns the "i" of every row it inserted. Bytes travel base64-encoded. */
static const char *const k_sql[HS_WRITE_KINDS] = {
    [HS_WRITE_SESSION] =
        "WITH input AS ("
        " SELECT * FROM json_to_recordset($1::json) AS t(i int, id text, brand_id bigint,"
        " process text, version text, contractor_id text, ref text, customer text,"
        " contractor text, seed bigint, events text, started_ms bigint)),"
        " s AS (INSERT INTO sessions (id, brand_id, process, version, contractor_id, ref,"
        " customer, contractor, seed, events, created_at)"
        " SELECT id, brand_id, process, version, contractor_id, ref, decode(customer, 'base64'),"
        " decode(contractor, 'base64'), seed, decode(events, 'base64'),"
        " coalesce(to_timestamp(started_ms / 1000.0), now())"
        " FROM input ON CONFLICT DO NOTHING RETURNING id)"
        " SELECT i FROM input JOIN s USING (id)",
    [HS_WRITE_COMPLETION] =
        "WITH input AS ("
        " SELECT * FROM json_to_recordset($1::json) AS t(i int, session_id text, seq int,"
        " digest text, response text, events text, ended boolean, device_time timestamptz,"
        " brand_id bigint, process text, version text, step_id text, contractor_id text,"
        " data_digest text, data text, documents text, pii text[])),"
        " c AS (INSERT INTO step_completions (session_id, seq, digest, response, events, ended,"
        " device_time) SELECT session_id, seq, decode(digest, 'base64'),"
        " decode(response, 'base64'), decode(events, 'base64'), ended, device_time FROM input"
        " ON CONFLICT DO NOTHING RETURNING session_id, seq),"
        " v AS (INSERT INTO validation_records (brand_id, session_id, process, version, step_id,"
        " seq, contractor_id, device_time, result, errors, data_digest, data, documents, pii)"
        " SELECT brand_id, session_id, process, version, step_id, seq, contractor_id,"
        " device_time, 'accepted', NULL, decode(data_digest, 'base64'), decode(data, 'base64'),"
        " decode(documents, 'base64'), pii FROM input JOIN c USING (session_id, seq)),"
        /* One notification per 100 completions, not one each: a payload stays under the
           8000-byte limit, and the listeners' work shrinks with the batch. */
        " n AS (SELECT pg_notify('handsel_session', string_agg(session_id || ' ' || seq, ','))"
        " FROM (SELECT session_id, seq, (row_number() OVER ()) / 100 AS g FROM c) x GROUP BY g)"
        " SELECT i FROM input JOIN c USING (session_id, seq) WHERE (SELECT count(*) FROM n) >= 0",
    [HS_WRITE_REJECTION] =
        "WITH input AS ("
        " SELECT * FROM json_to_recordset($1::json) AS t(i int, session_id text, seq int,"
        " device_time timestamptz, brand_id bigint, process text, version text, step_id text,"
        " contractor_id text, errors text, data_digest text, data text, documents text,"
        " pii text[])),"
        " v AS (INSERT INTO validation_records (brand_id, session_id, process, version, step_id,"
        " seq, contractor_id, device_time, result, errors, data_digest, data, documents, pii)"
        " SELECT brand_id, session_id, process, version, step_id, seq, contractor_id,"
        " device_time, 'rejected', decode(errors, 'base64'), decode(data_digest, 'base64'),"
        " decode(data, 'base64'), decode(documents, 'base64'), pii FROM input"
        " RETURNING session_id)"
        " SELECT i FROM input",
    [HS_WRITE_FEEDBACK] =
        "WITH input AS ("
        " SELECT * FROM json_to_recordset($1::json) AS t(i int, brand_id bigint,"
        " session_id text, contractor_id text, source text, rating smallint, comment text,"
        " tags text[], step_seq int, digest text)),"
        /* A rating given on a step of the process is stored only with the completion that
           carried it (the same digest), once. */
        " f AS (INSERT INTO feedback (brand_id, session_id, source, rating, comment, tags,"
        " step_seq) SELECT input.brand_id, session_id, source, rating, comment,"
        " coalesce(tags, '{}'), step_seq"
        " FROM input JOIN sessions s ON s.id = input.session_id AND s.brand_id = input.brand_id"
        " AND (input.contractor_id IS NULL OR s.contractor_id = input.contractor_id)"
        " WHERE input.step_seq IS NULL OR EXISTS (SELECT 1 FROM step_completions c"
        " WHERE c.session_id = input.session_id AND c.seq = input.step_seq"
        " AND c.digest = decode(input.digest, 'base64'))"
        " ON CONFLICT DO NOTHING RETURNING session_id)"
        " SELECT i FROM input WHERE session_id IN (SELECT session_id FROM f)",
    /* Content learning. A row applies only when the write it follows committed: its session
       (source start), its completion with the same digest (completion), or a customer's
       rating of 4 or more (feedback). The counters are updated last, in key order, after every
       insert above them finished (the sort reads all its input first), so two batches never wait on
       each other's counters in opposite orders. */
    [HS_WRITE_CONTENT] =
        "WITH input AS ("
        " SELECT * FROM json_to_recordset($1::json) AS t(i int, brand_id bigint,"
        " session_id text, source text, seq int, digest text, shown text, reward text)),"
        " g AS (SELECT input.*, s.process FROM input JOIN sessions s ON s.id = input.session_id"
        " AND s.brand_id = input.brand_id WHERE input.source = 'start'"
        " OR (input.source = 'completion' AND EXISTS (SELECT 1 FROM step_completions c"
        " WHERE c.session_id = input.session_id AND c.seq = input.seq"
        " AND c.digest = decode(input.digest, 'base64')))"
        " OR (input.source = 'feedback' AND EXISTS (SELECT 1 FROM feedback f"
        " WHERE f.session_id = input.session_id AND f.source = 'customer'"
        " AND f.rating >= 4))),"
        " sh AS (INSERT INTO content_shown (brand_id, process, slot, context, item, session_id,"
        " seq, rank, propensity) SELECT g.brand_id, g.process, x.slot, coalesce(x.context, ''),"
        " x.item, g.session_id, g.seq, x.rank, x.propensity FROM g, "
        "json_to_recordset(g.shown::json)"
        " AS x(slot text, context text, item text, rank int, propensity float8)"
        " WHERE g.shown IS NOT NULL ORDER BY g.session_id, g.seq, x.rank"
        " ON CONFLICT DO NOTHING RETURNING brand_id, process, slot, context, item, session_id),"
        " rw AS (INSERT INTO content_rewards (session_id, brand_id, source)"
        " SELECT DISTINCT ON (session_id) session_id, brand_id, reward FROM g"
        " WHERE reward IS NOT NULL ORDER BY session_id ON CONFLICT DO NOTHING"
        " RETURNING session_id),"
        " d AS (SELECT brand_id, process, slot, context, item, 1 AS shown,"
        " CASE WHEN session_id IN (SELECT session_id FROM rw) OR EXISTS (SELECT 1"
        " FROM content_rewards r WHERE r.session_id = sh.session_id) THEN 1 ELSE 0 END AS wins"
        " FROM sh UNION ALL SELECT s.brand_id, s.process, s.slot, s.context, s.item, 0, 1"
        " FROM content_shown s JOIN rw USING (session_id)),"
        " u AS (INSERT INTO content_counts (brand_id, process, slot, context, item, shown,"
        " successes) SELECT brand_id, process, slot, context, item, sum(shown), sum(wins)"
        " FROM d GROUP BY brand_id, process, slot, context, item"
        " ORDER BY brand_id, process, slot, context, item"
        " ON CONFLICT (brand_id, process, slot, context, item) DO UPDATE"
        " SET shown = content_counts.shown + excluded.shown,"
        " successes = content_counts.successes + excluded.successes, updated_at = now()"
        " RETURNING 1)"
        " SELECT i FROM g WHERE (SELECT count(*) FROM u) >= 0",
};
static const char *const k_names[HS_WRITE_KINDS] = {"hs_commit_session", "hs_commit_completion",
                                                    "hs_commit_rejection", "hs_commit_feedback",
                                                    "hs_commit_content"};

struct hs_write {
  hs_write_t *next;
  hs_write_kind_t kind;
  hs_buf_t row;   /* owned: the row's members as JSON text */
  hs_write_cb cb; /* NULL once cancelled */
  void *ctx;
  bool inserted;
};

typedef struct batch {
  hs_committer_t *c;
  size_t n;
  hs_write_t *items[]; /* owned: n of them */
} batch_t;

struct hs_committer {
  uv_check_t check;            /* first: the committer is freed in its close callback */
  hs_db_pool_t *pool;          /* borrowed */
  hs_metrics_shard_t *metrics; /* borrowed; may be NULL */
  hs_write_t *head, *tail;     /* owned: waiting for the next transaction */
  size_t n_queued;
  batch_t *inflight; /* the transaction in flight, or NULL */
  bool freeing;
  hs_commit_stats_t stats;
};

static void flush(hs_committer_t *c);

static void on_check(uv_check_t *h) {
  hs_committer_t *c = h->data;
  uv_check_stop(&c->check);
  flush(c);
}

int hs_committer_new(uv_loop_t *loop, hs_db_pool_t *pool, hs_metrics_shard_t *metrics,
                     hs_committer_t **out) {
  hs_committer_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    return HS_ENOMEM;
  }
  c->pool = pool;
  c->metrics = metrics;
  uv_check_init(loop, &c->check);
  c->check.data = c;
  *out = c;
  return HS_OK;
}

static void finish(hs_write_t *w, int status) {
  if (w->cb != NULL) {
    w->cb(w->ctx, status, w->inserted);
  }
  hs_buf_free(&w->row);
  free(w);
}

static void on_closed(uv_handle_t *h) {
  free(h->data);
}

void hs_committer_close(hs_committer_t *c) {
  c->freeing = true;
  hs_write_t *w = c->head;
  c->head = c->tail = NULL;
  while (w != NULL) {
    hs_write_t *next = w->next;
    finish(w, HS_EUNAVAIL);
    w = next;
  }
  if (c->inflight != NULL) {
    c->inflight->c = NULL; /* its callback frees the batch alone */
  }
  uv_close((uv_handle_t *)&c->check, on_closed);
}

static void on_batch_done(void *ctx, const hs_db_result_t *res) {
  batch_t *b = ctx;
  hs_committer_t *c = b->c;
  if (res->status == HS_OK) {
    for (size_t r = 0; r < res->n_results; r++) {
      PGresult *pr = res->results[r];
      int rows = pr != NULL ? PQntuples(pr) : 0;
      for (int k = 0; k < rows; k++) {
        long i = strtol(PQgetvalue(pr, k, 0), NULL, 10);
        if (i >= 0 && (size_t)i < b->n) {
          b->items[i]->inserted = true;
        }
      }
    }
  }
  int status = res->status == HS_OK ? HS_OK : res->status == HS_EUNAVAIL ? HS_EUNAVAIL : HS_EIO;
  if (c != NULL) {
    c->inflight = NULL;
    c->stats.batches++;
    c->stats.writes += b->n;
    if (c->metrics != NULL) {
      atomic_fetch_add_explicit(&c->metrics->commit_batches, 1, memory_order_relaxed);
      atomic_fetch_add_explicit(&c->metrics->commit_writes, b->n, memory_order_relaxed);
    }
  }
  for (size_t i = 0; i < b->n; i++) {
    finish(b->items[i], status);
  }
  free(b);
  if (c != NULL && !c->freeing) {
    flush(c);
  }
}

static void flush(hs_committer_t *c) {
  if (c->inflight != NULL || c->head == NULL) {
    return;
  }
  size_t cap = c->n_queued < MAX_BATCH ? c->n_queued : MAX_BATCH;
  batch_t *b = malloc(sizeof *b + cap * sizeof b->items[0]);
  if (b == NULL) {
    return;
  }
  b->c = c;
  b->n = 0;
  hs_buf_t arrays[HS_WRITE_KINDS];
  for (int k = 0; k < HS_WRITE_KINDS; k++) {
    hs_buf_init(&arrays[k], 0);
  }
  int rc = HS_OK;
  while (c->head != NULL && b->n < cap) {
    hs_write_t *w = c->head;
    c->head = w->next;
    c->n_queued--;
    w->next = NULL;
    hs_buf_t *a = &arrays[w->kind];
    rc |= hs_buf_append(a, a->len == 0 ? "[{\"i\":" : ",{\"i\":", 6);
    rc |= hs_buf_put_int(a, (int64_t)b->n);
    if (w->row.len > 0) {
      rc |= hs_buf_append(a, ",", 1);
    }
    rc |= hs_buf_append(a, w->row.data, w->row.len);
    rc |= hs_buf_append(a, "}", 1);
    b->items[b->n++] = w;
  }
  if (c->head == NULL) {
    c->tail = NULL;
  }
  hs_db_stmt_t stmts[HS_WRITE_KINDS];
  const char *values[HS_WRITE_KINDS][1];
  size_t n = 0;
  for (int k = 0; k < HS_WRITE_KINDS; k++) {
    if (arrays[k].len == 0) {
      continue;
    }
    rc |= hs_buf_append(&arrays[k], "]", 2); /* with the NUL libpq wants */
    values[k][0] = (const char *)arrays[k].data;
    stmts[n++] =
        (hs_db_stmt_t){.name = k_names[k], .sql = k_sql[k], .n_params = 1, .values = values[k]};
  }
  rc = rc == HS_OK ? hs_db_exec(c->pool, stmts, n, on_batch_done, b, NULL) : HS_ENOMEM;
  for (int k = 0; k < HS_WRITE_KINDS; k++) {
    hs_buf_free(&arrays[k]);
  }
  if (rc == HS_OK) {
    c->inflight = b;
    return;
  }
  for (size_t i = 0; i < b->n; i++) {
    finish(b->items[i], rc == HS_ENOMEM ? HS_EIO : HS_EUNAVAIL);
  }
  free(b);
  /* Whatever is still queued waits for the next submit: failing it all now would only turn
   * one outage into a burst of errors with no new information. */
}

/* ------------------------------------------------------------ rows */

void hs_row_init(hs_row_t *r) {
  hs_buf_init(&r->text, 0);
  r->rc = HS_OK;
}

void hs_row_free(hs_row_t *r) {
  hs_buf_free(&r->text);
}

/* Starts a member: a comma after the previous one, then the key (a literal: never escaped). */
static bool row_key(hs_row_t *r, const char *key) {
  if (r->rc != HS_OK) {
    return false;
  }
  size_t n = strlen(key);
  r->rc = hs_buf_reserve(&r->text, n + 4);
  if (r->rc == HS_OK) {
    if (r->text.len > 0) {
      r->text.data[r->text.len++] = ',';
    }
    r->text.data[r->text.len++] = '"';
    memcpy(r->text.data + r->text.len, key, n);
    r->text.len += n;
    r->text.data[r->text.len++] = '"';
    r->text.data[r->text.len++] = ':';
  }
  return r->rc == HS_OK;
}

void hs_row_str(hs_row_t *r, const char *key, const char *s) {
  if (row_key(r, key)) {
    r->rc = s != NULL ? hs_json_put_string(&r->text, s, strlen(s)) : hs_buf_puts(&r->text, "null");
  }
}

void hs_row_int(hs_row_t *r, const char *key, int64_t v) {
  if (row_key(r, key)) {
    r->rc = hs_buf_put_int(&r->text, v);
  }
}

void hs_row_bool(hs_row_t *r, const char *key, bool v) {
  if (row_key(r, key)) {
    r->rc = hs_buf_puts(&r->text, v ? "true" : "false");
  }
}

void hs_row_bytes(hs_row_t *r, const char *key, const void *p, size_t n) {
  if (row_key(r, key)) {
    /* base64 needs no escaping */
    r->rc = hs_buf_append(&r->text, "\"", 1);
    r->rc = r->rc == HS_OK ? hs_base64_encode(p, n, &r->text) : r->rc;
    r->rc = r->rc == HS_OK ? hs_buf_append(&r->text, "\"", 1) : r->rc;
  }
}

void hs_row_msgpack(hs_row_t *r, const char *key, const hs_value_t *v) {
  if (r->rc != HS_OK) {
    return;
  }
  hs_buf_t mp;
  hs_buf_init(&mp, 0);
  int rc = hs_msgpack_encode(v, &mp);
  if (rc == HS_OK) {
    hs_row_bytes(r, key, mp.data, mp.len);
  } else {
    r->rc = rc;
  }
  hs_buf_free(&mp);
}

void hs_row_strs(hs_row_t *r, const char *key, const char *const *items, size_t n) {
  if (!row_key(r, key)) {
    return;
  }
  r->rc = hs_buf_append(&r->text, "[", 1);
  for (size_t i = 0; r->rc == HS_OK && i < n; i++) {
    if (i > 0) {
      r->rc = hs_buf_append(&r->text, ",", 1);
    }
    if (r->rc == HS_OK) {
      r->rc = hs_json_put_string(&r->text, items[i], strlen(items[i]));
    }
  }
  r->rc = r->rc == HS_OK ? hs_buf_append(&r->text, "]", 1) : r->rc;
}

int hs_commit_submit(hs_committer_t *c, hs_write_kind_t kind, hs_row_t *row, hs_write_cb cb,
                     void *ctx, hs_write_t **out) {
  if (row->rc != HS_OK) {
    return row->rc;
  }
  if (c->n_queued >= MAX_QUEUED) {
    return HS_ELIMIT;
  }
  if (!hs_db_pool_ready(c->pool)) {
    return HS_EUNAVAIL;
  }
  hs_write_t *w = calloc(1, sizeof *w);
  if (w == NULL) {
    return HS_ENOMEM;
  }
  w->kind = kind;
  w->row = row->text; /* the text moves to the write */
  hs_buf_init(&row->text, 0);
  w->cb = cb;
  w->ctx = ctx;
  if (c->tail != NULL) {
    c->tail->next = w;
  } else {
    c->head = w;
  }
  c->tail = w;
  c->n_queued++;
  if (out != NULL) {
    *out = w;
  }
  if (c->inflight == NULL) {
    uv_check_start(&c->check, on_check);
  }
  return HS_OK;
}

void hs_write_cancel(hs_write_t *w) {
  w->cb = NULL;
}

void hs_committer_stats(const hs_committer_t *c, hs_commit_stats_t *out) {
  *out = c->stats;
}
