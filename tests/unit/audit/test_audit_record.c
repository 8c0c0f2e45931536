/* The compliance log's building blocks on their own: the canonical record hash (against a
 * vector computed by an independent implementation, so a change of the format, which would
 * break every export already given out, cannot pass unnoticed), the chain step, the times
 * exactly as exports write them, Ed25519 keys and signatures, and the msgpack-to-JSON writer the
 * export uses (differentially, against decoding and re-encoding every wire vector). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit/record.h"
#include "audit/rows.h"
#include "audit/sign.h"
#include "codec/codec.h"
#include "core/arena.h"
#include "core/endian.h"
#include "core/ids.h"

#ifndef HANDSEL_SOURCE_DIR
#define HANDSEL_SOURCE_DIR "."
#endif

static void hex_of(const uint8_t *p, size_t n, char *out) {
  hs_hex(p, n, out);
}

static void test_record_hash_vector(void **state) {
  /* data {"n":3} and errors {"n":"Seven is not allowed"}, as the codec writes them. */
  static const uint8_t data[] = {0x81, 0xa1, 'n', 0x03};
  static const char errors_text[] = "\x81\xa1n\xb4Seven is not allowed";
  char version[65];
  memset(version, 'a', 64);
  version[64] = '\0';
  hs_audit_record_t r = {.id = 1042,
                         .brand = "acme",
                         .session = "3f1c9b52-8d4e-4b7a-9c61-2f0e5d7a8b90",
                         .process = "solar-consult",
                         .version = version,
                         .step = "roof",
                         .seq = 2,
                         .contractor = "sam",
                         .server_us = 1795471305782413,
                         .result = "rejected",
                         .errors = (const uint8_t *)errors_text,
                         .errors_len = sizeof errors_text - 1};
  hs_sha256(data, sizeof data, r.data_digest);
  hs_buf_t scratch;
  hs_buf_init(&scratch, 0);
  uint8_t h[32];
  char hex[65];
  assert_int_equal(hs_audit_record_hash(&r, &scratch, h), HS_OK);
  hex_of(h, 32, hex);
  assert_string_equal(hex, "fd070f444cf0c4a38a3941f303a49d40283c4b8bcb464ba49f7a52c84dc3c9d9");
  /* The first link of a chain. */
  uint8_t zero[32] = {0}, c[32];
  hs_audit_chain_next(zero, h, c);
  hex_of(c, 32, hex);
  assert_string_equal(hex, "1964a77d9031d994c5bfeed71b8512bbe6d5d49e203995789a847bfff180e1d2");
  /* Every member counts: a device time, another result, documents. */
  uint8_t h2[32];
  r.has_device = true;
  r.device_us = 0;
  assert_int_equal(hs_audit_record_hash(&r, &scratch, h2), HS_OK);
  assert_memory_not_equal(h, h2, 32);
  r.has_device = false;
  r.result = "accepted";
  assert_int_equal(hs_audit_record_hash(&r, &scratch, h2), HS_OK);
  assert_memory_not_equal(h, h2, 32);
  r.result = "rejected";
  r.documents = data;
  r.documents_len = sizeof data;
  assert_int_equal(hs_audit_record_hash(&r, &scratch, h2), HS_OK);
  assert_memory_not_equal(h, h2, 32);
  hs_buf_free(&scratch);
}

static void test_times(void **state) {
  static const int64_t values[] = {0, 1, 999999, 1000000, 1795471305782413, -1, 253402300799999999};
  for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
    char t[32];
    int64_t back = 42;
    hs_audit_time_format(values[i], t);
    assert_int_equal(strlen(t), 27);
    assert_int_equal(hs_audit_time_parse(t, &back), HS_OK);
    assert_int_equal(back, values[i]);
  }
  char t[32];
  hs_audit_time_format(1795471305782413, t);
  assert_string_equal(t, "2026-11-23T22:01:45.782413Z");
  static const char *const bad[] = {"2026-11-23T22:01:45Z",
                                    "2026-11-23T22:01:45.78241Z",
                                    "2026-13-23T22:01:45.782413Z",
                                    "2026-11-23 22:01:45.782413Z",
                                    "2026-11-23T22:01:45.782413+00:00",
                                    ""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int64_t v = 0;
    assert_int_equal(hs_audit_time_parse(bad[i], &v), HS_EINVAL);
  }
}

