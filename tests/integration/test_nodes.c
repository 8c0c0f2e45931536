/* Two `handsel serve` processes sharing one PostgreSQL (HANDSEL_DB), as two nodes behind a
 * load balancer: a session started on one continues on the other, a stream open on one sees
 * what is completed on the other (LISTEN/NOTIFY), and the same completion sent to both at once
 * is accepted exactly once, with the same answer on both. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "hs_test_api.h"
#include "hs_test_pg.h"
#include "hs_test_server.h"

#define STREAM_DEADLINE_MS 5000 /* "within a few seconds" */

/* Two steps, then the end: for a stream that must see the end across nodes. */
static const char SHORT_SOURCE[] =
    "return process {\n"
    "  name = \"short\",\n"
    "  title = \"Short\",\n"
    "  run = function(visit)\n"
    "    local a = visit:step { id = \"one\", title = \"One\",\n"
    "      fields = { field.integer { name = \"n\", label = \"n\", required = true } } }\n"
    "    visit:step { id = \"two\", title = \"Two after \" .. a.n,\n"
    "      fields = { field.boolean { name = \"ok\", label = \"ok\", required = true } } }\n"
    "    visit:outcome(\"done\")\n"
    "  end,\n"
    "}\n";

typedef struct fixture {
  hs_test_server_t a, b;
  const char *db;
  PGconn *pg;
  char brand[65];
} fixture_t;

static int setup(void **state) {
  fixture_t *f = calloc(1, sizeof *f);
  if (f == NULL) {
    return -1;
  }
  *state = f;
  f->db = hs_test_db_must();
  char env_db[HS_TEST_PATH_MAX];
  snprintf(env_db, sizeof env_db, "HANDSEL_DB=%s", f->db);
  /* Node A has two workers, node B one: sessions also move between A's workers. */
  const char *env_a[] = {env_db, "HANDSEL_DEV_AUTH=1", "HANDSEL_WORKERS=2",
                         "HANDSEL_LOG_LEVEL=warn", NULL};
  const char *env_b[] = {env_db, "HANDSEL_DEV_AUTH=1", "HANDSEL_WORKERS=1",
                         "HANDSEL_LOG_LEVEL=warn", NULL};
  hs_test_server_opts_t oa = {.env = env_a}, ob = {.env = env_b};
  if (hs_test_server_start(&f->a, &oa) != 0 || hs_test_server_start(&f->b, &ob) != 0 ||
      hs_test_server_wait_ready(&f->a, 15000) != 0 ||
      hs_test_server_wait_ready(&f->b, 15000) != 0) {
    hs_test_server_dump_stderr(&f->a, 3000);
    hs_test_server_dump_stderr(&f->b, 3000);
    return -1;
  }
  f->pg = hs_test_db_connect(f->db);
  hs_api_unique_name(f->brand, "nodes");
  return f->pg != NULL ? 0 : -1;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  hs_test_server_stop(&f->a);
  hs_test_server_stop(&f->b);
  PQfinish(f->pg);
  free(f);
  return 0;
}

static void must_call(hs_api_t *c, const char *role, const char *method, const char *path,
                      const char *body, hs_api_resp_t *r, int want) {
  if (hs_api_call(c, role, method, path, body, r) != 0) {
    fail_msg("%s %s on port %d: no answer", method, path, c->port);
  }
  if (r->status != want) {
    fail_msg("%s %s on port %d: expected %d, got %d: %s", method, path, c->port, want, r->status,
             hs_api_body_text(r));
  }
}

/* Completes loop session s on client c with n, and checks the next step. */
static void loop_step(hs_api_t *c, hs_api_loop_t *s, long long n, hs_api_resp_t *r) {
  char path[160], body[64], why[200];
  hs_api_step_path(path, sizeof path, s->id, s->seq);
  snprintf(body, sizeof body, "{\"data\": {\"n\": %lld}}", n);
  must_call(c, "contractor", "POST", path, body, r, 200);
  s->seq++;
  s->sum += n;
  if (!hs_api_loop_check(s, hs_api_at(r->v, "next"), why, sizeof why)) {
    fail_msg("the answer of node on port %d: %s", c->port, why);
  }
}

static void deploy(hs_api_t *c, const char *name, const char *source) {
  int st = hs_api_deploy(c, name, source, NULL);
  if (st != 201 && st != 200) {
    fail_msg("deploying %s: %d", name, st);
  }
}

