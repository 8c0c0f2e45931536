#include "hs_test_load.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "hs_test_pg.h"
#include "hs_test_server.h"

#define BATCH_MAX 64

static long long data_of(const hs_test_load_session_t *s, int64_t seq) {
  return (long long)(((int64_t)s->index * 7919 + seq * 31) % 1000);
}

void hs_test_load_body(const hs_test_load_session_t *s, int64_t seq, char out[64]) {
  snprintf(out, 64, "{\"data\": {\"n\": %lld}}", data_of(s, seq));
}

static void note_error(hs_test_load_t *l, const char *fmt, ...) {
  atomic_fetch_add(&l->unexpected, 1);
  pthread_mutex_lock(&l->mu);
  if (l->first_error[0] == '\0') {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->first_error, sizeof l->first_error, fmt, ap);
    va_end(ap);
  }
  pthread_mutex_unlock(&l->mu);
}

static int keep_answer(hs_test_load_session_t *s, int64_t seq, const hs_buf_t *body) {
  if ((size_t)seq >= s->n_answers) {
    size_t n = s->n_answers ? s->n_answers * 2 : 64;
    while (n <= (size_t)seq) {
      n *= 2;
    }
    hs_buf_t *p = realloc(s->answers, n * sizeof *p);
    if (p == NULL) {
      return HS_ENOMEM;
    }
    for (size_t i = s->n_answers; i < n; i++) {
      hs_buf_init(&p[i], 0);
    }
    s->answers = p;
    s->n_answers = n;
  }
  s->answers[seq].len = 0;
  return hs_buf_append(&s->answers[seq], body->data, body->len);
}

static void *worker_main(void *arg) {
  hs_test_load_part_t *w = arg;
  hs_test_load_t *l = w->load;
  hs_api_t c;
  hs_api_init(&c, atomic_load(&l->port), l->brand, "sam");
  c.timeout_ms = 8000;
  hs_api_batch_item_t items[BATCH_MAX];
  char paths[BATCH_MAX][160], bodies[BATCH_MAX][64];
  size_t which[BATCH_MAX];
  for (size_t i = 0; i < BATCH_MAX; i++) {
    hs_api_resp_init(&items[i].resp);
  }
  while (!atomic_load(&l->stop)) {
    if (c.port != atomic_load(&l->port)) {
      hs_api_set_port(&c, atomic_load(&l->port));
    }
    size_t n = 0;
    for (size_t k = 0; k < w->count && n < BATCH_MAX; k++) {
      hs_test_load_session_t *s = &l->sessions[w->first + k];
      if (s->loop.seq >= HS_TEST_LOAD_MAX_SEQ) {
        continue;
      }
      hs_api_step_path(paths[n], sizeof paths[n], s->loop.id, s->loop.seq);
      hs_test_load_body(s, s->loop.seq, bodies[n]);
      items[n].method = "POST";
      items[n].path = paths[n];
      items[n].body_json = bodies[n];
      which[n] = w->first + k;
      n++;
    }
    if (n == 0) {
      hs_test_sleep_ms(20);
      continue;
    }
    int rc = hs_api_batch(&c, "contractor", items, n);
    bool refused = false, answered_ok = false, unavailable = false;
    for (size_t i = 0; i < n; i++) {
      hs_test_load_session_t *s = &l->sessions[which[i]];
      hs_api_resp_t *r = &items[i].resp;
      if (r->status == 0) {
        atomic_fetch_add(&l->no_answer, 1);
        s->pending = true;
        refused = true;
      } else if (r->status == 503) {
        atomic_fetch_add(&l->unavailable, 1);
        unavailable = true;
        if (r->retry_after[0] == '\0') {
          atomic_fetch_add(&l->no_retry_after, 1);
        }
        s->pending = true;
      } else if (r->status == 200) {
        char why[200];
        hs_api_loop_t next = s->loop;
        next.seq++;
        next.sum += data_of(s, s->loop.seq);
        if (!hs_api_loop_check(&next, hs_api_at(r->v, "next"), why, sizeof why)) {
          note_error(l, "session %zu seq %lld: a 200 with the wrong next step: %s", s->index,
                     (long long)s->loop.seq, why);
        }
        if (keep_answer(s, s->loop.seq, &r->body) != HS_OK) {
          note_error(l, "out of memory");
        }
        s->loop = next;
        s->pending = false;
        answered_ok = true;
        atomic_fetch_add(&l->ok, 1);
        atomic_store(&l->last_ok_ms, hs_test_now_ms());
      } else {
        note_error(l, "session %zu seq %lld: %d %s", s->index, (long long)s->loop.seq, r->status,
                   hs_api_body_text(r));
        s->pending = true;
      }
      hs_api_resp_free(r);
    }
    if (rc != HS_OK && refused) {
      hs_test_sleep_ms(20); /* the server is down or restarting: do not spin */
    } else if (unavailable && !answered_ok) {
      /* Storage is down: back off a little, though less than Retry-After asks, so that the
       * test sees the recovery soon after it happens. */
      hs_test_sleep_ms(50);
    }
  }
  hs_api_close(&c);
  return NULL;
}

