#include "store/content.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/str.h"
#include "core/strmap.h"
#include "learn/stats.h"

enum {
  REFRESH_MS = 1000,  /* how often a worker re-reads the counts it uses */
  IDLE_MS = 60000,    /* counts nobody asked for this long are forgotten */
  MAX_ENTRIES = 1024, /* processes one worker follows at once (and 20000 counts each) */
  KEY_SEP = '\x1f',   /* between slot, context and item in a key: never in an id */
};

/* ------------------------------------------------------------ recording */

static const hs_value_t *member(const hs_value_t *e, const char *key, hs_vtype_t type) {
  const hs_value_t *v = hs_map_get(e, key);
  return v != NULL && v->type == type ? v : NULL;
}

/* Appends {slot, context, item, rank, propensity} for every pick of every suggest event to
 * out (a JSON array's members), and says whether an outcome event reached a goal. */
static int collect(hs_process_t *proc, const hs_value_t *events, hs_buf_t *out, size_t *n_shown,
                   bool *goal) {
  int rc = HS_OK;
  for (size_t i = 0; events != NULL && i < events->as.arr.len && rc == HS_OK; i++) {
    const hs_value_t *e = &events->as.arr.items[i];
    const hs_value_t *type = member(e, "type", HS_V_STR);
    if (type == NULL) {
      continue;
    }
    if (strcmp(type->as.str.ptr, "outcome") == 0) {
      const hs_value_t *name = member(e, "name", HS_V_STR);
      *goal = *goal || (name != NULL && hs_process_is_goal(proc, name->as.str.ptr));
      continue;
    }
    if (strcmp(type->as.str.ptr, "suggest") != 0) {
      continue;
    }
    const hs_value_t *slot = member(e, "slot", HS_V_STR);
    const hs_value_t *ctx = member(e, "context", HS_V_STR);
    const hs_value_t *picks = member(e, "picks", HS_V_ARRAY);
    const hs_value_t *props = member(e, "propensities", HS_V_ARRAY);
    for (size_t k = 0; slot != NULL && picks != NULL && k < picks->as.arr.len && rc == HS_OK; k++) {
      const hs_value_t *id = &picks->as.arr.items[k];
      const hs_value_t *pr =
          props != NULL && k < props->as.arr.len ? &props->as.arr.items[k] : NULL;
      double propensity = pr == NULL ? 0.0 : pr->type == HS_V_FLOAT ? pr->as.f : (double)pr->as.i;
      if (id->type != HS_V_STR) {
        continue;
      }
      rc |= hs_buf_puts(out, *n_shown > 0 ? ",{\"slot\":" : "{\"slot\":");
      rc |= hs_json_put_string(out, slot->as.str.ptr, slot->as.str.len);
      rc |= hs_buf_puts(out, ",\"context\":");
      rc |= ctx != NULL ? hs_json_put_string(out, ctx->as.str.ptr, ctx->as.str.len)
                        : hs_buf_puts(out, "\"\"");
      rc |= hs_buf_puts(out, ",\"item\":");
      rc |= hs_json_put_string(out, id->as.str.ptr, id->as.str.len);
      rc |= hs_buf_printf(out, ",\"rank\":%zu,\"propensity\":%.17g}", *n_shown, propensity);
      (*n_shown)++;
    }
  }
  return rc;
}

static void submit(hs_committer_t *c, hs_row_t *row, const char *session_id) {
  int rc = hs_commit_submit(c, row, NULL, NULL, NULL);
  if (rc != HS_OK) {
    hs_log(HS_LOG_WARN, "content_not_recorded", "{s:s, s:s}", "session", session_id, "error",
           hs_status_name(rc));
  }
}

void hs_content_record(hs_committer_t *c, hs_process_t *proc, int64_t brand_id,
                       const char *session_id, uint32_t seq, const uint8_t *digest,
                       const hs_value_t *events, int rating) {
  hs_buf_t shown;
  hs_buf_init(&shown, 0);
  size_t n_shown = 0;
  bool goal = false;
  int rc = hs_buf_puts(&shown, "[");
  rc |= collect(proc, events, &shown, &n_shown, &goal);
  rc |= hs_buf_append(&shown, "]", 2); /* with a NUL: it travels as a string */
  hs_row_t row;
  if (rating > 0 && digest != NULL) {
    hs_row_init(&row, HS_WRITE_FEEDBACK);
    hs_row_int(&row, "brand_id", brand_id);
    hs_row_str(&row, "session_id", session_id);
    hs_row_str(&row, "contractor_id", NULL);
    hs_row_str(&row, "source", "customer");
    hs_row_int(&row, "rating", rating);
    hs_row_str(&row, "comment", NULL);
    hs_row_strs(&row, "tags", NULL, 0);
    hs_row_int(&row, "step_seq", seq);
    hs_row_bytes(&row, "digest", digest, 32);
    submit(c, &row, session_id);
    hs_row_free(&row);
  }
  const char *reward = goal ? "goal" : rating >= 4 ? "feedback" : NULL;
  if (rc == HS_OK && (n_shown > 0 || reward != NULL)) {
    hs_row_init(&row, HS_WRITE_CONTENT);
    hs_row_int(&row, "brand_id", brand_id);
    hs_row_str(&row, "session_id", session_id);
    hs_row_str(&row, "source", digest != NULL ? "completion" : "start");
    hs_row_int(&row, "seq", seq);
    if (digest != NULL) {
      hs_row_bytes(&row, "digest", digest, 32);
    }
    hs_row_str(&row, "shown", n_shown > 0 ? (const char *)shown.data : NULL);
    hs_row_str(&row, "reward", reward);
    submit(c, &row, session_id);
    hs_row_free(&row);
  }
  hs_buf_free(&shown);
}

