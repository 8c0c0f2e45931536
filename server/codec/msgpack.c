/* msgpack decoding and encoding.
 *
 * Decoding happens in two passes. msgpack-c's C unpacker trusts the counts and lengths it reads
 * (five bytes `dd 00 ff ff ff` make it reserve about 400 MB for an array that is not there), so
 * a first pass walks the raw bytes without allocating anything and checks every count, length,
 * type and limit against the bytes actually present. Only a message that passes is handed to
 * msgpack-c, whose object tree is then copied into the arena as hs_value_t. */
#include <msgpack.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "core/endian.h"

/* msgpack-c keeps its container stack in a fixed array of MSGPACK_EMBED_STACK_SIZE (32)
 * entries, compiled into the library, and fails deeper messages: no limit can allow more. */
enum { MP_DEPTH_CAP = 32 };

/* Returned by the scan when the bytes end before the first object does; internal only. */
enum { SCAN_TRUNCATED = 1 };

typedef struct scan {
  const uint8_t *buf;
  size_t len;
  const hs_codec_limits_t *lim;
  bool partial; /* a stream: running out of bytes means "read more", not "malformed" */
  hs_err_t *err;
} scan_t;

static uint32_t be16(const uint8_t *p) {
  return (uint32_t)p[0] << 8 | p[1];
}

/* "1 byte remains" / "2 bytes remain": messages are read by people. */
static const char *plural(uint64_t n) {
  return n == 1 ? "" : "s";
}

static const char *verb_s(uint64_t n) {
  return n == 1 ? "s" : "";
}

/* The bytes end before the element that starts at byte at does: either wait for more (stream)
 * or refuse. need is the number of bytes the element takes from at, header included, or 0 when
 * not even its type byte is there. */
static int truncated(scan_t *s, size_t at, size_t need, const char *what) {
  if (s->partial) {
    if (need == 0 && at >= s->lim->max_bytes) {
      return hs_err_set(s->err, HS_ELIMIT,
                        "at byte %zu: the message is still incomplete at the limit of %zu bytes "
                        "for one message",
                        at, s->lim->max_bytes);
    }
    if (need > s->lim->max_bytes || at > s->lim->max_bytes - need) {
      return hs_err_set(s->err, HS_ELIMIT,
                        "at byte %zu: %s of %zu bytes would pass the limit of %zu bytes for one "
                        "message",
                        at, what, need, s->lim->max_bytes);
    }
    return SCAN_TRUNCATED;
  }
  if (need == 0) {
    return hs_err_set(s->err, HS_EINVAL,
                      "at byte %zu: the message ends where %s should begin; was the body cut "
                      "short?",
                      at, what);
  }
  size_t rest = s->len - at;
  return hs_err_set(s->err, HS_EINVAL,
                    "at byte %zu: %s takes %zu bytes, but only %zu byte%s remain%s; was the body "
                    "cut short?",
                    at, what, need, rest, plural(rest), verb_s(rest));
}

static int check_text(scan_t *s, const uint8_t *p, size_t n, bool key) {
  size_t bad = hs_utf8_check(p, n);
  if (bad != n) {
    return hs_err_set(s->err, HS_EINVAL,
                      "at byte %zu: %s is not valid UTF-8 (byte 0x%02x); send raw bytes as "
                      "binary (bin) instead of a string",
                      (size_t)(p - s->buf) + bad, key ? "map key" : "string", p[bad]);
  }
  const void *nul = n > 0 ? memchr(p, 0, n) : NULL;
  if (nul != NULL) {
    return hs_err_set(s->err, HS_EINVAL,
                      "at byte %zu: %s contains U+0000 (a NUL byte), which text cannot hold; "
                      "send raw bytes as binary (bin) instead",
                      (size_t)((const uint8_t *)nul - s->buf), key ? "map key" : "string");
  }
  return HS_OK;
}