int hs_test_load_start(hs_test_load_t *l, int port, const char *brand, size_t n_sessions,
                       size_t n_threads) {
  memset(l, 0, sizeof *l);
  pthread_mutex_init(&l->mu, NULL);
  atomic_store(&l->port, port);
  snprintf(l->brand, sizeof l->brand, "%s", brand);
  if (n_threads == 0 || n_threads > HS_TEST_LOAD_MAX_THREADS || n_sessions < n_threads) {
    fprintf(stderr, "hs_test_load_start: bad sizes\n");
    return HS_EINVAL;
  }
  l->sessions = calloc(n_sessions, sizeof *l->sessions);
  if (l->sessions == NULL) {
    return HS_ENOMEM;
  }
  l->n_sessions = n_sessions;
  hs_api_t c;
  hs_api_init(&c, port, brand, "sam");
  int st = hs_api_deploy(&c, "loop", hs_api_loop_source, NULL);
  if (st != 201 && st != 200) {
    hs_api_close(&c);
    return HS_EIO;
  }
  for (size_t i = 0; i < n_sessions; i++) {
    l->sessions[i].index = i;
    if (hs_api_loop_start(&c, &l->sessions[i].loop) != 201) {
      hs_api_close(&c);
      return HS_EIO;
    }
  }
  hs_api_close(&c);
  return hs_test_load_resume(l, n_threads);
}

int hs_test_load_resume(hs_test_load_t *l, size_t n_threads) {
  if (l->n_threads != 0 || n_threads == 0 || n_threads > HS_TEST_LOAD_MAX_THREADS ||
      l->n_sessions < n_threads) {
    fprintf(stderr, "hs_test_load_resume: threads running or bad sizes\n");
    return HS_EINVAL;
  }
  atomic_store(&l->stop, false);
  size_t per = l->n_sessions / n_threads, extra = l->n_sessions % n_threads, next = 0;
  for (size_t t = 0; t < n_threads; t++) {
    l->parts[t] = (hs_test_load_part_t){.load = l, .first = next, .count = per + (t < extra)};
    next += l->parts[t].count;
    if (pthread_create(&l->threads[t], NULL, worker_main, &l->parts[t]) != 0) {
      hs_test_load_stop(l);
      return HS_EIO;
    }
    l->n_threads++;
  }
  return HS_OK;
}

void hs_test_load_stop(hs_test_load_t *l) {
  atomic_store(&l->stop, true);
  for (size_t t = 0; t < l->n_threads; t++) {
    pthread_join(l->threads[t], NULL);
  }
  l->n_threads = 0;
}

void hs_test_load_free(hs_test_load_t *l) {
  for (size_t i = 0; l->sessions != NULL && i < l->n_sessions; i++) {
    for (size_t k = 0; k < l->sessions[i].n_answers; k++) {
      hs_buf_free(&l->sessions[i].answers[k]);
    }
    free(l->sessions[i].answers);
  }
  free(l->sessions);
  l->sessions = NULL;
  pthread_mutex_destroy(&l->mu);
}

/* ---- verification ---- */

static bool fail_why(char *why, size_t cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, cap, fmt, ap);
  va_end(ap);
  return false;
}

/* Sends session s's completion of seq again and expects 200 with `want` (n bytes). */
static bool retry_expect(hs_api_t *c, hs_test_load_session_t *s, int64_t seq, const void *want,
                         size_t n, char *why, size_t cap) {
  char path[160], body[64];
  hs_api_step_path(path, sizeof path, s->loop.id, seq);
  hs_test_load_body(s, seq, body);
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  int rc = hs_api_call(c, "contractor", "POST", path, body, &r);
  bool ok = rc == HS_OK && r.status == 200 && r.body.len == n && memcmp(r.body.data, want, n) == 0;
  if (!ok) {
    fail_why(why, cap,
             "retrying session %zu seq %lld: expected 200 with the original %zu bytes, got %d "
             "(%zu bytes): %s",
             s->index, (long long)seq, n, r.status, r.body.len, hs_api_body_text(&r));
  }
  hs_api_resp_free(&r);
  return ok;
}

/* Sends session s's completion of its current seq (what, for a failure message): it must answer
 * 200 with the right next step, which s then moves to. */
