#include "store/commit.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/rows.h"
#include "codec/codec.h"
#include "core/endian.h"

enum {
  MAX_BATCH = 1024,   /* writes in one transaction */
  MAX_QUEUED = 16384, /* writes waiting for a transaction before we shed load */
  MAX_PARAMS = HS_ROW_MAX_COLUMNS + 1,
  /* Completions named per notification: a payload stays under PostgreSQL's 8000 bytes (a
     session id and a seq take at most 48). */
  NOTIFY_CHUNK = 100,
  KEEP_SCRATCH = 1 << 20, /* a column buffer larger than this is freed after its batch */
};

/* A column's type: how hs_row_* encode it, and the array type its parameter is cast to. */
typedef enum col_type { COL_TEXT, COL_BYTEA, COL_INT2, COL_INT4, COL_INT8, COL_BOOL } col_type_t;

static const struct {
  const char *sql;   /* the parameter's array type */
  uint32_t elem_oid; /* pg_type.oid of the element, which array_recv checks */
} k_types[] = {
    [COL_TEXT] = {"text[]", 25}, [COL_BYTEA] = {"bytea[]", 17}, [COL_INT2] = {"int2[]", 21},
    [COL_INT4] = {"int4[]", 23}, [COL_INT8] = {"int8[]", 20},   [COL_BOOL] = {"bool[]", 16},
};

typedef struct column {
  const char *name;
  col_type_t type;
  const char *cast; /* NULL, or the column's SQL type when the parameter's is another */
} column_t;

/* The columns of each kind, in the order hs_row_* must add them (a member left out is NULL).
 * Every statement below sees them as the CTE `input`, with `i`, the write's index in its batch,
 * first, and each column already cast to its SQL type. A list of strings is one text column
 * holding an array literal (`{"a","b"}`), since a parameter array cannot hold arrays of
 * different lengths; its cast makes it a text[]. */
static const column_t k_columns[HS_WRITE_KINDS][HS_ROW_MAX_COLUMNS + 1] = {
    [HS_WRITE_SESSION] = {{"id", COL_TEXT, NULL},
                          {"brand_id", COL_INT8, NULL},
                          {"process", COL_TEXT, NULL},
                          {"version", COL_TEXT, NULL},
                          {"contractor_id", COL_TEXT, NULL},
                          {"ref", COL_TEXT, NULL},
                          {"customer", COL_BYTEA, NULL},
                          {"contractor", COL_BYTEA, NULL},
                          {"seed", COL_INT8, NULL},
                          {"events", COL_BYTEA, NULL},
                          {"started_ms", COL_INT8, NULL}},
    [HS_WRITE_COMPLETION] = {{"session_id", COL_TEXT, NULL},
                             {"seq", COL_INT4, NULL},
                             {"digest", COL_BYTEA, NULL},
                             {"events", COL_BYTEA, NULL},
                             {"ended", COL_BOOL, NULL},
                             {"device_time", COL_TEXT, "timestamptz"},
                             {"brand_id", COL_INT8, NULL},
                             {"process", COL_TEXT, NULL},
                             {"version", COL_TEXT, NULL},
                             {"step_id", COL_TEXT, NULL},
                             {"contractor_id", COL_TEXT, NULL},
                             {"data_digest", COL_BYTEA, NULL},
                             {"data", COL_BYTEA, NULL},
                             {"documents", COL_BYTEA, NULL},
                             {"pii", COL_TEXT, "text[]"}},
    [HS_WRITE_REJECTION] = {{"session_id", COL_TEXT, NULL},
                            {"seq", COL_INT4, NULL},
                            {"device_time", COL_TEXT, "timestamptz"},
                            {"brand_id", COL_INT8, NULL},
                            {"process", COL_TEXT, NULL},
                            {"version", COL_TEXT, NULL},
                            {"step_id", COL_TEXT, NULL},
                            {"contractor_id", COL_TEXT, NULL},
                            {"errors", COL_BYTEA, NULL},
                            {"data_digest", COL_BYTEA, NULL},
                            {"data", COL_BYTEA, NULL},
                            {"documents", COL_BYTEA, NULL},
                            {"pii", COL_TEXT, "text[]"}},
    [HS_WRITE_FEEDBACK] = {{"brand_id", COL_INT8, NULL},
                           {"session_id", COL_TEXT, NULL},
                           {"contractor_id", COL_TEXT, NULL},
                           {"source", COL_TEXT, NULL},
                           {"rating", COL_INT2, NULL},
                           {"comment", COL_TEXT, NULL},
                           {"tags", COL_TEXT, "text[]"},
                           {"step_seq", COL_INT4, NULL},
                           {"digest", COL_BYTEA, NULL}},
    [HS_WRITE_CONTENT] = {{"brand_id", COL_INT8, NULL},
                          {"session_id", COL_TEXT, NULL},
                          {"source", COL_TEXT, NULL},
                          {"seq", COL_INT4, NULL},
                          {"digest", COL_BYTEA, NULL},
                          {"shown", COL_TEXT, NULL},
                          {"reward", COL_TEXT, NULL}},
};