static const char *header_name(uint8_t b) {
  if (b <= 0x7f || b >= 0xe0 || (b >= 0xcc && b <= 0xd3)) {
    return "an integer";
  }
  if (b <= 0x8f || b == 0xde || b == 0xdf) {
    return "a map";
  }
  if (b <= 0x9f || b == 0xdc || b == 0xdd) {
    return "an array";
  }
  if (b <= 0xbf || (b >= 0xd9 && b <= 0xdb)) {
    return "a string";
  }
  switch (b) {
    case 0xc0:
      return "nil";
    case 0xc2:
    case 0xc3:
      return "a boolean";
    case 0xc4:
    case 0xc5:
    case 0xc6:
      return "binary";
    case 0xca:
    case 0xcb:
      return "a float";
    default:
      return "an extension type";
  }
}

/* Walks exactly one object from the start of buf. On HS_OK *end is the offset just past it. */
static int scan_object(scan_t *s, size_t *end) {
  const hs_codec_limits_t *lim = s->lim;
  const uint8_t *buf = s->buf;
  const size_t len = s->len;
  const uint32_t max_depth = lim->max_depth < MP_DEPTH_CAP ? lim->max_depth : MP_DEPTH_CAP;
  uint64_t remain[MP_DEPTH_CAP]; /* elements left in each open container (2 per map member) */
  bool is_map[MP_DEPTH_CAP];
  uint32_t depth = 0;
  uint64_t items = 1; /* the root */
  size_t pos = 0;

  if (len == 0) {
    if (s->partial) {
      return SCAN_TRUNCATED;
    }
    return hs_err_set(s->err, HS_EINVAL, "the message is empty; send one msgpack map");
  }
  for (;;) {
    const bool key = depth > 0 && is_map[depth - 1] && remain[depth - 1] % 2 == 0;
    if (pos >= len) {
      return truncated(s, pos, 0, key ? "a map key" : "a value");
    }
    const size_t at = pos;
    const uint8_t b = buf[pos++];
    const size_t avail = len - pos; /* bytes after the type byte */
    size_t hdr = 0;                 /* length bytes after the type byte */
    uint64_t count = 0;             /* container elements */
    uint64_t slen = 0;              /* str/bin payload */
    enum { K_SCALAR, K_ARRAY, K_MAP, K_STR, K_BIN, K_EXT } kind = K_SCALAR;
    size_t fixed = 0; /* payload bytes of a scalar */

    if (key && !((b >= 0xa0 && b <= 0xbf) || (b >= 0xd9 && b <= 0xdb))) {
      if (b == 0xc1) {
        return hs_err_set(s->err, HS_EINVAL,
                          "at byte %zu: 0xc1 is not a msgpack type byte; the message is corrupt",
                          at);
      }
      return hs_err_set(s->err, HS_EUNSUPPORTED,
                        "at byte %zu: map key is %s, but only string keys are supported", at,
                        header_name(b));
    }
    if (b <= 0x7f || b >= 0xe0) {
      kind = K_SCALAR;
    } else if (b <= 0x8f) {
      kind = K_MAP, count = b & 0x0f;
    } else if (b <= 0x9f) {
      kind = K_ARRAY, count = b & 0x0f;
    } else if (b <= 0xbf) {
      kind = K_STR, slen = b & 0x1f;
    } else {
      switch (b) {
        case 0xc0:
        case 0xc2:
        case 0xc3:
          break;
        case 0xc1:
          return hs_err_set(s->err, HS_EINVAL,
                            "at byte %zu: 0xc1 is not a msgpack type byte; the message is corrupt",
                            at);
        case 0xc4:
          kind = K_BIN, hdr = 1;
          break;
        case 0xc5:
          kind = K_BIN, hdr = 2;
          break;
        case 0xc6:
          kind = K_BIN, hdr = 4;
          break;
        case 0xc7:
          kind = K_EXT, hdr = 1;
          break;
        case 0xc8:
          kind = K_EXT, hdr = 2;
          break;
        case 0xc9:
          kind = K_EXT, hdr = 4;
          break;
        case 0xca:
          fixed = 4;
          break;
        case 0xcb:
          fixed = 8;
          break;
        case 0xcc:
          fixed = 1;
          break;
        case 0xcd:
          fixed = 2;
          break;
        case 0xce:
          fixed = 4;
          break;
        case 0xcf:
          fixed = 8;
          break;
        case 0xd0:
          fixed = 1;
          break;
        case 0xd1:
          fixed = 2;
          break;
        case 0xd2:
          fixed = 4;
          break;
        case 0xd3:
          fixed = 8;
          break;
        case 0xd4:
        case 0xd5:
        case 0xd6:
        case 0xd7:
        case 0xd8:
          kind = K_EXT;
          break;
        case 0xd9:
          kind = K_STR, hdr = 1;
          break;
        case 0xda:
          kind = K_STR, hdr = 2;
          break;
        case 0xdb:
          kind = K_STR, hdr = 4;
          break;
        case 0xdc:
          kind = K_ARRAY, hdr = 2;
          break;
        case 0xdd:
          kind = K_ARRAY, hdr = 4;
          break;
        case 0xde:
          kind = K_MAP, hdr = 2;
          break;
        case 0xdf:
          kind = K_MAP, hdr = 4;
          break;
        default:
          break;
      }
    }

    if (kind == K_EXT) {
      /* The type byte follows the length bytes (or the header byte for fixext). */
      int type = avail > hdr ? (int)(int8_t)buf[pos + hdr] : 0;
      if (avail > hdr && type == -1) {
        return hs_err_set(s->err, HS_EUNSUPPORTED,
                          "at byte %zu: the msgpack timestamp extension (type -1) is not "
                          "supported; send times as RFC 3339 strings",
                          at);
      }
      if (avail > hdr) {
        return hs_err_set(s->err, HS_EUNSUPPORTED,
                          "at byte %zu: msgpack extension type %d is not supported; send only "
                          "nil, booleans, numbers, strings, binary, arrays and maps",
                          at, type);
      }
      return hs_err_set(s->err, HS_EUNSUPPORTED,
                        "at byte %zu: msgpack extension types are not supported; send only nil, "
                        "booleans, numbers, strings, binary, arrays and maps",
                        at);
    }
    if (avail < hdr) {
      return truncated(s, at, 1 + hdr, header_name(b));
    }
    if (hdr > 0) {
      uint64_t n = hdr == 1 ? buf[pos] : hdr == 2 ? be16(buf + pos) : hs_get_be32(buf + pos);
      if (kind == K_ARRAY || kind == K_MAP) {
        count = n;
      } else {
        slen = n;
      }
      pos += hdr;
    }
    const size_t rest = len - pos; /* bytes after the header */

    if (kind == K_SCALAR) {
      if (rest < fixed) {
        return truncated(s, at, 1 + fixed, header_name(b));
      }
      pos += fixed;
    } else if (kind == K_STR || kind == K_BIN) {
      const char *what = kind == K_STR ? (key ? "map key" : "string") : "binary";
      /* A whole message whose string claims more bytes than it has is malformed, as an array
       * that claims more elements is; only a string that is really there can be too long. A
       * stream waiting for more bytes checks the limit first, so it never waits for too many. */
      if (slen > rest && !s->partial) {
        return hs_err_set(s->err, HS_EINVAL,
                          "at byte %zu: %s of %llu bytes, but only %zu byte%s remain%s; was the "
                          "body cut short?",
                          at, what, (unsigned long long)slen, rest, plural(rest), verb_s(rest));
      }
      if (slen > lim->max_str_len) {
        return hs_err_set(s->err, HS_ELIMIT,
                          "at byte %zu: %s of %llu bytes is over the limit of %zu bytes", at, what,
                          (unsigned long long)slen, lim->max_str_len);
      }
      if (slen > rest) {
        if (s->partial) {
          return truncated(s, at, pos - at + (size_t)slen, what);
        }
        return hs_err_set(s->err, HS_EINVAL,
                          "at byte %zu: %s of %llu bytes, but only %zu byte%s remain%s; was the "
                          "body cut short?",
                          at, what, (unsigned long long)slen, rest, plural(rest), verb_s(rest));
      }
      if (kind == K_STR) {
        int rc = check_text(s, buf + pos, (size_t)slen, key);
        if (rc != HS_OK) {
          return rc;
        }
      }
      pos += (size_t)slen;
    } else {
      const char *what = kind == K_MAP ? "map" : "array";
      const char *unit = kind == K_MAP ? "members" : "elements";
      /* Every element takes at least one byte (a member two), so a count the remaining bytes
       * cannot hold is a lie, caught here before msgpack-c would reserve memory for it. */
      uint64_t need = kind == K_MAP ? count * 2 : count;
      if (need > rest) {
        if (!s->partial) {
          return hs_err_set(s->err, HS_EINVAL,
                            "at byte %zu: %s of %llu %s, but only %zu byte%s remain%s", at, what,
                            (unsigned long long)count, unit, rest, plural(rest), verb_s(rest));
        }
        /* In a stream the rest may still come, unless it could never fit in one message; the
         * walk below runs out of bytes and asks for more in its own time. */
        int rc = need > SIZE_MAX - (pos - at) ? HS_ELIMIT
                                              : truncated(s, at, pos - at + (size_t)need, what);
        if (rc == HS_ELIMIT) {
          rc = hs_err_set(s->err, HS_ELIMIT,
                          "at byte %zu: %s of %llu %s could never fit in the limit of %zu bytes",
                          at, what, (unsigned long long)count, unit, lim->max_bytes);
        }
        if (rc != SCAN_TRUNCATED) {
          return rc;
        }
      }
      if (count > lim->max_count) {
        return hs_err_set(s->err, HS_ELIMIT,
                          "at byte %zu: %s of %llu %s is over the limit of %u %s", at, what,
                          (unsigned long long)count, unit, lim->max_count, unit);
      }
      if (depth + 1 > max_depth) {
        return hs_err_set(s->err, HS_ELIMIT,
                          "at byte %zu: %s nested %u levels deep is over the limit of %u levels",
                          at, what, depth + 1, max_depth);
      }
      items += count;
      if (items > lim->max_items) {
        return hs_err_set(s->err, HS_ELIMIT,
                          "at byte %zu: the message holds more than %u values, the limit", at,
                          lim->max_items);
      }
      if (count > 0) {
        remain[depth] = need;
        is_map[depth] = kind == K_MAP;
        depth++;
        continue;
      }
    }
    /* One value is complete: count it against its container, closing every container it
     * completes in turn. */
    while (depth > 0 && --remain[depth - 1] == 0) {
      depth--;
    }
    if (depth == 0) {
      break;
    }
  }
  *end = pos;
  return HS_OK;
}

