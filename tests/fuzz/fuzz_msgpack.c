/* Untrusted bytes into the msgpack decoder. Whatever decodes must encode again and decode to
 * an equal value: the encoder writes nothing the decoder refuses and loses nothing on the way. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hs_arena_t arena;
  hs_arena_init(&arena, 0);
  hs_value_t *v = NULL;
  hs_err_t err = {0};
  int rc = hs_msgpack_decode(data, size, NULL, &arena, &v, &err);
  if (rc == HS_OK) {
    hs_buf_t out;
    hs_buf_init(&out, 0);
    rc = hs_msgpack_encode(v, &out);
    if (rc != HS_OK) {
      fprintf(stderr, "a decoded value does not encode again: %d\n", rc);
      abort();
    }
    hs_value_t *again = NULL;
    rc = hs_msgpack_decode(out.data, out.len, NULL, &arena, &again, &err);
    if (rc != HS_OK) {
      fprintf(stderr, "the re-encoding does not decode: %s\n", err.msg);
      abort();
    }
    if (!hs_value_equal(v, again)) {
      fprintf(stderr, "the round trip changed the value\n");
      abort();
    }
    /* The smallest encoding is canonical: encoding the copy must give the same bytes. */
    hs_buf_t out2;
    hs_buf_init(&out2, 0);
    if (hs_msgpack_encode(again, &out2) != HS_OK || out2.len != out.len ||
        memcmp(out2.data, out.data, out.len) != 0) {
      fprintf(stderr, "encoding is not stable across a round trip\n");
      abort();
    }
    hs_buf_free(&out2);
    hs_buf_free(&out);
  } else if (rc != HS_EINVAL && rc != HS_ELIMIT && rc != HS_EUNSUPPORTED) {
    fprintf(stderr, "unexpected error code %d: %s\n", rc, err.msg);
    abort();
  } else if (v != NULL) {
    fprintf(stderr, "a failed decode set its output\n");
    abort();
  }
  hs_arena_reset(&arena);
  return 0;
}
