/* Evidence (SPEC §4): photos and signatures, content-addressed by SHA-256. The upload names
 * its own hash, so a retried upload is the same row, and a completion can refer to a blob
 * before anyone looks inside it. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/auth.h"
#include "api/common.h"
#include "core/ids.h"
#include "core/str.h"
#include "http/worker.h"
#include "store/store.h"

typedef struct bop {
  hs_req_t *req;
  char hash[65];
  size_t size;
  hs_db_job_t *job;
} bop_t;

static void bop_cancel(hs_req_t *req) {
  bop_t *op = req->data;
  hs_db_job_cancel(op->job);
  free(op);
}

static hs_req_t *bop_done(bop_t *op) {
  hs_req_t *req = op->req;
  req->on_cancel = NULL;
  req->data = NULL;
  free(op);
  return req;
}

static bool take_hash(hs_req_t *req, char out[65]) {
  const char *h = hs_route_param(&req->match, "hash");
  if (h == NULL || !hs_is_hex(h, 64)) {
    hs_req_respond_error(req, 400, "malformed",
                         "A blob is named by the SHA-256 of its bytes: 64 lower-case hex digits");
    return false;
  }
  hs_strlcpy(out, h, 65);
  return true;
}

static void on_stored(void *ctx, const hs_db_result_t *res) {
  bop_t *op = ctx;
  char hash[65];
  hs_strlcpy(hash, op->hash, sizeof hash);
  size_t size = op->size;
  hs_req_t *req = bop_done(op);
  if (res->status != HS_OK) {
    hs_api_unavailable(req, res->error);
    return;
  }
  /* 201 when this caller's upload is new, whoever stored the bytes first. */
  bool created = PQntuples(res->results[1]) == 1;
  char name[80];
  snprintf(name, sizeof name, "sha256:%s", hash);
  hs_arena_t *a = &req->arena;
  hs_value_t *v = hs_value_new_map(a, 2);
  if (v == NULL || hs_map_add_str(a, v, "blob", name) ||
      hs_map_add_int(a, v, "size", (int64_t)size)) {
    hs_api_unavailable(req, "out of memory");
    return;
  }
  hs_req_respond(req, created ? 201 : 200, v);
}

static void put_authorized(hs_req_t *req, const hs_principal_t *who) {
  char hash[65];
  if (!take_hash(req, hash)) {
    return;
  }
  uint8_t digest[32];
  char hex[65];
  hs_sha256(req->body.data != NULL ? req->body.data : (const uint8_t *)"", req->body.len, digest);
  hs_hex(digest, 32, hex);
  if (strcmp(hex, hash) != 0) {
    hs_req_respond_error(req, 422, "validation_failed",
                         "The body's SHA-256 is %s, not the %s in the path: the upload was "
                         "damaged or named wrongly",
                         hex, hash);
    return;
  }
  bop_t *op = calloc(1, sizeof *op);
  if (op == NULL) {
    hs_api_unavailable(req, "out of memory");
    return;
  }
  op->req = req;
  op->size = req->body.len;
  hs_strlcpy(op->hash, hash, sizeof op->hash);
  char brand[24], size[24];
  snprintf(brand, sizeof brand, "%" PRId64, who->brand_id);
  snprintf(size, sizeof size, "%zu", req->body.len);
  const char *ct = req->content_type[0] != '\0' && strlen(req->content_type) < 128
                       ? req->content_type
                       : "application/octet-stream";
  const char *values[] = {brand, hash, size, ct, (const char *)req->body.data, who->subject};
  const int lengths[] = {0, 0, 0, 0, (int)req->body.len, 0};
  const int formats[] = {0, 0, 0, 0, 1, 0};
  const char *upload[] = {brand, hash, who->subject};
  hs_db_stmt_t s[] = {{.name = "hs_blob_put",
                       .sql = "INSERT INTO blobs (brand_id, hash, size, content_type, content,"
                              " uploaded_by) VALUES ($1, $2, $3, $4, $5, $6)"
                              " ON CONFLICT DO NOTHING",
                       .n_params = 6,
                       .values = values,
                       .lengths = lengths,
                       .formats = formats},
                      {.name = "hs_blob_upload",
                       .sql = "INSERT INTO blob_uploads (brand_id, hash, uploaded_by)"
                              " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING hash",
                       .n_params = 3,
                       .values = upload}};
  hs_store_t *store = req->worker->app;
  if (hs_db_exec(hs_store_pool(store), s, 2, on_stored, op, &op->job) != HS_OK) {
    hs_api_unavailable(bop_done(op), "the database is unavailable");
    return;
  }
  req->data = op;
  req->on_cancel = bop_cancel;
}

void hs_api_blob_put(hs_req_t *req) {
  hs_auth_resolve(req, HS_ROLE_CONTRACTOR | HS_ROLE_ADMIN, put_authorized);
}

static void on_fetched(void *ctx, const hs_db_result_t *res) {
  bop_t *op = ctx;
  hs_req_t *req = bop_done(op);
  if (res->status != HS_OK) {
    hs_api_unavailable(req, res->error);
    return;
  }
  PGresult *r = res->results[0];
  if (PQntuples(r) != 1) {
    hs_req_respond_error(req, 404, "not_found", "There is no such blob");
    return;
  }
  /* Binary results: column 0 is text bytes of the content type, column 1 the raw content. */
  char ct[128];
  int ct_len = PQgetlength(r, 0, 0);
  snprintf(ct, sizeof ct, "%.*s", ct_len < 127 ? ct_len : 127, PQgetvalue(r, 0, 0));
  hs_req_respond_raw(req, 200, ct, PQgetvalue(r, 0, 1), (size_t)PQgetlength(r, 0, 1));
}

static void get_authorized(hs_req_t *req, const hs_principal_t *who) {
  char hash[65];
  if (!take_hash(req, hash)) {
    return;
  }
  bop_t *op = calloc(1, sizeof *op);
  if (op == NULL) {
    hs_api_unavailable(req, "out of memory");
    return;
  }
  op->req = req;
  char brand[24];
  snprintf(brand, sizeof brand, "%" PRId64, who->brand_id);
  /* A contractor reads only what they uploaded; admin and compliance read the brand's. */
  const char *values[] = {brand, hash, who->role == HS_ROLE_CONTRACTOR ? who->subject : NULL};
  hs_db_stmt_t s = {.name = "hs_blob_get",
                    .sql = "SELECT b.content_type, b.content FROM blobs b WHERE b.brand_id = $1"
                           " AND b.hash = $2 AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM"
                           " blob_uploads u WHERE u.brand_id = b.brand_id AND u.hash = b.hash"
                           " AND u.uploaded_by = $3))",
                    .n_params = 3,
                    .values = values,
                    .binary_result = true};
  hs_store_t *store = req->worker->app;
  if (hs_db_exec(hs_store_pool(store), &s, 1, on_fetched, op, &op->job) != HS_OK) {
    hs_api_unavailable(bop_done(op), "the database is unavailable");
    return;
  }
  req->data = op;
  req->on_cancel = bop_cancel;
}

void hs_api_blob_get(hs_req_t *req) {
  hs_auth_resolve(req, HS_ROLE_CONTRACTOR | HS_ROLE_ADMIN | HS_ROLE_COMPLIANCE, get_authorized);
}