void hs_content_feedback(hs_committer_t *c, int64_t brand_id, const char *session_id) {
  hs_row_t row;
  hs_row_init(&row, HS_WRITE_CONTENT);
  hs_row_int(&row, "brand_id", brand_id);
  hs_row_str(&row, "session_id", session_id);
  hs_row_str(&row, "source", "feedback");
  hs_row_str(&row, "reward", "feedback");
  submit(c, &row, session_id);
  hs_row_free(&row);
}

/* ------------------------------------------------------------ stats */

const char hs_content_process_sql[] = "SELECT 1 FROM processes WHERE brand_id = $1 AND name = $2";

const char hs_content_totals_sql[] =
    "SELECT slot, item, sum(shown), sum(successes) FROM content_counts"
    " WHERE brand_id = $1 AND process = $2 GROUP BY slot, item ORDER BY slot, item LIMIT 10000";

const char hs_content_feedback_sql[] =
    "SELECT count(*), count(f.rating),"
    " count(*) FILTER (WHERE f.source = 'customer' AND f.rating >= 4)"
    " FROM feedback f JOIN sessions s ON s.id = f.session_id"
    " WHERE s.brand_id = $1 AND s.process = $2";

int hs_content_stats_value(const char *process, PGresult *totals, PGresult *feedback, hs_arena_t *a,
                           hs_value_t **out) {
  int n = PQntuples(totals);
  hs_item_total_t *rows = hs_arena_alloc(a, sizeof *rows * (size_t)(n > 0 ? n : 1));
  if (rows == NULL) {
    return HS_ENOMEM;
  }
  for (int i = 0; i < n; i++) {
    rows[i] = (hs_item_total_t){.slot = PQgetvalue(totals, i, 0),
                                .item = PQgetvalue(totals, i, 1),
                                .shown = strtoull(PQgetvalue(totals, i, 2), NULL, 10),
                                .successes = strtoull(PQgetvalue(totals, i, 3), NULL, 10)};
  }
  hs_value_t *root = NULL;
  int rc = hs_stats_build(process, rows, (size_t)n, a, &root);
  if (rc != HS_OK) {
    return rc;
  }
  hs_value_t *fb = hs_map_add_map(a, root, "feedback");
  bool one = PQntuples(feedback) == 1;
  if (fb == NULL ||
      hs_map_add_int(a, fb, "count", one ? strtoll(PQgetvalue(feedback, 0, 0), NULL, 10) : 0) !=
          HS_OK ||
      hs_map_add_int(a, fb, "rated", one ? strtoll(PQgetvalue(feedback, 0, 1), NULL, 10) : 0) !=
          HS_OK ||
      hs_map_add_int(a, fb, "positive", one ? strtoll(PQgetvalue(feedback, 0, 2), NULL, 10) : 0) !=
          HS_OK) {
    return HS_ENOMEM;
  }
  *out = root;
  return HS_OK;
}

/* ------------------------------------------------------------ posteriors */

typedef struct entry {
  hs_posteriors_t *owner;
  char brand[24];
  char process[65];
  hs_strmap_t counts; /* "slot KEY_SEP context KEY_SEP item" -> hs_content_counts_t* (owned) */
  int64_t used_ms;    /* when visit:suggest last asked */
  hs_db_job_t *job;   /* a read in flight, or NULL */
} entry_t;

struct hs_posteriors {
  uv_timer_t timer;    /* first: the cache is freed in its close callback */
  hs_db_pool_t *pool;  /* borrowed */
  hs_strmap_t entries; /* "brand/process" -> entry_t* (owned) */
};

static void counts_free(hs_strmap_t *m) {
  size_t it = 0;
  const char *k;
  void *v;
  while (hs_strmap_next(m, &it, &k, &v)) {
    free(v);
  }
  hs_strmap_free(m);
}

