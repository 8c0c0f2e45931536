/* PostgreSQL goes away in the middle of a load and comes back (SPEC §5, issue 4): while client
 * threads loop completions, the test stops its own private cluster (pg_ctl stop -m fast),
 * keeps it down for a while, and starts it again. Meanwhile requests must be answered 503 with
 * Retry-After (or succeed), the server must keep running and recover by itself, and afterwards
 * every acknowledged completion must be stored exactly once with the answer the client got.
 *
 * The cluster is private (initdb'd under HANDSEL_TEST_TMP, see hs_test_pg.h): stopping the
 * shared test database would break every other test. */
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

#include "hs_test_api.h"
#include "hs_test_load.h"
#include "hs_test_pg.h"
#include "hs_test_server.h"

#define N_SESSIONS  16
#define N_THREADS   4
#define OUTAGE_MS   2500
#define RECOVERY_MS 10000 /* "requests succeed again within ~10 s" */

typedef struct fixture {
  hs_test_pg_t pg;
  hs_test_server_t srv;
  hs_test_load_t load;
  bool load_started;
} fixture_t;

static int setup(void **state) {
  fixture_t *f = calloc(1, sizeof *f);
  if (f == NULL) {
    return -1;
  }
  *state = f;
  if (hs_test_pg_create(&f->pg, "restart") != 0) {
    fprintf(stderr, "this test needs a private PostgreSQL cluster and could not make one (see "
                    "above); it needs the PostgreSQL 15 server binaries (HANDSEL_PG_BIN) and, "
                    "as root, the user postgres or handsel\n");
    return -1;
  }
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  if (f->load_started) {
    hs_test_load_stop(&f->load);
    hs_test_load_free(&f->load);
  }
  hs_test_server_stop(&f->srv);
  hs_test_pg_destroy(&f->pg);
  free(f);
  return 0;
}

static int readyz(int port) {
  int status = 0;
  hs_h2_get(port, false, "/readyz", NULL, 0, 3000, &status, NULL);
  return status;
}