/* Where a record's members are among the cells (k_columns) of a completion or a rejection, for
 * the tap; -1: none (a completion has no errors). Checked against k_columns' names at start. */
typedef struct tap_cells {
  int session, seq, brand, process, version, step, contractor, data_digest, documents, errors;
} tap_cells_t;
static const tap_cells_t k_tap_cells[HS_WRITE_KINDS] = {
    [HS_WRITE_COMPLETION] = {0, 1, 6, 7, 8, 9, 10, 11, 13, -1},
    [HS_WRITE_REJECTION] = {0, 1, 3, 4, 5, 6, 7, 9, 11, 8},
};

/* The rest of each statement after `WITH input AS (...),`; each returns the `i` of every row
 * it inserted. */
static const char *const k_body[HS_WRITE_KINDS] = {
    [HS_WRITE_SESSION] =
        " s AS (INSERT INTO sessions (id, brand_id, process, version, contractor_id, ref,"
        " customer, contractor, seed, events, created_at)"
        " SELECT id, brand_id, process, version, contractor_id, ref, customer, contractor, seed,"
        " events, coalesce(to_timestamp(started_ms / 1000.0), now())"
        " FROM input ON CONFLICT DO NOTHING RETURNING id)"
        " SELECT i FROM input JOIN s USING (id)",
    [HS_WRITE_COMPLETION] =
        " c AS (INSERT INTO validation_records (brand_id, session_id, process, version, step_id,"
        " seq, contractor_id, device_time, result, data_digest, data, documents, pii, digest,"
        " events, ended) SELECT brand_id, session_id, process, version, step_id, seq,"
        " contractor_id, device_time, 'accepted', data_digest, data, documents, pii, digest,"
        " events, ended FROM input"
        " ON CONFLICT (session_id, seq) WHERE result = 'accepted' DO NOTHING"
        " RETURNING session_id, seq),"
        /* One notification per 100 completions, not one each: a payload stays under the
           8000-byte limit, and the listeners' work shrinks with the batch. */
        " n AS (SELECT pg_notify('handsel_session', string_agg(session_id || ' ' || seq, ','))"
        " FROM (SELECT session_id, seq, (row_number() OVER ()) / 100 AS g FROM c) x GROUP BY g)"
        " SELECT i FROM input JOIN c USING (session_id, seq) WHERE (SELECT count(*) FROM n) >= 0",
    [HS_WRITE_REJECTION] =
        " v AS (INSERT INTO validation_records (brand_id, session_id, process, version, step_id,"
        " seq, contractor_id, device_time, result, errors, data_digest, data, documents, pii)"
        " SELECT brand_id, session_id, process, version, step_id, seq, contractor_id,"
        " device_time, 'rejected', errors, data_digest, data, documents, pii FROM input"
        /* Every row goes in (or the transaction fails), in the order of input: what PostgreSQL
           assigned each, for the sealer (tap_batch), with what tells the rows apart. */
        " RETURNING id, session_id, seq, server_time, device_time, data_digest)"
        " SELECT * FROM v",
    [HS_WRITE_FEEDBACK] =
        /* A rating given on a step of the process is stored only with the completion that
           carried it (the same digest), once. */
    " f AS (INSERT INTO feedback (brand_id, session_id, source, rating, comment, tags,"
    " step_seq) SELECT input.brand_id, session_id, source, rating, comment,"
    " coalesce(tags, '{}'), step_seq"
    " FROM input JOIN sessions s ON s.id = input.session_id AND s.brand_id = input.brand_id"
    " AND (input.contractor_id IS NULL OR s.contractor_id = input.contractor_id)"
    " WHERE input.step_seq IS NULL OR EXISTS (SELECT 1 FROM step_completions c"
    " WHERE c.session_id = input.session_id AND c.seq = input.step_seq"
    " AND c.digest = input.digest)"
    " ON CONFLICT DO NOTHING RETURNING session_id)"
    " SELECT i FROM input WHERE session_id IN (SELECT session_id FROM f)",
    /* Content learning. A row applies only when the write it follows committed: its session
       (source start), its completion with the same digest (completion), or a customer's
       rating of 4 or more (feedback). The counters are updated last, in key order, after every
       insert above them finished (the sort reads all its input first), so two batches never wait on
       each other's counters in opposite orders. */
    [HS_WRITE_CONTENT] =
        " g AS (SELECT input.*, s.process FROM input JOIN sessions s ON s.id = input.session_id"
        " AND s.brand_id = input.brand_id WHERE input.source = 'start'"
        " OR (input.source = 'completion' AND EXISTS (SELECT 1 FROM step_completions c"
        " WHERE c.session_id = input.session_id AND c.seq = input.seq"
        " AND c.digest = input.digest))"
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

/* Completions first try without ON CONFLICT. A completion's key almost never exists already
 * (this node checked its own copy of the session first), and checking for a conflict before
 * each insert was a tenth of PostgreSQL's work per completion. When one does exist (another
 * node's copy was ahead, or a retry raced its original) the batch fails with a unique
 * violation, nothing of it is kept, and the same batch goes again with the statement above.
 *
 * Every row goes in or none does, so nothing is returned per row, and the attempt is two
 * plain statements in the batch's one transaction. The INSERT of the completions' records (each
 * one also the session's event log, see migration 008) unnests the columns' arrays in its
 * select list, which walks the arrays in step, row by row: the shared `input` CTE of the
 * statements above (and any FROM unnest(...)) first copies every row into a tuplestore, and
 * skipping that was about a tenth of PostgreSQL's CPU per completion. The notifications'
 * payloads come ready-made in the second statement's one parameter (a text[] of
 * "id seq,id seq,..."). */
static const char *const k_records_name = "hs_commit_completion_records";
enum { N_OPTIMISTIC = 2 /* the records' INSERT, then the notifications */ };
static const char *const k_notify_name = "hs_commit_completion_notify";
static const char *const k_notify_sql =
    "SELECT pg_notify('handsel_session', p) FROM unnest($1::text[]) p";

static const char *const k_names[HS_WRITE_KINDS] = {"hs_commit_session", "hs_commit_completion",
                                                    "hs_commit_rejection", "hs_commit_feedback",
                                                    "hs_commit_content"};

struct hs_write {
  hs_write_t *next;
  hs_write_kind_t kind;
  hs_buf_t cells; /* owned: the row's values (hs_row_t.cells) */
  hs_write_cb cb; /* NULL once cancelled */
  void *ctx;
  bool inserted;
};

typedef struct batch {
  hs_committer_t *c;
  bool careful;   /* completions go with ON CONFLICT (the optimistic attempt conflicted) */
  int optimistic; /* the first result of the optimistic completion statements, or -1 */
  int rejections; /* the result of the rejections' statement, or -1 */
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
  char *sql[HS_WRITE_KINDS]; /* owned: each kind's whole statement */
  char *sql_records;         /* owned: the optimistic INSERT of the completions' records */
  hs_buf_t notify;           /* owned: the optimistic statements' payloads, rebuilt per batch */
  /* owned: one parameter array per column per kind, rebuilt for every batch (libpq copies
     them when the batch is sent, so they are reused) */
  hs_buf_t params[HS_WRITE_KINDS][MAX_PARAMS];
  hs_audit_tap_t *tap;             /* borrowed; NULL: the records are not handed over */
  hs_audit_tap_record_t *tap_recs; /* owned: one batch's records for the tap */
  size_t tap_cap;
};

static void flush(hs_committer_t *c);
static void on_batch_done(void *ctx, const hs_db_result_t *res);

static void on_check(uv_check_t *h) {
  hs_committer_t *c = h->data;
  uv_check_stop(&c->check);
  flush(c);
}

static size_t n_columns(hs_write_kind_t kind) {
  size_t n = 0;
  while (k_columns[kind][n].name != NULL) {
    n++;
  }
  return n;
}

/* `WITH input AS (SELECT i, <name>[::<cast>], ... FROM unnest($1::int4[], $2::<type>[], ...)
 * AS t(i, <names>...)),` followed by body, which so sees every column in its SQL type.
 * Returns NULL when out of memory. */
static char *statement(hs_write_kind_t kind, const char *body) {
  hs_buf_t sql;
  hs_buf_init(&sql, 0);
  size_t n = n_columns(kind);
  int rc = hs_buf_puts(&sql, "WITH input AS (SELECT i");
  for (size_t k = 0; k < n; k++) {
    const column_t *col = &k_columns[kind][k];
    if (col->cast != NULL) {
      rc |= hs_buf_printf(&sql, ", %s::%s AS %s", col->name, col->cast, col->name);
    } else {
      rc |= hs_buf_printf(&sql, ", %s", col->name);
    }
  }
  rc |= hs_buf_puts(&sql, " FROM unnest($1::int4[]");
  for (size_t k = 0; k < n; k++) {
    rc |= hs_buf_printf(&sql, ", $%zu::%s", k + 2, k_types[k_columns[kind][k].type].sql);
  }
  rc |= hs_buf_puts(&sql, ") AS t(i");
  for (size_t k = 0; k < n; k++) {
    rc |= hs_buf_printf(&sql, ", %s", k_columns[kind][k].name);
  }
  rc |= hs_buf_puts(&sql, ")),");
  rc |= hs_buf_append(&sql, body, strlen(body) + 1); /* with its NUL */
  if (rc != HS_OK) {
    hs_buf_free(&sql);
    return NULL;
  }
  return (char *)hs_buf_release(&sql, NULL);
}

/* `INSERT INTO validation_records (<columns>, result) SELECT unnest($1::<type>[])[::<cast>], ...,
 * 'accepted'`: every column of a completion, in k_columns' order, so its parameters are the
 * completion's own arrays after `i`. Returns NULL when out of memory. */
static char *records_statement(void) {
  const column_t *cols = k_columns[HS_WRITE_COMPLETION];
  size_t n = n_columns(HS_WRITE_COMPLETION);
  hs_buf_t sql;
  hs_buf_init(&sql, 0);
  int rc = hs_buf_puts(&sql, "INSERT INTO validation_records (");
  for (size_t k = 0; k < n; k++) {
    rc |= hs_buf_printf(&sql, "%s, ", cols[k].name);
  }
  rc |= hs_buf_puts(&sql, "result) SELECT ");
  for (size_t k = 0; k < n; k++) {
    rc |= hs_buf_printf(&sql, "unnest($%zu::%s)%s%s, ", k + 1, k_types[cols[k].type].sql,
                        cols[k].cast != NULL ? "::" : "", cols[k].cast != NULL ? cols[k].cast : "");
  }
  /* What PostgreSQL assigned, for the sealer (see tap_batch). */
  static const char tail[] = "'accepted' RETURNING id, session_id, seq, server_time, device_time";
  rc |= hs_buf_append(&sql, tail, sizeof tail); /* with its NUL */
  if (rc != HS_OK) {
    hs_buf_free(&sql);
    return NULL;
  }
  return (char *)hs_buf_release(&sql, NULL);
}

static void committer_free(hs_committer_t *c) {
  for (int k = 0; k < HS_WRITE_KINDS; k++) {
    free(c->sql[k]);
    for (int p = 0; p < MAX_PARAMS; p++) {
      hs_buf_free(&c->params[k][p]);
    }
  }
  free(c->sql_records);
  hs_buf_free(&c->notify);
  free(c->tap_recs);
  free(c);
}

int hs_committer_new(uv_loop_t *loop, hs_db_pool_t *pool, hs_metrics_shard_t *metrics,
                     hs_committer_t **out) {
  hs_committer_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    return HS_ENOMEM;
  }
  bool ok = true;
  for (int k = 0; k < HS_WRITE_KINDS; k++) {
    c->sql[k] = statement(k, k_body[k]);
    ok = ok && c->sql[k] != NULL;
  }
  c->sql_records = records_statement();
  ok = ok && c->sql_records != NULL;
  if (!ok) {
    committer_free(c);
    return HS_ENOMEM;
  }
  /* tap_record reads a completion's or a rejection's cells by position. */
  for (int k = HS_WRITE_COMPLETION; k <= HS_WRITE_REJECTION; k++) {
    const column_t *cols = k_columns[k];
    const tap_cells_t *at = &k_tap_cells[k];
    assert(strcmp(cols[at->session].name, "session_id") == 0 &&
           strcmp(cols[at->seq].name, "seq") == 0 &&
           strcmp(cols[at->brand].name, "brand_id") == 0 &&
           strcmp(cols[at->process].name, "process") == 0 &&
           strcmp(cols[at->version].name, "version") == 0 &&
           strcmp(cols[at->step].name, "step_id") == 0 &&
           strcmp(cols[at->contractor].name, "contractor_id") == 0 &&
           strcmp(cols[at->data_digest].name, "data_digest") == 0 &&
           strcmp(cols[at->documents].name, "documents") == 0 &&
           (at->errors < 0 || strcmp(cols[at->errors].name, "errors") == 0));
    (void)cols;
    (void)at;
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
  hs_buf_free(&w->cells);
  free(w);
}

static void on_closed(uv_handle_t *h) {
  committer_free(h->data);
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

/* Empties a and starts a one-dimensional array of length elements in PostgreSQL's binary
 * format (array_recv in arrayfuncs.c); the length may be patched in later, at offset 12. */
static int array_start(hs_buf_t *a, uint32_t elem_oid, uint32_t length) {
  a->len = 0;
  uint8_t head[20];
  hs_put_be32(head, 1);     /* dimensions */
  hs_put_be32(head + 4, 1); /* may hold NULLs; PostgreSQL looks at each element anyway */
  hs_put_be32(head + 8, elem_oid);
  hs_put_be32(head + 12, length);
  hs_put_be32(head + 16, 1); /* lower bound */
  return hs_buf_append(a, head, sizeof head);
}

/* Starts every parameter array of kind; params_end patches their length in once the batch is
 * complete. */
static int params_start(hs_committer_t *c, hs_write_kind_t kind) {
  size_t n = n_columns(kind);
  int rc = HS_OK;
  for (size_t p = 0; p <= n; p++) {
    rc |= array_start(
        &c->params[kind][p],
        p == 0 ? k_types[COL_INT4].elem_oid : k_types[k_columns[kind][p - 1].type].elem_oid, 0);
  }
  return rc;
}

/* Adds write w, number i of its batch, to its kind's arrays: its index, then each cell. The
 * cells are already array elements (length, bytes), so this only copies. */
static int params_add(hs_committer_t *c, const hs_write_t *w, size_t i) {
  hs_buf_t *params = c->params[w->kind];
  uint8_t elem[8];
  hs_put_be32(elem, 4);
  hs_put_be32(elem + 4, (uint32_t)i);
  int rc = hs_buf_append(&params[0], elem, sizeof elem);
  const uint8_t *p = w->cells.data;
  const uint8_t *end = p + w->cells.len;
  for (size_t k = 1; p < end; k++) {
    uint32_t len = hs_get_be32(p);
    size_t size = 4 + (len == UINT32_MAX ? 0 : len); /* -1: NULL, no bytes */
    rc |= hs_buf_append(&params[k], p, size);
    p += size;
  }
  return rc;
}

static void params_end(hs_committer_t *c, hs_write_kind_t kind, size_t rows) {
  size_t n = n_columns(kind);
  for (size_t p = 0; p <= n; p++) {
    hs_put_be32(c->params[kind][p].data + 12, (uint32_t)rows);
  }
}

/* A big batch's arrays are not kept around afterwards. */
static void params_trim(hs_committer_t *c) {
  for (int k = 0; k < HS_WRITE_KINDS; k++) {
    for (int p = 0; p < MAX_PARAMS; p++) {
      if (c->params[k][p].cap > KEEP_SCRATCH) {
        hs_buf_free(&c->params[k][p]);
      }
    }
  }
  if (c->notify.cap > KEEP_SCRATCH) {
    hs_buf_free(&c->notify);
  }
}

/* The optimistic statement's notifications: "id seq,id seq,..." for every completion of b, a
 * payload per NOTIFY_CHUNK of them, as a binary text[] (one element each) in c->notify. A
 * completion's first two cells are its session id and seq (k_columns). */
static int notify_payloads(hs_committer_t *c, const batch_t *b, size_t rows) {
  hs_buf_t *out = &c->notify;
  int rc = array_start(out, k_types[COL_TEXT].elem_oid,
                       (uint32_t)((rows + NOTIFY_CHUNK - 1) / NOTIFY_CHUNK));
  static const uint8_t unknown_length[4] = {0};
  size_t in_chunk = 0, len_at = 0;
  for (size_t i = 0; rc == HS_OK && i < b->n; i++) {
    const hs_write_t *w = b->items[i];
    if (w->kind != HS_WRITE_COMPLETION) {
      continue;
    }
    const uint8_t *p = w->cells.data;
    size_t size = w->cells.len;
    uint32_t id_len = size >= 4 ? hs_get_be32(p) : UINT32_MAX;
    if (id_len == UINT32_MAX || size < 12 + (size_t)id_len || hs_get_be32(p + 4 + id_len) != 4) {
      return HS_EINVAL; /* a completion always has both, and the API sets them */
    }
    if (in_chunk == NOTIFY_CHUNK || in_chunk == 0) {
      if (in_chunk > 0) {
        hs_put_be32(out->data + len_at, (uint32_t)(out->len - len_at - 4));
      }
      len_at = out->len;
      rc |= hs_buf_append(out, unknown_length, 4); /* the element's length, patched */
      in_chunk = 0;
    } else {
      rc |= hs_buf_append(out, ",", 1);
    }
    rc |= hs_buf_append(out, p + 4, id_len);
    rc |= hs_buf_append(out, " ", 1);
    rc |= hs_buf_put_int(out, (int32_t)hs_get_be32(p + 8 + id_len));
    in_chunk++;
  }
  if (rc == HS_OK && in_chunk > 0) {
    hs_put_be32(out->data + len_at, (uint32_t)(out->len - len_at - 4));
  }
  return rc;
}

/* Sends batch b as one transaction: one statement per kind present. */
static int send_batch(hs_committer_t *c, batch_t *b) {
  size_t rows[HS_WRITE_KINDS] = {0};
  for (size_t i = 0; i < b->n; i++) {
    rows[b->items[i]->kind]++;
  }
  int rc = HS_OK;
  for (int k = 0; k < HS_WRITE_KINDS; k++) {
    if (rows[k] > 0) {
      rc |= params_start(c, k);
    }
  }
  bool optimistic = rows[HS_WRITE_COMPLETION] > 0 && !b->careful;
  if (optimistic) {
    rc |= notify_payloads(c, b, rows[HS_WRITE_COMPLETION]);
  }
  for (size_t i = 0; i < b->n; i++) {
    rc |= params_add(c, b->items[i], i);
  }
  if (rc != HS_OK) {
    params_trim(c);
    return HS_ENOMEM;
  }
  hs_db_stmt_t stmts[HS_WRITE_KINDS - 1 + N_OPTIMISTIC];
  const char *values[HS_WRITE_KINDS][MAX_PARAMS];
  int lengths[HS_WRITE_KINDS][MAX_PARAMS];
  const char *notify_value;
  int notify_length;
  int formats[MAX_PARAMS];
  for (size_t p = 0; p < MAX_PARAMS; p++) {
    formats[p] = 1; /* binary */
  }
  size_t n = 0;
  b->optimistic = -1;
  b->rejections = -1;
  for (int k = 0; k < HS_WRITE_KINDS; k++) {
    if (rows[k] == 0) {
      continue;
    }
    params_end(c, k, rows[k]);
    size_t n_params = n_columns(k) + 1;
    for (size_t p = 0; p < n_params; p++) {
      values[k][p] = (const char *)c->params[k][p].data;
      lengths[k][p] = (int)c->params[k][p].len;
    }
    if (k == HS_WRITE_COMPLETION && optimistic) {
      /* The records' INSERT takes the same arrays without `i`. */
      b->optimistic = (int)n;
      stmts[n++] = (hs_db_stmt_t){.name = k_records_name,
                                  .sql = c->sql_records,
                                  .n_params = (int)n_params - 1,
                                  .values = values[k] + 1,
                                  .lengths = lengths[k] + 1,
                                  .formats = formats,
                                  .binary_result = true};
      notify_value = (const char *)c->notify.data;
      notify_length = (int)c->notify.len;
      stmts[n++] = (hs_db_stmt_t){.name = k_notify_name,
                                  .sql = k_notify_sql,
                                  .n_params = 1,
                                  .values = &notify_value,
                                  .lengths = &notify_length,
                                  .formats = formats};
      continue;
    }
    if (k == HS_WRITE_REJECTION) {
      b->rejections = (int)n;
    }
    stmts[n++] = (hs_db_stmt_t){.name = k_names[k],
                                .sql = c->sql[k],
                                .n_params = (int)n_params,
                                .values = values[k],
                                .lengths = lengths[k],
                                .formats = formats,
                                .binary_result = k == HS_WRITE_REJECTION};
  }
  rc = hs_db_exec(c->pool, stmts, n, on_batch_done, b, NULL);
  params_trim(c);
  c->stats.sent += rc == HS_OK;
  return rc;
}

/* The record of completion or rejection w, with what PostgreSQL assigned it in row `row` of its
 * INSERT (binary: id, session_id, seq, server_time, device_time, and a rejection's data_digest).
 * False when the row is not w's (the same session and seq, and for a rejection, of which a
 * batch may hold several for one seq, the same data) or a cell is not of its column's shape. */
static bool tap_record(const hs_write_t *w, const PGresult *res, int row,
                       hs_audit_tap_record_t *out) {
  const tap_cells_t *at = &k_tap_cells[w->kind];
  hs_audit_bytes_t cell[HS_ROW_MAX_COLUMNS] = {{0}};
  const uint8_t *p = w->cells.data;
  const uint8_t *end = p + w->cells.len;
  for (size_t k = 0; k < HS_ROW_MAX_COLUMNS && end - p >= 4; k++) {
    uint32_t n = hs_get_be32(p);
    p += 4;
    if (n == UINT32_MAX) {
      continue; /* NULL */
    }
    if (n > (size_t)(end - p)) {
      return false;
    }
    cell[k] = (hs_audit_bytes_t){.p = p, .n = n};
    p += n;
  }
  const char *sid = PQgetvalue(res, row, 1);
  size_t sid_len = (size_t)PQgetlength(res, row, 1);
  bool accepted = w->kind == HS_WRITE_COMPLETION;
  if (PQgetlength(res, row, 0) != 8 || PQgetlength(res, row, 2) != 4 ||
      PQgetlength(res, row, 3) != 8 || cell[at->seq].n != 4 || cell[at->brand].n != 8 ||
      cell[at->data_digest].n != 32 || cell[at->session].n != sid_len ||
      memcmp(cell[at->session].p, sid, sid_len) != 0 ||
      memcmp(cell[at->seq].p, PQgetvalue(res, row, 2), 4) != 0) {
    return false;
  }
  if (!accepted && (PQgetlength(res, row, 5) != 32 ||
                    memcmp(cell[at->data_digest].p, PQgetvalue(res, row, 5), 32) != 0)) {
    return false;
  }
  bool device = !PQgetisnull(res, row, 4) && PQgetlength(res, row, 4) == 8;
  *out = (hs_audit_tap_record_t){
      .brand_id = (int64_t)hs_get_be64(cell[at->brand].p),
      .id = hs_audit_be64(PQgetvalue(res, row, 0)),
      .seq = hs_audit_be32(PQgetvalue(res, row, 2)),
      .server_us = hs_audit_pg_time(PQgetvalue(res, row, 3)),
      .has_device = device,
      .device_us = device ? hs_audit_pg_time(PQgetvalue(res, row, 4)) : 0,
      .accepted = accepted,
      .session = cell[at->session],
      .process = cell[at->process],
      .version = cell[at->version],
      .step = cell[at->step],
      .contractor = cell[at->contractor],
      .errors = at->errors >= 0 ? cell[at->errors] : (hs_audit_bytes_t){0},
      .documents = cell[at->documents],
      .data_digest = cell[at->data_digest].p,
  };
  return true;
}

/* Hands the records of a batch's completions (when they went in optimistically) or its
 * rejections to the node's sealer (audit/tap.h): their cells, with what PostgreSQL assigned
 * them. The INSERT returns its rows in the order of its input, the batch's writes of that kind
 * in order; each row is checked to name its write all the same, and a batch where one does not
 * hands over nothing of that kind (the sealer then reads those records from the database, as
 * it does other nodes'). */
static void tap_batch(hs_committer_t *c, const batch_t *b, hs_write_kind_t kind,
                      const PGresult *res) {
  if (c->tap == NULL || res == NULL || PQnfields(res) != (kind == HS_WRITE_COMPLETION ? 5 : 6)) {
    return;
  }
  size_t rows = (size_t)PQntuples(res);
  if (rows > c->tap_cap) {
    hs_audit_tap_record_t *grown = realloc(c->tap_recs, rows * sizeof *grown);
    if (grown == NULL) {
      return;
    }
    c->tap_recs = grown;
    c->tap_cap = rows;
  }
  size_t k = 0;
  for (size_t i = 0; i < b->n; i++) {
    const hs_write_t *w = b->items[i];
    if (w->kind != kind) {
      continue;
    }
    if (k == rows || !tap_record(w, res, (int)k, &c->tap_recs[k])) {
      return;
    }
    k++;
  }
  if (k == rows) {
    (void)hs_audit_tap_put(c->tap, c->tap_recs, rows); /* refused: the sealer reads them */
  }
}

static void on_batch_done(void *ctx, const hs_db_result_t *res) {
  batch_t *b = ctx;
  hs_committer_t *c = b->c;
  int status = res->status == HS_OK ? HS_OK : res->status == HS_EUNAVAIL ? HS_EUNAVAIL : HS_EIO;
  if (status == HS_EIO && !b->careful && c != NULL && !c->freeing &&
      strcmp(res->sqlstate, "23505") == 0) {
    /* A completion's key exists already: nothing of the batch was kept. Again, carefully. */
    b->careful = true;
    int rc = send_batch(c, b);
    if (rc == HS_OK) {
      return;
    }
    status = rc == HS_ENOMEM ? HS_EIO : HS_EUNAVAIL;
  } else if (status == HS_OK) {
    for (size_t r = 0; r < res->n_results; r++) {
      if (b->optimistic >= 0 && r >= (size_t)b->optimistic &&
          r < (size_t)b->optimistic + N_OPTIMISTIC) {
        /* It went in whole: every completion of the batch was inserted. */
        for (size_t i = 0; r == (size_t)b->optimistic && i < b->n; i++) {
          b->items[i]->inserted |= b->items[i]->kind == HS_WRITE_COMPLETION;
        }
        if (r == (size_t)b->optimistic && c != NULL) {
          tap_batch(c, b, HS_WRITE_COMPLETION, res->results[r]);
        }
        continue;
      }
      if (r == (size_t)b->rejections) {
        /* Every rejection went in: the statement inserts them all or fails. */
        for (size_t i = 0; i < b->n; i++) {
          b->items[i]->inserted |= b->items[i]->kind == HS_WRITE_REJECTION;
        }
        if (c != NULL) {
          tap_batch(c, b, HS_WRITE_REJECTION, res->results[r]);
        }
        continue;
      }
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
  if (c != NULL) {
    c->inflight = NULL;
    c->stats.batches++;
    c->stats.writes += b->n;
    if (c->metrics != NULL) {
      atomic_fetch_add_explicit(&c->metrics->commit_batches, 1, memory_order_relaxed);
      atomic_fetch_add_explicit(&c->metrics->commit_writes, b->n, memory_order_relaxed);
    }
  }
  /* The writes that queued during this transaction leave before its callbacks run. Answering a
     batch (encoding and sending each response) held the next transaction back by 0.2 ms in the
     median under load, and PostgreSQL had nothing to do meanwhile. */
  if (c != NULL && !c->freeing) {
    flush(c);
  }
  for (size_t i = 0; i < b->n; i++) {
    finish(b->items[i], status);
  }
  free(b);
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
  b->careful = false;
  b->n = 0;
  while (c->head != NULL && b->n < cap) {
    hs_write_t *w = c->head;
    c->head = w->next;
    c->n_queued--;
    w->next = NULL;
    b->items[b->n++] = w;
  }
  if (c->head == NULL) {
    c->tail = NULL;
  }
  int rc = send_batch(c, b);
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

void hs_row_init(hs_row_t *r, hs_write_kind_t kind) {
  hs_buf_init(&r->cells, 0);
  r->rc = HS_OK;
  r->kind = kind;
  r->next = 0;
}

void hs_row_free(hs_row_t *r) {
  hs_buf_free(&r->cells);
}

static void put_length(hs_row_t *r, uint32_t len) {
  uint8_t p[4];
  hs_put_be32(p, len);
  r->rc = hs_buf_append(&r->cells, p, 4);
}

/* Moves to the column named key, leaving NULL in every column it passes. Returns false (and
 * fails the row) when key is not a later column of the row's kind of the expected type: the
 * calls must follow k_columns. */
static bool row_column(hs_row_t *r, const char *key, col_type_t type) {
  if (r->rc != HS_OK) {
    return false;
  }
  const column_t *cols = k_columns[r->kind];
  while (cols[r->next].name != NULL && strcmp(cols[r->next].name, key) != 0) {
    put_length(r, UINT32_MAX);
    r->next++;
  }
  bool ok = cols[r->next].name != NULL &&
            (cols[r->next].type == type || (type == COL_INT8 && cols[r->next].type <= COL_INT8 &&
                                            cols[r->next].type >= COL_INT2));
  assert(ok && "hs_row_*: a column out of order, unknown, or of another type");
  if (!ok) {
    r->rc = r->rc == HS_OK ? HS_EINVAL : r->rc;
    return false;
  }
  r->next++;
  return r->rc == HS_OK;
}

static void put_cell(hs_row_t *r, const void *p, size_t n) {
  if (n > INT32_MAX) {
    r->rc = HS_ELIMIT;
    return;
  }
  put_length(r, (uint32_t)n);
  r->rc = r->rc == HS_OK ? hs_buf_append(&r->cells, p, n) : r->rc;
}

/* Text must be UTF-8: PostgreSQL refuses anything else, and would fail the whole batch. */
static bool utf8(hs_row_t *r, const char *s, size_t n) {
  if (hs_utf8_check((const uint8_t *)s, n) != n) {
    r->rc = HS_EINVAL;
    return false;
  }
  return true;
}

void hs_row_str(hs_row_t *r, const char *key, const char *s) {
  if (!row_column(r, key, COL_TEXT)) {
    return;
  }
  if (s == NULL) {
    put_length(r, UINT32_MAX);
    return;
  }
  size_t n = strlen(s);
  if (utf8(r, s, n)) {
    put_cell(r, s, n);
  }
}

void hs_row_int(hs_row_t *r, const char *key, int64_t v) {
  if (!row_column(r, key, COL_INT8)) {
    return;
  }
  col_type_t type = k_columns[r->kind][r->next - 1].type;
  size_t width = type == COL_INT2 ? 2 : type == COL_INT4 ? 4 : 8;
  if (width < 8 && (v < -(INT64_C(1) << (8 * width - 1)) || v >= INT64_C(1) << (8 * width - 1))) {
    r->rc = HS_EINVAL; /* would not fit its column */
    return;
  }
  uint8_t be[8];
  for (size_t k = 0; k < width; k++) {
    be[k] = (uint8_t)((uint64_t)v >> (8 * (width - 1 - k)));
  }
  put_cell(r, be, width);
}

void hs_row_bool(hs_row_t *r, const char *key, bool v) {
  if (row_column(r, key, COL_BOOL)) {
    uint8_t b = v ? 1 : 0;
    put_cell(r, &b, 1);
  }
}

void hs_row_bytes(hs_row_t *r, const char *key, const void *p, size_t n) {
  if (row_column(r, key, COL_BYTEA)) {
    put_cell(r, p, n);
  }
}

void hs_row_msgpack(hs_row_t *r, const char *key, const hs_value_t *v) {
  if (!row_column(r, key, COL_BYTEA)) {
    return;
  }
  /* Encoded in place, its length written in front once known. */
  size_t at = r->cells.len;
  put_length(r, 0);
  r->rc = r->rc == HS_OK ? hs_msgpack_encode(v, &r->cells) : r->rc;
  if (r->rc == HS_OK) {
    size_t n = r->cells.len - at - 4;
    if (n > INT32_MAX) {
      r->rc = HS_ELIMIT;
      return;
    }
    hs_put_be32(r->cells.data + at, (uint32_t)n);
  }
}

/* An array literal: every element double-quoted, with `"` and `\` escaped (array_in). */
void hs_row_strs(hs_row_t *r, const char *key, const char *const *items, size_t n) {
  if (!row_column(r, key, COL_TEXT)) {
    return;
  }
  size_t at = r->cells.len;
  put_length(r, 0);
  int rc = r->rc;
  rc |= hs_buf_append(&r->cells, "{", 1);
  for (size_t i = 0; rc == HS_OK && i < n; i++) {
    size_t len = strlen(items[i]);
    if (!utf8(r, items[i], len)) {
      return;
    }
    rc |= hs_buf_append(&r->cells, i > 0 ? ",\"" : "\"", i > 0 ? 2 : 1);
    for (size_t k = 0; k < len; k++) {
      char ch = items[i][k];
      if (ch == '"' || ch == '\\') {
        rc |= hs_buf_append(&r->cells, "\\", 1);
      }
      rc |= hs_buf_append(&r->cells, &ch, 1);
    }
    rc |= hs_buf_append(&r->cells, "\"", 1);
  }
  rc |= hs_buf_append(&r->cells, "}", 1);
  r->rc = rc != HS_OK ? HS_ENOMEM : HS_OK;
  if (r->rc == HS_OK) {
    hs_put_be32(r->cells.data + at, (uint32_t)(r->cells.len - at - 4));
  }
}

int hs_commit_submit(hs_committer_t *c, hs_row_t *row, hs_write_cb cb, void *ctx,
                     hs_write_t **out) {
  /* The columns not given are NULL. */
  while (row->rc == HS_OK && k_columns[row->kind][row->next].name != NULL) {
    put_length(row, UINT32_MAX);
    row->next++;
  }
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
  w->kind = row->kind;
  w->cells = row->cells; /* the cells move to the write */
  hs_buf_init(&row->cells, 0);
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

void hs_committer_set_tap(hs_committer_t *c, hs_audit_tap_t *tap) {
  c->tap = tap;
}

void hs_committer_stats(const hs_committer_t *c, hs_commit_stats_t *out) {
  *out = c->stats;
}
