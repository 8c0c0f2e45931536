/* Untrusted text into the JSON decoder. Whatever decodes must encode again, in JSON and in
 * msgpack, and decode from each to an equal value: a body can be answered in either format. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const hs_err_t *err) {
  fprintf(stderr, "%s%s%s\n", what, err != NULL ? ": " : "", err != NULL ? err->msg : "");
  abort();
}

/* Encodes v in fmt, decodes it back and checks it is equal; returns the encoding's bytes in
 * out (the caller frees). The re-encoding may be longer than the input (1.0 takes 9 bytes in
 * msgpack), so only the total size limit is lifted for the second decode. */
static void round_trip(hs_format_t fmt, const hs_value_t *v, hs_arena_t *arena, hs_buf_t *out) {
  hs_codec_limits_t lim = hs_codec_default_limits;
  lim.max_bytes = SIZE_MAX;
  hs_buf_init(out, 0);
  if (hs_codec_encode(fmt, v, out) != HS_OK) {
    fail("a decoded value does not encode again", NULL);
  }
  hs_value_t *again = NULL;
  hs_err_t err = {0};
  if (hs_codec_decode(fmt, out->data, out->len, &lim, arena, &again, &err) != HS_OK) {
    fail(fmt == HS_FMT_JSON ? "the JSON re-encoding does not decode"
                            : "the msgpack encoding does not decode",
         &err);
  }
  if (!hs_value_equal(v, again)) {
    fail(fmt == HS_FMT_JSON ? "the JSON round trip changed the value"
                            : "the msgpack round trip changed the value",
         NULL);
  }
  hs_buf_t out2;
  hs_buf_init(&out2, 0);
  if (hs_codec_encode(fmt, again, &out2) != HS_OK || out2.len != out->len ||
      memcmp(out2.data, out->data, out->len) != 0) {
    fail("encoding is not stable across a round trip", NULL);
  }
  hs_buf_free(&out2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hs_arena_t arena;
  hs_arena_init(&arena, 0);
  hs_value_t *v = NULL;
  hs_err_t err = {0};
  int rc = hs_json_decode((const char *)data, size, NULL, &arena, &v, &err);
  if (rc == HS_OK) {
    hs_buf_t out;
    round_trip(HS_FMT_JSON, v, &arena, &out);
    hs_buf_free(&out);
    round_trip(HS_FMT_MSGPACK, v, &arena, &out);
    hs_buf_free(&out);
  } else if (rc != HS_EINVAL && rc != HS_ELIMIT && rc != HS_EUNSUPPORTED) {
    fprintf(stderr, "unexpected error code %d: %s\n", rc, err.msg);
    abort();
  } else if (v != NULL) {
    fail("a failed decode set its output", NULL);
  }
  hs_arena_reset(&arena);
  return 0;
}
