/* The public msgpack-test-suite (npm msgpack-test-suite 1.0.0, vendored in
 * tests/data/msgpack-test-suite/): every listed encoding of every case must decode to the
 * expected value, and our own encoding of it must decode back to the same value and be one of
 * the encodings the suite lists. Cases of types the value model refuses (timestamp, ext) must
 * fail with HS_EUNSUPPORTED. */
#include <jansson.h>
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

#ifndef HANDSEL_SOURCE_DIR
#define HANDSEL_SOURCE_DIR "."
#endif

typedef struct counts {
  int cases;
  int encodings;
  int unsupported;
  int failures;
} counts_t;

static json_t *load_suite(void) {
  const char *dir = getenv("HANDSEL_SOURCE_DIR");
  char path[4096];
  snprintf(path, sizeof path, "%s/tests/data/msgpack-test-suite/msgpack-test-suite.json",
           dir != NULL && dir[0] != '\0' ? dir : HANDSEL_SOURCE_DIR);
  json_error_t jerr;
  json_t *root = json_load_file(path, 0, &jerr);
  if (root == NULL) {
    fail_msg("cannot read %s: %s (line %d)", path, jerr.text, jerr.line);
  }
  return root;
}

/* "c4-01-ff" -> bytes; returns the length. */
static size_t parse_hex(const char *hex, uint8_t *out, size_t cap) {
  size_t n = 0;
  for (const char *p = hex; *p != '\0';) {
    if (*p == '-') {
      p++;
      continue;
    }
    unsigned v;
    assert_int_equal(sscanf(p, "%2x", &v), 1);
    assert_true(n < cap);
    out[n++] = (uint8_t)v;
    p += 2;
  }
  return n;
}

/* An expected number: as an integer when it is one, and as a double. */
typedef struct number {
  bool integral;
  bool negative;
  uint64_t magnitude;
  double d;
} number_t;

static number_t number_from_json(const json_t *j) {
  number_t n = {0};
  if (json_is_integer(j)) {
    json_int_t i = json_integer_value(j);
    n.integral = true;
    n.negative = i < 0;
    n.magnitude = i < 0 ? (uint64_t)0 - (uint64_t)i : (uint64_t)i;
    n.d = (double)i;
  } else {
    n.d = json_real_value(j);
    n.integral = n.d == floor(n.d) && fabs(n.d) < 9e15;
    n.negative = n.d < 0;
    n.magnitude = (uint64_t)fabs(n.d);
  }
  return n;
}

static number_t number_from_bignum(const char *s) {
  number_t n = {.integral = true};
  n.negative = s[0] == '-';
  n.magnitude = strtoull(n.negative ? s + 1 : s, NULL, 10);
  n.d = n.negative ? -(double)n.magnitude : (double)n.magnitude;
  return n;
}

static bool number_matches(const number_t *n, const hs_value_t *v) {
  switch (v->type) {
    case HS_V_INT:
      if (!n->integral) {
        return false;
      }
      if (v->as.i < 0) {
        return n->negative && n->magnitude == (uint64_t)0 - (uint64_t)v->as.i;
      }
      return (!n->negative || n->magnitude == 0) && n->magnitude == (uint64_t)v->as.i;
    case HS_V_UINT:
      return n->integral && !n->negative && n->magnitude == v->as.u;
    case HS_V_FLOAT:
      return v->as.f == n->d;
    default:
      return false;
  }
}

static const char *type_key(json_t *c) {
  static const char *keys[] = {"bignum", "nil",   "bool", "binary",    "number",
                               "string", "array", "map",  "timestamp", "ext"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    if (json_object_get(c, keys[i]) != NULL) {
      return keys[i];
    }
  }
  return NULL;
}

/* The expected value of a non-numeric supported case, built in the arena. */
static hs_value_t *expected_value(hs_arena_t *a, const char *type, json_t *x) {
  if (strcmp(type, "nil") == 0) {
    return hs_value_new(a, HS_V_NIL);
  }
  if (strcmp(type, "bool") == 0) {
    return hs_value_new_bool(a, json_is_true(x));
  }
  if (strcmp(type, "binary") == 0) {
    uint8_t bytes[256];
    size_t n = parse_hex(json_string_value(x), bytes, sizeof bytes);
    return hs_value_new_bin(a, bytes, n);
  }
  if (strcmp(type, "string") == 0) {
    return hs_value_new_str(a, json_string_value(x), json_string_length(x));
  }
  /* array and map: written as JSON in the suite, so our JSON decoder builds the value. */
  char *text = json_dumps(x, JSON_ENCODE_ANY | JSON_COMPACT);
  hs_value_t *v = NULL;
  hs_err_t err;
  int rc = hs_json_decode(text, strlen(text), NULL, a, &v, &err);
  free(text);
  if (rc != HS_OK) {
    fail_msg("cannot build the expected value: %s", err.msg);
  }
  return v;
}

