/* The string-keyed hash map: puts, gets, replaces, deletes with tombstones, growth, iteration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/strmap.h"

static void test_put_get_replace_delete(void **state) {
  hs_strmap_t m;
  hs_strmap_init(&m);
  int a = 1, b = 2;
  assert_null(hs_strmap_get(&m, "x"));
  assert_int_equal(hs_strmap_put(&m, "x", &a), 0);
  assert_ptr_equal(hs_strmap_get(&m, "x"), &a);
  assert_int_equal(hs_strmap_put(&m, "x", &b), 0);
  assert_ptr_equal(hs_strmap_get(&m, "x"), &b);
  assert_int_equal(m.len, 1);
  assert_ptr_equal(hs_strmap_del(&m, "x"), &b);
  assert_null(hs_strmap_get(&m, "x"));
  assert_null(hs_strmap_del(&m, "x"));
  assert_int_equal(m.len, 0);
  hs_strmap_free(&m);
}

static void test_many_keys_with_churn(void **state) {
  hs_strmap_t m;
  hs_strmap_init(&m);
  static int vals[5000];
  char key[32];
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 5000; i++) {
      snprintf(key, sizeof key, "session-%d", i);
      vals[i] = i;
      assert_int_equal(hs_strmap_put(&m, key, &vals[i]), 0);
    }
    assert_int_equal(m.len, 5000);
    /* Delete the odd ones: lookups of the even ones must still probe past the tombstones. */
    for (int i = 1; i < 5000; i += 2) {
      snprintf(key, sizeof key, "session-%d", i);
      assert_ptr_equal(hs_strmap_del(&m, key), &vals[i]);
    }
    for (int i = 0; i < 5000; i++) {
      snprintf(key, sizeof key, "session-%d", i);
      if (i % 2 == 0) {
        assert_ptr_equal(hs_strmap_get(&m, key), &vals[i]);
      } else {
        assert_null(hs_strmap_get(&m, key));
      }
    }
    size_t seen = 0, it = 0;
    const char *k;
    void *v;
    while (hs_strmap_next(&m, &it, &k, &v)) {
      assert_int_equal(*(int *)v % 2, 0);
      seen++;
    }
    assert_int_equal(seen, 2500);
  }
  /* Churn must not grow the table without bound: tombstones are reclaimed on growth. */
  assert_true(m.cap <= 16384);
  hs_strmap_free(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_put_get_replace_delete),
      cmocka_unit_test(test_many_keys_with_churn),
  };
  return cmocka_run_group_tests_name("core/map", tests, NULL, NULL);
}
