/* Identifiers, digests and times in the forms the API uses. */
#ifndef HS_CORE_IDS_H
#define HS_CORE_IDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A random (version 4) UUID, lower case, into out (37 bytes with the NUL). HS_OK or HS_EIO when
 * the system has no randomness to give. */
int hs_uuid_v4(char out[37]);
/* True if s is a UUID in the canonical 8-4-4-4-12 lower- or upper-case hex form. */
bool hs_uuid_valid(const char *s);

/* 64 random bits (session seeds). */
int hs_random_u64(uint64_t *out);

/* SHA-256 of p[0..n) into out. */
void hs_sha256(const void *p, size_t n, uint8_t out[32]);
/* SHA-256 of two pieces, as if concatenated (no copy). */
void hs_sha256_2(const void *p1, size_t n1, const void *p2, size_t n2, uint8_t out[32]);
/* Lower-case hex of n bytes into out (2n+1 bytes with the NUL). */
void hs_hex(const uint8_t *p, size_t n, char *out);
/* True if s is exactly n lower-case hex digits. */
bool hs_is_hex(const char *s, size_t n);

/* Milliseconds since the Unix epoch, from the real-time clock. */
int64_t hs_time_now_ms(void);
/* "2026-05-04T10:15:03.120Z" into out (at least 32 bytes). */
void hs_time_format(int64_t ms, char *out, size_t cap);
/* Parses an RFC 3339 date-time ("2026-05-04T10:15:03Z", fractional seconds and a numeric
 * offset allowed) into ms. HS_OK or HS_EINVAL. */
int hs_time_parse(const char *s, int64_t *ms);

#endif
