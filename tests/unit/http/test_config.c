/* Configuration and limits from the environment: defaults, every limit is settable, and a bad
 * value is refused with a message that names the variable and its range. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/config.h"

static const char *const k_vars[] = {
    "HANDSEL_LISTEN",
    "HANDSEL_WORKERS",
    "HANDSEL_TLS_CERT",
    "HANDSEL_TLS_KEY",
    "HANDSEL_DB",
    "HANDSEL_MAX_BODY",
    "HANDSEL_MAX_HEADER_LIST",
    "HANDSEL_MAX_HEADERS",
    "HANDSEL_MAX_STREAMS",
    "HANDSEL_IDLE_TIMEOUT_MS",
    "HANDSEL_HEADER_TIMEOUT_MS",
    "HANDSEL_STALL_TIMEOUT_MS",
    "HANDSEL_CONN_OUTBUF",
    "HANDSEL_GLITCH_LIMIT",
    "HANDSEL_CONTROL_LIMIT",
    "HANDSEL_GRACE_MS",
    "HANDSEL_DEBUG_ROUTES",
    "HANDSEL_DEV_AUTH",
    "HANDSEL_SESSION_CACHE",
    "HANDSEL_MAX_BLOB",
};

static int clear_env(void **state) {
  for (size_t i = 0; i < sizeof k_vars / sizeof k_vars[0]; i++) {
    unsetenv(k_vars[i]);
  }
  return 0;
}

static void test_defaults(void **state) {
  hs_config_t c;
  hs_err_t err;
  assert_int_equal(hs_config_from_env(&c, &err), HS_OK);
  assert_string_equal(c.listen_host, "127.0.0.1");
  assert_int_equal(c.listen_port, 8080);
  assert_true(c.workers >= 1);
  assert_int_equal(c.max_body, 1024 * 1024);
  assert_int_equal(c.max_header_list, 16384);
  assert_int_equal(c.max_streams, 100);
  assert_false(c.debug_routes);
  assert_false(c.dev_auth);
  assert_string_equal(c.tls_cert, "");
}

static void test_every_limit_is_settable(void **state) {
  setenv("HANDSEL_MAX_BODY", "2048", 1);
  setenv("HANDSEL_MAX_HEADER_LIST", "4096", 1);
  setenv("HANDSEL_MAX_STREAMS", "7", 1);
  setenv("HANDSEL_IDLE_TIMEOUT_MS", "500", 1);
  setenv("HANDSEL_GLITCH_LIMIT", "3", 1);
  setenv("HANDSEL_LISTEN", "[::1]:9443", 1);
  hs_config_t c;
  hs_err_t err;
  assert_int_equal(hs_config_from_env(&c, &err), HS_OK);
  assert_int_equal(c.max_body, 2048);
  assert_int_equal(c.max_header_list, 4096);
  assert_int_equal(c.max_streams, 7);
  assert_int_equal(c.idle_timeout_ms, 500);
  assert_int_equal(c.glitch_limit, 3);
  assert_string_equal(c.listen_host, "::1");
  assert_int_equal(c.listen_port, 9443);
}

static void expect_refused(const char *var, const char *value) {
  clear_env(NULL);
  setenv(var, value, 1);
  hs_config_t c;
  hs_err_t err;
  hs_err_clear(&err);
  assert_int_equal(hs_config_from_env(&c, &err), HS_EINVAL);
  /* The message names the variable so an operator knows what to fix. */
  if (strstr(err.msg, strcmp(var, "HANDSEL_LISTEN") == 0 ? "HANDSEL_LISTEN" : var) == NULL) {
    fail_msg("message for %s=%s does not name it: %s", var, value, err.msg);
  }
}

static void test_bad_values_are_refused(void **state) {
  expect_refused("HANDSEL_MAX_BODY", "lots");
  expect_refused("HANDSEL_MAX_BODY", "-1");
  expect_refused("HANDSEL_MAX_BODY", "10"); /* below the floor */
  expect_refused("HANDSEL_MAX_STREAMS", "0");
  expect_refused("HANDSEL_WORKERS", "100000");
  expect_refused("HANDSEL_IDLE_TIMEOUT_MS", "12x");
  expect_refused("HANDSEL_LISTEN", "no-port");
  expect_refused("HANDSEL_LISTEN", "127.0.0.1:70000");
  clear_env(NULL);
  setenv("HANDSEL_TLS_CERT", "/tmp/cert.pem", 1); /* a certificate without its key */
  hs_config_t c;
  hs_err_t err;
  assert_int_equal(hs_config_from_env(&c, &err), HS_EINVAL);
  assert_non_null(strstr(err.msg, "HANDSEL_TLS_KEY"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_defaults, clear_env),
      cmocka_unit_test_setup(test_every_limit_is_settable, clear_env),
      cmocka_unit_test_setup(test_bad_values_are_refused, clear_env),
  };
  return cmocka_run_group_tests_name("http/config", tests, NULL, NULL);
}
