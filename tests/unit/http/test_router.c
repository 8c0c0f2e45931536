/* The router: literal and parameter segments, method mismatch (405) versus no route (404),
 * debug routes hidden unless enabled, parameter length limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "http/router.h"

static void handler(hs_req_t *req) {
  (void)req;
}

static const hs_route_t k_routes[] = {
    {"GET", "/healthz", handler, 0},
    {"POST", "/v1/sessions", handler, 0},
    {"GET", "/v1/sessions/{id}", handler, 0},
    {"GET", "/v1/sessions/{id}/stream", handler, 0},
    {"POST", "/v1/sessions/{id}/steps/{seq}", handler, 0},
    {"GET", "/debug/stream", handler, HS_ROUTE_DEBUG},
};
enum { N = sizeof k_routes / sizeof k_routes[0] };

static void match(const char *method, const char *path, int debug, hs_route_match_t *m) {
  hs_router_match(k_routes, N, debug, method, path, strlen(path), m);
}

static void test_literal_routes(void **state) {
  hs_route_match_t m;
  match("GET", "/healthz", 0, &m);
  assert_int_equal(m.route, 0);
  assert_int_equal(m.n_params, 0);
  match("POST", "/v1/sessions", 0, &m);
  assert_int_equal(m.route, 1);
  /* No prefix or suffix matching. */
  match("GET", "/healthz/", 0, &m);
  assert_int_equal(m.route, -1);
  assert_int_equal(m.path_matched, 0);
  match("GET", "/health", 0, &m);
  assert_int_equal(m.route, -1);
}

static void test_parameters(void **state) {
  hs_route_match_t m;
  match("POST", "/v1/sessions/abc-123/steps/7", 0, &m);
  assert_int_equal(m.route, 4);
  assert_int_equal(m.n_params, 2);
  assert_string_equal(hs_route_param(&m, "id"), "abc-123");
  assert_string_equal(hs_route_param(&m, "seq"), "7");
  assert_null(hs_route_param(&m, "nope"));
  match("GET", "/v1/sessions/abc/stream", 0, &m);
  assert_int_equal(m.route, 3);
  assert_string_equal(hs_route_param(&m, "id"), "abc");
  /* A parameter is one non-empty segment. */
  match("GET", "/v1/sessions/", 0, &m);
  assert_int_equal(m.route, -1);
  match("GET", "/v1/sessions/a/b", 0, &m);
  assert_int_equal(m.route, -1);
}

static void test_method_mismatch_is_405(void **state) {
  hs_route_match_t m;
  match("DELETE", "/v1/sessions", 0, &m);
  assert_int_equal(m.route, -1);
  assert_int_equal(m.path_matched, 1);
  match("POST", "/v1/sessions/x", 0, &m);
  assert_int_equal(m.route, -1);
  assert_int_equal(m.path_matched, 1);
}

static void test_debug_routes_hidden(void **state) {
  hs_route_match_t m;
  match("GET", "/debug/stream", 0, &m);
  assert_int_equal(m.route, -1);
  assert_int_equal(m.path_matched, 0);
  match("GET", "/debug/stream", 1, &m);
  assert_int_equal(m.route, 5);
}

static void test_parameter_length_limit(void **state) {
  char path[512];
  char id[HS_ROUTE_MAX_PARAM_LEN + 2];
  memset(id, 'a', sizeof id - 1);
  id[HS_ROUTE_MAX_PARAM_LEN] = '\0'; /* exactly the limit */
  snprintf(path, sizeof path, "/v1/sessions/%s", id);
  hs_route_match_t m;
  match("GET", path, 0, &m);
  assert_int_equal(m.route, 2);
  assert_int_equal(strlen(hs_route_param(&m, "id")), HS_ROUTE_MAX_PARAM_LEN);
  id[HS_ROUTE_MAX_PARAM_LEN] = 'a'; /* one past */
  id[HS_ROUTE_MAX_PARAM_LEN + 1] = '\0';
  snprintf(path, sizeof path, "/v1/sessions/%s", id);
  match("GET", path, 0, &m);
  assert_int_equal(m.route, -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_literal_routes),         cmocka_unit_test(test_parameters),
      cmocka_unit_test(test_method_mismatch_is_405), cmocka_unit_test(test_debug_routes_hidden),
      cmocka_unit_test(test_parameter_length_limit),
  };
  return cmocka_run_group_tests_name("http/router", tests, NULL, NULL);
}
