#include "hs_test_body.h"

#include <string.h>

#include "codec/codec.h"

int hs_test_decode_body(const hs_h2_response_t *r, hs_arena_t *arena, hs_value_t **out,
                        hs_err_t *err) {
  const char *ct = hs_h2_response_header(r, "content-type");
  bool json = ct != NULL && strncmp(ct, "application/json", 16) == 0;
  const uint8_t *data = r->body.data != NULL ? r->body.data : (const uint8_t *)"";
  return hs_codec_decode(json ? HS_FMT_JSON : HS_FMT_MSGPACK, data, r->body.len,
                         &hs_codec_default_limits, arena, out, err);
}

const char *hs_test_str_at(const hs_value_t *v, const char *path) {
  char key[128];
  const char *p = path;
  while (v != NULL && *p != '\0') {
    const char *dot = strchr(p, '.');
    size_t n = dot != NULL ? (size_t)(dot - p) : strlen(p);
    if (n >= sizeof key) {
      return NULL;
    }
    memcpy(key, p, n);
    key[n] = '\0';
    v = hs_map_get(v, key);
    p += n;
    if (*p == '.') {
      p++;
    }
  }
  return v != NULL && v->type == HS_V_STR ? v->as.str.ptr : NULL;
}