static bool step_expect_next(hs_api_t *c, hs_test_load_session_t *s, const char *what, char *why,
                             size_t cap) {
  char path[160], body[64], w[200];
  hs_api_step_path(path, sizeof path, s->loop.id, s->loop.seq);
  hs_test_load_body(s, s->loop.seq, body);
  hs_api_resp_t a;
  hs_api_resp_init(&a);
  int rc = hs_api_call(c, "contractor", "POST", path, body, &a);
  hs_api_loop_t next = s->loop;
  next.seq++;
  next.sum += data_of(s, s->loop.seq);
  bool ok = false;
  if (rc != HS_OK || a.status != 200) {
    fail_why(why, cap, "session %zu, %s (seq %lld): got %d: %s", s->index, what,
             (long long)s->loop.seq, a.status, hs_api_body_text(&a));
  } else if (!hs_api_loop_check(&next, hs_api_at(a.v, "next"), w, sizeof w)) {
    fail_why(why, cap, "session %zu, %s (seq %lld): %s", s->index, what, (long long)s->loop.seq, w);
  } else if (keep_answer(s, s->loop.seq, &a.body) != HS_OK) {
    fail_why(why, cap, "out of memory");
  } else {
    s->loop = next;
    s->pending = false;
    ok = true;
  }
  hs_api_resp_free(&a);
  return ok;
}

bool hs_test_load_verify(hs_test_load_t *l, PGconn *db, char *why, size_t cap, long long *acked_out,
                         int *pending_stored_out) {
  long long acked = 0;
  int pending_stored = 0;
  hs_api_t c;
  hs_api_init(&c, atomic_load(&l->port), l->brand, "sam");
  bool ok = true;
  for (size_t i = 0; ok && i < l->n_sessions; i++) {
    hs_test_load_session_t *s = &l->sessions[i];
    PGresult *r = hs_test_db_query(
        db,
        "SELECT c.seq,"
        " (SELECT count(*) FROM validation_records v WHERE v.session_id = c.session_id"
        "  AND v.seq = c.seq AND v.result = 'accepted')"
        " FROM step_completions c WHERE c.session_id = $1 ORDER BY c.seq",
        1, (const char *[]){s->loop.id});
    if (r == NULL) {
      ok = fail_why(why, cap, "the query of session %zu's completions failed", i);
      break;
    }
    /* Stored rows, in order: 1, 2, ... with no gap; the test's record must match them. */
    int rows = PQntuples(r);
    int64_t last_acked = s->loop.seq - 1;
    for (int k = 0; ok && k < rows; k++) {
      int64_t seq = strtoll(PQgetvalue(r, k, 0), NULL, 10);
      long long records = strtoll(PQgetvalue(r, k, 1), NULL, 10);
      if (seq != k + 1) {
        ok = fail_why(why, cap, "session %zu: stored seqs have a gap: row %d has seq %lld", i, k,
                      (long long)seq);
      } else if (records != 1) {
        ok = fail_why(why, cap, "session %zu seq %lld: %lld accepted validation records, not 1", i,
                      (long long)seq, records);
      } else if (seq <= last_acked) {
        acked++;
        if ((size_t)seq >= s->n_answers) {
          ok = fail_why(why, cap, "session %zu seq %lld: the client kept no answer", i,
                        (long long)seq);
        }
      } else if (seq == s->loop.seq && s->pending) {
        pending_stored++; /* committed, but its answer never arrived: checked below */
      } else {
        ok = fail_why(why, cap,
                      "session %zu: seq %lld is stored, but the client's last 200 was for %lld "
                      "and nothing later was in flight",
                      i, (long long)seq, (long long)last_acked);
      }
    }
    if (ok && rows < last_acked) {
      ok = fail_why(why, cap,
                    "session %zu: %lld completions were acknowledged but only %d are stored", i,
                    (long long)last_acked, rows);
    }
    bool pending_is_stored = ok && rows > 0 && rows == last_acked + 1;
    PQclear(r);
    /* Every acknowledged completion, retried: the bytes the client got the first time. */
    for (int64_t seq = 1; ok && seq <= last_acked; seq++) {
      ok = retry_expect(&c, s, seq, s->answers[seq].data, s->answers[seq].len, why, cap);
    }
    /* The pending one, if it committed: its retry is answered with the right next step. */
    if (ok && s->pending && pending_is_stored) {
      ok = step_expect_next(&c, s, "retrying the committed one", why, cap);
    }
    /* One more step (the pending one when it did not commit): the right next step. */
    if (ok && s->loop.seq < HS_TEST_LOAD_MAX_SEQ + 10) {
      ok = step_expect_next(&c, s, "the step after the verification", why, cap);
    }
  }
  hs_api_close(&c);
  if (acked_out != NULL) {
    *acked_out = acked;
  }
  if (pending_stored_out != NULL) {
    *pending_stored_out = pending_stored;
  }
  return ok;
}