static void test_keys_and_signatures(void **state) {
  char path[256];
  snprintf(path, sizeof path, "/tmp/handsel-audit-key-%d/signing-key.pem", (int)getpid());
  unlink(path);
  hs_err_t err;
  hs_err_clear(&err);
  hs_audit_key_t *k = NULL;
  bool created = false;
  assert_int_equal(hs_audit_key_load(path, false, &k, &created, &err), HS_EIO);
  assert_int_equal(hs_audit_key_load(path, true, &k, &created, &err), HS_OK);
  assert_true(created);
  hs_audit_key_t *again = NULL;
  assert_int_equal(hs_audit_key_load(path, true, &again, &created, &err), HS_OK);
  assert_false(created);
  assert_memory_equal(hs_audit_key_public(k), hs_audit_key_public(again), 32);
  hs_audit_key_free(again);

  hs_audit_checkpoint_t cp = {.brand = "acme", .size = 7, .signed_us = 1795471305782413};
  memset(cp.head, 0xab, 32);
  hs_buf_t text;
  hs_buf_init(&text, 0);
  assert_int_equal(hs_audit_checkpoint_text(&cp, &text), HS_OK);
  assert_int_equal(hs_audit_key_sign(k, text.data, text.len, cp.signature), HS_OK);
  const uint8_t *pub = hs_audit_key_public(k);
  assert_true(hs_audit_signature_ok(pub, text.data, text.len, cp.signature));
  cp.size = 8; /* another size: the same signature no longer fits */
  hs_buf_t other;
  hs_buf_init(&other, 0);
  assert_int_equal(hs_audit_checkpoint_text(&cp, &other), HS_OK);
  assert_false(hs_audit_signature_ok(pub, other.data, other.len, cp.signature));
  hs_buf_free(&other);

  /* The public key reads back from each form it is printed in. */
  char hex[65];
  hs_hex(pub, 32, hex);
  uint8_t got[32];
  assert_int_equal(hs_audit_public_parse(hex, 64, got, &err), HS_OK);
  assert_memory_equal(got, pub, 32);
  hs_buf_t b64;
  hs_buf_init(&b64, 0);
  assert_int_equal(hs_base64_encode(pub, 32, &b64), HS_OK);
  assert_int_equal(hs_audit_public_parse((const char *)b64.data, b64.len, got, &err), HS_OK);
  assert_memory_equal(got, pub, 32);
  hs_buf_free(&b64);
  hs_buf_t pem;
  hs_buf_init(&pem, 0);
  assert_int_equal(hs_audit_key_public_pem(k, &pem), HS_OK);
  assert_int_equal(hs_audit_public_parse((const char *)pem.data, pem.len, got, &err), HS_OK);
  assert_memory_equal(got, pub, 32);
  hs_buf_free(&pem);
  assert_int_equal(hs_audit_public_parse("not a key", 9, got, &err), HS_EINVAL);
  assert_non_null(strstr(err.msg, "PEM"));
  char id[17];
  hs_audit_public_id(pub, id);
  assert_string_equal(id, hs_audit_key_id(k));
  hs_buf_free(&text);
  hs_audit_key_free(k);
  unlink(path);
  char dir[256];
  snprintf(dir, sizeof dir, "/tmp/handsel-audit-key-%d", (int)getpid());
  rmdir(dir);
}

static bool drop_secret(void *ctx, const char *key, size_t len) {
  (void)ctx;
  return len == 6 && memcmp(key, "secret", 6) == 0;
}

