/* GET /v1/content/stats?process=NAME (SPEC §4): what the brand's visits taught about the
 * content its suggestions showed, per slot and item. Read straight from PostgreSQL, so every
 * node answers the same. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/auth.h"
#include "api/common.h"
#include "core/str.h"
#include "http/worker.h"
#include "store/content.h"
#include "store/store.h"

typedef struct cop {
  hs_req_t *req;
  char process[65];
  hs_db_job_t *job;
} cop_t;

static void cop_cancel(hs_req_t *req) {
  cop_t *op = req->data;
  hs_db_job_cancel(op->job);
  free(op);
}

static void on_stats(void *ctx, const hs_db_result_t *res) {
  cop_t *op = ctx;
  hs_req_t *req = op->req;
  req->on_cancel = NULL;
  req->data = NULL;
  char process[65];
  hs_strlcpy(process, op->process, sizeof process);
  free(op);
  if (res->status != HS_OK || res->n_results != 3) {
    hs_api_unavailable(req, res->error != NULL ? res->error : "the database is unavailable");
    return;
  }
  if (PQntuples(res->results[0]) == 0) {
    hs_req_respond_error(req, 404, "not_found", "There is no process named %s", process);
    return;
  }
  hs_value_t *v = NULL;
  if (hs_content_stats_value(process, res->results[1], res->results[2], &req->arena, &v) != HS_OK) {
    hs_api_unavailable(req, "out of memory");
    return;
  }
  hs_req_respond(req, 200, v);
}

static void stats_authorized(hs_req_t *req, const hs_principal_t *who) {
  char process[65];
  int rc = hs_req_query(req, "process", process, sizeof process);
  if (rc != HS_OK || !hs_api_valid_name(process)) {
    hs_req_respond_error(req, 400, "malformed",
                         rc == HS_ENOTFOUND
                             ? "Name the process: GET /v1/content/stats?process=NAME"
                             : "process must be a process name: lower-case letters, digits and "
                               "dashes, at most 64");
    return;
  }
  cop_t *op = calloc(1, sizeof *op);
  if (op == NULL) {
    hs_api_unavailable(req, "out of memory");
    return;
  }
  op->req = req;
  hs_strlcpy(op->process, process, sizeof op->process);
  char brand[24];
  snprintf(brand, sizeof brand, "%" PRId64, who->brand_id);
  const char *params[] = {brand, op->process};
  hs_db_stmt_t stmts[] = {
      {.name = "hs_content_process",
       .sql = hs_content_process_sql,
       .n_params = 2,
       .values = params},
      {.name = "hs_content_totals", .sql = hs_content_totals_sql, .n_params = 2, .values = params},
      {.name = "hs_content_feedback",
       .sql = hs_content_feedback_sql,
       .n_params = 2,
       .values = params},
  };
  hs_store_t *store = req->worker->app;
  if (hs_db_exec(hs_store_pool(store), stmts, 3, on_stats, op, &op->job) != HS_OK) {
    free(op);
    hs_api_unavailable(req, "the database is unavailable");
    return;
  }
  req->data = op;
  req->on_cancel = cop_cancel;
}

void hs_api_content_stats(hs_req_t *req) {
  hs_auth_resolve(req, HS_ROLE_AUTHOR | HS_ROLE_ADMIN, stats_authorized);
}
