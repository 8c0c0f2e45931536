/* JSON decoding and encoding: every type, every limit, broken and hostile text. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec/codec.h"

typedef struct fixture {
  hs_arena_t arena;
  hs_err_t err;
  hs_buf_t buf;
} fixture_t;

static int setup(void **state) {
  fixture_t *f = test_calloc(1, sizeof *f);
  hs_arena_init(&f->arena, 0);
  hs_buf_init(&f->buf, 0);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  hs_arena_reset(&f->arena);
  hs_buf_free(&f->buf);
  test_free(f);
  return 0;
}

static hs_value_t *decode_ok(fixture_t *f, const char *text, const hs_codec_limits_t *lim) {
  hs_value_t *v = NULL;
  int rc = hs_json_decode(text, strlen(text), lim, &f->arena, &v, &f->err);
  if (rc != HS_OK) {
    fail_msg("decoding %.60s failed (%d): %s", text, rc, f->err.msg);
  }
  assert_non_null(v);
  return v;
}

static void decode_fails_n(fixture_t *f, const char *text, size_t n, const hs_codec_limits_t *lim,
                           int code, const char *needle) {
  hs_value_t *sentinel = (hs_value_t *)&f->buf;
  hs_value_t *v = sentinel;
  hs_err_clear(&f->err);
  int rc = hs_json_decode(text, n, lim, &f->arena, &v, &f->err);
  if (rc != code) {
    fail_msg("decoding %.60s: expected code %d, got %d (%s)", text, code, rc, f->err.msg);
  }
  assert_int_equal(f->err.code, code);
  assert_ptr_equal(v, sentinel);
  if (needle != NULL && strstr(f->err.msg, needle) == NULL) {
    fail_msg("decoding %.60s: error \"%s\" does not mention \"%s\"", text, f->err.msg, needle);
  }
}

static void decode_fails(fixture_t *f, const char *text, const hs_codec_limits_t *lim, int code,
                         const char *needle) {
  decode_fails_n(f, text, strlen(text), lim, code, needle);
}

static const char *encode(fixture_t *f, const hs_value_t *v) {
  f->buf.len = 0;
  assert_int_equal(hs_json_encode(v, &f->buf), HS_OK);
  assert_int_equal(hs_buf_append(&f->buf, "", 1), HS_OK); /* NUL for string comparisons */
  f->buf.len--;
  return (const char *)f->buf.data;
}

/* Decodes text, checks the type, re-encodes and expects `canonical` (or text itself). */
static hs_value_t *round_trip(fixture_t *f, const char *text, hs_vtype_t type,
                              const char *canonical) {
  hs_value_t *v = decode_ok(f, text, NULL);
  assert_int_equal(v->type, type);
  assert_string_equal(encode(f, v), canonical != NULL ? canonical : text);
  hs_value_t *back = decode_ok(f, (const char *)f->buf.data, NULL);
  assert_true(hs_value_equal(v, back));
  return v;
}

