/* SIGTERM: the server stops accepting, sends GOAWAY, lets in-flight streams finish within
 * HANDSEL_GRACE_MS, cuts what is left after that, and exits 0. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "hs_test_h2.h"
#include "hs_test_server.h"

#define PROMPTLY_MS 5000

static int setup(void **state) {
  hs_test_server_t *s = calloc(1, sizeof *s);
  *state = s;
  return s != NULL ? 0 : -1;
}

static int teardown(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_stop(s);
  free(s);
  return 0;
}

static void assert_exit_zero(hs_test_server_t *s, int timeout_ms, const char *what) {
  int status = 0;
  long long t0 = hs_test_now_ms();
  if (hs_test_server_wait(s, timeout_ms, &status) != 0) {
    hs_test_server_dump_stderr(s, 2000);
    fail_msg("%s: the server has not exited %d ms after SIGTERM", what, timeout_ms);
  }
  print_message("%s: exited %lld ms after the wait began\n", what, hs_test_now_ms() - t0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    hs_test_server_dump_stderr(s, 4000);
    fail_msg("%s: exit status %s %d, expected exit 0", what, WIFEXITED(status) ? "exit" : "signal",
             WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
  }
}

/* Pumps c until stream id has received at least one DATA byte. */
static void wait_first_bytes(hs_h2_conn_t *c, int32_t id) {
  long long deadline = hs_test_now_ms() + PROMPTLY_MS;
  while (hs_h2_response(c, id)->body_total == 0) {
    assert_true(hs_test_now_ms() < deadline);
    assert_int_equal(hs_h2_pump(c, 100), 0);
  }
}

static void test_sigterm_drains_in_flight_stream(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_must_start(s,
                            (const char *const[]){"HANDSEL_WORKERS=1", "HANDSEL_DEBUG_ROUTES=1",
                                                  "HANDSEL_GRACE_MS=10000", NULL},
                            false);
  hs_h2_conn_t *c = NULL;
  assert_int_equal(hs_h2_connect(&c, s->port, NULL), 0);
  /* 20 chunks of 1000 bytes, one every 100 ms: about 2 s, well inside the grace period. */
  int32_t id =
      hs_h2_submit(c, "GET", "/debug/stream?chunks=20&size=1000&interval_ms=100", NULL, 0, NULL, 0);
  assert_true(id > 0);
  wait_first_bytes(c, id);

  assert_int_equal(hs_test_server_signal(s, SIGTERM), 0);
  long long t0 = hs_test_now_ms();
  /* The GOAWAY comes while the stream still runs. */
  while (!hs_h2_goaway(c, NULL, NULL) && hs_test_now_ms() - t0 < PROMPTLY_MS) {
    assert_int_equal(hs_h2_pump(c, 50), 0);
  }
  uint32_t code = 99;
  int32_t last = -1;
  assert_true(hs_h2_goaway(c, &code, &last));
  assert_int_equal(code, 0); /* NO_ERROR: a graceful shutdown */
  assert_true(last >= id);   /* our stream is one the server will finish */
  assert_false(hs_h2_response(c, id)->closed);

  /* New connections are no longer served. */
  int status = 0;
  int rc = hs_h2_get(s->port, false, "/healthz", NULL, 0, 2000, &status, NULL);
  if (status != 0) {
    fail_msg("a connection made after SIGTERM was served (rc %d, status %d)", rc, status);
  }

  /* The in-flight stream still completes, byte for byte. */
  assert_int_equal(hs_h2_wait(c, id, 10000), 0);
  hs_h2_response_t *r = hs_h2_response(c, id);
  assert_int_equal(r->status, 200);
  assert_true(r->end_stream);
  assert_int_equal(r->close_code, 0);
  assert_int_equal(r->body_total, 20000);
  for (size_t i = 0; i < r->body.len; i++) {
    if (r->body.data[i] != 'x') {
      fail_msg("byte %zu of the stream is 0x%02x, not 'x'", i, r->body.data[i]);
    }
  }
  /* And then the connection ends. */
  long long deadline = hs_test_now_ms() + PROMPTLY_MS;
  while (hs_h2_pump(c, 100) == 0 && hs_test_now_ms() < deadline) {
  }
  assert_true(hs_h2_closed(c));
  hs_h2_close(c);
  assert_exit_zero(s, PROMPTLY_MS, "drained");
}

static void test_grace_period_cuts_long_stream(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_must_start(s,
                            (const char *const[]){"HANDSEL_WORKERS=1", "HANDSEL_DEBUG_ROUTES=1",
                                                  "HANDSEL_GRACE_MS=1000", NULL},
                            false);
  hs_h2_conn_t *c = NULL;
  assert_int_equal(hs_h2_connect(&c, s->port, NULL), 0);
  /* About 60 s of stream: far longer than the 1 s grace period. */
  int32_t id =
      hs_h2_submit(c, "GET", "/debug/stream?chunks=600&size=100&interval_ms=100", NULL, 0, NULL, 0);
  assert_true(id > 0);
  wait_first_bytes(c, id);
  long long t0 = hs_test_now_ms();
  assert_int_equal(hs_test_server_signal(s, SIGTERM), 0);
  /* Keep reading, so the server is never held up by us. */
  while (!hs_h2_response(c, id)->closed && hs_test_now_ms() - t0 < 1000 + PROMPTLY_MS) {
    if (hs_h2_pump(c, 50) != 0) {
      break;
    }
  }
  hs_h2_response_t *r = hs_h2_response(c, id);
  assert_true(r->closed);
  assert_false(r->end_stream);
  assert_true(r->body_total < 60000);
  assert_true(hs_h2_goaway(c, NULL, NULL));
  hs_h2_close(c);
  assert_exit_zero(s, 1000 + PROMPTLY_MS, "cut");
  long long dt = hs_test_now_ms() - t0;
  print_message("cut: exited %lld ms after SIGTERM with a 1000 ms grace period\n", dt);
  assert_true(dt < 1000 + PROMPTLY_MS);
}

static void test_sigterm_with_idle_connection_exits_promptly(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_must_start(
      s, (const char *const[]){"HANDSEL_WORKERS=2", "HANDSEL_GRACE_MS=10000", NULL}, false);
  hs_h2_conn_t *c = NULL;
  assert_int_equal(hs_h2_connect(&c, s->port, NULL), 0);
  hs_h2_response_t *r = NULL;
  assert_int_equal(hs_h2_request(c, "GET", "/healthz", NULL, 0, NULL, 0, PROMPTLY_MS, &r), 0);
  assert_int_equal(r->status, 200);
  long long t0 = hs_test_now_ms();
  assert_int_equal(hs_test_server_signal(s, SIGTERM), 0);
  /* Nothing is in flight, so nothing is worth waiting the grace period for. */
  while (hs_h2_pump(c, 50) == 0 && hs_test_now_ms() - t0 < PROMPTLY_MS) {
  }
  assert_true(hs_h2_goaway(c, NULL, NULL));
  assert_true(hs_h2_closed(c));
  hs_h2_close(c);
  assert_exit_zero(s, PROMPTLY_MS, "idle");
  assert_true(hs_test_now_ms() - t0 < 10000);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_sigterm_drains_in_flight_stream, setup, teardown),
      cmocka_unit_test_setup_teardown(test_grace_period_cuts_long_stream, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sigterm_with_idle_connection_exits_promptly, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
