/* The shared parts of the codec: format dispatch, stream frames, UTF-8 checking, base64. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "codec/codec.h"

static const struct {
  const char *plain;
  const char *b64;
} rfc4648[] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

static void test_base64_rfc4648_vectors(void **state) {
  (void)state;
  hs_arena_t a;
  hs_arena_init(&a, 0);
  for (size_t i = 0; i < sizeof rfc4648 / sizeof rfc4648[0]; i++) {
    hs_buf_t b;
    hs_buf_init(&b, 0);
    size_t n = strlen(rfc4648[i].plain);
    assert_int_equal(hs_base64_encode((const uint8_t *)rfc4648[i].plain, n, &b), HS_OK);
    assert_int_equal(b.len, strlen(rfc4648[i].b64));
    assert_int_equal(b.len, hs_base64_encoded_len(n));
    assert_memory_equal(b.data == NULL ? (uint8_t *)"" : b.data, rfc4648[i].b64, b.len);
    hs_buf_free(&b);

    uint8_t *out = NULL;
    size_t out_len = 0;
    hs_err_t err;
    const char *t = rfc4648[i].b64;
    assert_int_equal(hs_base64_decode(t, strlen(t), &a, &out, &out_len, &err), HS_OK);
    assert_int_equal(out_len, n);
    assert_memory_equal(out, rfc4648[i].plain, n);
    assert_int_equal(out[out_len], 0);

    /* Padding may be left out. */
    size_t unpadded = strlen(t);
    while (unpadded > 0 && t[unpadded - 1] == '=') {
      unpadded--;
    }
    assert_int_equal(hs_base64_decode(t, unpadded, &a, &out, &out_len, &err), HS_OK);
    assert_int_equal(out_len, n);
    assert_memory_equal(out, rfc4648[i].plain, n);
  }
  hs_arena_reset(&a);
}

static void test_base64_all_byte_values_round_trip(void **state) {
  (void)state;
  uint8_t bytes[256];
  for (int i = 0; i < 256; i++) {
    bytes[i] = (uint8_t)(255 - i);
  }
  hs_arena_t a;
  hs_arena_init(&a, 0);
  for (size_t n = 0; n <= 256; n += 1) {
    hs_buf_t b;
    hs_buf_init(&b, 0);
    assert_int_equal(hs_base64_encode(bytes, n, &b), HS_OK);
    uint8_t *out = NULL;
    size_t out_len = 0;
    assert_int_equal(hs_base64_decode((const char *)b.data, b.len, &a, &out, &out_len, NULL),
                     HS_OK);
    assert_int_equal(out_len, n);
    if (n > 0) {
      assert_memory_equal(out, bytes, n);
    }
    hs_buf_free(&b);
  }
  hs_arena_reset(&a);
}

static void expect_b64_error(const char *text, const char *needle) {
  hs_arena_t a;
  hs_arena_init(&a, 0);
  uint8_t *out = (uint8_t *)"untouched";
  size_t out_len = 99;
  hs_err_t err;
  hs_err_clear(&err);
  assert_int_equal(hs_base64_decode(text, strlen(text), &a, &out, &out_len, &err), HS_EINVAL);
  assert_int_equal(err.code, HS_EINVAL);
  if (strstr(err.msg, needle) == NULL) {
    fail_msg("base64 error for \"%s\" is \"%s\", expected it to mention \"%s\"", text, err.msg,
             needle);
  }
  assert_int_equal(out_len, 99);
  hs_arena_reset(&a);
}

static void test_base64_refusals(void **state) {
  (void)state;
  expect_b64_error("Zm9v-_8=", "character 4 is '-'");
  expect_b64_error("Zm9v YmFy", "character 4 is whitespace");
  expect_b64_error("Zm9v\nYmFy", "whitespace");
  expect_b64_error("Zg==Zg==", "character 2 is '='");
  expect_b64_error("Zm9vY", "cannot be complete");
  expect_b64_error("Zh==", "bits set"); /* 'h' leaves non-zero bits after one byte */
  expect_b64_error("Zm9=", "bits set"); /* '9' leaves non-zero bits after two bytes */
  expect_b64_error("Zm9v*", "byte 0x2a");
  expect_b64_error("====", "'='");
}

static void test_base64_out_of_memory(void **state) {
  (void)state;
  hs_arena_t a;
  hs_arena_init(&a, 256);
  uint8_t *out = NULL;
  size_t out_len = 0;
  hs_err_t err;
  assert_int_equal(hs_base64_decode("Zm9vYmFy", 8, &a, &out, &out_len, &err), HS_ENOMEM);
  hs_buf_t b;
  hs_buf_init(&b, 7);
  assert_int_equal(hs_base64_encode((const uint8_t *)"foobar", 6, &b), HS_ELIMIT);
  hs_buf_free(&b);
  hs_arena_reset(&a);
}

