#include "audit/rows.h"

#include <stdlib.h>
#include <string.h>

#include "core/endian.h"

/* A binary timestamptz counts microseconds from 2000-01-01T00:00:00Z. */
static const int64_t PG_EPOCH_US = 946684800LL * 1000000;

int64_t hs_audit_be64(const char *p) {
  return (int64_t)hs_get_be64((const uint8_t *)p);
}

int32_t hs_audit_be32(const char *p) {
  return (int32_t)hs_get_be32((const uint8_t *)p);
}

int64_t hs_audit_pg_time(const char *p) {
  return hs_audit_be64(p) + PG_EPOCH_US;
}

int hs_audit_row_parse(const PGresult *res, int row, hs_audit_record_t *rec, int64_t *brand_id) {
  if (PQnfields(res) < HS_AUDIT_ROW_COLUMNS || PQgetlength(res, row, 0) != 8 ||
      PQgetlength(res, row, 2) != 8 || PQgetlength(res, row, 7) != 4 ||
      PQgetlength(res, row, 9) != 8 || PQgetlength(res, row, 13) != 32) {
    return HS_EINVAL;
  }
  memset(rec, 0, sizeof *rec);
  rec->id = hs_audit_be64(PQgetvalue(res, row, 0));
  rec->brand = PQgetvalue(res, row, 1);
  *brand_id = hs_audit_be64(PQgetvalue(res, row, 2));
  rec->session = PQgetvalue(res, row, 3);
  rec->process = PQgetvalue(res, row, 4);
  rec->version = PQgetvalue(res, row, 5);
  rec->step = PQgetvalue(res, row, 6);
  rec->seq = hs_audit_be32(PQgetvalue(res, row, 7));
  rec->contractor = PQgetvalue(res, row, 8);
  rec->server_us = hs_audit_pg_time(PQgetvalue(res, row, 9));
  if (!PQgetisnull(res, row, 10) && PQgetlength(res, row, 10) == 8) {
    rec->has_device = true;
    rec->device_us = hs_audit_pg_time(PQgetvalue(res, row, 10));
  }
  rec->result = PQgetvalue(res, row, 11);
  if (!PQgetisnull(res, row, 12)) {
    rec->errors = (const uint8_t *)PQgetvalue(res, row, 12);
    rec->errors_len = (size_t)PQgetlength(res, row, 12);
  }
  memcpy(rec->data_digest, PQgetvalue(res, row, 13), 32);
  if (!PQgetisnull(res, row, 14)) {
    rec->documents = (const uint8_t *)PQgetvalue(res, row, 14);
    rec->documents_len = (size_t)PQgetlength(res, row, 14);
  }
  return HS_OK;
}

static int cmp_order(const void *a, const void *b) {
  const hs_audit_row_order_t *x = a, *y = b;
  if (x->brand_id != y->brand_id) {
    return x->brand_id < y->brand_id ? -1 : 1;
  }
  return x->id < y->id ? -1 : x->id > y->id;
}

hs_audit_row_order_t *hs_audit_rows_order(const PGresult *res) {
  int n = PQntuples(res);
  if (PQnfields(res) < HS_AUDIT_ROW_COLUMNS) {
    return NULL;
  }
  hs_audit_row_order_t *o = malloc((size_t)(n > 0 ? n : 1) * sizeof *o);
  for (int i = 0; o != NULL && i < n; i++) {
    if (PQgetlength(res, i, 0) != 8 || PQgetlength(res, i, 2) != 8) {
      free(o);
      return NULL;
    }
    o[i] = (hs_audit_row_order_t){.brand_id = hs_audit_be64(PQgetvalue(res, i, 2)),
                                  .id = hs_audit_be64(PQgetvalue(res, i, 0)),
                                  .row = i};
  }
  if (o != NULL) {
    /* The rows arrive nearly in order (one index scan per brand), and the keys are small. */
    qsort(o, (size_t)n, sizeof *o, cmp_order);
  }
  return o;
}
