/* The sample messages of proto/vectors/: every NAME.json (or NAME.ndjson, a stream) has a
 * NAME.msgpack holding the same value(s). The test checks that both decode to equal values,
 * that re-encoding the JSON value as msgpack gives exactly the committed bytes (the vectors
 * are canonical: what this server sends), and that our JSON encoding decodes back equal.
 *
 * JSON carries binary as base64 text, so where the msgpack value holds binary the JSON string
 * is base64-decoded before comparing, as a request handler that knows the schema would do.
 *
 * To regenerate the .msgpack files after editing a .json file, run this test with
 * HANDSEL_WRITE_VECTORS=1; in that mode every string value of a vector whose name starts with
 * "bin-" is taken as base64 binary. */
#include <dirent.h>
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

static const char *vectors_dir(char *buf, size_t cap) {
  const char *dir = getenv("HANDSEL_SOURCE_DIR");
  snprintf(buf, cap, "%s/proto/vectors", dir != NULL && dir[0] != '\0' ? dir : HANDSEL_SOURCE_DIR);
  return buf;
}

static uint8_t *read_file(const char *path, size_t *len) {
  FILE *fp = fopen(path, "rb");
  if (fp == NULL) {
    return NULL;
  }
  hs_buf_t b;
  hs_buf_init(&b, 0);
  uint8_t chunk[4096];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0) {
    assert_int_equal(hs_buf_append(&b, chunk, n), HS_OK);
  }
  fclose(fp);
  *len = b.len;
  return hs_buf_release(&b, len);
}

/* Rewrites JSON strings into binary wherever the msgpack value (the schema) holds binary. */
static int apply_binary(hs_arena_t *a, hs_value_t *json, const hs_value_t *schema, hs_err_t *err) {
  if (schema->type == HS_V_BIN && json->type == HS_V_STR) {
    uint8_t *bytes;
    size_t n;
    int rc = hs_base64_decode(json->as.str.ptr, json->as.str.len, a, &bytes, &n, err);
    if (rc == HS_OK) {
      json->type = HS_V_BIN;
      json->as.str.ptr = (const char *)bytes;
      json->as.str.len = n;
    }
    return rc;
  }
  if (schema->type == HS_V_ARRAY && json->type == HS_V_ARRAY &&
      schema->as.arr.len == json->as.arr.len) {
    for (size_t i = 0; i < json->as.arr.len; i++) {
      int rc = apply_binary(a, &json->as.arr.items[i], &schema->as.arr.items[i], err);
      if (rc != HS_OK) {
        return rc;
      }
    }
  }
  if (schema->type == HS_V_MAP && json->type == HS_V_MAP) {
    for (size_t i = 0; i < json->as.map.len; i++) {
      const hs_value_t *s = hs_map_get(schema, json->as.map.items[i].key);
      if (s != NULL) {
        int rc = apply_binary(a, &json->as.map.items[i].val, s, err);
        if (rc != HS_OK) {
          return rc;
        }
      }
    }
  }
  return HS_OK;
}

/* Generation only: every string value (not key) becomes base64-decoded binary. */
static void all_strings_binary(hs_arena_t *a, hs_value_t *v) {
  if (v->type == HS_V_STR) {
    uint8_t *bytes;
    size_t n;
    hs_err_t err;
    if (hs_base64_decode(v->as.str.ptr, v->as.str.len, a, &bytes, &n, &err) != HS_OK) {
      fail_msg("a bin- vector holds a string that is not base64: %s", err.msg);
    }
    v->type = HS_V_BIN;
    v->as.str.ptr = (const char *)bytes;
    v->as.str.len = n;
  } else if (v->type == HS_V_ARRAY) {
    for (size_t i = 0; i < v->as.arr.len; i++) {
      all_strings_binary(a, &v->as.arr.items[i]);
    }
  } else if (v->type == HS_V_MAP) {
    for (size_t i = 0; i < v->as.map.len; i++) {
      all_strings_binary(a, &v->as.map.items[i].val);
    }
  }
}

/* Splits the JSON file into its values: one for .json, one per non-empty line for .ndjson. */
static size_t json_values(hs_arena_t *a, const char *name, const uint8_t *text, size_t len,
                          bool ndjson, hs_value_t **out, size_t cap) {
  size_t n = 0;
  size_t start = 0;
  while (start < len) {
    size_t end = len;
    if (ndjson) {
      const uint8_t *nl = memchr(text + start, '\n', len - start);
      end = nl != NULL ? (size_t)(nl - text) : len;
    }
    if (end > start) {
      hs_err_t err;
      hs_value_t *v = NULL;
      if (hs_json_decode((const char *)text + start, end - start, NULL, a, &v, &err) != HS_OK) {
        fail_msg("%s: %s", name, err.msg);
      }
      assert_true(n < cap);
      out[n++] = v;
    }
    start = end + 1;
  }
  return n;
}

