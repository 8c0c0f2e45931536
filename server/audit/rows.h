/* Reading validation records out of PostgreSQL for hashing: one column list and one row
 * parser, shared by the sealer and the export so both hash exactly the same members. */
#ifndef HS_AUDIT_ROWS_H
#define HS_AUDIT_ROWS_H

#include <libpq-fe.h>
#include <stdint.h>

#include "audit/record.h"

/* The select list, in the order hs_audit_row_parse reads, for `validation_records r JOIN brands
 * b ON b.id = r.brand_id`. Results must be requested in binary format (times then arrive as
 * PostgreSQL's own microseconds since 2000-01-01, with no arithmetic per row). Columns after
 * HS_AUDIT_ROW_COLUMNS are the caller's. */
#define HS_AUDIT_ROW_SELECT                                                                        \
  "r.id, b.name, r.brand_id, r.session_id, r.process, r.version, r.step_id, r.seq,"                \
  " r.contractor_id, r.server_time, r.device_time, r.result, r.errors, r.data_digest,"             \
  " r.documents"
enum { HS_AUDIT_ROW_COLUMNS = 15 };

/* Fills rec from row `row` of a binary result; its strings point into res. *brand_id gets the
 * brand's id. HS_EINVAL when a column does not have the expected shape. */
int hs_audit_row_parse(const PGresult *res, int row, hs_audit_record_t *rec, int64_t *brand_id);

/* A record's place in a sealing round: each brand's chain takes its records in id order. */
typedef struct hs_audit_row_order {
  int64_t brand_id, id;
  int row; /* in the result */
} hs_audit_row_order_t;

/* The rows of res (HS_AUDIT_ROW_SELECT, binary) sorted by (brand_id, id), one entry per row.
 * NULL when out of memory or when a row lacks either id. Owned by the caller (free). */
hs_audit_row_order_t *hs_audit_rows_order(const PGresult *res);

/* Binary int8 / int4 columns. */
int64_t hs_audit_be64(const char *p);
int32_t hs_audit_be32(const char *p);
/* A binary timestamptz column, as microseconds since the Unix epoch. */
int64_t hs_audit_pg_time(const char *p);

#endif