/* --- conversion from msgpack-c's tree ---------------------------------------------------- */

typedef struct conv {
  hs_arena_t *arena;
  const uint8_t *buf;
  size_t len;
  hs_err_t *err;
} conv_t;

static int oom(conv_t *c) {
  return hs_err_set(c->err, HS_ENOMEM, "out of memory while decoding a %zu-byte message", c->len);
}

/* The byte offset of a string msgpack-c points into the input, for messages. */
static size_t offset_of(conv_t *c, const char *p) {
  const uint8_t *u = (const uint8_t *)p;
  return u >= c->buf && u <= c->buf + c->len ? (size_t)(u - c->buf) : 0;
}

static int key_cmp(const void *a, const void *b) {
  const hs_member_t *x = *(const hs_member_t *const *)a;
  const hs_member_t *y = *(const hs_member_t *const *)b;
  if (x->key_len != y->key_len) {
    return x->key_len < y->key_len ? -1 : 1;
  }
  int r = memcmp(x->key, y->key, x->key_len);
  if (r != 0) {
    return r;
  }
  /* Equal keys: order by position so the later one is reported. */
  return x < y ? -1 : x > y;
}

static int dup_key(conv_t *c, const msgpack_object_kv *kvs, const hs_member_t *items,
                   const hs_member_t *dup) {
  const msgpack_object *k = &kvs[dup - items].key;
  int shown = dup->key_len > 64 ? 64 : (int)dup->key_len;
  return hs_err_set(c->err, HS_EINVAL, "at byte %zu: the map repeats the key \"%.*s%s\"",
                    offset_of(c, k->via.str.ptr), shown, dup->key, dup->key_len > 64 ? "..." : "");
}

