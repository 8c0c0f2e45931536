/* JSON decoding (through jansson) and encoding (streamed straight into an hs_buf_t).
 *
 * jansson builds its whole tree before we see it and only caps nesting at 2048, so a 1 MiB body
 * of `[0,0,0,...]` would cost half a million allocations. A scan of the text first checks
 * depth, counts, total values and string lengths without allocating; only a text within the
 * limits is parsed. The scan never judges syntax: jansson does that and reports line and
 * column. */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"

/* jansson refuses deeper texts itself (JSON_PARSER_MAX_DEPTH); the scan's stack is this big. */
enum { JSON_DEPTH_CAP = 2048 };

/* Line and column (1-based, columns counted in characters as jansson counts them) of a byte
 * offset, computed only when an error is reported. */
static void line_col(const char *s, size_t pos, size_t *line, size_t *col) {
  size_t l = 1, c = 1;
  for (size_t i = 0; i < pos; i++) {
    if (s[i] == '\n') {
      l++, c = 1;
    } else if (((unsigned char)s[i] & 0xc0) != 0x80) {
      c++;
    }
  }
  *line = l;
  *col = c;
}

static int scan_fail(const char *s, size_t pos, hs_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Fills err with "at line L, column C: <message>" for the byte offset pos. */
static int scan_fail(const char *s, size_t pos, hs_err_t *err, int code, const char *fmt, ...) {
  size_t line, col;
  line_col(s, pos, &line, &col);
  char what[HS_ERR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return hs_err_set(err, code, "at line %zu, column %zu: %s", line, col, what);
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

static long hex4(const char *p, size_t avail) {
  if (avail < 4) {
    return -1;
  }
  long v = 0;
  for (int i = 0; i < 4; i++) {
    int h = hexval(p[i]);
    if (h < 0) {
      return -1;
    }
    v = v << 4 | h;
  }
  return v;
}

/* Skips the string starting at s[*pos] == '"'. Checks its decoded length and refuses \u0000.
 * Returns HS_OK with *pos past the closing quote, HS_OK with *stop set for text jansson will
 * reject anyway, or an error. */
static int scan_string(const char *s, size_t len, size_t *pos, bool key,
                       const hs_codec_limits_t *lim, bool *stop, hs_err_t *err) {
  const size_t start = *pos;
  size_t i = start + 1;
  size_t dec = 0; /* decoded bytes */
  while (i < len && s[i] != '"') {
    if (s[i] != '\\') {
      dec++, i++;
      continue;
    }
    if (i + 1 >= len) {
      *stop = true;
      return HS_OK;
    }
    if (s[i + 1] != 'u') {
      dec++, i += 2;
      continue;
    }
    long cp = hex4(s + i + 2, len - i - 2);
    if (cp < 0) {
      *stop = true;
      return HS_OK;
    }
    if (cp == 0) {
      return scan_fail(s, i, err, HS_EINVAL,
                       "%s contains \\u0000, which text cannot hold; send raw bytes as base64",
                       key ? "an object key" : "a string");
    }
    i += 6;
    if (cp >= 0xd800 && cp <= 0xdbff && i + 1 < len && s[i] == '\\' && s[i + 1] == 'u') {
      long lo = hex4(s + i + 2, len - i - 2);
      if (lo >= 0xdc00 && lo <= 0xdfff) {
        dec += 4, i += 6;
        continue;
      }
    }
    dec += cp < 0x80 ? 1 : cp < 0x800 ? 2 : 3;
  }
  if (i >= len) {
    *stop = true;
    return HS_OK;
  }
  if (dec > lim->max_str_len) {
    return scan_fail(s, start, err, HS_ELIMIT, "%s of %zu bytes is over the limit of %zu bytes",
                     key ? "object key" : "string", dec, lim->max_str_len);
  }
  *pos = i + 1;
  return HS_OK;
}

/* Checks the limits over the raw text. Syntax errors are left for jansson: when the text stops
 * making sense the scan simply ends without an error. */
static int scan_text(const char *s, size_t len, const hs_codec_limits_t *lim, hs_err_t *err) {
  const uint32_t max_depth = lim->max_depth < JSON_DEPTH_CAP ? lim->max_depth : JSON_DEPTH_CAP;
  uint32_t count[JSON_DEPTH_CAP]; /* elements (or members) seen in each open container */
  unsigned char is_obj[JSON_DEPTH_CAP / 8];
  uint32_t depth = 0;
  uint64_t items = 1;
  size_t i = 0;
  while (i < len) {
    char ch = s[i];
    bool in_obj = depth > 0 && (is_obj[(depth - 1) / 8] >> ((depth - 1) % 8) & 1);
    /* An element starts: in an array at its first character, in an object at its ':'. */
    bool starts = depth > 0 && (in_obj ? ch == ':'
                                       : !(ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' ||
                                           ch == ',' || ch == ']' || ch == '}' || ch == ':'));
    if (starts) {
      if (++count[depth - 1] > lim->max_count) {
        return scan_fail(s, i, err, HS_ELIMIT, "%s has more than %u %s, the limit",
                         in_obj ? "an object" : "an array", lim->max_count,
                         in_obj ? "members" : "elements");
      }
      if (++items > lim->max_items) {
        return scan_fail(s, i, err, HS_ELIMIT, "the text holds more than %u values, the limit",
                         lim->max_items);
      }
    }
    if (ch == '[' || ch == '{') {
      if (depth + 1 > max_depth) {
        return scan_fail(s, i, err, HS_ELIMIT,
                         "%s nested %u levels deep is over the limit of %u levels",
                         ch == '[' ? "an array" : "an object", depth + 1, max_depth);
      }
      count[depth] = 0;
      if (ch == '{') {
        is_obj[depth / 8] |= (unsigned char)(1u << (depth % 8));
      } else {
        is_obj[depth / 8] &= (unsigned char)~(1u << (depth % 8));
      }
      depth++;
      i++;
    } else if (ch == ']' || ch == '}') {
      if (depth == 0) {
        return HS_OK;
      }
      depth--;
      i++;
    } else if (ch == '"') {
      bool stop = false;
      /* In an object a string right after '{' or ',' is a key; values follow a ':'. */
      bool key = in_obj && !starts;
      if (key) {
        size_t k = i;
        while (k > 0) {
          char p = s[--k];
          if (p == ' ' || p == '\t' || p == '\n' || p == '\r') {
            continue;
          }
          key = p == '{' || p == ',';
          break;
        }
      }
      int rc = scan_string(s, len, &i, key, lim, &stop, err);
      if (rc != HS_OK || stop) {
        return rc;
      }
    } else if (starts || depth == 0) {
      /* A number or literal: skip the rest of the token so it starts only one element. */
      i++;
      while (i < len && ((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'z') ||
                         s[i] == '.' || s[i] == '+' || s[i] == '-' || s[i] == 'E')) {
        i++;
      }
    } else {
      i++;
    }
  }
  return HS_OK;
}

/* --- conversion from jansson's tree ------------------------------------------------------ */

typedef struct conv {
  hs_arena_t *arena;
  const hs_codec_limits_t *lim;
  hs_err_t *err;
  uint64_t items;
} conv_t;

static int oom(conv_t *c) {
  return hs_err_set(c->err, HS_ENOMEM, "out of memory while decoding a JSON body");
}

/* The scan has already enforced every limit; these checks only keep the conversion safe should
 * the two ever disagree. */
static int convert(conv_t *c, json_t *j, hs_value_t *dst, uint32_t depth) {
  memset(dst, 0, sizeof *dst);
  switch (json_typeof(j)) {
    case JSON_NULL:
      dst->type = HS_V_NIL;
      return HS_OK;
    case JSON_TRUE:
    case JSON_FALSE:
      dst->type = HS_V_BOOL;
      dst->as.b = json_is_true(j);
      return HS_OK;
    case JSON_INTEGER:
      dst->type = HS_V_INT;
      dst->as.i = (int64_t)json_integer_value(j);
      return HS_OK;
    case JSON_REAL:
      dst->type = HS_V_FLOAT;
      dst->as.f = json_real_value(j);
      return HS_OK;
    case JSON_STRING: {
      size_t n = json_string_length(j);
      const char *p = json_string_value(j);
      if (n > c->lim->max_str_len) {
        return hs_err_set(c->err, HS_ELIMIT, "a string of %zu bytes is over the limit of %zu", n,
                          c->lim->max_str_len);
      }
      if (memchr(p, 0, n) != NULL) {
        return hs_err_set(c->err, HS_EINVAL, "a string contains \\u0000, which text cannot hold");
      }
      char *copy = hs_arena_strndup(c->arena, p, n);
      if (copy == NULL) {
        return oom(c);
      }
      dst->type = HS_V_STR;
      dst->as.str.ptr = copy;
      dst->as.str.len = n;
      return HS_OK;
    }
    case JSON_ARRAY: {
      size_t n = json_array_size(j);
      dst->type = HS_V_ARRAY;
      if (depth + 1 > c->lim->max_depth || n > c->lim->max_count ||
          (c->items += n) > c->lim->max_items) {
        return hs_err_set(c->err, HS_ELIMIT, "an array is over the nesting or size limits");
      }
      if (n == 0) {
        return HS_OK;
      }
      hs_value_t *items = hs_arena_alloc(c->arena, n * sizeof *items);
      if (items == NULL) {
        return oom(c);
      }
      for (size_t i = 0; i < n; i++) {
        int rc = convert(c, json_array_get(j, i), &items[i], depth + 1);
        if (rc != HS_OK) {
          return rc;
        }
      }
      dst->as.arr.items = items;
      dst->as.arr.len = dst->as.arr.cap = n;
      return HS_OK;
    }
    case JSON_OBJECT: {
      size_t n = json_object_size(j);
      dst->type = HS_V_MAP;
      if (depth + 1 > c->lim->max_depth || n > c->lim->max_count ||
          (c->items += n) > c->lim->max_items) {
        return hs_err_set(c->err, HS_ELIMIT, "an object is over the nesting or size limits");
      }
      if (n == 0) {
        return HS_OK;
      }
      hs_member_t *items = hs_arena_alloc(c->arena, n * sizeof *items);
      if (items == NULL) {
        return oom(c);
      }
      size_t i = 0;
      /* jansson iterates objects in insertion order, which is the order on the wire. */
      for (void *it = json_object_iter(j); it != NULL && i < n;
           it = json_object_iter_next(j, it), i++) {
        size_t klen = json_object_iter_key_len(it);
        const char *k = json_object_iter_key(it);
        if (klen > c->lim->max_str_len) {
          return hs_err_set(c->err, HS_ELIMIT, "an object key of %zu bytes is over the limit",
                            klen);
        }
        char *kp = hs_arena_strndup(c->arena, k, klen);
        if (kp == NULL) {
          return oom(c);
        }
        items[i].key = kp;
        items[i].key_len = klen;
        int rc = convert(c, json_object_iter_value(it), &items[i].val, depth + 1);
        if (rc != HS_OK) {
          return rc;
        }
      }
      dst->as.map.items = items;
      dst->as.map.len = dst->as.map.cap = i;
      return HS_OK;
    }
  }
  return hs_err_set(c->err, HS_EINVAL, "unknown JSON value type");
}

int hs_json_decode(const char *buf, size_t len, const hs_codec_limits_t *lim, hs_arena_t *arena,
                   hs_value_t **out, hs_err_t *err) {
  if (lim == NULL) {
    lim = &hs_codec_default_limits;
  }
  if (len > lim->max_bytes) {
    return hs_err_set(err, HS_ELIMIT, "the body is %zu bytes, over the limit of %zu bytes", len,
                      lim->max_bytes);
  }
  if (len == 0) {
    return hs_err_set(err, HS_EINVAL, "the body is empty; send one JSON object");
  }
  int rc = scan_text(buf, len, lim, err);
  if (rc != HS_OK) {
    return rc;
  }
  json_error_t jerr;
  json_t *root =
      json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
  if (root == NULL) {
    switch (json_error_code(&jerr)) {
      case json_error_out_of_memory:
        return hs_err_set(err, HS_ENOMEM, "out of memory while parsing a %zu-byte JSON body", len);
      case json_error_numeric_overflow:
        return hs_err_set(err, HS_ELIMIT,
                          "at line %d, column %d: %s; integers must fit in a signed 64-bit "
                          "integer (-9223372036854775808 to 9223372036854775807)",
                          jerr.line, jerr.column, jerr.text);
      case json_error_invalid_utf8:
        return hs_err_set(err, HS_EINVAL,
                          "at line %d, column %d: %s; JSON bodies must be UTF-8 (send raw bytes "
                          "as base64)",
                          jerr.line, jerr.column, jerr.text);
      case json_error_stack_overflow:
        return hs_err_set(err, HS_ELIMIT, "at line %d, column %d: %s", jerr.line, jerr.column,
                          jerr.text);
      default:
        return hs_err_set(err, HS_EINVAL, "at line %d, column %d: %s", jerr.line, jerr.column,
                          jerr.text);
    }
  }
  conv_t c = {.arena = arena, .lim = lim, .err = err, .items = 1};
  hs_value_t *v = hs_arena_alloc(arena, sizeof *v);
  rc = v == NULL ? oom(&c) : convert(&c, root, v, 0);
  json_decref(root);
  if (rc != HS_OK) {
    return rc;
  }
  *out = v;
  return HS_OK;
}

/* --- encoding ---------------------------------------------------------------------------- */

/* Bytes a JSON string holds as they are: printable ASCII but the quote and the backslash. */
static const bool k_plain[256] = {
    ['\x20'] = true, ['!'] = true, ['#'] = true, ['$'] = true, ['%'] = true, ['&'] = true,
    ['\''] = true,   ['('] = true, [')'] = true, ['*'] = true, ['+'] = true, [','] = true,
    ['-'] = true,    ['.'] = true, ['/'] = true, ['0'] = true, ['1'] = true, ['2'] = true,
    ['3'] = true,    ['4'] = true, ['5'] = true, ['6'] = true, ['7'] = true, ['8'] = true,
    ['9'] = true,    [':'] = true, [';'] = true, ['<'] = true, ['='] = true, ['>'] = true,
    ['?'] = true,    ['@'] = true, ['A'] = true, ['B'] = true, ['C'] = true, ['D'] = true,
    ['E'] = true,    ['F'] = true, ['G'] = true, ['H'] = true, ['I'] = true, ['J'] = true,
    ['K'] = true,    ['L'] = true, ['M'] = true, ['N'] = true, ['O'] = true, ['P'] = true,
    ['Q'] = true,    ['R'] = true, ['S'] = true, ['T'] = true, ['U'] = true, ['V'] = true,
    ['W'] = true,    ['X'] = true, ['Y'] = true, ['Z'] = true, ['['] = true, [']'] = true,
    ['^'] = true,    ['_'] = true, ['`'] = true, ['a'] = true, ['b'] = true, ['c'] = true,
    ['d'] = true,    ['e'] = true, ['f'] = true, ['g'] = true, ['h'] = true, ['i'] = true,
    ['j'] = true,    ['k'] = true, ['l'] = true, ['m'] = true, ['n'] = true, ['o'] = true,
    ['p'] = true,    ['q'] = true, ['r'] = true, ['s'] = true, ['t'] = true, ['u'] = true,
    ['v'] = true,    ['w'] = true, ['x'] = true, ['y'] = true, ['z'] = true, ['{'] = true,
    ['|'] = true,    ['}'] = true, ['~'] = true,
};

int hs_json_put_string(hs_buf_t *out, const char *p, size_t n) {
  /* Most strings (ids, names, hex digests) are printable ASCII with nothing to escape: copied
   * in one go. */
  size_t plain = 0;
  while (plain < n && k_plain[(unsigned char)p[plain]]) {
    plain++;
  }
  if (plain == n) {
    int rc = hs_buf_reserve(out, n + 2);
    if (rc == HS_OK) {
      uint8_t *o = out->data + out->len;
      o[0] = '"';
      memcpy(o + 1, p, n);
      o[n + 1] = '"';
      out->len += n + 2;
    }
    return rc;
  }
  if (hs_utf8_check((const uint8_t *)p, n) != n) {
    return HS_EINVAL;
  }
  static const char hex[] = "0123456789abcdef";
  int rc = hs_buf_append(out, "\"", 1);
  size_t run = 0; /* bytes copied as they are, appended in one go */
  for (size_t i = 0; rc == HS_OK && i < n; i++) {
    unsigned char ch = (unsigned char)p[i];
    char esc[6];
    size_t elen = 0;
    if (ch == '"' || ch == '\\') {
      esc[0] = '\\', esc[1] = (char)ch, elen = 2;
    } else if (ch < 0x20) {
      esc[0] = '\\';
      switch (ch) {
        case '\n':
          esc[1] = 'n', elen = 2;
          break;
        case '\r':
          esc[1] = 'r', elen = 2;
          break;
        case '\t':
          esc[1] = 't', elen = 2;
          break;
        case '\b':
          esc[1] = 'b', elen = 2;
          break;
        case '\f':
          esc[1] = 'f', elen = 2;
          break;
        default:
          esc[1] = 'u', esc[2] = '0', esc[3] = '0', esc[4] = hex[ch >> 4], esc[5] = hex[ch & 15];
          elen = 6;
      }
    } else {
      run++;
      continue;
    }
    rc = hs_buf_append(out, p + i - run, run);
    run = 0;
    if (rc == HS_OK) {
      rc = hs_buf_append(out, esc, elen);
    }
  }
  if (rc == HS_OK) {
    rc = hs_buf_append(out, p + n - run, run);
  }
  if (rc == HS_OK) {
    rc = hs_buf_append(out, "\"", 1);
  }
  return rc;
}

/* The fewest significant digits that read back as the same double (%.17g always does), so 0.1
 * is written "0.1" and not "0.10000000000000001". */
static int put_float(hs_buf_t *out, double f) {
  if (!isfinite(f)) {
    return hs_buf_append(out, "null", 4);
  }
  char tmp[40];
  int prec = 1;
  for (; prec < 17; prec++) {
    snprintf(tmp, sizeof tmp, "%.*g", prec, f);
    if (strtod(tmp, NULL) == f) {
      break;
    }
  }
  /* %g switches to an exponent once the exponent reaches the precision; widen the precision
   * (it adds no digits, %g drops trailing zeros) so 100.0 is not written 1e+02. */
  snprintf(tmp, sizeof tmp, "%.*e", prec - 1, f);
  long exp10 = strtol(strchr(tmp, 'e') + 1, NULL, 10);
  if (exp10 >= prec && exp10 < 17) {
    prec = (int)exp10 + 1;
  }
  snprintf(tmp, sizeof tmp, "%.*g", prec, f);
  if (strpbrk(tmp, ".e") == NULL) {
    strcat(tmp, ".0"); /* so that 1.0 decodes as a float again, not as the integer 1 */
  }
  return hs_buf_puts(out, tmp);
}

static int put_bin(hs_buf_t *out, const uint8_t *p, size_t n) {
  int rc = hs_buf_append(out, "\"", 1);
  if (rc == HS_OK) {
    rc = hs_base64_encode(p, n, out);
  }
  if (rc == HS_OK) {
    rc = hs_buf_append(out, "\"", 1);
  }
  return rc;
}

static int encode(const hs_value_t *v, hs_buf_t *out, unsigned depth) {
  switch (v->type) {
    case HS_V_NIL:
      return hs_buf_append(out, "null", 4);
    case HS_V_BOOL:
      return v->as.b ? hs_buf_append(out, "true", 4) : hs_buf_append(out, "false", 5);
    case HS_V_INT:
      return hs_buf_put_int(out, v->as.i);
    case HS_V_UINT:
      return hs_buf_put_uint(out, v->as.u);
    case HS_V_FLOAT:
      return put_float(out, v->as.f);
    case HS_V_STR:
      return hs_json_put_string(out, v->as.str.ptr, v->as.str.len);
    case HS_V_BIN:
      return put_bin(out, (const uint8_t *)v->as.str.ptr, v->as.str.len);
    case HS_V_ARRAY: {
      if (depth >= HS_CODEC_MAX_ENCODE_DEPTH) {
        return HS_ELIMIT;
      }
      int rc = hs_buf_append(out, "[", 1);
      for (size_t i = 0; rc == HS_OK && i < v->as.arr.len; i++) {
        if (i > 0) {
          rc = hs_buf_append(out, ",", 1);
        }
        if (rc == HS_OK) {
          rc = encode(&v->as.arr.items[i], out, depth + 1);
        }
      }
      return rc == HS_OK ? hs_buf_append(out, "]", 1) : rc;
    }
    case HS_V_MAP: {
      if (depth >= HS_CODEC_MAX_ENCODE_DEPTH) {
        return HS_ELIMIT;
      }
      int rc = hs_buf_append(out, "{", 1);
      for (size_t i = 0; rc == HS_OK && i < v->as.map.len; i++) {
        const hs_member_t *m = &v->as.map.items[i];
        if (i > 0) {
          rc = hs_buf_append(out, ",", 1);
        }
        if (rc == HS_OK) {
          rc = hs_json_put_string(out, m->key, m->key_len);
        }
        if (rc == HS_OK) {
          rc = hs_buf_append(out, ":", 1);
        }
        if (rc == HS_OK) {
          rc = encode(&m->val, out, depth + 1);
        }
      }
      return rc == HS_OK ? hs_buf_append(out, "}", 1) : rc;
    }
  }
  return HS_EINVAL;
}

int hs_json_encode(const hs_value_t *v, hs_buf_t *out) {
  return encode(v, out, 0);
}

/* ------------------------------------------------------------ msgpack straight to JSON */

typedef struct mp_reader {
  const uint8_t *p, *end;
} mp_reader_t;

static bool mp_take(mp_reader_t *r, size_t n, const uint8_t **out) {
  if ((size_t)(r->end - r->p) < n) {
    return false;
  }
  *out = r->p;
  r->p += n;
  return true;
}

static uint64_t mp_be(const uint8_t *p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    v = (v << 8) | p[i];
  }
  return v;
}

/* Reads a length of n bytes (n 0: none). */
static bool mp_len(mp_reader_t *r, size_t n, size_t *len) {
  const uint8_t *b;
  if (!mp_take(r, n, &b)) {
    return false;
  }
  *len = (size_t)mp_be(b, n);
  return true;
}

static int mp_str(mp_reader_t *r, size_t len, hs_buf_t *out) {
  const uint8_t *s;
  if (!mp_take(r, len, &s)) {
    return HS_EINVAL;
  }
  return hs_json_put_string(out, (const char *)s, len);
}

static int mp_value(mp_reader_t *r, hs_buf_t *out, unsigned depth);

static int mp_array(mp_reader_t *r, size_t n, hs_buf_t *out, unsigned depth) {
  int rc = hs_buf_append(out, "[", 1);
  for (size_t i = 0; rc == HS_OK && i < n; i++) {
    if (i > 0) {
      rc = hs_buf_append(out, ",", 1);
    }
    if (rc == HS_OK) {
      rc = mp_value(r, out, depth + 1);
    }
  }
  return rc == HS_OK ? hs_buf_append(out, "]", 1) : rc;
}

/* A map's key: msgpack strings only, as the value model has it. */
static int mp_key(mp_reader_t *r, const char **key, size_t *klen) {
  const uint8_t *b;
  size_t len = 0;
  if (!mp_take(r, 1, &b)) {
    return HS_EINVAL;
  }
  if ((*b & 0xe0) == 0xa0) {
    len = *b & 0x1f;
  } else if (*b < 0xd9 || *b > 0xdb || !mp_len(r, (size_t)1 << (*b - 0xd9), &len)) {
    return HS_EUNSUPPORTED;
  }
  const uint8_t *s;
  if (!mp_take(r, len, &s)) {
    return HS_EINVAL;
  }
  *key = (const char *)s;
  *klen = len;
  return HS_OK;
}

static int mp_map(mp_reader_t *r, size_t n, hs_buf_t *out, unsigned depth,
                  bool (*drop)(void *, const char *, size_t), void *ctx) {
  int rc = hs_buf_append(out, "{", 1);
  bool first = true;
  for (size_t i = 0; rc == HS_OK && i < n; i++) {
    const char *k;
    size_t kl;
    rc = mp_key(r, &k, &kl);
    if (rc != HS_OK) {
      break;
    }
    if (drop != NULL && drop(ctx, k, kl)) {
      /* Skipped: its value is read into a scratch buffer and discarded. */
      hs_buf_t skip;
      hs_buf_init(&skip, 0);
      rc = mp_value(r, &skip, depth + 1);
      hs_buf_free(&skip);
      continue;
    }
    if (!first) {
      rc = hs_buf_append(out, ",", 1);
    }
    first = false;
    if (rc == HS_OK) {
      rc = hs_json_put_string(out, k, kl);
    }
    if (rc == HS_OK) {
      rc = hs_buf_append(out, ":", 1);
    }
    if (rc == HS_OK) {
      rc = mp_value(r, out, depth + 1);
    }
  }
  return rc == HS_OK ? hs_buf_append(out, "}", 1) : rc;
}

static int mp_value(mp_reader_t *r, hs_buf_t *out, unsigned depth) {
  const uint8_t *b;
  if (depth > HS_CODEC_MAX_ENCODE_DEPTH) {
    return HS_ELIMIT;
  }
  if (!mp_take(r, 1, &b)) {
    return HS_EINVAL;
  }
  uint8_t t = *b;
  size_t len = 0;
  if (t <= 0x7f) {
    return hs_buf_put_uint(out, t);
  }
  if (t >= 0xe0) {
    return hs_buf_put_int(out, (int64_t)t - 0x100);
  }
  if ((t & 0xe0) == 0xa0) {
    return mp_str(r, t & 0x1f, out);
  }
  if ((t & 0xf0) == 0x90) {
    return mp_array(r, t & 0x0f, out, depth);
  }
  if ((t & 0xf0) == 0x80) {
    return mp_map(r, t & 0x0f, out, depth, NULL, NULL);
  }
  switch (t) {
    case 0xc0:
      return hs_buf_append(out, "null", 4);
    case 0xc2:
      return hs_buf_append(out, "false", 5);
    case 0xc3:
      return hs_buf_append(out, "true", 4);
    case 0xc4:
    case 0xc5:
    case 0xc6: {
      const uint8_t *bin;
      if (!mp_len(r, (size_t)1 << (t - 0xc4), &len) || !mp_take(r, len, &bin)) {
        return HS_EINVAL;
      }
      return put_bin(out, bin, len);
    }
    case 0xca:
    case 0xcb: {
      size_t n = t == 0xca ? 4 : 8;
      if (!mp_take(r, n, &b)) {
        return HS_EINVAL;
      }
      uint64_t bits = mp_be(b, n);
      double f;
      if (n == 4) {
        uint32_t u32 = (uint32_t)bits;
        float f32;
        memcpy(&f32, &u32, 4);
        f = f32;
      } else {
        memcpy(&f, &bits, 8);
      }
      return put_float(out, f);
    }
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf: {
      size_t n = (size_t)1 << (t - 0xcc);
      if (!mp_take(r, n, &b)) {
        return HS_EINVAL;
      }
      return hs_buf_put_uint(out, mp_be(b, n));
    }
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: {
      size_t n = (size_t)1 << (t - 0xd0);
      if (!mp_take(r, n, &b)) {
        return HS_EINVAL;
      }
      uint64_t u = mp_be(b, n);
      if (n < 8 && (u >> (8 * n - 1)) != 0) {
        u |= ~(uint64_t)0 << (8 * n); /* sign-extend */
      }
      return hs_buf_put_int(out, (int64_t)u);
    }
    case 0xd9:
    case 0xda:
    case 0xdb:
      if (!mp_len(r, (size_t)1 << (t - 0xd9), &len)) {
        return HS_EINVAL;
      }
      return mp_str(r, len, out);
    case 0xdc:
    case 0xdd:
      if (!mp_len(r, t == 0xdc ? 2 : 4, &len)) {
        return HS_EINVAL;
      }
      return mp_array(r, len, out, depth);
    case 0xde:
    case 0xdf:
      if (!mp_len(r, t == 0xde ? 2 : 4, &len)) {
        return HS_EINVAL;
      }
      return mp_map(r, len, out, depth, NULL, NULL);
    default:
      return HS_EUNSUPPORTED; /* ext types, and 0xc1, which msgpack never uses */
  }
}

int hs_msgpack_to_json(const uint8_t *p, size_t n, hs_buf_t *out,
                       bool (*drop)(void *ctx, const char *key, size_t len), void *ctx) {
  mp_reader_t r = {.p = p, .end = p + n};
  size_t start = out->len;
  int rc;
  const uint8_t *b = p;
  if (drop != NULL && n > 0 && ((*b & 0xf0) == 0x80 || *b == 0xde || *b == 0xdf)) {
    size_t len = 0;
    r.p++;
    if ((*b & 0xf0) == 0x80) {
      len = *b & 0x0f;
      rc = HS_OK;
    } else {
      rc = mp_len(&r, *b == 0xde ? 2 : 4, &len) ? HS_OK : HS_EINVAL;
    }
    if (rc == HS_OK) {
      rc = mp_map(&r, len, out, 0, drop, ctx);
    }
  } else {
    rc = mp_value(&r, out, 0);
  }
  if (rc == HS_OK && r.p != r.end) {
    rc = HS_EINVAL; /* trailing bytes */
  }
  if (rc != HS_OK) {
    out->len = start;
  }
  return rc;
}
