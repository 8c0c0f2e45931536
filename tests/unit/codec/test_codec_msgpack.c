/* msgpack decoding and encoding: every type, every limit, hostile and broken input. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

static hs_value_t *decode_ok(fixture_t *f, const uint8_t *p, size_t n,
                             const hs_codec_limits_t *lim) {
  hs_value_t *v = NULL;
  int rc = hs_msgpack_decode(p, n, lim, &f->arena, &v, &f->err);
  if (rc != HS_OK) {
    fail_msg("decode failed (%d): %s", rc, f->err.msg);
  }
  assert_non_null(v);
  return v;
}

/* Expects the decode to fail with code and a message containing needle (if not NULL). */
static void decode_fails(fixture_t *f, const uint8_t *p, size_t n, const hs_codec_limits_t *lim,
                         int code, const char *needle) {
  hs_value_t *sentinel = (hs_value_t *)&f->buf; /* any non-NULL pointer: must stay untouched */
  hs_value_t *v = sentinel;
  hs_err_clear(&f->err);
  int rc = hs_msgpack_decode(p, n, lim, &f->arena, &v, &f->err);
  if (rc != code) {
    fail_msg("expected code %d, got %d (%s)", code, rc, f->err.msg);
  }
  assert_int_equal(f->err.code, code);
  assert_ptr_equal(v, sentinel);
  if (needle != NULL && strstr(f->err.msg, needle) == NULL) {
    fail_msg("error \"%s\" does not mention \"%s\"", f->err.msg, needle);
  }
}

/* Encodes v, checks the exact bytes when expected is given, decodes and compares. */
static void round_trip(fixture_t *f, const hs_value_t *v, const char *expected_hex) {
  f->buf.len = 0;
  assert_int_equal(hs_msgpack_encode(v, &f->buf), HS_OK);
  if (expected_hex != NULL) {
    char hex[256] = "";
    for (size_t i = 0; i < f->buf.len && i < 100; i++) {
      snprintf(hex + 2 * i, 3, "%02x", f->buf.data[i]);
    }
    if (strcmp(hex, expected_hex) != 0) {
      fail_msg("encoded %s, expected %s", hex, expected_hex);
    }
  }
  hs_codec_limits_t lim = hs_codec_default_limits;
  lim.max_bytes = lim.max_str_len = 1 << 24;
  lim.max_count = lim.max_items = 1 << 20;
  hs_value_t *back = decode_ok(f, f->buf.data, f->buf.len, &lim);
  assert_true(hs_value_equal(v, back));
  assert_int_equal(back->type, v->type);
}

