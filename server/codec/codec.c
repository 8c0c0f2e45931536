/* Format dispatch and the small helpers both wire formats share: UTF-8 validation and base64. */
#include "codec/codec.h"

#include <string.h>

int hs_codec_decode(hs_format_t fmt, const uint8_t *buf, size_t len, const hs_codec_limits_t *lim,
                    hs_arena_t *arena, hs_value_t **out, hs_err_t *err) {
  switch (fmt) {
    case HS_FMT_MSGPACK:
      return hs_msgpack_decode(buf, len, lim, arena, out, err);
    case HS_FMT_JSON:
      return hs_json_decode((const char *)buf, len, lim, arena, out, err);
  }
  return hs_err_set(err, HS_EUNSUPPORTED, "unknown wire format %d", (int)fmt);
}

int hs_codec_encode(hs_format_t fmt, const hs_value_t *v, hs_buf_t *out) {
  switch (fmt) {
    case HS_FMT_MSGPACK:
      return hs_msgpack_encode(v, out);
    case HS_FMT_JSON:
      return hs_json_encode(v, out);
  }
  return HS_EUNSUPPORTED;
}

int hs_codec_encode_frame(hs_format_t fmt, const hs_value_t *v, hs_buf_t *out) {
  int rc = hs_codec_encode(fmt, v, out);
  if (rc == HS_OK && fmt == HS_FMT_JSON) {
    rc = hs_buf_append(out, "\n", 1);
  }
  return rc;
}

const char *hs_format_mime(hs_format_t fmt) {
  return fmt == HS_FMT_JSON ? "application/json" : "application/msgpack";
}

/* --- UTF-8 ------------------------------------------------------------------------------- */

size_t hs__utf8_check_full(const uint8_t *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    /* Text that is not all ASCII is still mostly ASCII (accented names, a symbol or two): skip
     * its runs eight bytes at a time while none has its high bit set. */
    while (len - i >= 8) {
      uint64_t w;
      memcpy(&w, s + i, 8);
      if ((w & UINT64_C(0x8080808080808080)) != 0) {
        break;
      }
      i += 8;
    }
    if (i == len) {
      break;
    }
    uint8_t c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t n;
    uint32_t cp;
    uint32_t min;
    if (c >= 0xc2 && c <= 0xdf) {
      n = 2, cp = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 3, cp = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return i; /* a continuation byte, an overlong 2-byte lead (c0, c1) or past U+10FFFF */
    }
    if (len - i < n) {
      return i;
    }
    for (size_t k = 1; k < n; k++) {
      if ((s[i + k] & 0xc0) != 0x80) {
        return i;
      }
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return i;
    }
    i += n;
  }
  return len;
}

/* --- base64 ------------------------------------------------------------------------------ */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t hs_base64_encoded_len(size_t len) {
  return (len / 3 + (len % 3 != 0)) * 4;
}

int hs_base64_encode(const uint8_t *src, size_t len, hs_buf_t *out) {
  if (len > (SIZE_MAX / 4) * 3 - 3) {
    return HS_ELIMIT;
  }
  int rc = hs_buf_reserve(out, hs_base64_encoded_len(len));
  if (rc != HS_OK) {
    return rc;
  }
  char *w = (char *)out->data + out->len;
  size_t i = 0;
  for (; i + 3 <= len; i += 3) {
    uint32_t t = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];
    *w++ = b64_alphabet[(t >> 18) & 63];
    *w++ = b64_alphabet[(t >> 12) & 63];
    *w++ = b64_alphabet[(t >> 6) & 63];
    *w++ = b64_alphabet[t & 63];
  }
  if (len - i == 1) {
    uint32_t t = (uint32_t)src[i] << 16;
    *w++ = b64_alphabet[(t >> 18) & 63];
    *w++ = b64_alphabet[(t >> 12) & 63];
    *w++ = '=';
    *w++ = '=';
  } else if (len - i == 2) {
    uint32_t t = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8;
    *w++ = b64_alphabet[(t >> 18) & 63];
    *w++ = b64_alphabet[(t >> 12) & 63];
    *w++ = b64_alphabet[(t >> 6) & 63];
    *w++ = '=';
  }
  out->len = (size_t)((uint8_t *)w - out->data);
  return HS_OK;
}

