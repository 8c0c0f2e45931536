/* The compliance log's arithmetic (SPEC §6), shared by the server that seals and exports the
 * log and by `handsel verify`, which checks an export offline: both sides hash a record through
 * this one function, so they cannot drift apart.
 *
 *   record_hash = SHA-256(canonical msgpack of the record, see hs_audit_record_hash)
 *   chain_n     = SHA-256(chain_{n-1} || record_hash_n), chain_0 = 32 zero bytes
 *   checkpoint  = Ed25519 signature of the text hs_audit_checkpoint_text writes
 *
 * The hash covers every member of a record except the submitted data itself, which it covers
 * through data_digest (SHA-256 of the data's msgpack). An export may then leave out pii fields
 * and still prove that nothing else was changed. */
#ifndef HS_AUDIT_RECORD_H
#define HS_AUDIT_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/error.h"

/* One validation record as it is hashed. Every pointer is borrowed. errors and documents are
 * the msgpack encodings of the record's error map and document map, exactly as the codec writes
 * them (hs_msgpack_encode), or NULL when the record has none. */
typedef struct hs_audit_record {
  int64_t id;
  const char *brand;
  const char *session;
  const char *process;
  const char *version;
  const char *step;
  int64_t seq;
  const char *contractor;
  int64_t server_us; /* microseconds since the Unix epoch */
  bool has_device;
  int64_t device_us;
  const char *result; /* "accepted" or "rejected" */
  const uint8_t *errors;
  size_t errors_len;
  const uint8_t *documents;
  size_t documents_len;
  uint8_t data_digest[32];
} hs_audit_record_t;

/* The record's hash. scratch (the caller's, emptied first) holds the canonical encoding, so a
 * caller hashing many records reuses one allocation. HS_ENOMEM only. */
int hs_audit_record_hash(const hs_audit_record_t *r, hs_buf_t *scratch, uint8_t out[32]);

/* chain_n from chain_{n-1} and record_hash_n. prev and out may be the same array. */
void hs_audit_chain_next(const uint8_t prev[32], const uint8_t record_hash[32], uint8_t out[32]);

/* A signed checkpoint: the brand's chain has `size` records and ends in `head`. */
typedef struct hs_audit_checkpoint {
  const char *brand; /* borrowed */
  int64_t size;
  uint8_t head[32];
  int64_t signed_us;
  char key_id[17];
  uint8_t signature[64];
} hs_audit_checkpoint_t;

/* The exact text that is signed:
 *   "handsel audit checkpoint v1\nbrand <brand>\nsize <n>\nhead <hex>\ntime <RFC 3339>\n" */
int hs_audit_checkpoint_text(const hs_audit_checkpoint_t *c, hs_buf_t *out);

/* "2026-11-23T10:15:03.123456Z" (always six fractional digits) into out (32 bytes). */
void hs_audit_time_format(int64_t us, char out[32]);
/* The inverse, exactly; HS_EINVAL for anything else. */
int hs_audit_time_parse(const char *s, int64_t *us);

#endif