static void test_scalars_round_trip_in_their_smallest_encoding(void **state) {
  fixture_t *f = *state;
  hs_arena_t *a = &f->arena;
  round_trip(f, hs_value_new(a, HS_V_NIL), "c0");
  round_trip(f, hs_value_new_bool(a, false), "c2");
  round_trip(f, hs_value_new_bool(a, true), "c3");
  static const struct {
    int64_t i;
    const char *hex;
  } ints[] = {
      {0, "00"},
      {1, "01"},
      {127, "7f"},
      {128, "cc80"},
      {255, "ccff"},
      {256, "cd0100"},
      {65535, "cdffff"},
      {65536, "ce00010000"},
      {4294967295LL, "ceffffffff"},
      {4294967296LL, "cf0000000100000000"},
      {INT64_MAX, "cf7fffffffffffffff"},
      {-1, "ff"},
      {-32, "e0"},
      {-33, "d0df"},
      {-128, "d080"},
      {-129, "d1ff7f"},
      {-32768, "d18000"},
      {-32769, "d2ffff7fff"},
      {INT32_MIN, "d280000000"},
      {(int64_t)INT32_MIN - 1, "d3ffffffff7fffffff"},
      {INT64_MIN, "d38000000000000000"},
  };
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
    round_trip(f, hs_value_new_int(a, ints[i].i), ints[i].hex);
  }
  hs_value_t *big = hs_value_new_uint(a, UINT64_MAX);
  round_trip(f, big, "cfffffffffffffffff");
  hs_value_t *just_over = hs_value_new_uint(a, (uint64_t)INT64_MAX + 1);
  round_trip(f, just_over, "cf8000000000000000");

  round_trip(f, hs_value_new_float(a, 0.5), "cb3fe0000000000000");
  round_trip(f, hs_value_new_float(a, -0.0), "cb8000000000000000");
  round_trip(f, hs_value_new_float(a, 1e300), NULL);
  round_trip(f, hs_value_new_float(a, 5e-324), NULL);
  round_trip(f, hs_value_new_float(a, INFINITY), "cb7ff0000000000000");
  round_trip(f, hs_value_new_float(a, NAN), NULL);

  /* float32 on the wire widens to a double. */
  const uint8_t f32[] = {0xca, 0x3f, 0xc0, 0x00, 0x00};
  hs_value_t *v = decode_ok(f, f32, sizeof f32, NULL);
  assert_int_equal(v->type, HS_V_FLOAT);
  assert_true(v->as.f == 1.5);
  /* Any integer encoding of a value that fits int64 decodes as HS_V_INT. */
  const uint8_t u64_one[] = {0xcf, 0, 0, 0, 0, 0, 0, 0, 1};
  v = decode_ok(f, u64_one, sizeof u64_one, NULL);
  assert_int_equal(v->type, HS_V_INT);
  assert_int_equal(v->as.i, 1);
  const uint8_t u64_big[] = {0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe};
  v = decode_ok(f, u64_big, sizeof u64_big, NULL);
  assert_int_equal(v->type, HS_V_UINT);
  assert_true(v->as.u == UINT64_MAX - 1);
}

static hs_value_t *str_of(hs_arena_t *a, size_t n, char c) {
  char *s = malloc(n + 1);
  memset(s, c, n);
  hs_value_t *v = hs_value_new_str(a, s, n);
  free(s);
  return v;
}

static void test_strings_and_binary_round_trip(void **state) {
  fixture_t *f = *state;
  hs_arena_t *a = &f->arena;
  round_trip(f, hs_value_new_cstr(a, ""), "a0");
  round_trip(f, hs_value_new_cstr(a, "a"), "a161");
  round_trip(f, hs_value_new_cstr(a, "\xc3\xa9"), "a2c3a9");
  const size_t lens[] = {31, 32, 255, 256, 65535, 65536, 300000};
  const uint8_t heads[] = {0xbf, 0xd9, 0xd9, 0xda, 0xda, 0xdb, 0xdb};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    round_trip(f, str_of(a, lens[i], 'x'), NULL);
    assert_int_equal(f->buf.data[0], heads[i]);
  }
  round_trip(f, hs_value_new_bin(a, NULL, 0), "c400");
  round_trip(f, hs_value_new_bin(a, "\x00\xff", 2), "c40200ff");
  const size_t blens[] = {255, 256, 65535, 65536};
  const uint8_t bheads[] = {0xc4, 0xc5, 0xc5, 0xc6};
  for (size_t i = 0; i < sizeof blens / sizeof blens[0]; i++) {
    hs_value_t *b = str_of(a, blens[i], '\0');
    b->type = HS_V_BIN;
    round_trip(f, b, NULL);
    assert_int_equal(f->buf.data[0], bheads[i]);
  }
}

static hs_value_t *array_of_ints(hs_arena_t *a, size_t n) {
  hs_value_t *arr = hs_value_new_array(a, n);
  for (size_t i = 0; i < n; i++) {
    hs_value_t v = {.type = HS_V_INT, .as.i = (int64_t)i};
    hs_array_push(a, arr, &v);
  }
  return arr;
}

static hs_value_t *map_of_ints(hs_arena_t *a, size_t n) {
  hs_value_t *m = hs_value_new_map(a, n);
  for (size_t i = 0; i < n; i++) {
    char key[32];
    snprintf(key, sizeof key, "k%zu", i);
    hs_map_add_int(a, m, key, (int64_t)i);
  }
  return m;
}