static void hex_of(const uint8_t *p, size_t n, char *out, size_t cap) {
  size_t k = 0;
  for (size_t i = 0; i < n && k + 4 < cap; i++) {
    k += (size_t)snprintf(out + k, cap - k, "%s%02x", i > 0 ? "-" : "", p[i]);
  }
  out[k] = '\0';
}

static void run_case(const char *group, size_t index, json_t *c, counts_t *counts) {
  const char *type = type_key(c);
  json_t *encodings = json_object_get(c, "msgpack");
  if (type == NULL || !json_is_array(encodings)) {
    print_error("%s case %zu: unknown case shape\n", group, index);
    counts->failures++;
    return;
  }
  bool unsupported = strcmp(type, "timestamp") == 0 || strcmp(type, "ext") == 0;
  bool numeric = strcmp(type, "number") == 0 || strcmp(type, "bignum") == 0;
  json_t *x = json_object_get(c, type);
  number_t num = {0};
  if (numeric) {
    num = strcmp(type, "bignum") == 0 ? number_from_bignum(json_string_value(x))
                                      : number_from_json(x);
  }
  hs_arena_t arena;
  hs_arena_init(&arena, 0);
  hs_value_t *want = numeric || unsupported ? NULL : expected_value(&arena, type, x);
  int failures = counts->failures;
  size_t i;
  json_t *hexj;
  json_array_foreach(encodings, i, hexj) {
    const char *hex = json_string_value(hexj);
    uint8_t bytes[256];
    size_t n = parse_hex(hex, bytes, sizeof bytes);
    hs_value_t *v = NULL;
    hs_err_t err;
    hs_err_clear(&err);
    int rc = hs_msgpack_decode(bytes, n, NULL, &arena, &v, &err);
    counts->encodings++;
    if (unsupported) {
      if (rc != HS_EUNSUPPORTED || strstr(err.msg, "at byte 0") == NULL) {
        print_error("%s case %zu (%s): expected HS_EUNSUPPORTED at byte 0, got %d: %s\n", group,
                    index, hex, rc, err.msg);
        counts->failures++;
      }
      continue;
    }
    if (rc != HS_OK) {
      print_error("%s case %zu (%s): decode failed (%d): %s\n", group, index, hex, rc, err.msg);
      counts->failures++;
      continue;
    }
    bool ok = numeric ? number_matches(&num, v) : hs_value_equal(want, v);
    if (!ok) {
      print_error("%s case %zu (%s): decoded a %s that differs from the expected value\n", group,
                  index, hex, hs_vtype_name(v->type));
      counts->failures++;
      continue;
    }
    /* Our encoding decodes back to the same value and is one the suite lists. */
    hs_buf_t out;
    hs_buf_init(&out, 0);
    hs_value_t *back = NULL;
    if (hs_msgpack_encode(v, &out) != HS_OK ||
        hs_msgpack_decode(out.data, out.len, NULL, &arena, &back, &err) != HS_OK ||
        !hs_value_equal(v, back) || back->type != v->type) {
      print_error("%s case %zu (%s): our encoding does not decode back to the same value\n", group,
                  index, hex);
      counts->failures++;
    } else {
      char ours[600];
      hex_of(out.data, out.len, ours, sizeof ours);
      bool listed = false;
      size_t k;
      json_t *other;
      json_array_foreach(encodings, k, other) {
        listed = listed || strcmp(json_string_value(other), ours) == 0;
      }
      if (!listed) {
        print_error("%s case %zu: our encoding %s is not among the suite's encodings\n", group,
                    index, ours);
        counts->failures++;
      }
    }
    hs_buf_free(&out);
  }
  if (counts->failures == failures) {
    counts->cases++;
    counts->unsupported += unsupported;
  }
  hs_arena_reset(&arena);
}

static void test_every_case_of_the_suite(void **state) {
  (void)state;
  json_t *root = load_suite();
  counts_t counts = {0};
  int total_cases = 0;
  const char *group;
  json_t *cases;
  json_object_foreach(root, group, cases) {
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
      total_cases++;
      run_case(group, i, c, &counts);
    }
  }
  json_decref(root);
  printf("msgpack-test-suite 1.0.0: %d of %d cases passed (%d encodings decoded; %d cases of "
         "unsupported types refused as expected)\n",
         counts.cases, total_cases, counts.encodings, counts.unsupported);
  assert_int_equal(counts.failures, 0);
  assert_int_equal(counts.cases, total_cases);
  /* The 1.0.0 data set: 85 cases, 233 encodings. A smaller number means the file was cut. */
  assert_true(total_cases >= 85);
  assert_true(counts.encodings >= 233);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_case_of_the_suite),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
