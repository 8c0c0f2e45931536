/* Deploying processes (SPEC §4): PUT checks a Lua source with the engine, exactly as
 * `handsel check` does, and stores it as an immutable version; the first version of a process
 * becomes active at once, later ones on `activate`. Sessions in flight stay on their version. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/auth.h"
#include "api/common.h"
#include "core/ids.h"
#include "core/str.h"
#include "engine/engine.h"
#include "http/worker.h"
#include "store/store.h"

typedef struct pop {
  hs_req_t *req;
  hs_principal_t who;
  char name[65];
  char version[65];
  hs_db_job_t *job;
} pop_t;

static void pop_cancel(hs_req_t *req) {
  pop_t *op = req->data;
  hs_db_job_cancel(op->job);
  free(op);
}

static pop_t *pop_new(hs_req_t *req, const hs_principal_t *who) {
  const char *param = hs_route_param(&req->match, "name");
  if (param != NULL && !hs_api_valid_name(param)) {
    hs_req_respond_error(req, 400, "malformed",
                         "A process name is lower-case letters, digits and dashes, at most 64, "
                         "starting with a letter or digit");
    return NULL;
  }
  pop_t *op = calloc(1, sizeof *op);
  if (op == NULL) {
    hs_api_unavailable(req, "out of memory");
    return NULL;
  }
  op->req = req;
  op->who = *who;
  const char *name = hs_route_param(&req->match, "name");
  if (name != NULL) {
    hs_strlcpy(op->name, name, sizeof op->name);
  }
  req->data = op;
  req->on_cancel = pop_cancel;
  return op;
}

/* Detaches the op from the request before answering. */
static hs_req_t *pop_done(pop_t *op) {
  hs_req_t *req = op->req;
  req->on_cancel = NULL;
  req->data = NULL;
  free(op);
  return req;
}

static int pop_exec(pop_t *op, const hs_db_stmt_t *stmts, size_t n, hs_db_done_cb cb) {
  hs_store_t *store = op->req->worker->app;
  int rc = hs_db_exec(hs_store_pool(store), stmts, n, cb, op, &op->job);
  if (rc != HS_OK) {
    hs_api_unavailable(pop_done(op), "the database is unavailable");
  }
  return rc;
}

/* ------------------------------------------------------------ PUT /v1/processes/{name} */

static void on_put_done(void *ctx, const hs_db_result_t *res) {
  pop_t *op = ctx;
  char name[65], version[65];
  hs_strlcpy(name, op->name, sizeof name);
  hs_strlcpy(version, op->version, sizeof version);
  hs_req_t *req = pop_done(op);
  if (res->status != HS_OK) {
    hs_api_unavailable(req, res->error);
    return;
  }
  bool created = PQntuples(res->results[0]) == 1;
  PGresult *act = res->results[2];
  bool active = PQntuples(act) == 1 && strcmp(PQgetvalue(act, 0, 0), version) == 0;
  hs_arena_t *a = &req->arena;
  hs_value_t *v = hs_value_new_map(a, 3);
  if (v == NULL || hs_map_add_str(a, v, "name", name) != HS_OK ||
      hs_map_add_str(a, v, "version", version) != HS_OK ||
      hs_map_add_bool(a, v, "active", active) != HS_OK) {
    hs_api_unavailable(req, "out of memory");
    return;
  }
  hs_req_respond(req, created ? 201 : 200, v);
}

/* "name.lua:12: message" -> fields {"12": "message"} so a tool can mark the line. */
static hs_value_t *error_fields(hs_arena_t *a, const char *msg) {
  hs_value_t *fields = hs_value_new_map(a, 1);
  if (fields == NULL) {
    return NULL;
  }
  /* The location is "<name>.lua:<line>:", wherever it stands in the message. */
  const char *lua = strstr(msg, ".lua:");
  const char *colon = lua != NULL ? lua + 4 : NULL;
  if (colon != NULL) {
    char *end = NULL;
    long line = strtol(colon + 1, &end, 10);
    if (end != colon + 1 && *end == ':' && line > 0) {
      char key[24];
      snprintf(key, sizeof key, "%ld", line);
      const char *text = end + 1;
      while (*text == ' ') {
        text++;
      }
      hs_map_add_str(a, fields, key, text);
    }
  }
  return fields;
}