/* Every msgpack vector: the direct writer gives what decoding and re-encoding gives. */
static void test_msgpack_to_json(void **state) {
  char dirpath[1024];
  const char *src = getenv("HANDSEL_SOURCE_DIR");
  snprintf(dirpath, sizeof dirpath, "%s/proto/vectors",
           src != NULL && src[0] != '\0' ? src : HANDSEL_SOURCE_DIR);
  DIR *d = opendir(dirpath);
  assert_non_null(d);
  int compared = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    size_t n = strlen(e->d_name);
    if (n < 9 || strcmp(e->d_name + n - 8, ".msgpack") != 0) {
      continue;
    }
    char path[1400];
    snprintf(path, sizeof path, "%s/%s", dirpath, e->d_name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t buf[65536];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    hs_arena_t a;
    hs_arena_init(&a, 0);
    hs_value_t *v = NULL;
    hs_err_t err;
    if (hs_msgpack_decode(buf, len, NULL, &a, &v, &err) != HS_OK) {
      hs_arena_reset(&a);
      continue; /* a vector of something the decoder refuses, checked elsewhere */
    }
    hs_buf_t want, got;
    hs_buf_init(&want, 0);
    hs_buf_init(&got, 0);
    assert_int_equal(hs_json_encode(v, &want), HS_OK);
    assert_int_equal(hs_msgpack_to_json(buf, len, &got, NULL, NULL), HS_OK);
    if (want.len != got.len || memcmp(want.data, got.data, want.len) != 0) {
      fail_msg("%s: %.*s instead of %.*s", e->d_name, (int)got.len, (const char *)got.data,
               (int)want.len, (const char *)want.data);
    }
    compared++;
    hs_buf_free(&want);
    hs_buf_free(&got);
    hs_arena_reset(&a);
  }
  closedir(d);
  assert_true(compared >= 20);

  /* Leaving members out, and refusing what is not one well-formed object. */
  static const uint8_t map[] = {0x82, 0xa6, 's',  'e', 'c',  'r',  'e', 't',
                                0xa1, 'x',  0xa1, 'n', 0x92, 0x01, 0xff};
  hs_buf_t out;
  hs_buf_init(&out, 0);
  assert_int_equal(hs_msgpack_to_json(map, sizeof map, &out, drop_secret, NULL), HS_OK);
  assert_int_equal(out.len, 12);
  assert_memory_equal(out.data, "{\"n\":[1,-1]}", 12);
  out.len = 0;
  assert_int_equal(hs_msgpack_to_json(map, sizeof map - 1, &out, NULL, NULL), HS_EINVAL);
  assert_int_equal(out.len, 0);
  static const uint8_t trailing[] = {0x01, 0x02};
  assert_int_equal(hs_msgpack_to_json(trailing, 2, &out, NULL, NULL), HS_EINVAL);
  static const uint8_t ext[] = {0xd4, 0x01, 0x00};
  assert_int_equal(hs_msgpack_to_json(ext, 3, &out, NULL, NULL), HS_EUNSUPPORTED);
  static const uint8_t bad_utf8[] = {0xa2, 0xc3, 0x28};
  assert_int_equal(hs_msgpack_to_json(bad_utf8, 3, &out, NULL, NULL), HS_EINVAL);
  assert_int_equal(out.len, 0);
  hs_buf_free(&out);
}

/* The sealer's query leaves the order of its rows to the server: every brand's records must
 * come out in id order, brand by brand, whatever order PostgreSQL sent them in. The result is
 * built in memory with libpq's own functions (no server), with the two id columns filled. */
static void test_rows_order(void **state) {
  (void)state;
  PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
  assert_non_null(res);
  PGresAttDesc cols[HS_AUDIT_ROW_COLUMNS];
  memset(cols, 0, sizeof cols);
  for (int k = 0; k < HS_AUDIT_ROW_COLUMNS; k++) {
    cols[k].name = (char *)"c";
    cols[k].format = 1;
    cols[k].typlen = -1;
  }
  assert_int_equal(PQsetResultAttrs(res, HS_AUDIT_ROW_COLUMNS, cols), 1);
  /* (brand, id) rows as a bitmap scan or brands read in any order could send them. */
  static const int64_t rows[][2] = {{7, 30}, {2, 12}, {7, 4}, {2, 11}, {9, 1}, {2, 40}, {7, 5}};
  enum { N = sizeof rows / sizeof rows[0] };
  for (int i = 0; i < N; i++) {
    uint8_t id[8], brand[8];
    hs_put_be64(id, (uint64_t)rows[i][1]);
    hs_put_be64(brand, (uint64_t)rows[i][0]);
    assert_int_equal(PQsetvalue(res, i, 0, (char *)id, 8), 1);
    assert_int_equal(PQsetvalue(res, i, 2, (char *)brand, 8), 1);
  }
  hs_audit_row_order_t *o = hs_audit_rows_order(res);
  assert_non_null(o);
  static const int64_t want[][3] = {{2, 11, 3}, {2, 12, 1}, {2, 40, 5}, {7, 4, 2},
                                    {7, 5, 6},  {7, 30, 0}, {9, 1, 4}};
  for (int i = 0; i < N; i++) {
    assert_int_equal(o[i].brand_id, want[i][0]);
    assert_int_equal(o[i].id, want[i][1]);
    assert_int_equal(o[i].row, want[i][2]);
  }
  free(o);

  /* A row whose id is not an int8 is refused, not ordered by garbage. */
  assert_int_equal(PQsetvalue(res, 3, 0, "1234", 4), 1);
  assert_null(hs_audit_rows_order(res));
  PQclear(res);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_record_hash_vector),  cmocka_unit_test(test_times),
      cmocka_unit_test(test_keys_and_signatures), cmocka_unit_test(test_msgpack_to_json),
      cmocka_unit_test(test_rows_order),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