static void test_scalars(void **state) {
  fixture_t *f = *state;
  round_trip(f, "null", HS_V_NIL, NULL);
  assert_true(round_trip(f, "true", HS_V_BOOL, NULL)->as.b);
  assert_false(round_trip(f, "false", HS_V_BOOL, NULL)->as.b);
  assert_int_equal(round_trip(f, "0", HS_V_INT, NULL)->as.i, 0);
  assert_int_equal(round_trip(f, "-0", HS_V_INT, "0")->as.i, 0);
  assert_int_equal(round_trip(f, "9223372036854775807", HS_V_INT, NULL)->as.i, INT64_MAX);
  assert_int_equal(round_trip(f, "-9223372036854775808", HS_V_INT, NULL)->as.i, INT64_MIN);
  /* A fraction or an exponent makes a float, and floats stay floats when written back. */
  assert_true(round_trip(f, "1.0", HS_V_FLOAT, NULL)->as.f == 1.0);
  assert_true(round_trip(f, "1e2", HS_V_FLOAT, "100.0")->as.f == 100.0);
  assert_true(round_trip(f, "0.1", HS_V_FLOAT, NULL)->as.f == 0.1);
  assert_true(round_trip(f, "-2.5", HS_V_FLOAT, NULL)->as.f == -2.5);
  assert_true(round_trip(f, "51.4778", HS_V_FLOAT, NULL)->as.f == 51.4778);
  round_trip(f, "1e+300", HS_V_FLOAT, NULL);
  round_trip(f, "5e-324", HS_V_FLOAT, NULL);
  round_trip(f, "0.30000000000000004", HS_V_FLOAT, NULL); /* needs all 17 digits */
  round_trip(f, "-0.0", HS_V_FLOAT, NULL);
  round_trip(f, "1.7976931348623157e+308", HS_V_FLOAT, NULL);
  round_trip(f, "\"\"", HS_V_STR, NULL);
  round_trip(f, "\"caf\xc3\xa9 \xf0\x9f\x8d\xba\"", HS_V_STR, NULL);
  /* Escapes decode to UTF-8 and are written back in the shortest form. */
  hs_value_t *v =
      round_trip(f, "\"\\u00e9\\ud83c\\udf7a\\/\"", HS_V_STR, "\"\xc3\xa9\xf0\x9f\x8d\xba/\"");
  assert_int_equal(v->as.str.len, 7);
  round_trip(f, "\"q\\\"b\\\\n\\nt\\tr\\rb\\bf\\fc\\u0001\\u001f\"", HS_V_STR, NULL);
}

static void test_encoder_special_values(void **state) {
  fixture_t *f = *state;
  hs_arena_t *a = &f->arena;
  assert_string_equal(encode(f, hs_value_new_float(a, NAN)), "null");
  assert_string_equal(encode(f, hs_value_new_float(a, INFINITY)), "null");
  assert_string_equal(encode(f, hs_value_new_float(a, -INFINITY)), "null");
  assert_string_equal(encode(f, hs_value_new_float(a, 3.0)), "3.0");
  assert_string_equal(encode(f, hs_value_new_float(a, 1e21)), "1e+21");
  assert_string_equal(encode(f, hs_value_new_uint(a, UINT64_MAX)), "18446744073709551615");
  assert_string_equal(encode(f, hs_value_new_bin(a, "foobar", 6)), "\"Zm9vYmFy\"");
  assert_string_equal(encode(f, hs_value_new_bin(a, "\xff", 1)), "\"/w==\"");
  assert_string_equal(encode(f, hs_value_new_bin(a, NULL, 0)), "\"\"");
  hs_value_t nul = {.type = HS_V_STR, .as.str = {"a\0b", 3}};
  assert_string_equal(encode(f, &nul), "\"a\\u0000b\"");
  hs_value_t bad = {.type = HS_V_STR, .as.str = {"\xed\xa0\x80", 3}};
  f->buf.len = 0;
  assert_int_equal(hs_json_encode(&bad, &f->buf), HS_EINVAL);
  hs_buf_t small;
  hs_buf_init(&small, 5);
  assert_int_equal(hs_json_encode(hs_value_new_cstr(a, "abcdef"), &small), HS_ELIMIT);
  hs_buf_free(&small);
}