static void test_postgres_restart_under_load(void **state) {
  fixture_t *f = *state;
  char env_db[HS_TEST_PATH_MAX + 16], brand[65], why[512];
  snprintf(env_db, sizeof env_db, "HANDSEL_DB=%s", f->pg.conninfo);
  const char *env[] = {env_db, "HANDSEL_DEV_AUTH=1", "HANDSEL_WORKERS=2", "HANDSEL_LOG_LEVEL=warn",
                       NULL};
  hs_test_server_must_start(&f->srv, env, false);
  if (hs_test_server_wait_ready(&f->srv, 15000) != 0) {
    hs_test_server_dump_stderr(&f->srv, 3000);
    fail_msg("/readyz did not answer 200 within 15 s of the start");
  }
  hs_api_unique_name(brand, "pgrestart");
  hs_test_load_t *l = &f->load;
  if (hs_test_load_start(l, f->srv.port, brand, N_SESSIONS, N_THREADS) != 0) {
    hs_test_server_dump_stderr(&f->srv, 3000);
    fail_msg("the load could not start");
  }
  f->load_started = true;
  long long deadline = hs_test_now_ms() + 8000;
  while (atomic_load(&l->ok) < 300 && hs_test_now_ms() < deadline) {
    hs_test_sleep_ms(10);
  }
  int ok_before = atomic_load(&l->ok);
  assert_true(ok_before >= 50);
  assert_int_equal(readyz(f->srv.port), 200);

  /* The outage. */
  long long t_down = hs_test_now_ms();
  if (hs_test_pg_stop(&f->pg) != 0) {
    hs_test_pg_dump_log(&f->pg, 3000);
    fail_msg("pg_ctl stop -m fast failed");
  }
  int ok_at_stop = atomic_load(&l->ok);
  int unavailable_at_stop = atomic_load(&l->unavailable);
  hs_test_sleep_ms(OUTAGE_MS / 2);
  int ready_down = readyz(f->srv.port);
  hs_test_sleep_ms(OUTAGE_MS / 2);
  if (!hs_test_server_running(&f->srv)) {
    hs_test_server_dump_stderr(&f->srv, 4000);
    fail_msg("the server died while PostgreSQL was down");
  }
  int ok_during = atomic_load(&l->ok) - ok_at_stop;
  int unavailable_during = atomic_load(&l->unavailable) - unavailable_at_stop;
  if (ready_down != 503) {
    fail_msg("/readyz answered %d while PostgreSQL was down, not 503", ready_down);
  }
  if (unavailable_during == 0) {
    fail_msg("no request got 503 during a %d ms outage (%d got 200)", OUTAGE_MS, ok_during);
  }

  /* PostgreSQL comes back: the server recovers by itself. */
  if (hs_test_pg_start(&f->pg) != 0) {
    fail_msg("PostgreSQL did not start again");
  }
  long long t_up = hs_test_now_ms();
  deadline = t_up + RECOVERY_MS + 5000;
  while (atomic_load(&l->last_ok_ms) < t_up && hs_test_now_ms() < deadline) {
    hs_test_sleep_ms(20);
  }
  long long recovered_ms = atomic_load(&l->last_ok_ms) - t_up;
  if (atomic_load(&l->last_ok_ms) < t_up || recovered_ms > RECOVERY_MS) {
    hs_test_server_dump_stderr(&f->srv, 4000);
    fail_msg("no completion succeeded within %d ms of PostgreSQL's return (%s)", RECOVERY_MS,
             atomic_load(&l->last_ok_ms) < t_up ? "none at all" : "too late");
  }
  int ok_after = atomic_load(&l->ok);
  deadline = hs_test_now_ms() + 8000;
  while (atomic_load(&l->ok) < ok_after + 200 && hs_test_now_ms() < deadline) {
    hs_test_sleep_ms(10);
  }
  hs_test_load_stop(l);
  /* Readiness follows within the same bound. */
  int ready_up = readyz(f->srv.port);
  while (ready_up != 200 && hs_test_now_ms() < t_up + RECOVERY_MS) {
    hs_test_sleep_ms(100);
    ready_up = readyz(f->srv.port);
  }
  long long ready_ms = hs_test_now_ms() - t_up;
  hs_test_say("%d completions before the stop; PostgreSQL down for %lld ms: %d answers 503, %d 200 "
              "(committed before the stop took effect), /readyz 503; the first 200 came %lld ms "
              "after PostgreSQL was back, then %d more; /readyz %d after %lld ms",
              ok_at_stop, t_up - t_down, unavailable_during, ok_during, recovered_ms,
              atomic_load(&l->ok) - ok_after, ready_up, ready_ms);
  if (ready_up != 200) {
    bool alive = hs_test_server_running(&f->srv);
    hs_test_server_dump_stderr(&f->srv, 4000);
    fail_msg("/readyz still answered %d %d ms after PostgreSQL was back (%s)", ready_up,
             RECOVERY_MS, alive ? "the server runs" : "the server is gone");
  }
  if (atomic_load(&l->unexpected) != 0) {
    fail_msg("%d answers were neither 200 nor 503; the first: %s", atomic_load(&l->unexpected),
             l->first_error);
  }
  if (atomic_load(&l->no_retry_after) != 0) {
    fail_msg("%d of the %d 503s had no Retry-After", atomic_load(&l->no_retry_after),
             atomic_load(&l->unavailable));
  }
  if (atomic_load(&l->no_answer) != 0) {
    fail_msg("%d requests got no answer at all (the server dropped connections or hung)",
             atomic_load(&l->no_answer));
  }
  hs_test_say("every answer was 200 or 503 with Retry-After; no request went unanswered");

  /* Nothing acknowledged was lost. */
  PGconn *db = hs_test_db_must_connect(f->pg.conninfo);
  long long acked = 0;
  int pending_stored = 0;
  bool ok = hs_test_load_verify(l, db, why, sizeof why, &acked, &pending_stored);
  PQfinish(db);
  if (!ok) {
    hs_test_server_dump_stderr(&f->srv, 3000);
    fail_msg("after the restart of PostgreSQL: %s", why);
  }
  hs_test_say(
      "all %lld acknowledged completions stored once, and each one retried gets the bytes the "
      "client got; %d answered 503 but had committed, and their retries get the right next "
      "step; every session continues",
      acked, pending_stored);

  /* And the server still stops cleanly. */
  assert_int_equal(hs_test_server_signal(&f->srv, SIGTERM), 0);
  int status = 0;
  if (hs_test_server_wait(&f->srv, 20000, &status) != 0 || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0) {
    hs_test_server_dump_stderr(&f->srv, 4000);
    fail_msg("the server did not exit cleanly on SIGTERM after the outage (status 0x%x)", status);
  }
  hs_test_say("the server exits with status 0 on SIGTERM");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_postgres_restart_under_load, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