/* Keys are unique in the value model. Small maps are checked pairwise; larger ones are sorted
 * through a temporary index so a 4096-member map costs n log n, not n squared. */
static int check_unique(conv_t *c, const msgpack_object_kv *kvs, const hs_member_t *items,
                        size_t n) {
  if (n <= 16) {
    for (size_t i = 1; i < n; i++) {
      for (size_t j = 0; j < i; j++) {
        if (items[i].key_len == items[j].key_len &&
            memcmp(items[i].key, items[j].key, items[i].key_len) == 0) {
          return dup_key(c, kvs, items, &items[i]);
        }
      }
    }
    return HS_OK;
  }
  const hs_member_t **idx = hs_arena_alloc(c->arena, n * sizeof *idx);
  if (idx == NULL) {
    return oom(c);
  }
  for (size_t i = 0; i < n; i++) {
    idx[i] = &items[i];
  }
  qsort(idx, n, sizeof *idx, key_cmp);
  for (size_t i = 1; i < n; i++) {
    if (idx[i]->key_len == idx[i - 1]->key_len &&
        memcmp(idx[i]->key, idx[i - 1]->key, idx[i]->key_len) == 0) {
      return dup_key(c, kvs, items, idx[i]);
    }
  }
  return HS_OK;
}

static int convert(conv_t *c, const msgpack_object *o, hs_value_t *dst) {
  memset(dst, 0, sizeof *dst);
  switch (o->type) {
    case MSGPACK_OBJECT_NIL:
      dst->type = HS_V_NIL;
      return HS_OK;
    case MSGPACK_OBJECT_BOOLEAN:
      dst->type = HS_V_BOOL;
      dst->as.b = o->via.boolean;
      return HS_OK;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
      if (o->via.u64 <= (uint64_t)INT64_MAX) {
        dst->type = HS_V_INT;
        dst->as.i = (int64_t)o->via.u64;
      } else {
        dst->type = HS_V_UINT;
        dst->as.u = o->via.u64;
      }
      return HS_OK;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
      dst->type = HS_V_INT;
      dst->as.i = o->via.i64;
      return HS_OK;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
      dst->type = HS_V_FLOAT;
      dst->as.f = o->via.f64;
      return HS_OK;
    case MSGPACK_OBJECT_STR:
    case MSGPACK_OBJECT_BIN: {
      dst->type = o->type == MSGPACK_OBJECT_STR ? HS_V_STR : HS_V_BIN;
      char *p = hs_arena_strndup(c->arena, o->via.str.ptr, o->via.str.size);
      if (p == NULL) {
        return oom(c);
      }
      dst->as.str.ptr = p;
      dst->as.str.len = o->via.str.size;
      return HS_OK;
    }
    case MSGPACK_OBJECT_ARRAY: {
      size_t n = o->via.array.size;
      dst->type = HS_V_ARRAY;
      if (n == 0) {
        return HS_OK;
      }
      hs_value_t *items = hs_arena_alloc(c->arena, n * sizeof *items);
      if (items == NULL) {
        return oom(c);
      }
      for (size_t i = 0; i < n; i++) {
        int rc = convert(c, &o->via.array.ptr[i], &items[i]);
        if (rc != HS_OK) {
          return rc;
        }
      }
      dst->as.arr.items = items;
      dst->as.arr.len = dst->as.arr.cap = n;
      return HS_OK;
    }
    case MSGPACK_OBJECT_MAP: {
      size_t n = o->via.map.size;
      dst->type = HS_V_MAP;
      if (n == 0) {
        return HS_OK;
      }
      hs_member_t *items = hs_arena_alloc(c->arena, n * sizeof *items);
      if (items == NULL) {
        return oom(c);
      }
      const msgpack_object_kv *kvs = o->via.map.ptr;
      for (size_t i = 0; i < n; i++) {
        const msgpack_object *k = &kvs[i].key;
        if (k->type != MSGPACK_OBJECT_STR) {
          /* The scan refuses these; kept so the tree is never trusted blindly. */
          return hs_err_set(c->err, HS_EUNSUPPORTED, "a map key is not a string");
        }
        char *kp = hs_arena_strndup(c->arena, k->via.str.ptr, k->via.str.size);
        if (kp == NULL) {
          return oom(c);
        }
        items[i].key = kp;
        items[i].key_len = k->via.str.size;
        int rc = convert(c, &kvs[i].val, &items[i].val);
        if (rc != HS_OK) {
          return rc;
        }
      }
      int rc = check_unique(c, kvs, items, n);
      if (rc != HS_OK) {
        return rc;
      }
      dst->as.map.items = items;
      dst->as.map.len = dst->as.map.cap = n;
      return HS_OK;
    }
    case MSGPACK_OBJECT_EXT:
      return hs_err_set(c->err, HS_EUNSUPPORTED, "msgpack extension types are not supported");
  }
  return hs_err_set(c->err, HS_EINVAL, "unknown msgpack object type %d", (int)o->type);
}