static void put_authorized(hs_req_t *req, const hs_principal_t *who) {
  const char *name = hs_route_param(&req->match, "name");
  if (name == NULL || !hs_api_valid_name(name)) {
    hs_req_respond_error(req, 400, "malformed",
                         "A process name is lower-case letters, digits and dashes, at most 64, "
                         "starting with a letter or digit");
    return;
  }
  if (req->body.len == 0) {
    hs_req_respond_error(req, 400, "malformed", "The body must be the process's Lua source");
    return;
  }
  /* Check in a throwaway VM: a script that misbehaves while loading never touches the VM that
   * serves the brand's sessions. */
  hs_err_t err;
  hs_err_clear(&err);
  hs_vm_t *vm = NULL;
  hs_process_t *p = NULL;
  char chunk[80];
  snprintf(chunk, sizeof chunk, "%s.lua", name);
  if (hs_vm_new("check", NULL, &vm, &err) != HS_OK) {
    hs_api_unavailable(req, err.msg);
    return;
  }
  if (hs_process_load(vm, chunk, (const char *)req->body.data, req->body.len, &p, &err) != HS_OK) {
    hs_vm_free(vm);
    hs_arena_t *a = &req->arena;
    hs_value_t *root = hs_value_new_map(a, 1);
    hs_value_t *e = root != NULL ? hs_map_add_map(a, root, "error") : NULL;
    hs_value_t *fields = error_fields(a, err.msg);
    if (e == NULL || fields == NULL || hs_map_add_str(a, e, "code", "validation_failed") ||
        hs_map_add_str(a, e, "message", err.msg) || hs_map_add(a, e, "fields", fields) == NULL) {
      hs_api_unavailable(req, "out of memory");
      return;
    }
    hs_req_respond(req, 422, root);
    return;
  }
  if (strcmp(hs_process_name(p), name) != 0) {
    hs_req_respond_error(req, 422, "validation_failed",
                         "The script declares the process \"%s\" but is deployed as \"%s\": make "
                         "the names match",
                         hs_process_name(p), name);
    hs_vm_free(vm);
    return;
  }
  pop_t *op = pop_new(req, who);
  if (op == NULL) {
    hs_vm_free(vm);
    return;
  }
  hs_strlcpy(op->version, hs_process_version(p), sizeof op->version);
  char title[256];
  hs_strlcpy(title, hs_process_title(p), sizeof title);
  hs_vm_free(vm);

  char brand[24];
  snprintf(brand, sizeof brand, "%" PRId64, who->brand_id);
  /* The source travels as text: Lua sources are UTF-8 text, and the engine has read it. */
  char *source = hs_arena_strndup(&req->arena, (const char *)req->body.data, req->body.len);
  const char *p_ins[] = {brand, op->name, op->version, title, source, who->subject};
  const char *p_act[] = {brand, op->name, op->version};
  const char *p_sel[] = {brand, op->name};
  hs_db_stmt_t stmts[] = {
      {.name = "hs_process_insert",
       .sql = "INSERT INTO process_versions (brand_id, name, version, title, source, created_by)"
              " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING version",
       .n_params = 6,
       .values = p_ins},
      {.name = "hs_process_first",
       .sql = "INSERT INTO processes (brand_id, name, active_version) VALUES ($1, $2, $3)"
              " ON CONFLICT DO NOTHING",
       .n_params = 3,
       .values = p_act},
      {.name = "hs_process_active",
       .sql = "SELECT active_version FROM processes WHERE brand_id = $1 AND name = $2",
       .n_params = 2,
       .values = p_sel},
  };
  if (source == NULL) {
    hs_api_unavailable(pop_done(op), "out of memory");
    return;
  }
  pop_exec(op, stmts, 3, on_put_done);
}

void hs_api_process_put(hs_req_t *req) {
  hs_auth_resolve(req, HS_ROLE_AUTHOR | HS_ROLE_ADMIN, put_authorized);
}

/* ------------------------------------------------------------ POST …/activate */