static void test_alternate(void **state) {
  fixture_t *f = *state;
  hs_api_t a, b;
  hs_api_init(&a, f->a.port, f->brand, "sam");
  hs_api_init(&b, f->b.port, f->brand, "sam");
  hs_api_resp_t r, ra, rb;
  hs_api_resp_init(&r);
  hs_api_resp_init(&ra);
  hs_api_resp_init(&rb);
  deploy(&a, "loop", hs_api_loop_source);

  hs_api_loop_t s[4];
  for (int i = 0; i < 4; i++) {
    /* Two start on A, two on B. */
    assert_int_equal(hs_api_loop_start(i < 2 ? &a : &b, &s[i]), 201);
  }
  int steps = 0;
  for (int round = 0; round < 12; round++) {
    for (int i = 0; i < 4; i++) {
      loop_step((round + i) % 2 == 0 ? &b : &a, &s[i], (long long)(round * 13 + i), &r);
      steps++;
    }
  }
  /* Both nodes read every session the same way. */
  for (int i = 0; i < 4; i++) {
    char path[320], why[200];
    snprintf(path, sizeof path, "/v1/sessions/%s", s[i].id);
    must_call(&a, "contractor", "GET", path, NULL, &ra, 200);
    must_call(&b, "contractor", "GET", path, NULL, &rb, 200);
    if (!hs_api_loop_check(&s[i], hs_api_at(ra.v, "step"), why, sizeof why) ||
        !hs_api_loop_check(&s[i], hs_api_at(rb.v, "step"), why, sizeof why)) {
      fail_msg("session %d read on A and B: %s", i, why);
    }
    if (!hs_value_equal(hs_api_at(ra.v, "step"), hs_api_at(rb.v, "step"))) {
      fail_msg("session %d: A and B show different steps:\n  A %s\n  B %s", i,
               hs_api_body_text(&ra), hs_api_body_text(&rb));
    }
  }
  assert_int_equal(hs_test_db_scalar(f->pg,
                                     "SELECT count(*) FROM step_completions WHERE session_id IN"
                                     " ($1, $2, $3, $4)",
                                     4, (const char *[]){s[0].id, s[1].id, s[2].id, s[3].id}),
                   steps);
  hs_test_say("4 sessions (2 started on A, 2 on B), completions alternating between the nodes: %d "
              "answers with the right next step; GET on A and on B agree; %d rows",
              steps, steps);
  hs_api_resp_free(&r);
  hs_api_resp_free(&ra);
  hs_api_resp_free(&rb);
  hs_api_close(&a);
  hs_api_close(&b);
}

/* The first event must come within the deadline; returns the milliseconds it took. */
static long long expect_event(hs_api_stream_t *st, const char *type, int64_t seq,
                              const char *what) {
  long long t0 = hs_test_now_ms();
  const hs_value_t *ev = NULL;
  int rc = hs_api_stream_next(st, STREAM_DEADLINE_MS, &ev);
  if (rc != 0) {
    fail_msg("%s: no event within %d ms (rc %d)", what, STREAM_DEADLINE_MS, rc);
  }
  const char *t = hs_api_str(ev, "type");
  if (t == NULL || strcmp(t, type) != 0 || (seq > 0 && hs_api_int(ev, "step.seq", 0) != seq)) {
    fail_msg("%s: expected %s seq %lld, got %s seq %lld", what, type, (long long)seq,
             t != NULL ? t : "?", (long long)hs_api_int(ev, "step.seq", 0));
  }
  return hs_test_now_ms() - t0;
}

