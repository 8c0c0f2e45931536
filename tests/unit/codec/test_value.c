/* The value model: builders, lookup, equality, names and the default limits. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "codec/value.h"
#include "core/error.h"

static int setup(void **state) {
  hs_arena_t *a = test_malloc(sizeof *a);
  hs_arena_init(a, 0);
  *state = a;
  return 0;
}

static int teardown(void **state) {
  hs_arena_reset(*state);
  test_free(*state);
  return 0;
}

static void test_scalar_builders(void **state) {
  hs_arena_t *a = *state;
  char src[] = "hello";
  hs_value_t *s = hs_value_new_str(a, src, 3);
  assert_non_null(s);
  assert_int_equal(s->type, HS_V_STR);
  assert_int_equal(s->as.str.len, 3);
  assert_string_equal(s->as.str.ptr, "hel"); /* NUL-terminated copy */
  src[0] = 'j';
  assert_int_equal(s->as.str.ptr[0], 'h'); /* copied, not borrowed */

  hs_value_t *c = hs_value_new_cstr(a, "");
  assert_non_null(c);
  assert_int_equal(c->as.str.len, 0);
  assert_string_equal(c->as.str.ptr, "");

  hs_value_t *empty = hs_value_new(a, HS_V_STR);
  assert_non_null(empty->as.str.ptr);

  assert_int_equal(hs_value_new_int(a, INT64_MIN)->as.i, INT64_MIN);
  assert_true(hs_value_new_bool(a, true)->as.b);
  assert_true(hs_value_new_float(a, 2.5)->as.f == 2.5);

  hs_value_t *u = hs_value_new_uint(a, 7);
  assert_int_equal(u->type, HS_V_INT);
  assert_int_equal(u->as.i, 7);
  u = hs_value_new_uint(a, (uint64_t)INT64_MAX);
  assert_int_equal(u->type, HS_V_INT);
  u = hs_value_new_uint(a, (uint64_t)INT64_MAX + 1);
  assert_int_equal(u->type, HS_V_UINT);
  assert_true(u->as.u == (uint64_t)INT64_MAX + 1);

  const uint8_t bytes[] = {0, 1, 0xff};
  hs_value_t *b = hs_value_new_bin(a, bytes, sizeof bytes);
  assert_int_equal(b->type, HS_V_BIN);
  assert_int_equal(b->as.str.len, 3);
  assert_memory_equal(b->as.str.ptr, bytes, 3);
  hs_value_t *b0 = hs_value_new_bin(a, NULL, 0);
  assert_int_equal(b0->type, HS_V_BIN);
  assert_int_equal(b0->as.str.len, 0);
}

static void test_map_building_and_lookup(void **state) {
  hs_arena_t *a = *state;
  hs_value_t *m = hs_value_new_map(a, 1);
  assert_int_equal(hs_map_add_str(a, m, "name", "Ada"), HS_OK);
  assert_int_equal(hs_map_add_int(a, m, "age", 36), HS_OK);
  assert_int_equal(hs_map_add_bool(a, m, "ok", true), HS_OK);
  assert_int_equal(hs_map_add_nil(a, m, "none"), HS_OK);
  assert_int_equal(hs_map_add_float(a, m, "score", 0.25), HS_OK);
  hs_value_t *inner = hs_map_add_map(a, m, "inner");
  assert_non_null(inner);
  assert_int_equal(hs_map_add_int(a, inner, "x", 1), HS_OK);
  hs_value_t *list = hs_map_add_array(a, m, "list");
  assert_non_null(list);
  for (int i = 0; i < 100; i++) {
    hs_value_t v = {.type = HS_V_INT, .as.i = i};
    assert_non_null(hs_array_push(a, list, &v));
  }

  assert_int_equal(m->as.map.len, 7);
  /* Members keep insertion order. */
  assert_string_equal(m->as.map.items[0].key, "name");
  assert_string_equal(m->as.map.items[6].key, "list");
  assert_string_equal(hs_map_get(m, "name")->as.str.ptr, "Ada");
  assert_int_equal(hs_map_get(m, "age")->as.i, 36);
  assert_int_equal(hs_map_get(m, "none")->type, HS_V_NIL);
  assert_true(hs_map_get(m, "score")->as.f == 0.25);
  /* The pointer returned by hs_map_add_map stays valid while the parent grows: members are
   * reached through the map, so look it up again. */
  assert_int_equal(hs_map_get(hs_map_get(m, "inner"), "x")->as.i, 1);
  const hs_value_t *l = hs_map_get(m, "list");
  assert_int_equal(l->as.arr.len, 100);
  assert_int_equal(l->as.arr.items[99].as.i, 99);
  assert_null(hs_map_get(m, "nam"));
  assert_null(hs_map_get(m, "names"));
  assert_null(hs_map_get(l, "name"));
  assert_null(hs_map_get(NULL, "name"));

  /* Adding to something that is not a map or array fails instead of corrupting it. */
  hs_value_t v = {.type = HS_V_NIL};
  assert_null(hs_map_add(a, list, "k", &v));
  assert_null(hs_array_push(a, m, &v));
}

