/* The crash test of SPEC §5 against a real PostgreSQL (HANDSEL_DB): client threads loop
 * completions on many sessions, the server is killed with SIGKILL in the middle of it, and a
 * new server takes over. Every completion that was acknowledged (a 200) must be stored exactly
 * once, and a retry must return the bytes the client got; one that was in flight without an
 * answer is either absent or stored, and its retry then answers with the right next step.
 * Twice in a row, on the same sessions. */
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

#define N_SESSIONS 24
#define N_THREADS  4
#define CYCLES     2

static void start_server(hs_test_server_t *s, const char *env_db) {
  const char *env[] = {env_db, "HANDSEL_DEV_AUTH=1", "HANDSEL_WORKERS=2", "HANDSEL_LOG_LEVEL=warn",
                       NULL};
  hs_test_server_must_start(s, env, false);
  if (hs_test_server_wait_ready(s, 15000) != 0) {
    hs_test_server_dump_stderr(s, 3000);
    fail_msg("/readyz did not answer 200 within 15 s of the start");
  }
}

/* Waits until the load has n more 200s than `from`, at most timeout_ms. */
static int wait_ok(hs_test_load_t *l, int from, int n, int timeout_ms) {
  long long deadline = hs_test_now_ms() + timeout_ms;
  while (atomic_load(&l->ok) < from + n && hs_test_now_ms() < deadline) {
    hs_test_sleep_ms(10);
  }
  return atomic_load(&l->ok) - from;
}

static void test_kill9_under_load(void **state) {
  const char *db = hs_test_db_must();
  char env_db[HS_TEST_PATH_MAX], brand[65], why[512];
  snprintf(env_db, sizeof env_db, "HANDSEL_DB=%s", db);
  hs_api_unique_name(brand, "crash");
  PGconn *pg = hs_test_db_must_connect(db);
  hs_test_server_t srv;
  start_server(&srv, env_db);
  hs_test_load_t *l = calloc(1, sizeof *l);
  assert_non_null(l);
  if (hs_test_load_start(l, srv.port, brand, N_SESSIONS, N_THREADS) != 0) {
    hs_test_server_dump_stderr(&srv, 3000);
    fail_msg("the load could not start");
  }
  for (int cycle = 1; cycle <= CYCLES; cycle++) {
    /* Let it run, then kill the server while completions are in flight. */
    int before = atomic_load(&l->ok);
    int got = wait_ok(l, before, 600, 8000);
    if (got < 50) {
      hs_test_server_dump_stderr(&srv, 3000);
      fail_msg("cycle %d: only %d completions were acknowledged in 8 s (%s)", cycle, got,
               l->first_error);
    }
    hs_test_server_stop(&srv); /* SIGKILL */
    int status = srv.exit_status;
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
      fail_msg("cycle %d: the server had already stopped (status 0x%x) before the kill", cycle,
               status);
    }
    int ok_at_kill = atomic_load(&l->ok);
    hs_test_sleep_ms(200); /* the clients see the connection die and get refused */
    hs_test_load_stop(l);
    if (atomic_load(&l->unexpected) != 0) {
      fail_msg("cycle %d: %d unexpected answers; the first: %s", cycle, atomic_load(&l->unexpected),
               l->first_error);
    }
    int pending = 0;
    for (size_t i = 0; i < l->n_sessions; i++) {
      pending += l->sessions[i].pending;
    }

    /* A new server on the same database. */
    start_server(&srv, env_db);
    atomic_store(&l->port, srv.port);
    long long acked = 0;
    int pending_stored = 0;
    if (!hs_test_load_verify(l, pg, why, sizeof why, &acked, &pending_stored)) {
      hs_test_server_dump_stderr(&srv, 3000);
      fail_msg("cycle %d after kill -9: %s", cycle, why);
    }
    hs_test_say(
        "cycle %d: kill -9 after %d acknowledged completions (%d sessions, %d threads); %d "
        "requests were in flight without an answer. After a restart: all %lld acknowledged "
        "completions stored once with one accepted validation record, and each one retried "
        "gets the bytes the client got; %d of the unanswered ones had committed and their "
        "retries got the right next step, the others committed on retry; every session then "
        "took one more step correctly",
        cycle, ok_at_kill, N_SESSIONS, N_THREADS, pending, acked, pending_stored);
    if (cycle < CYCLES && hs_test_load_resume(l, N_THREADS) != 0) {
      fail_msg("the load could not resume");
    }
  }

  /* The last server stops cleanly (and, under the sanitizers, without leaks). */
  assert_int_equal(hs_test_server_signal(&srv, SIGTERM), 0);
  int status = 0;
  if (hs_test_server_wait(&srv, 20000, &status) != 0 || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0) {
    hs_test_server_dump_stderr(&srv, 4000);
    fail_msg("the restarted server did not exit cleanly on SIGTERM (status 0x%x)", status);
  }
  hs_test_say("the restarted server exits with status 0 on SIGTERM");
  hs_test_load_free(l);
  free(l);
  PQfinish(pg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_kill9_under_load),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