static void test_stream_across(void **state) {
  fixture_t *f = *state;
  hs_api_t a, b;
  hs_api_init(&a, f->a.port, f->brand, "sam");
  hs_api_init(&b, f->b.port, f->brand, "sam");
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  deploy(&a, "loop", hs_api_loop_source);
  deploy(&a, "short", SHORT_SOURCE);

  /* A loop session started on B, watched on A (msgpack) and on B (NDJSON), completed on B and
   * on A in turn: each stream sees every step, whichever node took it. */
  hs_api_loop_t s;
  assert_int_equal(hs_api_loop_start(&b, &s), 201);
  hs_api_stream_t on_a, on_b;
  int status = 0;
  assert_int_equal(hs_api_stream_open(&on_a, &a, "contractor", s.id, false, &status), 0);
  assert_int_equal(hs_api_stream_open(&on_b, &b, "contractor", s.id, true, &status), 0);
  expect_event(&on_a, "step", 1, "stream on A, first event");
  expect_event(&on_b, "step", 1, "stream on B, first event");
  long long worst = 0;
  for (int i = 0; i < 8; i++) {
    loop_step(i % 2 == 0 ? &b : &a, &s, i + 1, &r);
    long long ms = expect_event(&on_a, "step", s.seq, "stream on A");
    worst = ms > worst ? ms : worst;
    ms = expect_event(&on_b, "step", s.seq, "stream on B");
    worst = ms > worst ? ms : worst;
  }
  hs_api_stream_close(&on_a);
  hs_api_stream_close(&on_b);
  hs_test_say(
      "streams on A and B of one session each saw all 8 steps completed alternately on B and A, "
      "in order; the slowest arrived %lld ms after the 200",
      worst);

  /* A short session started on A and finished on B: A's stream sees the end. */
  must_call(&a, "contractor", "POST", "/v1/sessions", "{\"process\": \"short\"}", &r, 201);
  char id[40], path[160];
  snprintf(id, sizeof id, "%s", hs_api_str(r.v, "session.id"));
  assert_int_equal(hs_api_stream_open(&on_a, &a, "contractor", id, false, &status), 0);
  expect_event(&on_a, "step", 1, "short session on A, first event");
  hs_api_step_path(path, sizeof path, id, 1);
  must_call(&b, "contractor", "POST", path, "{\"data\": {\"n\": 4}}", &r, 200);
  expect_event(&on_a, "step", 2, "short session on A after step 1 on B");
  hs_api_step_path(path, sizeof path, id, 2);
  must_call(&b, "contractor", "POST", path, "{\"data\": {\"ok\": true}}", &r, 200);
  long long t0 = hs_test_now_ms();
  const hs_value_t *ev = NULL;
  if (hs_api_stream_next(&on_a, STREAM_DEADLINE_MS, &ev) != 0 || hs_api_str(ev, "type") == NULL ||
      strcmp(hs_api_str(ev, "type"), "ended") != 0) {
    fail_msg("the stream on A did not get {type ended} after B finished the session");
  }
  long long end_ms = hs_test_now_ms() - t0;
  const char *st = hs_api_str(ev, "status"), *outcome = hs_api_str(ev, "outcome");
  if (st == NULL || strcmp(st, "ended") != 0 || outcome == NULL || strcmp(outcome, "done") != 0) {
    fail_msg("the ended event on A should say status ended, outcome done (B recorded it), but "
             "says status %s, outcome %s",
             st != NULL ? st : "nil", outcome != NULL ? outcome : "nil");
  }
  if (hs_api_stream_next(&on_a, STREAM_DEADLINE_MS, &ev) != HS_ENOTFOUND ||
      !hs_api_stream_ended(&on_a)) {
    fail_msg("the stream on A did not end after the ended event");
  }
  hs_api_stream_close(&on_a);
  /* Both nodes read the ended session alike. */
  snprintf(path, sizeof path, "/v1/sessions/%s", id);
  hs_api_t *nodes[] = {&a, &b};
  for (int k = 0; k < 2; k++) {
    must_call(nodes[k], "contractor", "GET", path, NULL, &r, 200);
    st = hs_api_str(r.v, "session.status");
    outcome = hs_api_str(r.v, "session.outcome");
    if (st == NULL || strcmp(st, "ended") != 0 || outcome == NULL || strcmp(outcome, "done") != 0) {
      fail_msg("GET on node %c after the end: expected status ended, outcome done: %s",
               k == 0 ? 'A' : 'B', hs_api_body_text(&r));
    }
  }
  hs_test_say("a session started on A and finished on B: A's stream got step 2, then {ended, done} "
              "%lld ms after the last 200, then ended; GET on A and B: ended, outcome done",
              end_ms);
  hs_api_resp_free(&r);
  hs_api_close(&a);
  hs_api_close(&b);
}

/* ---- races ---- */

typedef struct racer {
  hs_api_t c;
  pthread_barrier_t *go;
  char path[160];
  char body[96];
  hs_api_resp_t resp;
  int rc;
} racer_t;

static void *race_main(void *arg) {
  racer_t *r = arg;
  pthread_barrier_wait(r->go);
  r->rc = hs_api_call(&r->c, "contractor", "POST", r->path, r->body, &r->resp);
  return NULL;
}

