/* Sessions rebuilt by replay (SPEC §5) against a real PostgreSQL (HANDSEL_DB): with a session
 * cache of two per worker and a dozen sessions interleaved, nearly every request finds its
 * session evicted and replays it; after a graceful restart and after kill -9, every session
 * continues where its record says. The loop process's titles carry a running sum and a random
 * draw, so a replay that lost or repeated one completion, or drew other random numbers, shows. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/error.h"
#include "hs_test_api.h"
#include "hs_test_metrics.h"
#include "hs_test_pg.h"
#include "hs_test_server.h"

#define N_SESSIONS 12

/* A session and its latest accepted completion, to retry it later. */
typedef struct tracked {
  hs_api_loop_t loop;
  char last_body[96];
  int64_t last_seq; /* 0 before the first completion */
  hs_buf_t last_answer;
} tracked_t;

typedef struct fixture {
  hs_test_server_t srv;
  char env_db[HS_TEST_PATH_MAX];
  char brand[65];
  tracked_t s[N_SESSIONS];
  size_t n;
} fixture_t;

static int setup(void **state) {
  fixture_t *f = calloc(1, sizeof *f);
  if (f == NULL) {
    return -1;
  }
  *state = f;
  snprintf(f->env_db, sizeof f->env_db, "HANDSEL_DB=%s", hs_test_db_must());
  hs_api_unique_name(f->brand, "replay");
  for (size_t i = 0; i < N_SESSIONS; i++) {
    hs_buf_init(&f->s[i].last_answer, 0);
  }
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  hs_test_server_stop(&f->srv);
  for (size_t i = 0; i < N_SESSIONS; i++) {
    hs_buf_free(&f->s[i].last_answer);
  }
  free(f);
  return 0;
}

static void start_server(fixture_t *f, const char *workers, const char *cache) {
  const char *env[] = {f->env_db, "HANDSEL_DEV_AUTH=1",     workers,
                       cache,     "HANDSEL_LOG_LEVEL=warn", NULL};
  hs_test_server_must_start(&f->srv, env, false);
  if (hs_test_server_wait_ready(&f->srv, 15000) != 0) {
    hs_test_server_dump_stderr(&f->srv, 3000);
    fail_msg("/readyz did not answer 200 within 15 s of the start");
  }
}

static void start_sessions(fixture_t *f, hs_api_t *c, size_t n) {
  int st = hs_api_deploy(c, "loop", hs_api_loop_source, NULL);
  if (st != 201 && st != 200) {
    fail_msg("deploying the loop process: %d", st);
  }
  for (size_t i = 0; i < n; i++) {
    st = hs_api_loop_start(c, &f->s[i].loop);
    if (st != 201) {
      fail_msg("starting loop session %zu: %d", i, st);
    }
  }
  f->n = n;
}

/* Completes the current step of session i through client c and checks the answer. */
static void step_once(fixture_t *f, hs_api_t *c, size_t i) {
  tracked_t *t = &f->s[i];
  long long n = (long long)((t->loop.seq * 37 + (int64_t)i * 101) % 1000);
  char body[96], path[160], why[200];
  snprintf(body, sizeof body, "{\"data\": {\"n\": %lld}}", n);
  hs_api_step_path(path, sizeof path, t->loop.id, t->loop.seq);
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  if (hs_api_call(c, "contractor", "POST", path, body, &r) != 0) {
    hs_test_server_dump_stderr(&f->srv, 3000);
    fail_msg("POST %s: no answer", path);
  }
  if (r.status != 200) {
    fail_msg("session %zu seq %lld: expected 200, got %d: %s", i, (long long)t->loop.seq, r.status,
             hs_api_body_text(&r));
  }
  t->loop.seq++;
  t->loop.sum += n;
  if (!hs_api_loop_check(&t->loop, hs_api_at(r.v, "next"), why, sizeof why)) {
    fail_msg("session %zu: the next step is wrong: %s", i, why);
  }
  snprintf(t->last_body, sizeof t->last_body, "%s", body);
  t->last_seq = t->loop.seq - 1;
  t->last_answer.len = 0;
  hs_buf_append(&t->last_answer, r.body.data, r.body.len);
  hs_api_resp_free(&r);
}