static void on_activated(void *ctx, const hs_db_result_t *res) {
  pop_t *op = ctx;
  char name[65], version[65];
  hs_strlcpy(name, op->name, sizeof name);
  hs_strlcpy(version, op->version, sizeof version);
  hs_req_t *req = pop_done(op);
  if (res->status != HS_OK) {
    hs_api_unavailable(req, res->error);
    return;
  }
  if (PQntuples(res->results[0]) == 0) {
    /* No version of that name in this brand: as for anything that does not exist (another
     * brand's process included). */
    hs_req_respond_error(req, 404, "not_found", "There is no process named %s", name);
    return;
  }
  if (PQntuples(res->results[1]) != 1) {
    hs_req_respond_error(req, 409, "conflict",
                         "Process %s has no version %s: deploy it first with PUT "
                         "/v1/processes/%s",
                         name, version, name);
    return;
  }
  hs_arena_t *a = &req->arena;
  hs_value_t *v = hs_value_new_map(a, 3);
  if (v == NULL || hs_map_add_str(a, v, "name", name) || hs_map_add_str(a, v, "version", version) ||
      hs_map_add_bool(a, v, "active", true)) {
    hs_api_unavailable(req, "out of memory");
    return;
  }
  hs_req_respond(req, 200, v);
}

static void activate_authorized(hs_req_t *req, const hs_principal_t *who) {
  static const char *const allowed[] = {"version", NULL};
  hs_value_t *body = hs_api_decode_map(req, allowed, "{version}");
  if (body == NULL) {
    return;
  }
  const hs_value_t *version = hs_map_get(body, "version");
  if (version == NULL || version->type != HS_V_STR || !hs_is_hex(version->as.str.ptr, 64)) {
    hs_req_respond_error(req, 400, "malformed",
                         "The body must be {version = \"<64 hex digits>\"}, a version from PUT "
                         "or GET /v1/processes/{name}");
    return;
  }
  pop_t *op = pop_new(req, who);
  if (op == NULL) {
    return;
  }
  hs_strlcpy(op->version, version->as.str.ptr, sizeof op->version);
  char brand[24];
  snprintf(brand, sizeof brand, "%" PRId64, who->brand_id);
  const char *params[] = {brand, op->name, op->version};
  const char *exists[] = {brand, op->name};
  /* The upsert covers a process whose processes row is missing; the version must exist. */
  hs_db_stmt_t s[2];
  s[0] = (hs_db_stmt_t){.name = "hs_process_exists",
                        .sql = "SELECT 1 FROM process_versions WHERE brand_id = $1 AND name = $2"
                               " LIMIT 1",
                        .n_params = 2,
                        .values = exists};
  s[1] = (hs_db_stmt_t){
      .name = "hs_process_activate",
      .sql = "INSERT INTO processes (brand_id, name, active_version, updated_at)"
             " SELECT brand_id, name, version, now() FROM process_versions"
             " WHERE brand_id = $1 AND name = $2 AND version = $3"
             " ON CONFLICT (brand_id, name) DO UPDATE SET active_version = EXCLUDED.active_version,"
             " updated_at = now() RETURNING active_version",
      .n_params = 3,
      .values = params};
  pop_exec(op, s, 2, on_activated);
}

void hs_api_process_activate(hs_req_t *req) {
  hs_auth_resolve(req, HS_ROLE_AUTHOR | HS_ROLE_ADMIN, activate_authorized);
}

/* ------------------------------------------------------------ GET */

static void on_list(void *ctx, const hs_db_result_t *res) {
  pop_t *op = ctx;
  hs_req_t *req = pop_done(op);
  if (res->status != HS_OK) {
    hs_api_unavailable(req, res->error);
    return;
  }
  hs_arena_t *a = &req->arena;
  PGresult *r = res->results[0];
  hs_value_t *root = hs_value_new_map(a, 1);
  hs_value_t *list = root != NULL ? hs_map_add_array(a, root, "processes") : NULL;
  int rc = list != NULL ? HS_OK : HS_ENOMEM;
  for (int i = 0; rc == HS_OK && i < PQntuples(r); i++) {
    hs_value_t *item = hs_value_new_map(a, 4);
    rc = item != NULL ? HS_OK : HS_ENOMEM;
    if (rc == HS_OK) {
      rc |= hs_map_add_str(a, item, "name", PQgetvalue(r, i, 0));
      rc |= hs_map_add_str(a, item, "title", PQgetvalue(r, i, 1));
      rc |= hs_map_add_str(a, item, "active", PQgetvalue(r, i, 2));
      rc |= hs_map_add_int(a, item, "versions", strtoll(PQgetvalue(r, i, 3), NULL, 10));
      rc |= hs_array_push(a, list, item) != NULL ? HS_OK : HS_ENOMEM;
    }
  }
  if (rc != HS_OK) {
    hs_api_unavailable(req, "out of memory");
    return;
  }
  hs_req_respond(req, 200, root);
}

