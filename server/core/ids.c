/* SHA256(): see hs_sha256. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "core/ids.h"

#include <ctype.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/error.h"

int hs_uuid_v4(char out[37]) {
  uint8_t b[16];
  if (RAND_bytes(b, sizeof b) != 1) {
    return HS_EIO;
  }
  b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
  b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
  snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
           b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
           b[15]);
  return HS_OK;
}

bool hs_uuid_valid(const char *s) {
  if (strlen(s) != 36) {
    return false;
  }
  for (int i = 0; i < 36; i++) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-') {
        return false;
      }
    } else if (!isxdigit((unsigned char)s[i])) {
      return false;
    }
  }
  return true;
}

int hs_random_u64(uint64_t *out) {
  return RAND_bytes((unsigned char *)out, sizeof *out) == 1 ? HS_OK : HS_EIO;
}

/* OpenSSL 3's EVP digests look the algorithm up in the provider tables (locks, a hash table)
 * and allocate and wipe a context on every call, and its one-shot SHA256() goes through the
 * same path: for the 64 to 500 bytes hashed per completion and per exported record that costs
 * several times the hashing itself. The SHA256_* functions hash directly on the stack; they
 * are deprecated only in favour of EVP, not unsafe. */
void hs_sha256(const void *p, size_t n, uint8_t out[32]) {
  SHA256_CTX c;
  SHA256_Init(&c);
  SHA256_Update(&c, p, n);
  SHA256_Final(out, &c);
}

void hs_sha256_2(const void *p1, size_t n1, const void *p2, size_t n2, uint8_t out[32]) {
  SHA256_CTX c;
  SHA256_Init(&c);
  SHA256_Update(&c, p1, n1);
  SHA256_Update(&c, p2, n2);
  SHA256_Final(out, &c);
}

/* Every byte's two digits: one lookup and one 2-byte copy per byte (three digests per exported
 * record are written in hex). */
static const char k_hex_pairs[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

void hs_hex(const uint8_t *p, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) {
    memcpy(out + 2 * i, k_hex_pairs + 2 * p[i], 2);
  }
  out[2 * n] = '\0';
}

bool hs_is_hex(const char *s, size_t n) {
  size_t i = 0;
  for (; s[i] != '\0' && i < n; i++) {
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
      return false;
    }
  }
  return i == n && s[i] == '\0';
}

int64_t hs_time_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void hs_time_format(int64_t ms, char *out, size_t cap) {
  time_t sec = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  int frac = (int)(ms - (int64_t)sec * 1000);
  struct tm tm;
  gmtime_r(&sec, &tm);
  size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out + n, cap - n, ".%03dZ", frac);
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (civil_from_days inverse),
 * so parsing needs neither timegm nor the process's time zone. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = (unsigned)(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

static int digits(const char **p, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (!isdigit((unsigned char)(*p)[i])) {
      return HS_EINVAL;
    }
    v = v * 10 + ((*p)[i] - '0');
  }
  *p += n;
  *out = v;
  return HS_OK;
}

int hs_time_parse(const char *s, int64_t *ms) {
  const char *p = s;
  int y, mo, d, h, mi, se;
  if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' || digits(&p, 2, &d) ||
      (*p != 'T' && *p != 't' && *p != ' ')) {
    return HS_EINVAL;
  }
  p++;
  if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' || digits(&p, 2, &se)) {
    return HS_EINVAL;
  }
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) {
    return HS_EINVAL;
  }
  int frac_ms = 0;
  if (*p == '.') {
    p++;
    int n = 0;
    while (isdigit((unsigned char)*p)) {
      if (n < 3) {
        frac_ms = frac_ms * 10 + (*p - '0');
      }
      n++;
      p++;
    }
    if (n == 0) {
      return HS_EINVAL;
    }
    for (; n < 3; n++) {
      frac_ms *= 10;
    }
  }
  int64_t offset_min = 0;
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int sign = *p == '-' ? -1 : 1;
    p++;
    int oh, om;
    if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59) {
      return HS_EINVAL;
    }
    offset_min = sign * (oh * 60 + om);
  } else {
    return HS_EINVAL;
  }
  if (*p != '\0') {
    return HS_EINVAL;
  }
  int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
  int64_t secs = days * 86400 + h * 3600 + mi * 60 + se - offset_min * 60;
  *ms = secs * 1000 + frac_ms;
  return HS_OK;
}