/* Sends body_a to A and body_b to B at the same moment, for the step at s->seq. */
static void race(fixture_t *f, racer_t racers[2], const hs_api_loop_t *s, const char *body_a,
                 const char *body_b) {
  pthread_barrier_t go;
  pthread_barrier_init(&go, NULL, 2);
  pthread_t th[2];
  for (int k = 0; k < 2; k++) {
    racers[k].go = &go;
    hs_api_step_path(racers[k].path, sizeof racers[k].path, s->id, s->seq);
    snprintf(racers[k].body, sizeof racers[k].body, "%s", k == 0 ? body_a : body_b);
    pthread_create(&th[k], NULL, race_main, &racers[k]);
  }
  for (int k = 0; k < 2; k++) {
    pthread_join(th[k], NULL);
  }
  pthread_barrier_destroy(&go);
  for (int k = 0; k < 2; k++) {
    if (racers[k].rc != 0) {
      fail_msg("a racing completion on node %c got no answer", k == 0 ? 'A' : 'B');
    }
  }
}

static long long rows(fixture_t *f, const char *sql, const char *id, int64_t seq) {
  char seq_s[24];
  snprintf(seq_s, sizeof seq_s, "%lld", (long long)seq);
  return hs_test_db_scalar(f->pg, sql, 2, (const char *[]){id, seq_s});
}

static void test_race(void **state) {
  fixture_t *f = *state;
  hs_api_t a;
  hs_api_init(&a, f->a.port, f->brand, "sam");
  deploy(&a, "loop", hs_api_loop_source);
  hs_api_loop_t s;
  assert_int_equal(hs_api_loop_start(&a, &s), 201);
  racer_t racers[2];
  memset(racers, 0, sizeof racers);
  hs_api_init(&racers[0].c, f->a.port, f->brand, "sam");
  hs_api_init(&racers[1].c, f->b.port, f->brand, "sam");
  hs_api_resp_init(&racers[0].resp);
  hs_api_resp_init(&racers[1].resp);
  /* Both nodes load the session first, so both hold a live copy when the race starts. */
  char path[128];
  snprintf(path, sizeof path, "/v1/sessions/%s", s.id);
  must_call(&racers[0].c, "contractor", "GET", path, NULL, &racers[0].resp, 200);
  must_call(&racers[1].c, "contractor", "GET", path, NULL, &racers[1].resp, 200);

  /* The same completion on both: two identical 200s, one row. */
  int same = 0;
  for (int i = 0; i < 10; i++) {
    char body[96], why[200];
    snprintf(body, sizeof body, "{\"data\": {\"n\": %d}}", 10 + i);
    race(f, racers, &s, body, body);
    hs_api_resp_t *x = &racers[0].resp, *y = &racers[1].resp;
    if (x->status != 200 || y->status != 200) {
      fail_msg("race %d, same data: A answered %d, B %d: %s / %s", i, x->status, y->status,
               hs_api_body_text(x), hs_api_body_text(y));
    }
    if (x->body.len != y->body.len || memcmp(x->body.data, y->body.data, x->body.len) != 0) {
      fail_msg("race %d: A and B answered differently:\n  A %s\n  B %s", i, hs_api_body_text(x),
               hs_api_body_text(y));
    }
    assert_int_equal(rows(f,
                          "SELECT count(*) FROM step_completions WHERE session_id = $1 AND"
                          " seq = $2::int",
                          s.id, s.seq),
                     1);
    assert_int_equal(rows(f,
                          "SELECT count(*) FROM validation_records WHERE session_id = $1 AND"
                          " seq = $2::int AND result = 'accepted'",
                          s.id, s.seq),
                     1);
    s.seq++;
    s.sum += 10 + i;
    if (!hs_api_loop_check(&s, hs_api_at(x->v, "next"), why, sizeof why)) {
      fail_msg("race %d: %s", i, why);
    }
    same++;
  }
  hs_test_say("%d races of one completion sent to A and B at once: both 200 with identical bytes, "
              "exactly one step_completions row and one accepted validation record each",
              same);

  /* Different data on each: one wins (200), the other gets 409; the record holds the winner. */
  for (int i = 0; i < 6; i++) {
    char body_a[96], body_b[96], why[200];
    snprintf(body_a, sizeof body_a, "{\"data\": {\"n\": %d}}", 100 + i);
    snprintf(body_b, sizeof body_b, "{\"data\": {\"n\": %d}}", 200 + i);
    race(f, racers, &s, body_a, body_b);
    hs_api_resp_t *x = &racers[0].resp, *y = &racers[1].resp;
    bool a_won = x->status == 200 && y->status == 409;
    bool b_won = y->status == 200 && x->status == 409;
    if (!a_won && !b_won) {
      fail_msg("race %d, different data: A answered %d, B %d (expected one 200 and one 409): "
               "%s / %s",
               i, x->status, y->status, hs_api_body_text(x), hs_api_body_text(y));
    }
    assert_int_equal(rows(f,
                          "SELECT count(*) FROM step_completions WHERE session_id = $1 AND"
                          " seq = $2::int",
                          s.id, s.seq),
                     1);
    s.seq++;
    s.sum += a_won ? 100 + i : 200 + i;
    if (!hs_api_loop_check(&s, hs_api_at((a_won ? x : y)->v, "next"), why, sizeof why)) {
      fail_msg("race %d, different data: the winner's answer: %s", i, why);
    }
  }
  /* Both nodes continue from the winner's data. */
  hs_api_t b;
  hs_api_init(&b, f->b.port, f->brand, "sam");
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  loop_step(&b, &s, 1, &r);
  loop_step(&a, &s, 2, &r);
  hs_test_say(
      "6 races with different data: one 200 and one 409 each, one row, and both nodes continue "
      "from the winner's data");
  hs_api_resp_free(&r);
  for (int k = 0; k < 2; k++) {
    hs_api_resp_free(&racers[k].resp);
    hs_api_close(&racers[k].c);
  }
  hs_api_close(&a);
  hs_api_close(&b);
}