static void test_containers(void **state) {
  fixture_t *f = *state;
  round_trip(f, "[]", HS_V_ARRAY, NULL);
  round_trip(f, "{}", HS_V_MAP, NULL);
  hs_value_t *v = round_trip(
      f,
      " {\n  \"z\": [1, 2.5, \"x\", true, null, {\"k\": []}],\n  \"a\": {\"b\": {\"c\": -1}}\n}\n",
      HS_V_MAP, "{\"z\":[1,2.5,\"x\",true,null,{\"k\":[]}],\"a\":{\"b\":{\"c\":-1}}}");
  /* Members keep the order of the text. */
  assert_string_equal(v->as.map.items[0].key, "z");
  assert_string_equal(v->as.map.items[1].key, "a");
  assert_int_equal(hs_map_get(v, "z")->as.arr.len, 6);
  assert_int_equal(hs_map_get(hs_map_get(hs_map_get(v, "a"), "b"), "c")->as.i, -1);
  /* The same value decoded from msgpack is equal to the one decoded from JSON. */
  f->buf.len = 0;
  assert_int_equal(hs_msgpack_encode(v, &f->buf), HS_OK);
  hs_value_t *mp = NULL;
  assert_int_equal(hs_msgpack_decode(f->buf.data, f->buf.len, NULL, &f->arena, &mp, &f->err),
                   HS_OK);
  assert_true(hs_value_equal(v, mp));
}

static void test_integers_beyond_int64(void **state) {
  fixture_t *f = *state;
  decode_fails(f, "9223372036854775808", NULL, HS_ELIMIT, "signed 64-bit integer");
  decode_fails(f, "{\"n\":\n -9223372036854775809}", NULL, HS_ELIMIT, "at line 2");
  decode_fails(f, "[1e999]", NULL, HS_ELIMIT, "at line 1");
}

static void test_malformed_text(void **state) {
  fixture_t *f = *state;
  decode_fails(f, "", NULL, HS_EINVAL, "empty");
  decode_fails(f, "{\"a\":\n  [1,,2]}", NULL, HS_EINVAL, "at line 2, column");
  decode_fails(f, "{\"a\": 1} x", NULL, HS_EINVAL, "at line 1");
  decode_fails(f, "{'a': 1}", NULL, HS_EINVAL, "at line 1");
  decode_fails(f, "[1, 2", NULL, HS_EINVAL, "at line 1");
  decode_fails(f, "\"tab\there\"", NULL, HS_EINVAL, "control character");
  decode_fails(f, "NaN", NULL, HS_EINVAL, NULL);
  decode_fails(f, "]]]", NULL, HS_EINVAL, NULL);
  decode_fails(f, "\"\\u12\"", NULL, HS_EINVAL, NULL);
  decode_fails(f, "\"abc", NULL, HS_EINVAL, NULL);
}

static void test_invalid_utf8_and_nul(void **state) {
  fixture_t *f = *state;
  decode_fails(f, "{\"a\": \"\xc3\x28\"}", NULL, HS_EINVAL, "at line 1");
  decode_fails(f, "[\"\xed\xa0\x80\"]", NULL, HS_EINVAL, "UTF-8");
  decode_fails(f, "[\"\xc0\x80\"]", NULL, HS_EINVAL, NULL);
  decode_fails(f, "{\"\xff\": 1}", NULL, HS_EINVAL, NULL);
  decode_fails(f, "[\"\\ud800\"]", NULL, HS_EINVAL, "at line 1"); /* lone surrogate */
  decode_fails(f, "[\"\\udc00\\ud800\"]", NULL, HS_EINVAL, NULL);
  decode_fails(f, "{\"a\":\n\"x\\u0000y\"}", NULL, HS_EINVAL, "at line 2, column 3");
  decode_fails(f, "{\"k\\u0000\": 1}", NULL, HS_EINVAL, "object key contains \\u0000");
  decode_fails_n(f, "[\"a\0b\"]", 7, NULL, HS_EINVAL, NULL); /* a raw NUL byte */
}

static void test_duplicate_keys(void **state) {
  fixture_t *f = *state;
  decode_fails(f, "{\"a\": 1,\n \"a\": 2}", NULL, HS_EINVAL, "at line 2");
  decode_fails(f, "{\"a\": 1, \"a\": 2}", NULL, HS_EINVAL, "duplicate");
  decode_fails(f, "[{\"x\": {\"id\": 1, \"id\": 1}}]", NULL, HS_EINVAL, "duplicate");
  decode_ok(f, "{\"a\": {\"a\": 1}, \"b\": {\"a\": 2}}", NULL);
}