static int decode(const uint8_t *buf, size_t len, const hs_codec_limits_t *lim, bool partial,
                  hs_arena_t *arena, hs_value_t **out, size_t *used, hs_err_t *err) {
  if (lim == NULL) {
    lim = &hs_codec_default_limits;
  }
  if (!partial && len > lim->max_bytes) {
    return hs_err_set(err, HS_ELIMIT, "the message is %zu bytes, over the limit of %zu bytes", len,
                      lim->max_bytes);
  }
  scan_t s = {.buf = buf, .len = len, .lim = lim, .partial = partial, .err = err};
  size_t end = 0;
  int rc = scan_object(&s, &end);
  if (rc == SCAN_TRUNCATED) {
    *out = NULL;
    *used = 0;
    return HS_OK;
  }
  if (rc != HS_OK) {
    return rc;
  }
  if (partial && end > lim->max_bytes) {
    return hs_err_set(err, HS_ELIMIT, "the message is %zu bytes, over the limit of %zu bytes", end,
                      lim->max_bytes);
  }
  if (!partial && end != len) {
    return hs_err_set(err, HS_EINVAL,
                      "at byte %zu: %zu unexpected bytes after the end of the message; send "
                      "exactly one msgpack object",
                      end, len - end);
  }

  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  size_t off = 0;
  msgpack_unpack_return r = msgpack_unpack_next(&u, (const char *)buf, end, &off);
  if (r != MSGPACK_UNPACK_SUCCESS || off != end) {
    msgpack_unpacked_destroy(&u);
    if (r == MSGPACK_UNPACK_NOMEM_ERROR) {
      return hs_err_set(err, HS_ENOMEM, "out of memory while decoding a %zu-byte message", end);
    }
    return hs_err_set(err, HS_EINVAL, "the msgpack decoder refused the message (code %d)", (int)r);
  }
  conv_t c = {.arena = arena, .buf = buf, .len = end, .err = err};
  hs_value_t *v = hs_arena_alloc(arena, sizeof *v);
  rc = v == NULL ? oom(&c) : convert(&c, &u.data, v);
  msgpack_unpacked_destroy(&u);
  if (rc != HS_OK) {
    return rc;
  }
  *out = v;
  *used = end;
  return HS_OK;
}