static void test_containers_round_trip(void **state) {
  fixture_t *f = *state;
  hs_arena_t *a = &f->arena;
  round_trip(f, array_of_ints(a, 0), "90");
  round_trip(f, array_of_ints(a, 2), "920001");
  round_trip(f, map_of_ints(a, 0), "80");
  round_trip(f, map_of_ints(a, 1), "81a26b3000");
  const size_t counts[] = {15, 16, 65535, 65536};
  const uint8_t aheads[] = {0x9f, 0xdc, 0xdc, 0xdd};
  const uint8_t mheads[] = {0x8f, 0xde, 0xde, 0xdf};
  for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
    round_trip(f, array_of_ints(a, counts[i]), NULL);
    assert_int_equal(f->buf.data[0], aheads[i]);
    round_trip(f, map_of_ints(a, counts[i]), NULL);
    assert_int_equal(f->buf.data[0], mheads[i]);
  }
  /* A nested document of every type, members kept in order. */
  hs_value_t *doc = hs_value_new_map(a, 0);
  hs_map_add_str(a, doc, "s", "text");
  hs_map_add_int(a, doc, "i", -5);
  hs_map_add_float(a, doc, "f", 2.25);
  hs_map_add_bool(a, doc, "b", true);
  hs_map_add_nil(a, doc, "n");
  hs_value_t bin = {.type = HS_V_BIN, .as.str = {"\x01\x02", 2}};
  hs_map_add(a, doc, "bin", &bin);
  hs_value_t *list = hs_map_add_array(a, doc, "list");
  hs_array_push(a, list, map_of_ints(a, 3));
  round_trip(f, doc, NULL);
  hs_value_t *back = decode_ok(f, f->buf.data, f->buf.len, NULL);
  assert_string_equal(back->as.map.items[0].key, "s");
  assert_string_equal(back->as.map.items[6].key, "list");
  assert_int_equal(hs_map_get(back, "list")->as.arr.items[0].as.map.len, 3);
}

/* Encodes v with generous limits, for limit tests that then decode with tight ones. */
static void encode(fixture_t *f, const hs_value_t *v) {
  f->buf.len = 0;
  assert_int_equal(hs_msgpack_encode(v, &f->buf), HS_OK);
}

static hs_value_t *nested(hs_arena_t *a, unsigned depth, bool maps) {
  hs_value_t *v = hs_value_new_int(a, 1);
  for (unsigned i = 0; i < depth; i++) {
    hs_value_t *c = maps ? hs_value_new_map(a, 1) : hs_value_new_array(a, 1);
    if (maps) {
      hs_map_add(a, c, "k", v);
    } else {
      hs_array_push(a, c, v);
    }
    v = c;
  }
  return v;
}

static void test_limit_max_bytes(void **state) {
  fixture_t *f = *state;
  encode(f, str_of(&f->arena, 100, 'x'));
  hs_codec_limits_t lim = hs_codec_default_limits;
  lim.max_bytes = f->buf.len;
  decode_ok(f, f->buf.data, f->buf.len, &lim);
  lim.max_bytes = f->buf.len - 1;
  decode_fails(f, f->buf.data, f->buf.len, &lim, HS_ELIMIT, "102 bytes, over the limit of 101");
}

static void test_limit_max_depth(void **state) {
  fixture_t *f = *state;
  hs_codec_limits_t lim = hs_codec_default_limits;
  for (int maps = 0; maps <= 1; maps++) {
    encode(f, nested(&f->arena, 16, maps));
    decode_ok(f, f->buf.data, f->buf.len, &lim);
    encode(f, nested(&f->arena, 17, maps));
    decode_fails(f, f->buf.data, f->buf.len, &lim, HS_ELIMIT, "17 levels deep");
  }
  /* An empty container still counts as a level. */
  hs_value_t *deep = nested(&f->arena, 16, false);
  hs_value_t *leaf = deep;
  while (leaf->as.arr.items[0].type == HS_V_ARRAY) {
    leaf = &leaf->as.arr.items[0];
  }
  leaf->as.arr.items[0] = (hs_value_t){.type = HS_V_ARRAY};
  encode(f, deep);
  decode_fails(f, f->buf.data, f->buf.len, &lim, HS_ELIMIT, "at byte 16:");
  /* A scalar alone is depth 0. */
  lim.max_depth = 0;
  decode_ok(f, (const uint8_t *)"\x01", 1, &lim);
  decode_fails(f, (const uint8_t *)"\x90", 1, &lim, HS_ELIMIT, "over the limit of 0 levels");
  /* msgpack-c cannot go past 32 levels, so a larger limit is capped there, cleanly. */
  lim.max_depth = 1000;
  encode(f, nested(&f->arena, 32, false));
  decode_ok(f, f->buf.data, f->buf.len, &lim);
  encode(f, nested(&f->arena, 33, false));
  decode_fails(f, f->buf.data, f->buf.len, &lim, HS_ELIMIT, "limit of 32 levels");
}