/* Builds depth levels of open brackets around 1. */
static char *nested(unsigned depth, bool objects) {
  size_t cap = depth * 8 + 8;
  char *s = malloc(cap);
  size_t n = 0;
  for (unsigned i = 0; i < depth; i++) {
    n += (size_t)snprintf(s + n, cap - n, "%s", objects ? "{\"k\":" : "[");
  }
  s[n++] = '1';
  for (unsigned i = 0; i < depth; i++) {
    s[n++] = objects ? '}' : ']';
  }
  s[n] = 0;
  return s;
}

static void test_limit_depth(void **state) {
  fixture_t *f = *state;
  for (int objects = 0; objects <= 1; objects++) {
    char *ok = nested(16, objects), *over = nested(17, objects);
    decode_ok(f, ok, NULL);
    decode_fails(f, over, NULL, HS_ELIMIT, "17 levels deep is over the limit of 16 levels");
    decode_fails(f, over, NULL, HS_ELIMIT, objects ? "column 81" : "column 17");
    free(ok);
    free(over);
  }
  hs_codec_limits_t lim = hs_codec_default_limits;
  lim.max_depth = 0;
  decode_ok(f, "\"scalar\"", &lim);
  decode_fails(f, "[]", &lim, HS_ELIMIT, "limit of 0 levels");
  /* Past jansson's own cap of 2048 the answer is still a clean limit error. */
  lim.max_depth = UINT32_MAX;
  char *deep = nested(5000, false);
  decode_fails(f, deep, &lim, HS_ELIMIT, "2049 levels");
  free(deep);
}

static char *array_text(size_t n) {
  char *s = malloc(n * 2 + 3);
  size_t k = 0;
  s[k++] = '[';
  for (size_t i = 0; i < n; i++) {
    if (i > 0) {
      s[k++] = ',';
    }
    s[k++] = '0';
  }
  s[k++] = ']';
  s[k] = 0;
  return s;
}

static char *object_text(size_t n) {
  char *s = malloc(n * 16 + 3);
  size_t k = 0;
  s[k++] = '{';
  for (size_t i = 0; i < n; i++) {
    k += (size_t)sprintf(s + k, "%s\"k%zu\":%zu", i > 0 ? "," : "", i, i);
  }
  s[k++] = '}';
  s[k] = 0;
  return s;
}

static void test_limit_count_and_items(void **state) {
  fixture_t *f = *state;
  char *a4096 = array_text(4096), *a4097 = array_text(4097);
  assert_int_equal(decode_ok(f, a4096, NULL)->as.arr.len, 4096);
  decode_fails(f, a4097, NULL, HS_ELIMIT, "an array has more than 4096 elements");
  free(a4096);
  free(a4097);
  hs_codec_limits_t lim = hs_codec_default_limits;
  lim.max_count = 10;
  char *o10 = object_text(10), *o11 = object_text(11);
  decode_ok(f, o10, &lim);
  decode_fails(f, o11, &lim, HS_ELIMIT, "an object has more than 10 members");
  free(o10);
  free(o11);
  /* Commas and colons inside strings are text, not structure. */
  decode_ok(f, "[\"a,b,c,d,e,f,g,h,i,j,k,l\", \"x:y\", \"[{\"]", &lim);
  decode_ok(f, "{\"a,b,c,d,e,f,g,h,i,j,k\": \"::::::::::::\", \"\\\"\": 1}", &lim);

  /* [[0,0],[0,0]] holds 1 + 2 + 4 = 7 values; {"a":[0]} holds 3. */
  lim = hs_codec_default_limits;
  lim.max_items = 7;
  decode_ok(f, "[[0,0],[0,0]]", &lim);
  lim.max_items = 6;
  decode_fails(f, "[[0,0],[0,0]]", &lim, HS_ELIMIT, "more than 6 values");
  lim.max_items = 3;
  decode_ok(f, "{\"a\":[0]}", &lim);
  lim.max_items = 2;
  decode_fails(f, "{\"a\":[0]}", &lim, HS_ELIMIT, "more than 2 values");
}