static void check_or_write(const char *dir, const char *base, bool ndjson, bool write, int *pairs,
                           int *values) {
  char path[4096];
  hs_arena_t a;
  hs_arena_init(&a, 0);
  hs_err_t err;

  int n = snprintf(path, sizeof path, "%s/%s.%s", dir, base, ndjson ? "ndjson" : "json");
  assert_true(n > 0 && (size_t)n < sizeof path);
  size_t jlen;
  uint8_t *jtext = read_file(path, &jlen);
  assert_non_null(jtext);
  hs_value_t *jv[16];
  size_t nj = json_values(&a, path, jtext, jlen, ndjson, jv, 16);
  assert_true(nj > 0);
  if (!ndjson) {
    assert_int_equal(nj, 1);
  }

  n = snprintf(path, sizeof path, "%s/%s.msgpack", dir, base);
  assert_true(n > 0 && (size_t)n < sizeof path);
  if (write) {
    hs_buf_t out;
    hs_buf_init(&out, 0);
    for (size_t i = 0; i < nj; i++) {
      if (strncmp(base, "bin-", 4) == 0) {
        all_strings_binary(&a, jv[i]);
      }
      assert_int_equal(hs_msgpack_encode(jv[i], &out), HS_OK);
    }
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(out.data, 1, out.len, fp), out.len);
    fclose(fp);
    hs_buf_free(&out);
  }

  size_t mlen;
  uint8_t *mbytes = read_file(path, &mlen);
  if (mbytes == NULL) {
    fail_msg("%s is missing: every JSON vector needs its msgpack twin", path);
  }
  /* Decode the msgpack side frame by frame (a single value is a stream of one). */
  size_t off = 0;
  size_t nm = 0;
  hs_buf_t again;
  hs_buf_init(&again, 0);
  while (off < mlen) {
    hs_value_t *mv = NULL;
    size_t used = 0;
    int rc = hs_msgpack_decode_next(mbytes + off, mlen - off, NULL, &a, &mv, &used, &err);
    if (rc != HS_OK || mv == NULL) {
      fail_msg("%s at offset %zu: %s", path, off, rc != HS_OK ? err.msg : "truncated");
    }
    if (nm >= nj) {
      fail_msg("%s holds more values than its JSON twin (%zu)", path, nj);
    }
    if (!ndjson) {
      /* A single message is also a whole message for the strict decoder. */
      hs_value_t *whole = NULL;
      assert_int_equal(hs_msgpack_decode(mbytes, mlen, NULL, &a, &whole, &err), HS_OK);
      assert_true(hs_value_equal(whole, mv));
    }
    if (apply_binary(&a, jv[nm], mv, &err) != HS_OK) {
      fail_msg("%s value %zu: %s", base, nm, err.msg);
    }
    if (!hs_value_equal(jv[nm], mv)) {
      fail_msg("%s value %zu: the JSON and msgpack files hold different values", base, nm);
    }
    /* The JSON value, encoded by us, is exactly the committed frame. */
    size_t before = again.len;
    assert_int_equal(hs_msgpack_encode(jv[nm], &again), HS_OK);
    if (again.len - before != used || memcmp(again.data + before, mbytes + off, used) != 0) {
      fail_msg("%s value %zu: re-encoding gives different bytes than the committed %s.msgpack "
               "(rerun with HANDSEL_WRITE_VECTORS=1 if the change is intended)",
               base, nm, base);
    }
    /* And our JSON encoding of it reads back as the same value. */
    hs_buf_t js;
    hs_buf_init(&js, 0);
    assert_int_equal(hs_json_encode(mv, &js), HS_OK);
    hs_value_t *jback = NULL;
    assert_int_equal(hs_json_decode((const char *)js.data, js.len, NULL, &a, &jback, &err), HS_OK);
    assert_int_equal(apply_binary(&a, jback, mv, &err), HS_OK);
    assert_true(hs_value_equal(jback, mv));
    hs_buf_free(&js);
    off += used;
    nm++;
  }
  if (nm != nj) {
    fail_msg("%s: %zu JSON values but %zu msgpack values", base, nj, nm);
  }
  assert_int_equal(again.len, mlen);
  hs_buf_free(&again);
  free(jtext);
  free(mbytes);
  hs_arena_reset(&a);
  (*pairs)++;
  *values += (int)nm;
}

static void test_every_vector_pair(void **state) {
  (void)state;
  char dir[4096];
  vectors_dir(dir, sizeof dir);
  const char *w = getenv("HANDSEL_WRITE_VECTORS");
  bool write = w != NULL && strcmp(w, "1") == 0;
  DIR *d = opendir(dir);
  if (d == NULL) {
    fail_msg("cannot open %s", dir);
  }
  int pairs = 0, values = 0, msgpack_files = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    const char *dot = strrchr(e->d_name, '.');
    if (dot == NULL) {
      continue;
    }
    char base[256];
    size_t blen = (size_t)(dot - e->d_name);
    if (blen >= sizeof base) {
      continue;
    }
    memcpy(base, e->d_name, blen);
    base[blen] = 0;
    if (strcmp(dot, ".json") == 0 || strcmp(dot, ".ndjson") == 0) {
      check_or_write(dir, base, strcmp(dot, ".ndjson") == 0, write, &pairs, &values);
    } else if (strcmp(dot, ".msgpack") == 0) {
      msgpack_files++;
    }
  }
  closedir(d);
  printf("proto/vectors: %d pairs (%d values) match byte for byte\n", pairs, values);
  assert_true(pairs >= 20);
  /* Every .msgpack file has a JSON twin (a lone one would go unchecked). Files written in this
   * run may or may not have been listed, so the count is only checked when reading. */
  if (!write) {
    assert_int_equal(msgpack_files, pairs);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_vector_pair),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