static void test_limit_max_count(void **state) {
  fixture_t *f = *state;
  hs_codec_limits_t lim = hs_codec_default_limits;
  lim.max_count = 20;
  encode(f, array_of_ints(&f->arena, 20));
  decode_ok(f, f->buf.data, f->buf.len, &lim);
  encode(f, array_of_ints(&f->arena, 21));
  decode_fails(f, f->buf.data, f->buf.len, &lim, HS_ELIMIT,
               "at byte 0: array of 21 elements is over the limit of 20 elements");
  encode(f, map_of_ints(&f->arena, 20));
  decode_ok(f, f->buf.data, f->buf.len, &lim);
  encode(f, map_of_ints(&f->arena, 21));
  decode_fails(f, f->buf.data, f->buf.len, &lim, HS_ELIMIT, "map of 21 members");
  /* The defaults: 4096 passes, 4097 does not. */
  encode(f, array_of_ints(&f->arena, 4096));
  decode_ok(f, f->buf.data, f->buf.len, NULL);
  encode(f, array_of_ints(&f->arena, 4097));
  decode_fails(f, f->buf.data, f->buf.len, NULL, HS_ELIMIT, "4097 elements");
}

static void test_limit_max_items(void **state) {
  fixture_t *f = *state;
  hs_codec_limits_t lim = hs_codec_default_limits;
  /* [[0..9],[0..9],[0..9]] holds 1 + 3 + 30 = 34 values. */
  hs_value_t *outer = hs_value_new_array(&f->arena, 3);
  for (int i = 0; i < 3; i++) {
    hs_array_push(&f->arena, outer, array_of_ints(&f->arena, 10));
  }
  encode(f, outer);
  lim.max_items = 34;
  decode_ok(f, f->buf.data, f->buf.len, &lim);
  lim.max_items = 33;
  decode_fails(f, f->buf.data, f->buf.len, &lim, HS_ELIMIT, "more than 33 values");
  /* Map members count once each, key and value together. */
  encode(f, map_of_ints(&f->arena, 5));
  lim.max_items = 6;
  decode_ok(f, f->buf.data, f->buf.len, &lim);
  lim.max_items = 5;
  decode_fails(f, f->buf.data, f->buf.len, &lim, HS_ELIMIT, "more than 5 values");
}

