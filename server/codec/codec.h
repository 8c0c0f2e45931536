/* Decoding untrusted bytes into the value model, and encoding values back, for both wire
 * formats. Every decoder checks the limits before it allocates, so a 5-byte message cannot make
 * it reserve 400 MB (see HARDENING.md: msgpack-c's C API has no count or length limits).
 *
 * Errors: HS_EINVAL for malformed bytes, HS_ELIMIT for a limit, HS_EUNSUPPORTED for a valid
 * message the value model has no place for (msgpack ext types, non-string map keys). The
 * hs_err_t message names the byte offset (msgpack) or line and column (JSON) and what was
 * wrong, e.g. "at byte 3: array of 65535 elements, but only 2 bytes remain". */
#ifndef HS_CODEC_CODEC_H
#define HS_CODEC_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "codec/value.h"
#include "core/buf.h"
#include "core/error.h"

typedef enum hs_format {
  HS_FMT_MSGPACK = 0,
  HS_FMT_JSON = 1,
} hs_format_t;

/* Decodes exactly one msgpack object filling all of buf (trailing bytes are an error).
 * *out is allocated in arena. On failure *out is untouched. lim NULL means the defaults.
 * Strings and keys must be valid UTF-8 without U+0000 (HS_EINVAL); a map must not repeat a key
 * (HS_EINVAL). */
int hs_msgpack_decode(const uint8_t *buf, size_t len, const hs_codec_limits_t *lim,
                      hs_arena_t *arena, hs_value_t **out, hs_err_t *err);

/* Decodes the first msgpack object of a stream of concatenated objects (the framing of
 * /v1/sessions/{id}/stream). On success *used is the number of bytes it took; the caller drops
 * them and calls again. When buf holds only the start of an object, returns HS_OK with *out NULL
 * and *used 0: read more bytes and call again (unless len already exceeds lim->max_bytes, which
 * is HS_ELIMIT). Limits apply to each object on its own. */
int hs_msgpack_decode_next(const uint8_t *buf, size_t len, const hs_codec_limits_t *lim,
                           hs_arena_t *arena, hs_value_t **out, size_t *used, hs_err_t *err);

/* Decodes one JSON text. Strings must be valid UTF-8 without U+0000; duplicate keys are
 * refused. Integers outside int64 are refused (HS_ELIMIT); other numbers become HS_V_FLOAT
 * (a number written with a fraction or exponent, such as 1.0, stays a float). JSON has no
 * binary: base64 strings stay strings here and are converted by whoever knows the schema (see
 * hs_base64_decode). Limits are checked by a scan of the text before jansson allocates. */
int hs_json_decode(const char *buf, size_t len, const hs_codec_limits_t *lim, hs_arena_t *arena,
                   hs_value_t **out, hs_err_t *err);

/* Decodes in the given format. */
int hs_codec_decode(hs_format_t fmt, const uint8_t *buf, size_t len, const hs_codec_limits_t *lim,
                    hs_arena_t *arena, hs_value_t **out, hs_err_t *err);

/* Values built by the server are not limited like decoded ones, but encoding recurses, so
 * nesting deeper than this is refused with HS_ELIMIT rather than risking the stack. */
#define HS_CODEC_MAX_ENCODE_DEPTH 256

/* Appends the encoding of v to out. HS_ELIMIT if out's limit is reached (or nesting passes
 * HS_CODEC_MAX_ENCODE_DEPTH), HS_ENOMEM, HS_EINVAL if a string or key is not valid UTF-8 (a
 * server bug: the bytes would be unreadable to the client). On failure out may hold a partial
 * encoding after its original length; callers discard it.
 * msgpack: the smallest encoding of each integer, floats always as float64, maps in member
 * order. JSON: compact, members in order; binary becomes a base64 string; a float is written
 * with the fewest digits that read back to the same double and always with a '.' or an
 * exponent (so it decodes as a float again); a non-finite float becomes null. */
int hs_msgpack_encode(const hs_value_t *v, hs_buf_t *out);
int hs_json_encode(const hs_value_t *v, hs_buf_t *out);
int hs_codec_encode(hs_format_t fmt, const hs_value_t *v, hs_buf_t *out);

/* Appends the JSON of one msgpack object p[0..n) without building values: for re-encoding
 * bytes this server wrote (stored records), where the value model's checks already ran once.
 * When the object is a map and drop is not NULL, members whose key drop(ctx, key, len) accepts
 * are left out. Strings are checked as hs_json_put_string does. On failure (HS_EINVAL malformed
 * or trailing bytes, HS_EUNSUPPORTED an ext type or a non-string key, HS_ELIMIT nesting past
 * HS_CODEC_MAX_ENCODE_DEPTH) out is as it was. */
int hs_msgpack_to_json(const uint8_t *p, size_t n, hs_buf_t *out,
                       bool (*drop)(void *ctx, const char *key, size_t len), void *ctx);

/* Appends s[0..n) as a JSON string literal (quoted, escaped). HS_EINVAL when it is not valid
 * UTF-8: nothing a peer sent can make the JSON invalid. */
int hs_json_put_string(hs_buf_t *out, const char *s, size_t n);

/* Appends one frame of a streamed response: msgpack objects are simply concatenated; JSON
 * frames are NDJSON (the encoding followed by "\n"). */
int hs_codec_encode_frame(hs_format_t fmt, const hs_value_t *v, hs_buf_t *out);

/* The MIME type of a format ("application/msgpack", "application/json"); static string. */
const char *hs_format_mime(hs_format_t fmt);

/* Standard base64 (RFC 4648 section 4, alphabet A-Z a-z 0-9 + /, '=' padding), which is how
 * binary travels in JSON bodies. The encoder always pads. */
size_t hs_base64_encoded_len(size_t len);
int hs_base64_encode(const uint8_t *src, size_t len, hs_buf_t *out);

/* Decodes standard base64 into a new arena block (*out, *out_len; *out is NUL-terminated for
 * convenience, not counted in *out_len). Padding may be omitted; whitespace, the URL-safe
 * alphabet and non-zero padding bits are refused with HS_EINVAL and a message naming the
 * character offset. HS_ENOMEM if the arena is out of memory. */
int hs_base64_decode(const char *src, size_t len, hs_arena_t *arena, uint8_t **out, size_t *out_len,
                     hs_err_t *err);

/* The whole check, for text that is not all ASCII: use hs_utf8_check. */
size_t hs__utf8_check_full(const uint8_t *s, size_t len);

/* Returns len if s[0..len) is valid UTF-8 (shortest forms only, no surrogates, nothing above
 * U+10FFFF), otherwise the offset of the first byte of the first invalid sequence.
 *
 * Inline because nearly every string checked is a short ASCII key or value (a completion's
 * answer checks about sixty of them): ORing its bytes together settles those in a few
 * instructions, where the call and the decoder's loop cost fifty or more. */
static inline size_t hs_utf8_check(const uint8_t *s, size_t len) {
  uint64_t any = 0;
  size_t i = 0;
  for (; len - i >= 8; i += 8) {
    uint64_t w;
    memcpy(&w, s + i, 8);
    any |= w;
  }
  for (; i < len; i++) {
    any |= s[i];
  }
  return (any & UINT64_C(0x8080808080808080)) == 0 ? len : hs__utf8_check_full(s, len);
}

#endif
