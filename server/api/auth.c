#include "api/auth.h"

#include <stdlib.h>
#include <string.h>

#include "api/common.h"
#include "core/strmap.h"
#include "http/worker.h"
#include "store/store.h"

const char *hs_role_name(hs_role_t role) {
  switch (role) {
    case HS_ROLE_ADMIN:
      return "admin";
    case HS_ROLE_AUTHOR:
      return "author";
    case HS_ROLE_CONTRACTOR:
      return "contractor";
    case HS_ROLE_COMPLIANCE:
      return "compliance";
  }
  return "?";
}

static int parse_role(const char *s, hs_role_t *out) {
  static const hs_role_t roles[] = {HS_ROLE_ADMIN, HS_ROLE_AUTHOR, HS_ROLE_CONTRACTOR,
                                    HS_ROLE_COMPLIANCE};
  for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++) {
    if (strcmp(s, hs_role_name(roles[i])) == 0) {
      *out = roles[i];
      return HS_OK;
    }
  }
  return HS_EINVAL;
}

typedef struct auth_op {
  hs_req_t *req; /* NULL once the stream is gone */
  hs_auth_cb cb;
  hs_principal_t who;
  hs_db_job_t *job;
} auth_op_t;

static void auth_cancel(hs_req_t *req) {
  auth_op_t *op = req->data;
  hs_db_job_cancel(op->job);
  free(op);
}

static void on_brand(void *ctx, const hs_db_result_t *res) {
  auth_op_t *op = ctx;
  hs_req_t *req = op->req;
  req->on_cancel = NULL;
  req->data = NULL;
  if (res->status != HS_OK || res->results[0] == NULL || PQntuples(res->results[0]) != 1) {
    hs_api_unavailable(req, res->error);
    free(op);
    return;
  }
  op->who.brand_id = strtoll(PQgetvalue(res->results[0], 0, 0), NULL, 10);
  hs_store_t *store = req->worker->app;
  hs_store_brand_remember(store, op->who.brand, op->who.brand_id);
  hs_principal_t who = op->who;
  hs_auth_cb cb = op->cb;
  free(op);
  cb(req, &who);
}

void hs_auth_resolve(hs_req_t *req, unsigned roles, hs_auth_cb cb) {
  hs_store_t *store = req->worker->app;
  if (store == NULL) {
    hs_api_unavailable(req, "no database is configured (HANDSEL_DB)");
    return;
  }
  if (!req->config->dev_auth) {
    hs_req_respond_error(req, 401, "unauthorized",
                         "This server accepts no credentials yet. For development, start it with "
                         "HANDSEL_DEV_AUTH=1 and send x-handsel-dev-brand, x-handsel-dev-role "
                         "and x-handsel-dev-subject headers.");
    return;
  }
  const char *brand = hs_req_header(req, "x-handsel-dev-brand");
  const char *role = hs_req_header(req, "x-handsel-dev-role");
  const char *subject = hs_req_header(req, "x-handsel-dev-subject");
  hs_principal_t who;
  memset(&who, 0, sizeof who);
  if (brand == NULL || role == NULL || subject == NULL || !hs_api_valid_name(brand) ||
      parse_role(role, &who.role) != HS_OK || subject[0] == '\0' || strlen(subject) > 128) {
    hs_req_respond_error(req, 401, "unauthorized",
                         "Send x-handsel-dev-brand (a name like acme-solar), x-handsel-dev-role "
                         "(admin, author, contractor or compliance) and x-handsel-dev-subject "
                         "(who you are, at most 128 bytes).");
    return;
  }
  if ((who.role & roles) == 0) {
    hs_req_respond_error(
        req, 403, "forbidden", "The %s role may not use %s %s", hs_role_name(who.role), req->method,
        req->match.route >= 0 ? req->worker->routes[req->match.route].pattern : req->path);
    return;
  }
  snprintf(who.brand, sizeof who.brand, "%s", brand);
  snprintf(who.subject, sizeof who.subject, "%s", subject);
  who.brand_id = hs_store_brand_lookup(store, brand);
  if (who.brand_id > 0) {
    cb(req, &who);
    return;
  }
  auth_op_t *op = calloc(1, sizeof *op);
  if (op == NULL) {
    hs_api_unavailable(req, "out of memory");
    return;
  }
  op->req = req;
  op->cb = cb;
  op->who = who;
  const char *params[] = {brand};
  /* Development mode creates the brand on first use; the no-op update makes RETURNING give the
   * id of an existing row too. */
  hs_db_stmt_t stmt = {.name = "hs_dev_brand",
                       .sql = "INSERT INTO brands (name) VALUES ($1) ON CONFLICT (name) DO UPDATE "
                              "SET name = EXCLUDED.name RETURNING id",
                       .n_params = 1,
                       .values = params};
  int rc = hs_db_exec(hs_store_pool(store), &stmt, 1, on_brand, op, &op->job);
  if (rc != HS_OK) {
    free(op);
    hs_api_unavailable(req, "the database is unavailable");
    return;
  }
  req->data = op;
  req->on_cancel = auth_cancel;
}