static void list_authorized(hs_req_t *req, const hs_principal_t *who) {
  pop_t *op = pop_new(req, who);
  if (op == NULL) {
    return;
  }
  char brand[24];
  snprintf(brand, sizeof brand, "%" PRId64, who->brand_id);
  const char *params[] = {brand};
  hs_db_stmt_t s = {.name = "hs_process_list",
                    .sql = "SELECT p.name, av.title, p.active_version,"
                           " (SELECT count(*) FROM process_versions v WHERE v.brand_id = p.brand_id"
                           " AND v.name = p.name)"
                           " FROM processes p JOIN process_versions av ON av.brand_id = p.brand_id"
                           " AND av.name = p.name AND av.version = p.active_version"
                           " WHERE p.brand_id = $1 ORDER BY p.name",
                    .n_params = 1,
                    .values = params};
  pop_exec(op, &s, 1, on_list);
}

void hs_api_process_list(hs_req_t *req) {
  hs_auth_resolve(req, HS_ROLE_AUTHOR | HS_ROLE_ADMIN, list_authorized);
}

static void on_get(void *ctx, const hs_db_result_t *res) {
  pop_t *op = ctx;
  char name[65];
  hs_strlcpy(name, op->name, sizeof name);
  hs_req_t *req = pop_done(op);
  if (res->status != HS_OK) {
    hs_api_unavailable(req, res->error);
    return;
  }
  PGresult *r = res->results[0];
  if (PQntuples(r) == 0) {
    hs_req_respond_error(req, 404, "not_found", "There is no process named %s", name);
    return;
  }
  hs_arena_t *a = &req->arena;
  hs_value_t *root = hs_value_new_map(a, 4);
  int rc = root != NULL ? HS_OK : HS_ENOMEM;
  const char *active = "";
  const char *title = PQgetvalue(r, 0, 1);
  for (int i = 0; i < PQntuples(r); i++) {
    if (strcmp(PQgetvalue(r, i, 3), "t") == 0) {
      active = PQgetvalue(r, i, 0);
      title = PQgetvalue(r, i, 1);
    }
  }
  if (rc == HS_OK) {
    rc |= hs_map_add_str(a, root, "name", name);
    rc |= hs_map_add_str(a, root, "title", title);
    rc |= hs_map_add_str(a, root, "active", active);
  }
  hs_value_t *versions = rc == HS_OK ? hs_map_add_array(a, root, "versions") : NULL;
  rc |= versions != NULL ? HS_OK : HS_ENOMEM;
  for (int i = 0; rc == HS_OK && i < PQntuples(r); i++) {
    hs_value_t *v = hs_value_new_map(a, 3);
    rc = v != NULL ? HS_OK : HS_ENOMEM;
    if (rc == HS_OK) {
      rc |= hs_map_add_str(a, v, "version", PQgetvalue(r, i, 0));
      rc |= hs_map_add_str(a, v, "created_at", PQgetvalue(r, i, 2));
      rc |= hs_map_add_bool(a, v, "active", strcmp(PQgetvalue(r, i, 3), "t") == 0);
      rc |= hs_array_push(a, versions, v) != NULL ? HS_OK : HS_ENOMEM;
    }
  }
  if (rc != HS_OK) {
    hs_api_unavailable(req, "out of memory");
    return;
  }
  hs_req_respond(req, 200, root);
}

static void get_authorized(hs_req_t *req, const hs_principal_t *who) {
  pop_t *op = pop_new(req, who);
  if (op == NULL) {
    return;
  }
  char brand[24];
  snprintf(brand, sizeof brand, "%" PRId64, who->brand_id);
  const char *params[] = {brand, op->name};
  hs_db_stmt_t s = {
      .name = "hs_process_get",
      .sql = "SELECT v.version, v.title,"
             " to_char(v.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
             " v.version = p.active_version"
             " FROM process_versions v LEFT JOIN processes p ON p.brand_id = v.brand_id"
             " AND p.name = v.name WHERE v.brand_id = $1 AND v.name = $2"
             " ORDER BY v.created_at DESC, v.version",
      .n_params = 2,
      .values = params};
  pop_exec(op, &s, 1, on_get);
}

void hs_api_process_get(hs_req_t *req) {
  hs_auth_resolve(req, HS_ROLE_AUTHOR | HS_ROLE_ADMIN, get_authorized);
}