int hs_msgpack_decode(const uint8_t *buf, size_t len, const hs_codec_limits_t *lim,
                      hs_arena_t *arena, hs_value_t **out, hs_err_t *err) {
  size_t used = 0;
  return decode(buf, len, lim, false, arena, out, &used, err);
}

int hs_msgpack_decode_next(const uint8_t *buf, size_t len, const hs_codec_limits_t *lim,
                           hs_arena_t *arena, hs_value_t **out, size_t *used, hs_err_t *err) {
  return decode(buf, len, lim, true, arena, out, used, err);
}

/* --- encoding ---------------------------------------------------------------------------- */

typedef struct pk_ctx {
  hs_buf_t *out;
  int rc; /* the hs_buf error behind a failed write */
} pk_ctx_t;

static int pk_write(void *data, const char *p, size_t n) {
  pk_ctx_t *c = data;
  int rc = hs_buf_append(c->out, p, n);
  if (rc != HS_OK) {
    c->rc = rc;
    return -1;
  }
  return 0;
}

static int pk_result(pk_ctx_t *c, int r) {
  if (r == 0) {
    return HS_OK;
  }
  return c->rc != HS_OK ? c->rc : HS_ENOMEM;
}

static int encode(msgpack_packer *pk, pk_ctx_t *c, const hs_value_t *v, unsigned depth) {
  int r;
  switch (v->type) {
    case HS_V_NIL:
      return pk_result(c, msgpack_pack_nil(pk));
    case HS_V_BOOL:
      return pk_result(c, v->as.b ? msgpack_pack_true(pk) : msgpack_pack_false(pk));
    case HS_V_INT:
      return pk_result(c, msgpack_pack_int64(pk, v->as.i));
    case HS_V_UINT:
      return pk_result(c, msgpack_pack_uint64(pk, v->as.u));
    case HS_V_FLOAT:
      return pk_result(c, msgpack_pack_double(pk, v->as.f));
    case HS_V_STR:
      if (v->as.str.len > UINT32_MAX) {
        return HS_ELIMIT;
      }
      if (hs_utf8_check((const uint8_t *)v->as.str.ptr, v->as.str.len) != v->as.str.len) {
        return HS_EINVAL;
      }
      r = msgpack_pack_str(pk, v->as.str.len);
      if (r == 0) {
        r = msgpack_pack_str_body(pk, v->as.str.ptr, v->as.str.len);
      }
      return pk_result(c, r);
    case HS_V_BIN:
      if (v->as.str.len > UINT32_MAX) {
        return HS_ELIMIT;
      }
      r = msgpack_pack_bin(pk, v->as.str.len);
      if (r == 0) {
        r = msgpack_pack_bin_body(pk, v->as.str.ptr, v->as.str.len);
      }
      return pk_result(c, r);
    case HS_V_ARRAY:
      if (depth >= HS_CODEC_MAX_ENCODE_DEPTH || v->as.arr.len > UINT32_MAX) {
        return HS_ELIMIT;
      }
      r = msgpack_pack_array(pk, v->as.arr.len);
      if (r != 0) {
        return pk_result(c, r);
      }
      for (size_t i = 0; i < v->as.arr.len; i++) {
        int rc = encode(pk, c, &v->as.arr.items[i], depth + 1);
        if (rc != HS_OK) {
          return rc;
        }
      }
      return HS_OK;
    case HS_V_MAP:
      if (depth >= HS_CODEC_MAX_ENCODE_DEPTH || v->as.map.len > UINT32_MAX) {
        return HS_ELIMIT;
      }
      r = msgpack_pack_map(pk, v->as.map.len);
      if (r != 0) {
        return pk_result(c, r);
      }
      for (size_t i = 0; i < v->as.map.len; i++) {
        const hs_member_t *m = &v->as.map.items[i];
        if (m->key_len > UINT32_MAX) {
          return HS_ELIMIT;
        }
        if (hs_utf8_check((const uint8_t *)m->key, m->key_len) != m->key_len) {
          return HS_EINVAL;
        }
        r = msgpack_pack_str(pk, m->key_len);
        if (r == 0) {
          r = msgpack_pack_str_body(pk, m->key, m->key_len);
        }
        if (r != 0) {
          return pk_result(c, r);
        }
        int rc = encode(pk, c, &m->val, depth + 1);
        if (rc != HS_OK) {
          return rc;
        }
      }
      return HS_OK;
  }
  return HS_EINVAL;
}

int hs_msgpack_encode(const hs_value_t *v, hs_buf_t *out) {
  pk_ctx_t c = {.out = out, .rc = HS_OK};
  msgpack_packer pk;
  msgpack_packer_init(&pk, &c, pk_write);
  return encode(&pk, &c, v, 0);
}
