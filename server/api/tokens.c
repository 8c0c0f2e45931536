/* Token management for a brand's admins (SPEC §4). The secret is returned once, here; only its
 * hash is stored. A revocation is announced to every node in the same transaction, so it takes
 * effect everywhere at once. */
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

typedef struct top {
  hs_req_t *req;
  hs_db_job_t *job;
  char id[37];
  char token[HS_TOKEN_LEN + 1];
  char role[16];
  char name[129];
} top_t;

static void top_cancel(hs_req_t *req) {
  top_t *op = req->data;
  hs_db_job_cancel(op->job);
  free(op);
}

static top_t *top_new(hs_req_t *req) {
  top_t *op = calloc(1, sizeof *op);
  if (op == NULL) {
    hs_api_unavailable(req, "out of memory");
    return NULL;
  }
  op->req = req;
  req->data = op;
  req->on_cancel = top_cancel;
  return op;
}

/* Detaches the op before answering; returns the request. */
static hs_req_t *top_done(top_t *op) {
  hs_req_t *req = op->req;
  req->on_cancel = NULL;
  req->data = NULL;
  return req;
}

static void on_created(void *ctx, const hs_db_result_t *res) {
  top_t *op = ctx;
  hs_req_t *req = top_done(op);
  if (res->status != HS_OK) {
    hs_api_unavailable(req, res->error);
    free(op);
    return;
  }
  hs_arena_t *a = &req->arena;
  hs_value_t *v = hs_value_new_map(a, 4);
  if (v == NULL || hs_map_add_str(a, v, "id", op->id) || hs_map_add_str(a, v, "token", op->token) ||
      hs_map_add_str(a, v, "role", op->role) || hs_map_add_str(a, v, "name", op->name)) {
    hs_api_unavailable(req, "out of memory");
  } else {
    hs_req_respond(req, 201, v);
  }
  /* The secret must not linger in freed memory longer than it has to. */
  memset(op->token, 0, sizeof op->token);
  free(op);
}

static void create_authorized(hs_req_t *req, const hs_principal_t *who) {
  static const char *const allowed[] = {"role", "name", "subject", NULL};
  hs_value_t *body = hs_api_decode_map(req, allowed, "{role, name?, subject?}");
  if (body == NULL) {
    return;
  }
  const hs_value_t *role = hs_map_get(body, "role");
  const hs_value_t *name = hs_map_get(body, "name");
  const hs_value_t *subject = hs_map_get(body, "subject");
  hs_role_t r;
  if (role == NULL || role->type != HS_V_STR || hs_role_parse(role->as.str.ptr, &r) != HS_OK) {
    hs_req_respond_error(req, 400, "malformed",
                         "\"role\" must be admin, author, contractor or compliance");
    return;
  }
  if ((name != NULL && (name->type != HS_V_STR || name->as.str.len > 128)) ||
      (subject != NULL &&
       (subject->type != HS_V_STR || subject->as.str.len == 0 || subject->as.str.len > 128))) {
    hs_req_respond_error(req, 400, "malformed",
                         "\"name\" and \"subject\" must be text of at most 128 bytes");
    return;
  }
  top_t *op = top_new(req);
  if (op == NULL) {
    return;
  }
  char hash[65];
  if (hs_uuid_v4(op->id) != HS_OK || hs_token_new(op->token, hash) != HS_OK) {
    hs_api_unavailable(top_done(op), "no randomness available");
    free(op);
    return;
  }
  hs_strlcpy(op->role, role->as.str.ptr, sizeof op->role);
  hs_strlcpy(op->name, name != NULL ? name->as.str.ptr : "", sizeof op->name);
  char brand[24];
  snprintf(brand, sizeof brand, "%" PRId64, who->brand_id);
  /* A contractor's subject is who they are in sessions; without one the token id serves. */
  const char *params[] = {
      op->id,   brand, op->role,    subject != NULL ? subject->as.str.ptr : op->id,
      op->name, hash,  who->subject};
  hs_db_stmt_t s = {.name = "hs_token_create",
                    .sql =
                        "INSERT INTO tokens (id, brand_id, role, subject, name, hash, created_by)"
                        " VALUES ($1, $2, $3, $4, $5, decode($6, 'hex'), $7)",
                    .n_params = 7,
                    .values = params};
  hs_store_t *store = req->worker->app;
  if (hs_db_exec(hs_store_pool(store), &s, 1, on_created, op, &op->job) != HS_OK) {
    hs_api_unavailable(top_done(op), "the database is unavailable");
    free(op);
  }
}

void hs_api_token_create(hs_req_t *req) {
  hs_auth_resolve(req, HS_ROLE_ADMIN, create_authorized);
}

static void on_revoked(void *ctx, const hs_db_result_t *res) {
  top_t *op = ctx;
  hs_req_t *req = top_done(op);
  if (res->status != HS_OK) {
    hs_api_unavailable(req, res->error);
  } else if (PQntuples(res->results[0]) == 0) {
    hs_req_respond_error(req, 404, "not_found", "There is no token %s", op->id);
  } else {
    hs_req_respond(req, 204, NULL);
  }
  free(op);
}

static void revoke_authorized(hs_req_t *req, const hs_principal_t *who) {
  const char *id = hs_route_param(&req->match, "id");
  if (id == NULL || !hs_uuid_valid(id)) {
    hs_req_respond_error(req, 400, "malformed", "A token id is a UUID, as POST /v1/tokens gave");
    return;
  }
  top_t *op = top_new(req);
  if (op == NULL) {
    return;
  }
  hs_strlcpy(op->id, id, sizeof op->id);
  char brand[24];
  snprintf(brand, sizeof brand, "%" PRId64, who->brand_id);
  const char *params[] = {op->id, brand};
  /* Revoking twice is not an error (the second finds it revoked already); another brand's token
   * is not found. The notification commits with the update. */
  hs_db_stmt_t s = {.name = "hs_token_revoke",
                    .sql = "WITH t AS (UPDATE tokens SET revoked_at = coalesce(revoked_at, now())"
                           " WHERE id = $1 AND brand_id = $2 RETURNING encode(hash, 'hex') AS h)"
                           " SELECT pg_notify('handsel_token', h) FROM t",
                    .n_params = 2,
                    .values = params};
  hs_store_t *store = req->worker->app;
  if (hs_db_exec(hs_store_pool(store), &s, 1, on_revoked, op, &op->job) != HS_OK) {
    hs_api_unavailable(top_done(op), "the database is unavailable");
    free(op);
  }
}

void hs_api_token_revoke(hs_req_t *req) {
  hs_auth_resolve(req, HS_ROLE_ADMIN, revoke_authorized);
}