static int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') {
    return c - 'A';
  }
  if (c >= 'a' && c <= 'z') {
    return c - 'a' + 26;
  }
  if (c >= '0' && c <= '9') {
    return c - '0' + 52;
  }
  if (c == '+') {
    return 62;
  }
  if (c == '/') {
    return 63;
  }
  return -1;
}

int hs_base64_decode(const char *src, size_t len, hs_arena_t *arena, uint8_t **out, size_t *out_len,
                     hs_err_t *err) {
  /* Padding is optional, but when present it must complete the last group of four. */
  size_t data_len = len;
  if (len % 4 == 0 && len >= 4) {
    if (src[len - 1] == '=') {
      data_len--;
      if (src[len - 2] == '=') {
        data_len--;
      }
    }
  }
  for (size_t i = 0; i < data_len; i++) {
    if (b64_value(src[i]) < 0) {
      unsigned char c = (unsigned char)src[i];
      if (c == '-' || c == '_') {
        return hs_err_set(err, HS_EINVAL,
                          "base64 character %zu is '%c', from the URL-safe alphabet; binary "
                          "in JSON uses standard base64 with '+' and '/' (RFC 4648 section 4)",
                          i, c);
      }
      if (c == '=') {
        return hs_err_set(err, HS_EINVAL,
                          "base64 character %zu is '=' in the middle of the text; padding may "
                          "only end it",
                          i);
      }
      if (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
        return hs_err_set(err, HS_EINVAL,
                          "base64 character %zu is whitespace; send base64 without line breaks "
                          "or spaces",
                          i);
      }
      return hs_err_set(err, HS_EINVAL,
                        "base64 character %zu (byte 0x%02x) is not in the base64 "
                        "alphabet (A-Z, a-z, 0-9, '+', '/')",
                        i, c);
    }
  }
  if (data_len % 4 == 1) {
    return hs_err_set(err, HS_EINVAL,
                      "base64 text of %zu characters cannot be complete: a final group of one "
                      "character holds no whole byte",
                      len);
  }
  size_t n = data_len / 4 * 3 + (data_len % 4 == 0 ? 0 : data_len % 4 - 1);
  uint8_t *dst = hs_arena_alloc(arena, n + 1);
  if (dst == NULL) {
    return hs_err_set(err, HS_ENOMEM, "out of memory decoding %zu bytes of base64", len);
  }
  size_t w = 0;
  size_t i = 0;
  for (; i + 4 <= data_len; i += 4) {
    uint32_t t = (uint32_t)b64_value(src[i]) << 18 | (uint32_t)b64_value(src[i + 1]) << 12 |
                 (uint32_t)b64_value(src[i + 2]) << 6 | (uint32_t)b64_value(src[i + 3]);
    dst[w++] = (uint8_t)(t >> 16);
    dst[w++] = (uint8_t)(t >> 8);
    dst[w++] = (uint8_t)t;
  }
  size_t rest = data_len - i;
  if (rest > 0) {
    uint32_t t = (uint32_t)b64_value(src[i]) << 18 | (uint32_t)b64_value(src[i + 1]) << 12;
    if (rest == 3) {
      t |= (uint32_t)b64_value(src[i + 2]) << 6;
    }
    /* Bits below the last whole byte must be zero, or two texts would mean the same bytes. */
    uint32_t spare = rest == 2 ? (t & 0xffff) : (t & 0xff);
    if (spare != 0) {
      return hs_err_set(err, HS_EINVAL,
                        "base64 character %zu has bits set past the end of the data; the text "
                        "was not produced by a standard base64 encoder",
                        i + rest - 1);
    }
    dst[w++] = (uint8_t)(t >> 16);
    if (rest == 3) {
      dst[w++] = (uint8_t)(t >> 8);
    }
  }
  dst[w] = 0;
  *out = dst;
  *out_len = w;
  return HS_OK;
}