/* Retries session i's latest completion: the same answer, byte for byte. */
static void retry_last(fixture_t *f, hs_api_t *c, size_t i) {
  tracked_t *t = &f->s[i];
  if (t->last_seq == 0) {
    return;
  }
  char path[160];
  hs_api_step_path(path, sizeof path, t->loop.id, t->last_seq);
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  if (hs_api_call(c, "contractor", "POST", path, t->last_body, &r) != 0) {
    fail_msg("retry of %s: no answer", path);
  }
  if (r.status != 200 || r.body.len != t->last_answer.len ||
      memcmp(r.body.data, t->last_answer.data, r.body.len) != 0) {
    fail_msg("retrying session %zu seq %lld: expected the original 200 (%zu bytes), got %d "
             "(%zu bytes): %s",
             i, (long long)t->last_seq, t->last_answer.len, r.status, r.body.len,
             hs_api_body_text(&r));
  }
  hs_api_resp_free(&r);
}

/* GET session i: the current step is what the test expects. */
static void check_get(fixture_t *f, hs_api_t *c, size_t i) {
  tracked_t *t = &f->s[i];
  char path[128], why[200];
  snprintf(path, sizeof path, "/v1/sessions/%s", t->loop.id);
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  if (hs_api_call(c, "contractor", "GET", path, NULL, &r) != 0 || r.status != 200) {
    fail_msg("GET %s: %d %s", path, r.status, hs_api_body_text(&r));
  }
  if (!hs_api_loop_check(&t->loop, hs_api_at(r.v, "step"), why, sizeof why)) {
    fail_msg("GET session %zu: %s", i, why);
  }
  hs_api_resp_free(&r);
}

/* Rounds over every session in a shuffled order, through the clients in turn; now and then a
 * retry of an older completion and a GET, which also find the session evicted. Returns the
 * number of completions. */
static int drive(fixture_t *f, hs_api_t *clients, size_t nc, int rounds, unsigned seed) {
  size_t order[N_SESSIONS];
  int done = 0;
  for (int round = 0; round < rounds; round++) {
    for (size_t i = 0; i < f->n; i++) {
      order[i] = i;
    }
    for (size_t i = f->n; i > 1; i--) {
      seed = seed * 1103515245u + 12345u;
      size_t j = (seed >> 16) % i;
      size_t tmp = order[i - 1];
      order[i - 1] = order[j];
      order[j] = tmp;
    }
    for (size_t k = 0; k < f->n; k++) {
      size_t i = order[k];
      hs_api_t *c = &clients[(k + (size_t)round) % nc];
      if ((k + (size_t)round) % 5 == 0) {
        retry_last(f, c, i);
      }
      if ((k + (size_t)round) % 7 == 0) {
        check_get(f, c, i);
      }
      step_once(f, c, i);
      done++;
    }
  }
  return done;
}

static void test_eviction_one_worker(void **state) {
  fixture_t *f = *state;
  start_server(f, "HANDSEL_WORKERS=1", "HANDSEL_SESSION_CACHE=2");
  hs_api_t c;
  hs_api_init(&c, f->srv.port, f->brand, "sam");
  start_sessions(f, &c, N_SESSIONS);
  int done = drive(f, &c, 1, 8, 1);
  for (size_t i = 0; i < f->n; i++) {
    retry_last(f, &c, i);
    check_get(f, &c, i);
  }
  assert_true(hs_test_server_running(&f->srv));
  /* The cache really was too small: sessions were evicted and rebuilt by replay, and never more
   * than the budget stayed in memory. */
  double evictions = hs_test_metric(f->srv.port, "handsel_session_evictions_total", NULL);
  double replays = hs_test_metric(f->srv.port, "handsel_session_replays_total", NULL);
  double live = hs_test_metric(f->srv.port, "handsel_sessions_live", NULL);
  if (evictions < (double)f->n || replays < (double)f->n || live > 2) {
    fail_msg("expected many evictions and replays and at most 2 live sessions: %g, %g, %g",
             evictions, replays, live);
  }
  hs_test_say(
      "1 worker, cache 2, %zu sessions interleaved in shuffled rounds: %d completions each "
      "answered with the right next step (seq, running sum, random draw); retries of evicted "
      "sessions' completions gave the original bytes; GETs agree; /metrics: %g evictions, %g "
      "replays, %g live",
      f->n, done, evictions, replays, live);
  hs_api_close(&c);
}