/* A session is one record: whichever node reads it shows the same session, started_at
 * included. */
static void test_same_session_everywhere(void **state) {
  fixture_t *f = *state;
  hs_api_t a, b;
  hs_api_init(&a, f->a.port, f->brand, "sam");
  hs_api_init(&b, f->b.port, f->brand, "sam");
  hs_api_resp_t start, rb;
  hs_api_resp_init(&start);
  hs_api_resp_init(&rb);
  deploy(&a, "loop", hs_api_loop_source);
  must_call(&a, "contractor", "POST", "/v1/sessions", "{\"process\": \"loop\", \"ref\": \"same\"}",
            &start, 201);
  char path[128];
  snprintf(path, sizeof path, "/v1/sessions/%s", hs_api_str(start.v, "session.id"));
  must_call(&b, "contractor", "GET", path, NULL, &rb, 200);
  if (!hs_value_equal(start.v, rb.v)) {
    fail_msg("node B shows the session started on A differently:\n  A (start) %s\n  B (GET)   "
             "%s",
             hs_api_body_text(&start), hs_api_body_text(&rb));
  }
  must_call(&b, "contractor", "POST", "/v1/sessions", "{\"process\": \"loop\", \"ref\": \"same\"}",
            &rb, 200);
  if (!hs_value_equal(start.v, rb.v)) {
    fail_msg("node B's answer to the same ref differs from A's start:\n  A %s\n  B %s",
             hs_api_body_text(&start), hs_api_body_text(&rb));
  }
  hs_test_say(
      "a session started on A reads the same on B ({session, step}, started_at included), by id "
      "and by ref");
  hs_api_resp_free(&start);
  hs_api_resp_free(&rb);
  hs_api_close(&a);
  hs_api_close(&b);
}

/* Each node LISTENs on one connection, whatever its number of workers: PostgreSQL signals every
 * listener on each commit, so one per worker would make every commit's cost grow with the
 * workers of every node (store/listen.h). A has two workers, B one: two listeners. The streams
 * and the alternation above show that every worker still hears every commit. */
static void test_one_listener_per_node(void **state) {
  fixture_t *f = *state;
  const char *sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND query LIKE 'LISTEN handsel_session%'";
  long long deadline = hs_test_now_ms() + STREAM_DEADLINE_MS, n = -1;
  while ((n = hs_test_db_scalar(f->pg, sql, 0, NULL)) != 2 && hs_test_now_ms() < deadline) {
    hs_test_sleep_ms(20);
  }
  if (n != 2) {
    fail_msg("two nodes (two workers and one) hold %lld LISTEN connections, not 2", n);
  }
  hs_test_sleep_ms(200); /* none more comes up later */
  assert_int_equal(hs_test_db_scalar(f->pg, sql, 0, NULL), 2);
  hs_test_say("two nodes, of two workers and one, LISTEN on one connection each");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_alternate, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stream_across, setup, teardown),
      cmocka_unit_test_setup_teardown(test_race, setup, teardown),
      cmocka_unit_test_setup_teardown(test_same_session_everywhere, setup, teardown),
      cmocka_unit_test_setup_teardown(test_one_listener_per_node, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
