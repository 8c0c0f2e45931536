/* A growable byte buffer with a hard cap, used for request bodies and encoded responses. The
 * cap is what keeps a client from making the server buffer more than a configured amount. */
#ifndef HS_CORE_BUF_H
#define HS_CORE_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct hs_buf {
  uint8_t *data; /* owned: malloc'd, NULL while empty */
  size_t len;
  size_t cap;   /* allocated bytes */
  size_t limit; /* 0 = no limit; appends that would pass it fail with HS_ELIMIT */
} hs_buf_t;

void hs_buf_init(hs_buf_t *b, size_t limit);

/* The general case of hs_buf_append: grows the buffer first. */
int hs_buf_append_grow(hs_buf_t *b, const void *p, size_t n);

/* Appends n bytes. Returns HS_OK, HS_ELIMIT (over the limit: nothing appended) or HS_ENOMEM.
 * Inline: encoders append a few bytes at a time, millions of times per export, and the room is
 * almost always there already. */
static inline int hs_buf_append(hs_buf_t *b, const void *p, size_t n) {
  if (n != 0 && n <= b->cap - b->len && (b->limit == 0 || n <= b->limit - b->len)) {
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
  }
  return hs_buf_append_grow(b, p, n);
}

/* Appends the decimal digits of v (no printf: encoders write millions of integers). */
int hs_buf_put_int(hs_buf_t *b, int64_t v);
int hs_buf_put_uint(hs_buf_t *b, uint64_t v);

/* Appends a NUL-terminated string (without its NUL). */
int hs_buf_puts(hs_buf_t *b, const char *s);

/* Appends printf-formatted text. */
int hs_buf_printf(hs_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Makes room for n more bytes without changing len. */
int hs_buf_reserve(hs_buf_t *b, size_t n);

/* Drops the first n bytes (consumed input), keeping the rest. */
void hs_buf_consume(hs_buf_t *b, size_t n);

/* Releases the memory; the buffer is empty and reusable afterwards. */
void hs_buf_free(hs_buf_t *b);

/* Transfers ownership of the bytes to the caller (free() them); the buffer is left empty. */
uint8_t *hs_buf_release(hs_buf_t *b, size_t *len);

#endif
