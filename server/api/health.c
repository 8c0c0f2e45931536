#include <stdio.h>

#include "api/api.h"
#include "core/buf.h"
#include "db/pool.h"
#include "db/probe.h"
#include "http/metrics.h"
#include "http/request.h"

void hs_api_healthz(hs_req_t *req) {
  hs_value_t *body = hs_value_new_map(&req->arena, 1);
  if (body == NULL || hs_map_add_str(&req->arena, body, "status", "ok") != HS_OK) {
    hs_req_respond_error(req, 503, "unavailable", "The server is short of memory");
    return;
  }
  hs_req_respond(req, 200, body);
}

void hs_api_readyz(hs_req_t *req) {
  static const char *const retry[] = {"retry-after", "1"};
  if (req->config->db_conninfo[0] == '\0') {
    hs_req_respond_error_h(req, 503, retry, 1, "unavailable",
                           "No database is configured: set HANDSEL_DB to a libpq conninfo");
    return;
  }
  if (!hs_db_probe_ready()) {
    char why[256];
    hs_db_probe_last_error(why, sizeof why);
    hs_req_respond_error_h(req, 503, retry, 1, "unavailable", "The database is not reachable: %s",
                           why);
    return;
  }
  /* The probe's own connection is up, but a worker whose pool is still connecting (at start,
   * or after an outage) would answer 503 to anything sent to it. */
  unsigned down = hs_db_pools_down();
  if (down > 0) {
    hs_req_respond_error_h(req, 503, retry, 1, "unavailable",
                           "%u of the server's database connection pools %s not connected yet",
                           down, down == 1 ? "is" : "are");
    return;
  }
  hs_value_t *body = hs_value_new_map(&req->arena, 2);
  if (body == NULL || hs_map_add_str(&req->arena, body, "status", "ready") != HS_OK ||
      hs_map_add_str(&req->arena, body, "database", "ok") != HS_OK) {
    hs_req_respond_error(req, 503, "unavailable", "The server is short of memory");
    return;
  }
  hs_req_respond(req, 200, body);
}

void hs_api_metrics(hs_req_t *req) {
  hs_buf_t out;
  hs_buf_init(&out, 0);
  if (hs_metrics_render(&out) != HS_OK) {
    hs_buf_free(&out);
    hs_req_respond_error(req, 503, "unavailable", "The server is short of memory");
    return;
  }
  hs_req_respond_raw(req, 200, "text/plain; version=0.0.4; charset=utf-8", out.data, out.len);
  hs_buf_free(&out);
}

void hs_api_not_implemented(hs_req_t *req) {
  hs_req_respond_error(req, 501, "not_implemented",
                       "%s %s is part of the API but this server does not offer it yet",
                       req->method, req->path);
}