static void test_eviction_two_workers(void **state) {
  fixture_t *f = *state;
  start_server(f, "HANDSEL_WORKERS=2", "HANDSEL_SESSION_CACHE=2");
  hs_api_t c[3];
  for (size_t i = 0; i < 3; i++) {
    hs_api_init(&c[i], f->srv.port, f->brand, "sam");
  }
  start_sessions(f, &c[0], N_SESSIONS);
  /* Three connections, spread over the two workers: a session moves between workers, whose
   * copies go stale as the other one advances it. */
  int done = drive(f, c, 3, 8, 2);
  for (size_t i = 0; i < f->n; i++) {
    retry_last(f, &c[i % 3], i);
    check_get(f, &c[(i + 1) % 3], i);
  }
  hs_test_say(
      "2 workers, cache 2, 3 connections: %d completions of %zu sessions moving between workers, "
      "all right",
      done, f->n);
  for (size_t i = 0; i < 3; i++) {
    hs_api_close(&c[i]);
  }
}

static void restart(fixture_t *f, int sig, hs_api_t *c) {
  int old_port = f->srv.port;
  if (sig == SIGTERM) {
    assert_int_equal(hs_test_server_signal(&f->srv, SIGTERM), 0);
    int status = 0;
    if (hs_test_server_wait(&f->srv, 20000, &status) != 0) {
      fail_msg("the server did not stop within 20 s of SIGTERM");
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      hs_test_server_dump_stderr(&f->srv, 4000);
      fail_msg("the server stopped with status 0x%x after SIGTERM", status);
    }
  } else {
    hs_test_server_stop(&f->srv); /* SIGKILL */
  }
  start_server(f, "HANDSEL_WORKERS=2", "HANDSEL_SESSION_CACHE=1000");
  hs_api_set_port(c, f->srv.port);
  (void)old_port;
}

static void test_restart(void **state) {
  fixture_t *f = *state;
  start_server(f, "HANDSEL_WORKERS=2", "HANDSEL_SESSION_CACHE=1000");
  hs_api_t c;
  hs_api_init(&c, f->srv.port, f->brand, "sam");
  start_sessions(f, &c, 6);
  drive(f, &c, 1, 3, 3);

  restart(f, SIGTERM, &c);
  for (size_t i = 0; i < f->n; i++) {
    check_get(f, &c, i);
    retry_last(f, &c, i);
  }
  drive(f, &c, 1, 3, 4);
  hs_test_say("after a graceful restart (exit status 0): 6 sessions read back at the right step, "
              "retries give the original bytes, 3 more rounds continue");

  restart(f, SIGKILL, &c);
  for (size_t i = 0; i < f->n; i++) {
    retry_last(f, &c, i);
    check_get(f, &c, i);
  }
  drive(f, &c, 1, 3, 5);
  hs_test_say("after kill -9 and a restart: the same, at seq %lld", (long long)f->s[0].loop.seq);
  hs_api_close(&c);
}

/* A one-worker server with the given session cache, process name deployed from source, and c
 * a client of it. */
static void serve_process(fixture_t *f, const char *cache, const char *name, const char *source,
                          hs_api_t *c) {
  start_server(f, "HANDSEL_WORKERS=1", cache);
  hs_api_init(c, f->srv.port, f->brand, "sam");
  int st = hs_api_deploy(c, name, source, NULL);
  if (st != 201 && st != 200) {
    fail_msg("deploying %s: %d", name, st);
  }
}

