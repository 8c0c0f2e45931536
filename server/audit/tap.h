/* The records this node committed, handed from the workers' committers to the node's sealer.
 *
 * A sealing round hashes every record in its range. Reading each one back from PostgreSQL cost
 * the database more than inserting it had, and came as one burst per round, which showed in the
 * tail latency of every request running beside it. But when a completion's transaction commits,
 * its committer still holds everything the record's hash covers, except the values PostgreSQL
 * assigned (id, server time, device time as parsed), which the INSERT returns. So the committer
 * publishes the record here, and the sealer asks PostgreSQL only which ids exist in its range
 * (a narrow index scan), reading whole rows for the ids it was not handed: other nodes'
 * records, completions that went in through the careful path (store/commit.c), and anything
 * this tap dropped. When it was handed every id of its range, it asks nothing at all.
 *
 * What a record's hash then covers is what this node sent and PostgreSQL acknowledged, not what
 * the table holds by the time the sealer runs; a row changed in between no longer verifies,
 * which is the point of the log.
 *
 * Producers: any thread, hs_audit_tap_put. Consumer: one thread at a time (the sealer's), with
 * hs_audit_tap_sync and hs_audit_tap_find. The memory held is bounded by a budget: past it a
 * batch is dropped (counted), and the sealer reads those records from the database instead. */
#ifndef HS_AUDIT_TAP_H
#define HS_AUDIT_TAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "audit/record.h"

typedef struct hs_audit_tap hs_audit_tap_t;

/* Bytes that need not be NUL-terminated (a cell of a committer's row). */
typedef struct hs_audit_bytes {
  const void *p; /* borrowed; NULL with n 0 for SQL NULL */
  size_t n;
} hs_audit_bytes_t;

/* A record as a producer hands it over: every member borrowed, copied by hs_audit_tap_put. */
typedef struct hs_audit_tap_record {
  int64_t brand_id;
  int64_t id;
  int64_t seq;
  int64_t server_us;
  bool has_device;
  int64_t device_us;
  bool accepted; /* result "accepted", else "rejected" */
  hs_audit_bytes_t session, process, version, step, contractor;
  hs_audit_bytes_t errors, documents; /* msgpack, or NULL */
  const uint8_t *data_digest;         /* 32 bytes */
} hs_audit_tap_record_t;

/* A tap holding at most budget bytes of records. Owned by the caller (hs_audit_tap_free). */
int hs_audit_tap_new(size_t budget, hs_audit_tap_t **out);
/* Frees t and everything it holds; no producer or consumer may use it any more. NULL is
 * ignored. */
void hs_audit_tap_free(hs_audit_tap_t *t);

/* Copies n records into t in one block. HS_ELIMIT when they would pass the budget or the tap
 * is closed (nothing is kept, and the sealer reads them from the database), HS_ENOMEM. A text
 * member holding a NUL is refused (HS_EINVAL): PostgreSQL stores no such text, so it cannot be
 * what the row holds. Thread-safe. */
int hs_audit_tap_put(hs_audit_tap_t *t, const hs_audit_tap_record_t *recs, size_t n);

/* From now on every put is dropped (the node has no sealer to consume them). Thread-safe. */
void hs_audit_tap_close(hs_audit_tap_t *t);

/* Consumer: takes in what was put since the last sync, forgets every record with an id at or
 * below horizon (sealed: their memory goes back to the budget), and indexes the rest by id.
 * HS_ENOMEM leaves the tap answering nothing until a later sync succeeds. */
int hs_audit_tap_sync(hs_audit_tap_t *t, int64_t horizon);

/* Consumer: the record with this id as of the last sync, or NULL (never handed over, dropped,
 * or of another brand). Its strings are NUL-terminated and its brand is NULL (the sealer knows
 * the brand's name). Borrowed until the next sync. */
const hs_audit_record_t *hs_audit_tap_find(const hs_audit_tap_t *t, int64_t brand_id, int64_t id);

/* Consumer: the record with this id as of the last sync, whatever its brand (its brand's id in
 * *brand_id), or NULL. Borrowed until the next sync, like hs_audit_tap_find's. */
const hs_audit_record_t *hs_audit_tap_get(const hs_audit_tap_t *t, int64_t id, int64_t *brand_id);
/* Consumer: how many records with an id in (after, through] the last sync indexed. */
size_t hs_audit_tap_holds(const hs_audit_tap_t *t, int64_t after, int64_t through);

typedef struct hs_audit_tap_stats {
  size_t records;   /* held now (consumer's view as of the last sync, plus those put since) */
  size_t bytes;     /* held now, against the budget */
  uint64_t dropped; /* records refused by the budget or a closed tap, ever */
} hs_audit_tap_stats_t;
/* Thread-safe. */
void hs_audit_tap_stats(hs_audit_tap_t *t, hs_audit_tap_stats_t *out);

#endif