static void test_limit_string_length(void **state) {
  fixture_t *f = *state;
  hs_codec_limits_t lim = hs_codec_default_limits;
  lim.max_str_len = 6;
  decode_ok(f, "\"abcdef\"", &lim);
  decode_fails(f, "\"abcdefg\"", &lim, HS_ELIMIT, "string of 7 bytes is over the limit of 6");
  /* The limit counts decoded bytes: three é are six bytes whether escaped or not. */
  decode_ok(f, "\"\\u00e9\\u00e9\\u00e9\"", &lim);
  decode_ok(f, "\"\xc3\xa9\xc3\xa9\xc3\xa9\"", &lim);
  decode_fails(f, "\"\\u00e9\\u00e9\\u00e9!\"", &lim, HS_ELIMIT, "7 bytes");
  decode_ok(f, "\"\\ud83c\\udf7a\\n\\t\"", &lim); /* 4 + 1 + 1 */
  decode_fails(f, "{\"abcdefg\": 1}", &lim, HS_ELIMIT, "object key of 7 bytes");
  decode_ok(f, "{\"abcdef\": \"abcdef\"}", &lim);

  lim = hs_codec_default_limits;
  lim.max_bytes = 8;
  decode_ok(f, "\"abcdef\"", &lim);
  decode_fails(f, "\"abcdefg\"", &lim, HS_ELIMIT, "9 bytes, over the limit of 8 bytes");
}

static void test_a_huge_flat_array_is_refused_before_parsing(void **state) {
  fixture_t *f = *state;
  /* Half a million values in 1 MiB: refused by the scan, at the first element over the limit. */
  char *big = array_text(500000);
  decode_fails(f, big, NULL, HS_ELIMIT, "at line 1, column 8194");
  free(big);
}

static void test_truncated_at_every_length(void **state) {
  fixture_t *f = *state;
  const char *full =
      "{\"process\": \"solar-consult\", \"customer\": {\"name\": \"Ad\\u00e9\", "
      "\"age\": 36}, \"lat\": 51.5, \"ok\": true, \"ref\": null, \"tags\": [\"x\", []]}";
  size_t n = strlen(full);
  for (size_t k = 0; k < n; k++) {
    char *p = malloc(k == 0 ? 1 : k);
    memcpy(p, full, k);
    decode_fails_n(f, p, k, NULL, HS_EINVAL, k == 0 ? "empty" : "at line 1");
    free(p);
  }
  decode_ok(f, full, NULL);
}

static void test_decode_out_of_memory(void **state) {
  fixture_t *f = *state;
  char *text = array_text(3000);
  hs_arena_t tiny;
  hs_arena_init(&tiny, 4096);
  hs_value_t *v = NULL;
  assert_int_equal(hs_json_decode(text, strlen(text), NULL, &tiny, &v, &f->err), HS_ENOMEM);
  assert_null(v);
  hs_arena_reset(&tiny);
  free(text);
}

int main(void) {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_scalars),
      T(test_encoder_special_values),
      T(test_containers),
      T(test_integers_beyond_int64),
      T(test_malformed_text),
      T(test_invalid_utf8_and_nul),
      T(test_duplicate_keys),
      T(test_limit_depth),
      T(test_limit_count_and_items),
      T(test_limit_string_length),
      T(test_a_huge_flat_array_is_refused_before_parsing),
      T(test_truncated_at_every_length),
      T(test_decode_out_of_memory),
  };
#undef T
  return cmocka_run_group_tests(tests, NULL, NULL);
}