/* Two steps, then the end with an outcome. */
static const char SHORT_SOURCE[] =
    "return process {\n"
    "  name = \"short\",\n"
    "  title = \"Short\",\n"
    "  run = function(visit)\n"
    "    local a = visit:step { id = \"one\", title = \"One\",\n"
    "      fields = { field.integer { name = \"n\", label = \"n\", required = true } } }\n"
    "    visit:outcome(\"done\", a.n)\n"
    "    visit:step { id = \"two\", title = \"Two\",\n"
    "      fields = { field.boolean { name = \"ok\", label = \"ok\", required = true } } }\n"
    "  end,\n"
    "}\n";

/* A session read back after a restart is the session as it was: status, outcome, started_at,
 * step. One ended, one still active with an outcome recorded along the way. */
static void test_sessions_after_restart(void **state) {
  fixture_t *f = *state;
  hs_api_t c;
  serve_process(f, "HANDSEL_SESSION_CACHE=1000", "short", SHORT_SOURCE, &c);
  hs_api_resp_t r, ended_before, active_before;
  hs_api_resp_init(&r);
  hs_api_resp_init(&ended_before);
  hs_api_resp_init(&active_before);
  char ended[40], active[40], path[160];
  int64_t seq = 0;
  assert_int_equal(hs_api_start(&c, "short", NULL, ended, &seq), 201);
  assert_int_equal(hs_api_start(&c, "short", NULL, active, &seq), 201);
  hs_api_step_path(path, sizeof path, ended, 1);
  assert_int_equal(hs_api_call(&c, "contractor", "POST", path, "{\"data\": {\"n\": 3}}", &r), 0);
  assert_int_equal(r.status, 200);
  hs_api_step_path(path, sizeof path, ended, 2);
  assert_int_equal(hs_api_call(&c, "contractor", "POST", path, "{\"data\": {\"ok\": true}}", &r),
                   0);
  assert_int_equal(r.status, 200);
  hs_api_step_path(path, sizeof path, active, 1);
  assert_int_equal(hs_api_call(&c, "contractor", "POST", path, "{\"data\": {\"n\": 4}}", &r), 0);
  assert_int_equal(r.status, 200);
  snprintf(path, sizeof path, "/v1/sessions/%s", ended);
  assert_int_equal(hs_api_call(&c, "contractor", "GET", path, NULL, &ended_before), 0);
  HS_API_EXPECT_STR(ended_before.v, "session.status", "ended");
  HS_API_EXPECT_STR(ended_before.v, "session.outcome", "done");
  snprintf(path, sizeof path, "/v1/sessions/%s", active);
  assert_int_equal(hs_api_call(&c, "contractor", "GET", path, NULL, &active_before), 0);
  HS_API_EXPECT_STR(active_before.v, "session.status", "active");

  restart(f, SIGKILL, &c);
  const char *ids[] = {ended, active};
  hs_api_resp_t *before[] = {&ended_before, &active_before};
  for (int i = 0; i < 2; i++) {
    snprintf(path, sizeof path, "/v1/sessions/%s", ids[i]);
    assert_int_equal(hs_api_call(&c, "contractor", "GET", path, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    if (!hs_value_equal(r.v, before[i]->v)) {
      fail_msg("the %s session reads differently after a restart:\n  before %s\n  after  %s",
               i == 0 ? "ended" : "active", hs_api_body_text(before[i]), hs_api_body_text(&r));
    }
  }
  hs_test_say(
      "after kill -9 and a restart, an ended session (status ended, outcome done) and an active "
      "one read exactly as before: status, outcome, started_at, step");
  hs_api_resp_free(&r);
  hs_api_resp_free(&ended_before);
  hs_api_resp_free(&active_before);
  hs_api_close(&c);
}

/* The first step's validate draws from math.random on every attempt, and the next step's
 * title shows a later draw, so the answer to step 1 depends on how many attempts came before
 * the accepted one; the third step's title shows the step 2 answer. */
static const char LUCKY_SOURCE[] =
    "return process {\n"
    "  name = \"lucky\",\n"
    "  title = \"Lucky\",\n"
    "  run = function(visit)\n"
    "    local a = visit:step { id = \"pick\", title = \"Pick\",\n"
    "      fields = { field.integer { name = \"n\", label = \"n\", required = true } },\n"
    "      validate = function(d)\n"
    "        local r = math.random(1000000)\n"
    "        if d.n < 0 then return { n = \"Not below zero (\" .. r .. \")\" } end\n"
    "      end }\n"
    "    local b = visit:step { id = \"draw\", title = \"draw \" .. math.random(1000000),\n"
    "      fields = { field.integer { name = \"n\", label = \"n\", required = true } } }\n"
    "    visit:step { id = \"last\", title = \"got \" .. a.n .. \" and \" .. b.n,\n"
    "      fields = { field.boolean { name = \"ok\", label = \"ok\", required = true } } }\n"
    "  end,\n"
    "}\n";

/* A retry's answer is rebuilt from the session's record, not read back: after rejected attempts
 * that moved the random generator, after the session moved on, after an eviction and after a
 * restart, each retry must still be the bytes of the original 200; other data is still 409. */
static void test_retry_answers_rebuilt(void **state) {
  fixture_t *f = *state;
  hs_api_t c;
  serve_process(f, "HANDSEL_SESSION_CACHE=1", "lucky", LUCKY_SOURCE, &c);
  char id[40], other[40], path[160];
  int64_t seq = 0;
  assert_int_equal(hs_api_start(&c, "lucky", NULL, id, &seq), 201);
  hs_api_resp_t r, first, second, third;
  hs_api_resp_init(&r);
  hs_api_resp_init(&first);
  hs_api_resp_init(&second);
  hs_api_resp_init(&third);
  hs_api_step_path(path, sizeof path, id, 1);
  for (int k = 0; k < 3; k++) {
    assert_int_equal(hs_api_call(&c, "contractor", "POST", path, "{\"data\": {\"n\": -1}}", &r), 0);
    assert_int_equal(r.status, 422);
  }
  assert_int_equal(hs_api_call(&c, "contractor", "POST", path, "{\"data\": {\"n\": 7}}", &first),
                   0);
  assert_int_equal(first.status, 200);
  HS_API_EXPECT_STR(first.v, "next.id", "draw");
  hs_api_step_path(path, sizeof path, id, 2);
  assert_int_equal(hs_api_call(&c, "contractor", "POST", path, "{\"data\": {\"n\": 8}}", &second),
                   0);
  assert_int_equal(second.status, 200);
  HS_API_EXPECT_STR(second.v, "next.title", "got 7 and 8");
  hs_api_step_path(path, sizeof path, id, 3);
  assert_int_equal(
      hs_api_call(&c, "contractor", "POST", path, "{\"data\": {\"ok\": true}}", &third), 0);
  assert_int_equal(third.status, 200);

  /* Another session takes the only place in the cache: the retries find theirs evicted. */
  assert_int_equal(hs_api_start(&c, "lucky", NULL, other, &seq), 201);
  const char *bodies[] = {"{\"data\": {\"n\": 7}}", "{\"data\": {\"n\": 8}}",
                          "{\"data\": {\"ok\": true}}"};
  hs_api_resp_t *originals[] = {&first, &second, &third};
  for (int round = 0; round < 2; round++) {
    for (int k = 0; k < 3; k++) {
      hs_api_step_path(path, sizeof path, id, k + 1);
      assert_int_equal(hs_api_call(&c, "contractor", "POST", path, bodies[k], &r), 0);
      if (r.status != 200 || r.body.len != originals[k]->body.len ||
          memcmp(r.body.data, originals[k]->body.data, r.body.len) != 0) {
        fail_msg("retrying seq %d (%s): expected the original 200\n  %s\ngot %d\n  %s", k + 1,
                 round == 0 ? "before the restart" : "after kill -9 and a restart",
                 hs_api_body_text(originals[k]), r.status, hs_api_body_text(&r));
      }
    }
    hs_api_step_path(path, sizeof path, id, 1);
    assert_int_equal(hs_api_call(&c, "contractor", "POST", path, "{\"data\": {\"n\": 9}}", &r), 0);
    assert_int_equal(r.status, 409);
    if (round == 0) {
      restart(f, SIGKILL, &c);
    }
  }
  hs_test_say("after 3 rejected attempts that drew random numbers, retries of all 3 completions "
              "give the original bytes, evicted and after kill -9 and a restart; other data 409");
  hs_api_resp_free(&r);
  hs_api_resp_free(&first);
  hs_api_resp_free(&second);
  hs_api_resp_free(&third);
  hs_api_close(&c);
}

/* A retry of an older completion replays the record up to it, and that work is charged to the
 * caller's rate limit (one request per 10 steps replayed). With a burst of 150 requests a
 * second, 102 go to the deploy, the start and 100 completions; a retry of step 90 then costs
 * 1 + 9, so the 429 comes within a handful of retries, where uncharged retries would have
 * taken about 48 more. Until then each retry gets the original bytes. */
static void test_old_retries_are_charged(void **state) {
  fixture_t *f = *state;
  const char *env[] = {f->env_db,
                       "HANDSEL_DEV_AUTH=1",
                       "HANDSEL_WORKERS=1",
                       "HANDSEL_RATE_PER_S=1",
                       "HANDSEL_RATE_BURST=150",
                       "HANDSEL_LOG_LEVEL=warn",
                       NULL};
  hs_test_server_must_start(&f->srv, env, false);
  if (hs_test_server_wait_ready(&f->srv, 15000) != 0) {
    hs_test_server_dump_stderr(&f->srv, 3000);
    fail_msg("/readyz did not answer 200 within 15 s of the start");
  }
  hs_api_t c;
  hs_api_init(&c, f->srv.port, f->brand, "sam");
  start_sessions(f, &c, 1);
  tracked_t *t = &f->s[0];
  hs_buf_t answer90;
  hs_buf_init(&answer90, 0);
  char body90[96] = "";
  for (int k = 0; k < 100; k++) {
    step_once(f, &c, 0);
    if (t->last_seq == 90) {
      hs_buf_append(&answer90, t->last_answer.data, t->last_answer.len);
      snprintf(body90, sizeof body90, "%s", t->last_body);
    }
  }
  char path[160];
  hs_api_step_path(path, sizeof path, t->loop.id, 90);
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  int retries = 0;
  for (; retries < 12; retries++) {
    assert_int_equal(hs_api_call(&c, "contractor", "POST", path, body90, &r), 0);
    if (r.status == 429) {
      break;
    }
    if (r.status != 200 || r.body.len != answer90.len ||
        memcmp(r.body.data, answer90.data, r.body.len) != 0) {
      fail_msg("retry %d of step 90: expected the original 200, got %d: %s", retries + 1, r.status,
               hs_api_body_text(&r));
    }
  }
  if (r.status != 429 || r.retry_after[0] == '\0') {
    fail_msg("12 retries of step 90 were not limited: the last got %d (Retry-After \"%s\")",
             r.status, r.retry_after);
  }
  hs_test_say("retries of step 90 of 100 are charged for their replay: %d got the original "
              "bytes, then 429 with Retry-After %s s",
              retries, r.retry_after);
  hs_api_resp_free(&r);
  hs_buf_free(&answer90);
  hs_api_close(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_eviction_one_worker, setup, teardown),
      cmocka_unit_test_setup_teardown(test_eviction_two_workers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_restart, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sessions_after_restart, setup, teardown),
      cmocka_unit_test_setup_teardown(test_retry_answers_rebuilt, setup, teardown),
      cmocka_unit_test_setup_teardown(test_old_retries_are_charged, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