static void test_builders_fail_when_the_arena_is_full(void **state) {
  (void)state;
  hs_arena_t small;
  hs_arena_init(&small, 512); /* smaller than one chunk: every allocation fails */
  assert_null(hs_value_new_int(&small, 1));
  assert_null(hs_value_new_cstr(&small, "x"));
  assert_null(hs_value_new_map(&small, 4));
  hs_arena_reset(&small);

  hs_arena_init(&small, 4096);
  hs_value_t *arr = hs_value_new_array(&small, 0);
  assert_non_null(arr);
  int rc = HS_OK;
  for (int i = 0; i < 10000 && rc == HS_OK; i++) {
    hs_value_t v = {.type = HS_V_INT, .as.i = i};
    rc = hs_array_push(&small, arr, &v) != NULL ? HS_OK : HS_ENOMEM;
  }
  assert_int_equal(rc, HS_ENOMEM);
  hs_value_t *m = hs_value_new_map(&small, 0);
  rc = HS_OK;
  for (int i = 0; i < 10000 && rc == HS_OK; i++) {
    rc = hs_map_add_int(&small, m == NULL ? arr : m, "k", i);
  }
  assert_int_equal(rc, HS_ENOMEM);
  hs_arena_reset(&small);
}

static hs_value_t *map_of(hs_arena_t *a, const char *k1, int64_t v1, const char *k2, int64_t v2) {
  hs_value_t *m = hs_value_new_map(a, 2);
  hs_map_add_int(a, m, k1, v1);
  hs_map_add_int(a, m, k2, v2);
  return m;
}

static void test_equality(void **state) {
  hs_arena_t *a = *state;
  /* Maps compare regardless of member order. */
  assert_true(hs_value_equal(map_of(a, "a", 1, "b", 2), map_of(a, "b", 2, "a", 1)));
  assert_false(hs_value_equal(map_of(a, "a", 1, "b", 2), map_of(a, "a", 1, "b", 3)));
  assert_false(hs_value_equal(map_of(a, "a", 1, "b", 2), map_of(a, "a", 1, "c", 2)));
  hs_value_t *one = hs_value_new_map(a, 1);
  hs_map_add_int(a, one, "a", 1);
  assert_false(hs_value_equal(one, map_of(a, "a", 1, "b", 2)));
  assert_false(hs_value_equal(map_of(a, "a", 1, "b", 2), one));

  /* Types are never mixed: integer 1 is not float 1.0, a string is not binary. */
  assert_false(hs_value_equal(hs_value_new_int(a, 1), hs_value_new_float(a, 1.0)));
  assert_false(hs_value_equal(hs_value_new_cstr(a, "x"), hs_value_new_bin(a, "x", 1)));
  assert_true(hs_value_equal(hs_value_new_bin(a, "x", 1), hs_value_new_bin(a, "x", 1)));
  assert_false(hs_value_equal(hs_value_new_cstr(a, "x"), hs_value_new_cstr(a, "xy")));
  assert_true(hs_value_equal(hs_value_new(a, HS_V_NIL), hs_value_new(a, HS_V_NIL)));
  assert_false(hs_value_equal(hs_value_new_bool(a, true), hs_value_new_bool(a, false)));
  assert_true(hs_value_equal(hs_value_new_uint(a, UINT64_MAX), hs_value_new_uint(a, UINT64_MAX)));
  assert_false(
      hs_value_equal(hs_value_new_uint(a, UINT64_MAX), hs_value_new_uint(a, UINT64_MAX - 1)));
  assert_false(hs_value_equal(hs_value_new_int(a, 1), NULL));

  /* A value equals itself even when it is NaN; 0.0 and -0.0 are the same number. */
  assert_true(hs_value_equal(hs_value_new_float(a, NAN), hs_value_new_float(a, NAN)));
  assert_true(hs_value_equal(hs_value_new_float(a, 0.0), hs_value_new_float(a, -0.0)));

  /* Arrays compare in order and deeply. */
  hs_value_t *x = hs_value_new_array(a, 0), *y = hs_value_new_array(a, 0);
  hs_array_push(a, x, map_of(a, "a", 1, "b", 2));
  hs_array_push(a, y, map_of(a, "b", 2, "a", 1));
  assert_true(hs_value_equal(x, y));
  hs_array_push(a, x, hs_value_new_int(a, 1));
  hs_array_push(a, x, hs_value_new_int(a, 2));
  hs_array_push(a, y, hs_value_new_int(a, 2));
  hs_array_push(a, y, hs_value_new_int(a, 1));
  assert_false(hs_value_equal(x, y));
}

static void test_type_names_and_default_limits(void **state) {
  (void)state;
  assert_string_equal(hs_vtype_name(HS_V_NIL), "nil");
  assert_string_equal(hs_vtype_name(HS_V_BOOL), "boolean");
  assert_string_equal(hs_vtype_name(HS_V_INT), "integer");
  assert_string_equal(hs_vtype_name(HS_V_FLOAT), "number");
  assert_string_equal(hs_vtype_name(HS_V_STR), "string");
  assert_string_equal(hs_vtype_name(HS_V_BIN), "binary");
  assert_string_equal(hs_vtype_name(HS_V_ARRAY), "array");
  assert_string_equal(hs_vtype_name(HS_V_MAP), "map");
  assert_string_equal(hs_vtype_name((hs_vtype_t)99), "unknown");

  assert_int_equal(hs_codec_default_limits.max_bytes, 1024 * 1024);
  assert_int_equal(hs_codec_default_limits.max_depth, 16);
  assert_int_equal(hs_codec_default_limits.max_count, 4096);
  assert_int_equal(hs_codec_default_limits.max_items, 65536);
  assert_int_equal(hs_codec_default_limits.max_str_len, 256 * 1024);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_scalar_builders, setup, teardown),
      cmocka_unit_test_setup_teardown(test_map_building_and_lookup, setup, teardown),
      cmocka_unit_test(test_builders_fail_when_the_arena_is_full),
      cmocka_unit_test_setup_teardown(test_equality, setup, teardown),
      cmocka_unit_test(test_type_names_and_default_limits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