static void test_utf8_check(void **state) {
  (void)state;
  static const struct {
    const char *s;
    size_t len;
    size_t bad; /* == len when valid */
  } cases[] = {
      {"", 0, 0},
      {"plain ascii", 11, 11},
      {"\xc3\xa9", 2, 2},         /* é */
      {"\xe2\x82\xac", 3, 3},     /* € */
      {"\xf0\x9f\x8d\xba", 4, 4}, /* U+1F37A */
      {"\xf4\x8f\xbf\xbf", 4, 4}, /* U+10FFFF, the last code point */
      {"\xed\x9f\xbf", 3, 3},     /* U+D7FF, just below the surrogates */
      {"ab\xc3", 3, 2},           /* cut short */
      {"\xc0\x80", 2, 0},         /* overlong NUL */
      {"\xc1\xbf", 2, 0},         /* overlong */
      {"\xe0\x80\xaf", 3, 0},     /* overlong '/' */
      {"\xf0\x80\x80\xaf", 4, 0}, /* overlong '/' */
      {"x\xed\xa0\x80", 4, 1},    /* U+D800 surrogate */
      {"\xf4\x90\x80\x80", 4, 0}, /* above U+10FFFF */
      {"\xf5\x80\x80\x80", 4, 0}, /* invalid lead byte */
      {"ok\x80", 3, 2},           /* lone continuation byte */
      {"\xe2\x28\xa1", 3, 0},     /* bad continuation */
      {"\xff", 1, 0},
      /* Past the eight-byte ASCII stride: every position around its edges. */
      {"abcdefgh", 8, 8},
      {"abcdefghi", 9, 9},
      {"abcdefg\x80", 8, 7},
      {"abcdefgh\x80", 9, 8},
      {"abcdefgh\xc3\xa9ijklmnopq", 19, 19},
      {"abcdefgh\xc3\xa9ijklmnop\xff", 19, 18},
      {"abcdefghijklmnop\xe2\x82", 18, 16},
      {"abcdefghijklmno\xe2\x82\xac", 18, 18},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t got = hs_utf8_check((const uint8_t *)cases[i].s, cases[i].len);
    if (got != cases[i].bad) {
      fail_msg("case %zu: hs_utf8_check returned %zu, expected %zu", i, got, cases[i].bad);
    }
  }
}

static void test_dispatch_and_frames(void **state) {
  (void)state;
  hs_arena_t a;
  hs_arena_init(&a, 0);
  hs_value_t *m = hs_value_new_map(&a, 1);
  hs_map_add_str(&a, m, "type", "ended");
  for (int f = 0; f <= 1; f++) {
    hs_buf_t one, frames;
    hs_buf_init(&one, 0);
    hs_buf_init(&frames, 0);
    assert_int_equal(hs_codec_encode((hs_format_t)f, m, &one), HS_OK);
    assert_int_equal(hs_codec_encode_frame((hs_format_t)f, m, &frames), HS_OK);
    assert_int_equal(hs_codec_encode_frame((hs_format_t)f, m, &frames), HS_OK);
    size_t per = f == HS_FMT_JSON ? one.len + 1 : one.len;
    assert_int_equal(frames.len, 2 * per);
    if (f == HS_FMT_JSON) {
      assert_int_equal(frames.data[per - 1], '\n');
      assert_int_equal(frames.data[2 * per - 1], '\n');
    }
    hs_value_t *back = NULL;
    assert_int_equal(hs_codec_decode((hs_format_t)f, one.data, one.len, NULL, &a, &back, NULL),
                     HS_OK);
    assert_true(hs_value_equal(m, back));
    hs_buf_free(&one);
    hs_buf_free(&frames);
  }
  assert_string_equal(hs_format_mime(HS_FMT_MSGPACK), "application/msgpack");
  assert_string_equal(hs_format_mime(HS_FMT_JSON), "application/json");
  hs_value_t *out = NULL;
  hs_err_t err;
  assert_int_equal(hs_codec_decode((hs_format_t)7, (const uint8_t *)"x", 1, NULL, &a, &out, &err),
                   HS_EUNSUPPORTED);
  assert_null(out);
  hs_arena_reset(&a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_base64_rfc4648_vectors),
      cmocka_unit_test(test_base64_all_byte_values_round_trip),
      cmocka_unit_test(test_base64_refusals),
      cmocka_unit_test(test_base64_out_of_memory),
      cmocka_unit_test(test_utf8_check),
      cmocka_unit_test(test_dispatch_and_frames),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