static void test_limit_max_str_len(void **state) {
  fixture_t *f = *state;
  hs_codec_limits_t lim = hs_codec_default_limits;
  lim.max_str_len = 40;
  encode(f, str_of(&f->arena, 40, 'y'));
  decode_ok(f, f->buf.data, f->buf.len, &lim);
  encode(f, str_of(&f->arena, 41, 'y'));
  decode_fails(f, f->buf.data, f->buf.len, &lim, HS_ELIMIT,
               "at byte 0: string of 41 bytes is over the limit of 40 bytes");
  hs_value_t *b = str_of(&f->arena, 41, 0);
  b->type = HS_V_BIN;
  encode(f, b);
  decode_fails(f, f->buf.data, f->buf.len, &lim, HS_ELIMIT, "binary of 41 bytes");
  b->as.str.len = 40;
  encode(f, b);
  decode_ok(f, f->buf.data, f->buf.len, &lim);
  char key[42];
  memset(key, 'k', 41);
  key[41] = 0;
  hs_value_t *m = hs_value_new_map(&f->arena, 1);
  hs_map_add_int(&f->arena, m, key, 1);
  encode(f, m);
  decode_fails(f, f->buf.data, f->buf.len, &lim, HS_ELIMIT, "at byte 1: map key of 41 bytes");
  m->as.map.items[0].key_len = 40;
  encode(f, m);
  decode_ok(f, f->buf.data, f->buf.len, &lim);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void test_lying_counts_fail_fast_without_allocating(void **state) {
  fixture_t *f = *state;
  /* The five bytes that make bare msgpack-c reserve ~400 MB. Even with every limit wide open the
   * count is refused against the bytes present, before any allocation. */
  hs_codec_limits_t open = {SIZE_MAX, 32, UINT32_MAX, UINT32_MAX, SIZE_MAX};
  const uint8_t bomb[] = {0xdd, 0x00, 0xff, 0xff, 0xff};
  double t0 = now_ms();
  for (int i = 0; i < 1000; i++) {
    decode_fails(f, bomb, sizeof bomb, &open, HS_EINVAL,
                 "at byte 0: array of 16777215 elements, but only 0 bytes remain");
    decode_fails(f, bomb, sizeof bomb, NULL, HS_EINVAL, "only 0 bytes remain");
  }
  assert_true(now_ms() - t0 < 2000.0);
  assert_int_equal(f->arena.used, 0); /* nothing was allocated for the message */

  const uint8_t map_bomb[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 0x61};
  decode_fails(f, map_bomb, sizeof map_bomb, &open, HS_EINVAL,
               "map of 4294967295 members, but only 2 bytes remain");
  const uint8_t str_bomb[] = {0xdb, 0xff, 0xff, 0xff, 0xff, 'x'};
  decode_fails(f, str_bomb, sizeof str_bomb, &open, HS_EINVAL,
               "string of 4294967295 bytes, but only 1 byte remains");
  const uint8_t bin_bomb[] = {0xc6, 0x7f, 0xff, 0xff, 0xff};
  decode_fails(f, bin_bomb, sizeof bin_bomb, &open, HS_EINVAL, "binary of 2147483647 bytes");
  /* Nested: the inner array claims 65535 elements with two bytes left. */
  const uint8_t inner[] = {0x92, 0x01, 0xdc, 0xff, 0xff, 0x01, 0x02};
  decode_fails(f, inner, sizeof inner, &open, HS_EINVAL,
               "at byte 2: array of 65535 elements, but only 2 bytes remain");
  assert_int_equal(f->arena.used, 0);
}

/* A sample request with every type, used for truncation at every length. */
static hs_value_t *sample(hs_arena_t *a) {
  hs_value_t *m = hs_value_new_map(a, 0);
  hs_map_add_str(a, m, "process", "solar-consult");
  hs_value_t *c = hs_map_add_map(a, m, "customer");
  hs_map_add_str(a, c, "name",
                 "Ada L\xc3\xb6vel\xc3\xa2"
                 "ce");
  hs_map_add_int(a, c, "age", 36);
  hs_map_add_int(a, m, "big", 5000000000LL);
  hs_map_add_int(a, m, "neg", -40000);
  hs_map_add_float(a, m, "lat", 51.4778);
  hs_map_add_bool(a, m, "ok", true);
  hs_map_add_nil(a, m, "ref");
  hs_value_t bin = {.type = HS_V_BIN, .as.str = {"\x00\x01\x02", 3}};
  hs_map_add(a, m, "sig", &bin);
  hs_value_t *tags = hs_map_add_array(a, m, "tags");
  hs_array_push(a, tags, hs_value_new_cstr(a, "x"));
  hs_array_push(a, tags, hs_value_new_array(a, 0));
  return m;
}

static void test_truncated_at_every_length(void **state) {
  fixture_t *f = *state;
  encode(f, sample(&f->arena));
  size_t full = f->buf.len;
  uint8_t *copy = malloc(full);
  memcpy(copy, f->buf.data, full);
  for (size_t n = 0; n < full; n++) {
    /* A fresh heap copy of exactly n bytes, so ASan sees any read past the end. */
    uint8_t *p = malloc(n == 0 ? 1 : n);
    memcpy(p, copy, n);
    decode_fails(f, p, n, NULL, HS_EINVAL, n == 0 ? "empty" : "at byte");
    if (n > 0 && strstr(f->err.msg, "cut short") == NULL && strstr(f->err.msg, "remain") == NULL) {
      fail_msg("prefix of %zu bytes: \"%s\" does not say the message is cut short", n, f->err.msg);
    }
    /* As a stream frame the same prefix is "not yet complete". */
    hs_value_t *v = (hs_value_t *)copy;
    size_t used = 99;
    assert_int_equal(hs_msgpack_decode_next(p, n, NULL, &f->arena, &v, &used, &f->err), HS_OK);
    assert_null(v);
    assert_int_equal(used, 0);
    free(p);
  }
  decode_ok(f, copy, full, NULL);
  free(copy);
}

static void test_trailing_bytes_are_refused(void **state) {
  fixture_t *f = *state;
  const uint8_t two[] = {0x80, 0x80, 0x01};
  decode_fails(f, two, sizeof two, NULL, HS_EINVAL, "at byte 1: 2 unexpected bytes");
}

static void test_invalid_bytes(void **state) {
  fixture_t *f = *state;
  decode_fails(f, (const uint8_t *)"\xc1", 1, NULL, HS_EINVAL, "at byte 0: 0xc1");
  const uint8_t in_array[] = {0x92, 0x01, 0xc1};
  decode_fails(f, in_array, sizeof in_array, NULL, HS_EINVAL, "at byte 2: 0xc1");
  const uint8_t as_key[] = {0x81, 0xc1, 0x01};
  decode_fails(f, as_key, sizeof as_key, NULL, HS_EINVAL, "at byte 1: 0xc1");
}

static void test_invalid_utf8_is_refused(void **state) {
  fixture_t *f = *state;
  static const struct {
    const uint8_t bytes[8];
    size_t len;
    const char *needle;
  } cases[] = {
      {{0xa2, 0xc3, 0x28}, 3, "at byte 1: string is not valid UTF-8"},
      {{0xa2, 0xc0, 0x80}, 3, "at byte 1:"},                  /* overlong NUL */
      {{0xa4, 'a', 0xed, 0xa0, 0x80}, 5, "at byte 2:"},       /* surrogate */
      {{0xa4, 0xf4, 0x90, 0x80, 0x80}, 5, "not valid UTF-8"}, /* above U+10FFFF */
      {{0xa1, 0xff}, 2, "byte 0xff"},
      {{0x91, 0xa2, 'x', 0x80}, 4, "at byte 3:"},
      {{0x81, 0xa1, 0xfe, 0x01}, 4, "at byte 2: map key is not valid UTF-8"},
      {{0xa3, 'a', 0x00, 'b'}, 4, "at byte 2: string contains U+0000"},
      {{0x81, 0xa1, 0x00, 0x01}, 4, "map key contains U+0000"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    decode_fails(f, cases[i].bytes, cases[i].len, NULL, HS_EINVAL, cases[i].needle);
  }
  /* Binary may hold any bytes. */
  const uint8_t bin[] = {0xc4, 0x03, 0xff, 0x00, 0xc0};
  hs_value_t *v = decode_ok(f, bin, sizeof bin, NULL);
  assert_int_equal(v->type, HS_V_BIN);
  assert_int_equal(v->as.str.len, 3);
}

static void test_duplicate_keys_are_refused(void **state) {
  fixture_t *f = *state;
  const uint8_t small[] = {0x83, 0xa1, 'a', 0x01, 0xa1, 'b', 0x02, 0xa1, 'a', 0x03};
  decode_fails(f, small, sizeof small, NULL, HS_EINVAL, "at byte 8: the map repeats the key \"a\"");
  const uint8_t nested_dup[] = {0x91, 0x82, 0xa2, 'i', 'd', 0xc0, 0xa2, 'i', 'd', 0xc3};
  decode_fails(f, nested_dup, sizeof nested_dup, NULL, HS_EINVAL, "repeats the key \"id\"");
  /* A large map (sorted check) with the repeat at the very end. */
  hs_value_t *m = map_of_ints(&f->arena, 100);
  m->as.map.items[99].key = "k3";
  m->as.map.items[99].key_len = 2;
  encode(f, m);
  decode_fails(f, f->buf.data, f->buf.len, NULL, HS_EINVAL, "repeats the key \"k3\"");
  /* Keys that share a prefix are different keys. */
  const uint8_t prefix[] = {0x82, 0xa1, 'a', 0x01, 0xa2, 'a', 'a', 0x02};
  decode_ok(f, prefix, sizeof prefix, NULL);
}

static void test_ext_types_and_non_string_keys_are_unsupported(void **state) {
  fixture_t *f = *state;
  static const struct {
    const uint8_t bytes[12];
    size_t len;
    const char *needle;
  } cases[] = {
      {{0xd4, 0x01, 0x10}, 3, "at byte 0: msgpack extension type 1"},
      {{0xd5, 0x02, 0x20, 0x21}, 4, "extension type 2"},
      {{0xd6, 0xff, 0, 0, 0, 0}, 6, "timestamp extension"},
      {{0xd7, 0x04, 0, 0, 0, 0, 0, 0, 0, 0}, 10, "extension type 4"},
      {{0xd8, 0x05}, 2, "extension type 5"}, /* refused before its missing payload */
      {{0xc7, 0x00, 0x06}, 3, "extension type 6"},
      {{0xc8, 0x00, 0x01, 0x07, 0x70}, 5, "extension type 7"},
      {{0xc9, 0x00, 0x00, 0x00, 0x00, 0xf8}, 6, "extension type -8"},
      {{0x92, 0x01, 0xd4, 0x01, 0x10}, 5, "at byte 2: msgpack extension"},
      {{0x81, 0x01, 0x01}, 3, "at byte 1: map key is an integer"},
      {{0x81, 0xc0, 0x01}, 3, "map key is nil"},
      {{0x81, 0x90, 0x01}, 3, "map key is an array"},
      {{0x81, 0x80, 0x01}, 3, "map key is a map"},
      {{0x81, 0xc4, 0x01, 0x61, 0x01}, 5, "map key is binary"},
      {{0x81, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0x01}, 11, "map key is a float"},
      {{0x81, 0xc3, 0x01}, 3, "map key is a boolean"},
      {{0x81, 0xd4, 0x01, 0x10, 0x01}, 5, "map key is an extension type"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    decode_fails(f, cases[i].bytes, cases[i].len, NULL, HS_EUNSUPPORTED, cases[i].needle);
  }
}

static void test_stream_of_frames(void **state) {
  fixture_t *f = *state;
  hs_arena_t *a = &f->arena;
  const char *types[] = {"step", "suggestion", "ended"};
  for (int i = 0; i < 3; i++) {
    hs_value_t *m = hs_value_new_map(a, 2);
    hs_map_add_str(a, m, "type", types[i]);
    hs_map_add_int(a, m, "n", i);
    assert_int_equal(hs_codec_encode_frame(HS_FMT_MSGPACK, m, &f->buf), HS_OK);
  }
  /* Fed one byte at a time, as a socket might deliver it. */
  size_t have = 0, start = 0;
  int seen = 0;
  while (have < f->buf.len) {
    have++;
    hs_value_t *v = NULL;
    size_t used = 0;
    assert_int_equal(
        hs_msgpack_decode_next(f->buf.data + start, have - start, NULL, a, &v, &used, &f->err),
        HS_OK);
    if (v != NULL) {
      assert_int_equal(used, have - start);
      assert_string_equal(hs_map_get(v, "type")->as.str.ptr, types[seen]);
      assert_int_equal(hs_map_get(v, "n")->as.i, seen);
      seen++;
      start = have;
    }
  }
  assert_int_equal(seen, 3);
  /* All at once: the first frame comes back with its length. */
  hs_value_t *v = NULL;
  size_t used = 0;
  assert_int_equal(hs_msgpack_decode_next(f->buf.data, f->buf.len, NULL, a, &v, &used, &f->err),
                   HS_OK);
  assert_non_null(v);
  assert_true(used < f->buf.len);
  /* An incomplete frame that could never fit the limit is refused instead of buffered. */
  hs_codec_limits_t lim = hs_codec_default_limits;
  lim.max_bytes = 100;
  const uint8_t huge_str[] = {0xdb, 0x00, 0x01, 0x00, 0x00, 'x'};
  lim.max_str_len = SIZE_MAX;
  assert_int_equal(hs_msgpack_decode_next(huge_str, sizeof huge_str, &lim, a, &v, &used, &f->err),
                   HS_ELIMIT);
  assert_non_null(strstr(f->err.msg, "limit of 100 bytes"));
  /* The bomb as a stream frame: its count could never fit, so it is refused, not awaited. */
  const uint8_t bomb[] = {0xdd, 0x00, 0xff, 0xff, 0xff};
  assert_int_equal(hs_msgpack_decode_next(bomb, sizeof bomb, NULL, a, &v, &used, &f->err),
                   HS_ELIMIT);
  assert_non_null(strstr(f->err.msg, "array of 16777215 elements could never fit"));
  const uint8_t partial[] = {0x92, 0x01};
  v = (hs_value_t *)&lim;
  assert_int_equal(hs_msgpack_decode_next(partial, sizeof partial, &lim, a, &v, &used, &f->err),
                   HS_OK);
  assert_null(v);
}

static void test_encoder_errors(void **state) {
  fixture_t *f = *state;
  hs_arena_t *a = &f->arena;
  hs_buf_t small;
  hs_buf_init(&small, 8);
  assert_int_equal(hs_msgpack_encode(str_of(a, 20, 'z'), &small), HS_ELIMIT);
  assert_int_equal(hs_msgpack_encode(array_of_ints(a, 20), &small), HS_ELIMIT);
  hs_buf_free(&small);
  hs_value_t bad = {.type = HS_V_STR, .as.str = {"\xc3\x28", 2}};
  assert_int_equal(hs_msgpack_encode(&bad, &f->buf), HS_EINVAL);
  hs_value_t *m = hs_value_new_map(a, 1);
  hs_map_add_int(a, m, "\xff", 1);
  assert_int_equal(hs_msgpack_encode(m, &f->buf), HS_EINVAL);
  f->buf.len = 0;
  assert_int_equal(hs_msgpack_encode(nested(a, HS_CODEC_MAX_ENCODE_DEPTH, false), &f->buf), HS_OK);
  f->buf.len = 0;
  assert_int_equal(hs_msgpack_encode(nested(a, HS_CODEC_MAX_ENCODE_DEPTH + 1, true), &f->buf),
                   HS_ELIMIT);
}

static void test_decode_out_of_memory(void **state) {
  fixture_t *f = *state;
  encode(f, array_of_ints(&f->arena, 2000));
  hs_arena_t tiny;
  hs_arena_init(&tiny, 8192);
  hs_value_t *v = NULL;
  assert_int_equal(hs_msgpack_decode(f->buf.data, f->buf.len, NULL, &tiny, &v, &f->err), HS_ENOMEM);
  assert_null(v);
  assert_non_null(strstr(f->err.msg, "out of memory"));
  hs_arena_reset(&tiny);
}

int main(void) {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_scalars_round_trip_in_their_smallest_encoding),
      T(test_strings_and_binary_round_trip),
      T(test_containers_round_trip),
      T(test_limit_max_bytes),
      T(test_limit_max_depth),
      T(test_limit_max_count),
      T(test_limit_max_items),
      T(test_limit_max_str_len),
      T(test_lying_counts_fail_fast_without_allocating),
      T(test_truncated_at_every_length),
      T(test_trailing_bytes_are_refused),
      T(test_invalid_bytes),
      T(test_invalid_utf8_is_refused),
      T(test_duplicate_keys_are_refused),
      T(test_ext_types_and_non_string_keys_are_unsupported),
      T(test_stream_of_frames),
      T(test_encoder_errors),
      T(test_decode_out_of_memory),
  };
#undef T
  return cmocka_run_group_tests(tests, NULL, NULL);
}