static void on_counts(void *ctx, const hs_db_result_t *res) {
  entry_t *e = ctx;
  e->job = NULL;
  if (res->status != HS_OK || res->n_results < 1 || res->results[0] == NULL) {
    return; /* keep what we had; the next tick tries again */
  }
  PGresult *r = res->results[0];
  hs_strmap_t fresh;
  hs_strmap_init(&fresh);
  char key[3 * 70];
  for (int i = 0; i < PQntuples(r); i++) {
    hs_content_counts_t *c = malloc(sizeof *c);
    if (c == NULL) {
      counts_free(&fresh);
      return;
    }
    c->shown = strtoull(PQgetvalue(r, i, 3), NULL, 10);
    c->successes = strtoull(PQgetvalue(r, i, 4), NULL, 10);
    snprintf(key, sizeof key, "%s%c%s%c%s", PQgetvalue(r, i, 0), KEY_SEP, PQgetvalue(r, i, 1),
             KEY_SEP, PQgetvalue(r, i, 2));
    free(hs_strmap_del(&fresh, key));
    if (hs_strmap_put(&fresh, key, c) != HS_OK) {
      free(c);
      counts_free(&fresh);
      return;
    }
  }
  counts_free(&e->counts);
  e->counts = fresh;
}

static void refresh(entry_t *e) {
  if (e->job != NULL || !hs_db_pool_ready(e->owner->pool)) {
    return;
  }
  const char *params[] = {e->brand, e->process};
  hs_db_stmt_t q = {.name = "hs_content_counts",
                    .sql = "SELECT slot, context, item, shown, successes FROM content_counts"
                           " WHERE brand_id = $1 AND process = $2 LIMIT 20000",
                    .n_params = 2,
                    .values = params};
  (void)hs_db_exec(e->owner->pool, &q, 1, on_counts, e, &e->job);
}

static void entry_free(entry_t *e) {
  if (e->job != NULL) {
    hs_db_job_cancel(e->job);
  }
  counts_free(&e->counts);
  free(e);
}

static void on_tick(uv_timer_t *t) {
  hs_posteriors_t *p = t->data;
  int64_t now = hs_time_now_ms();
  size_t it = 0;
  const char *k;
  void *v;
  char idle[100] = "";
  while (hs_strmap_next(&p->entries, &it, &k, &v)) {
    entry_t *e = v;
    if (now - e->used_ms > IDLE_MS && e->job == NULL && idle[0] == '\0') {
      hs_strlcpy(idle, k, sizeof idle); /* one a tick: the map must not change meanwhile */
    } else {
      refresh(e);
    }
  }
  if (idle[0] != '\0') {
    entry_free(hs_strmap_del(&p->entries, idle));
  }
}

int hs_posteriors_new(uv_loop_t *loop, hs_db_pool_t *pool, hs_posteriors_t **out) {
  hs_posteriors_t *p = calloc(1, sizeof *p);
  if (p == NULL) {
    return HS_ENOMEM;
  }
  p->pool = pool;
  hs_strmap_init(&p->entries);
  uv_timer_init(loop, &p->timer);
  p->timer.data = p;
  uv_timer_start(&p->timer, on_tick, REFRESH_MS, REFRESH_MS);
  uv_unref((uv_handle_t *)&p->timer); /* a cache never keeps the loop alive by itself */
  *out = p;
  return HS_OK;
}

static void on_timer_closed(uv_handle_t *h) {
  free(h->data);
}

void hs_posteriors_close(hs_posteriors_t *p) {
  size_t it = 0;
  const char *k;
  void *v;
  while (hs_strmap_next(&p->entries, &it, &k, &v)) {
    entry_free(v);
  }
  hs_strmap_free(&p->entries);
  uv_timer_stop(&p->timer);
  uv_close((uv_handle_t *)&p->timer, on_timer_closed);
}

void hs_posteriors_counts(void *ctx, const char *brand, const char *process, const char *slot,
                          const char *context, const char *item, hs_content_counts_t *out) {
  hs_posteriors_t *p = ctx;
  out->shown = 0;
  out->successes = 0;
  char key[100];
  snprintf(key, sizeof key, "%s/%s", brand, process);
  entry_t *e = hs_strmap_get(&p->entries, key);
  if (e == NULL) {
    if (p->entries.len >= MAX_ENTRIES || strlen(brand) >= sizeof e->brand ||
        strlen(process) >= sizeof e->process) {
      return;
    }
    e = calloc(1, sizeof *e);
    if (e == NULL) {
      return;
    }
    e->owner = p;
    hs_strlcpy(e->brand, brand, sizeof e->brand);
    hs_strlcpy(e->process, process, sizeof e->process);
    hs_strmap_init(&e->counts);
    if (hs_strmap_put(&p->entries, key, e) != HS_OK) {
      free(e);
      return;
    }
    refresh(e);
  }
  e->used_ms = hs_time_now_ms();
  char ckey[3 * 70];
  snprintf(ckey, sizeof ckey, "%s%c%s%c%s", slot, KEY_SEP, context, KEY_SEP, item);
  const hs_content_counts_t *c = hs_strmap_get(&e->counts, ckey);
  if (c != NULL) {
    *out = *c;
  }
}
