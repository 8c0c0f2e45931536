/* Checking an NDJSON export of the compliance log offline (`handsel verify`), against the
 * public key alone: no server, no database.
 *
 * It recomputes every record's hash from its members, the chain from the export's start, and
 * checks each checkpoint's head and Ed25519 signature. On the first thing that does not hold it
 * stops and names the record: by its position in the chain, the line of the file and, for
 * records, its id; and says whether it was changed, removed, inserted or reordered.
 *
 * How precisely it can name the record depends on the tampering. An edit that leaves the
 * file's own record_hash and chain members alone is pinned to its exact record; so is a removed,
 * repeated or moved line. A forger who also recomputes every hash after the record is still
 * caught at the next signed checkpoint, and the report then names the first record after the
 * previous checkpoint as where the altered stretch begins. */
#ifndef HS_AUDIT_VERIFY_H
#define HS_AUDIT_VERIFY_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/error.h"

typedef struct hs_audit_verify_report {
  bool ok;
  char brand[65];
  int64_t start_size; /* the chain's size before the first record of the export */
  int64_t end_size;   /* the size the last checkpoint covers */
  int64_t records;    /* record lines (all members present) */
  int64_t elided;     /* records left out by the export's filters: hashes only */
  int64_t redacted;   /* records whose data had pii removed: covered through data_digest only */
  int64_t checkpoints;
  char key_id[17];
  char signed_at[32]; /* the last checkpoint's time */
  /* When !ok: */
  const char *kind; /* "changed", "removed", "inserted", "reordered", "unsigned", "malformed" */
  int64_t position; /* the record named (0 when the failure is about the file as a whole) */
  int64_t line;     /* 1-based line of the file */
  int64_t id;       /* the record's id, 0 when unknown */
  char message[512];
} hs_audit_verify_report_t;

/* Verifies the export read from f (borrowed; when it is seekable, a second pass tells a
 * reordered record from a removed one). pub is the raw Ed25519 public key. Returns HS_OK when
 * the file could be read: look at rep->ok. HS_EIO when reading fails. */
int hs_audit_verify(FILE *f, const uint8_t pub[32], hs_audit_verify_report_t *rep, hs_err_t *err);

#endif
