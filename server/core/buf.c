#include "core/buf.h"

#include <stdbool.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/str.h"

void hs_buf_init(hs_buf_t *b, size_t limit) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
  b->limit = limit;
}

int hs_buf_reserve(hs_buf_t *b, size_t n) {
  if (n > SIZE_MAX - b->len) {
    return HS_ELIMIT;
  }
  size_t want = b->len + n;
  if (b->limit != 0 && want > b->limit) {
    return HS_ELIMIT;
  }
  if (want <= b->cap) {
    return HS_OK;
  }
  size_t cap = b->cap == 0 ? 256 : b->cap;
  while (cap < want) {
    cap = cap > SIZE_MAX / 2 ? want : cap * 2;
  }
  if (b->limit != 0 && cap > b->limit) {
    cap = b->limit;
  }
  uint8_t *p = realloc(b->data, cap);
  if (p == NULL) {
    return HS_ENOMEM;
  }
  b->data = p;
  b->cap = cap;
  return HS_OK;
}

int hs_buf_append_grow(hs_buf_t *b, const void *p, size_t n) {
  if (n == 0) {
    return HS_OK;
  }
  int rc = hs_buf_reserve(b, n);
  if (rc != HS_OK) {
    return rc;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return HS_OK;
}

/* The digits of u, preceded by a minus when negative. */
static int put_digits(hs_buf_t *b, uint64_t u, bool negative) {
  char tmp[22] = "-";
  size_t n = hs_fmt_uint(tmp + 1, u);
  return negative ? hs_buf_append(b, tmp, n + 1) : hs_buf_append(b, tmp + 1, n);
}

int hs_buf_put_int(hs_buf_t *b, int64_t v) {
  return put_digits(b, v < 0 ? 0 - (uint64_t)v : (uint64_t)v, v < 0);
}

int hs_buf_put_uint(hs_buf_t *b, uint64_t v) {
  return put_digits(b, v, false);
}

int hs_buf_puts(hs_buf_t *b, const char *s) {
  return hs_buf_append(b, s, strlen(s));
}

int hs_buf_printf(hs_buf_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) {
    return HS_EINVAL;
  }
  int rc = hs_buf_reserve(b, (size_t)n + 1);
  if (rc != HS_OK) {
    return rc;
  }
  va_start(ap, fmt);
  vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return HS_OK;
}

void hs_buf_consume(hs_buf_t *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

void hs_buf_free(hs_buf_t *b) {
  free(b->data);
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

uint8_t *hs_buf_release(hs_buf_t *b, size_t *len) {
  uint8_t *p = b->data;
  if (len != NULL) {
    *len = b->len;
  }
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
  return p;
}
