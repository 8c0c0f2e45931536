/* Copying strings into fixed-size buffers. snprintf(dst, cap, "%s", src) does the same through
 * the whole printf machinery, several hundred instructions a call, and the request path makes
 * a dozen such copies per request. */
#ifndef HS_CORE_STR_H
#define HS_CORE_STR_H

#include <stddef.h>
#include <string.h>

/* Copies src into dst (cap > 0 bytes), cut to cap - 1 bytes and always NUL-terminated, like
 * BSD strlcpy (which this glibc lacks). Returns strlen(src): >= cap means it was cut. */
static inline size_t hs_strlcpy(char *dst, const char *src, size_t cap) {
  size_t n = strlen(src);
  size_t k = n < cap ? n : cap - 1;
  memcpy(dst, src, k);
  dst[k] = '\0';
  return n;
}

/* Writes the decimal digits of v and a NUL into dst, which has room for 21 bytes; returns the
 * number of digits. */
static inline size_t hs_fmt_uint(char dst[21], unsigned long long v) {
  char tmp[20];
  size_t i = sizeof tmp;
  do {
    tmp[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  size_t n = sizeof tmp - i;
  memcpy(dst, tmp + i, n);
  dst[n] = '\0';
  return n;
}

#endif
