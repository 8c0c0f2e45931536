/* server/cli/client.c without a network: how error answers become the one line a person
 * reads, and which HS_E* code each status maps to. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "cli/client.h"

/* A response as the client would hold it after an error answer. */
static void fake(hs_client_response_t *r, int status, const char *body) {
  memset(r, 0, sizeof *r);
  r->status = status;
  hs_buf_init(&r->body, HS_CLIENT_MAX_ERROR_BODY);
  hs_buf_init(&r->hbuf, HS_CLIENT_MAX_HEADER_LIST);
  if (body != NULL) {
    assert_int_equal(hs_buf_puts(&r->body, body), HS_OK);
  }
}

static void test_handsel_error_body(void **state) {
  hs_client_response_t r;
  hs_err_t err;
  fake(&r, 422,
       "{\"error\":{\"code\":\"validation_failed\",\"message\":\"x.lua:3: no name\","
       "\"fields\":{\"3\":\"no name\"}}}");
  assert_int_equal(hs_client_error_from(&r, &err), HS_EVALIDATION);
  assert_string_equal(err.msg, "422 validation_failed: x.lua:3: no name");
  assert_int_equal(err.code, HS_EVALIDATION);
  hs_client_response_free(&r);
}

/* A hostile or broken server cannot move the cursor or clear the screen. */
static void test_control_characters_are_replaced(void **state) {
  hs_client_response_t r;
  hs_err_t err;
  fake(&r, 400, "{\"error\":{\"code\":\"bad\\u001b[2J\",\"message\":\"line\\nnext\\r\\u0007\"}}");
  assert_int_equal(hs_client_error_from(&r, &err), HS_EINVAL);
  assert_string_equal(err.msg, "400 bad?[2J: line?next??");
  hs_client_response_free(&r);
}

/* Not handsel's shape (a proxy's HTML page): the status and how the body starts. */
static void test_foreign_body(void **state) {
  hs_client_response_t r;
  hs_err_t err;
  fake(&r, 502, "<html><body>Bad Gateway</body></html>");
  assert_int_equal(hs_client_error_from(&r, &err), HS_EIO);
  assert_string_equal(err.msg, "502 error: <html><body>Bad Gateway</body></html>");
  hs_client_response_free(&r);

  char big[4096];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  fake(&r, 500, big);
  hs_client_error_from(&r, &err);
  assert_true(strlen(err.msg) < 200); /* an excerpt, not the whole page */
  hs_client_response_free(&r);

  fake(&r, 503, NULL);
  assert_int_equal(hs_client_error_from(&r, &err), HS_EUNAVAIL);
  assert_string_equal(err.msg, "503 error: the server sent no explanation");
  hs_client_response_free(&r);

  /* JSON, but the members are not strings. */
  fake(&r, 404, "{\"error\":{\"code\":7,\"message\":null}}");
  assert_int_equal(hs_client_error_from(&r, &err), HS_ENOTFOUND);
  assert_non_null(strstr(err.msg, "404 error: {\"error\""));
  hs_client_response_free(&r);
}

static void test_status_codes(void **state) {
  assert_int_equal(hs_client_status_code(400), HS_EINVAL);
  assert_int_equal(hs_client_status_code(401), HS_EINVAL);
  assert_int_equal(hs_client_status_code(403), HS_EINVAL);
  assert_int_equal(hs_client_status_code(404), HS_ENOTFOUND);
  assert_int_equal(hs_client_status_code(409), HS_ECONFLICT);
  assert_int_equal(hs_client_status_code(413), HS_ELIMIT);
  assert_int_equal(hs_client_status_code(422), HS_EVALIDATION);
  assert_int_equal(hs_client_status_code(429), HS_EUNAVAIL);
  assert_int_equal(hs_client_status_code(500), HS_EIO);
  assert_int_equal(hs_client_status_code(501), HS_EUNSUPPORTED);
  assert_int_equal(hs_client_status_code(503), HS_EUNAVAIL);
}

static void test_header_lookup(void **state) {
  hs_client_response_t r;
  fake(&r, 200, NULL);
  const char *fields[][2] = {{"content-type", "text/csv"}, {"x-handsel-records", "12"}};
  for (size_t i = 0; i < 2; i++) {
    r.name_off[i] = r.hbuf.len;
    assert_int_equal(hs_buf_append(&r.hbuf, fields[i][0], strlen(fields[i][0]) + 1), HS_OK);
    r.value_off[i] = r.hbuf.len;
    assert_int_equal(hs_buf_append(&r.hbuf, fields[i][1], strlen(fields[i][1]) + 1), HS_OK);
    r.n_headers++;
  }
  assert_string_equal(hs_client_header(&r, "x-handsel-records"), "12");
  assert_string_equal(hs_client_header(&r, "content-type"), "text/csv");
  assert_null(hs_client_header(&r, "x-handsel"));
  hs_client_response_free(&r);
  assert_null(hs_client_header(&r, "content-type"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_handsel_error_body),
      cmocka_unit_test(test_control_characters_are_replaced),
      cmocka_unit_test(test_foreign_body),
      cmocka_unit_test(test_status_codes),
      cmocka_unit_test(test_header_lookup),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
