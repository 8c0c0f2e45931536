#include "api/auth.h"

#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/common.h"
#include "core/ids.h"
#include "core/str.h"
#include "core/strmap.h"
#include "http/rate.h"
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

int hs_role_parse(const char *s, hs_role_t *out) {
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

int hs_token_new(char out[HS_TOKEN_LEN + 1], char hash_hex[65]) {
  uint8_t raw[32];
  if (RAND_bytes(raw, sizeof raw) != 1) {
    return HS_EIO;
  }
  memcpy(out, "hst_", 4);
  hs_hex(raw, sizeof raw, out + 4);
  return hs_token_hash(out, hash_hex);
}

int hs_token_hash(const char *token, char hash_hex[65]) {
  if (strncmp(token, "hst_", 4) != 0 || !hs_is_hex(token + 4, 64)) {
    return HS_EINVAL;
  }
  uint8_t digest[32];
  hs_sha256(token, HS_TOKEN_LEN, digest);
  hs_hex(digest, sizeof digest, hash_hex);
  return HS_OK;
}

static void unauthorized(hs_req_t *req, const char *why) {
  static const char *const challenge[] = {"www-authenticate", "Bearer"};
  hs_req_respond_error_h(req, 401, challenge, 1, "unauthorized", "%s", why);
}

enum { DEV_KEY_MAX = 200 }; /* "dev:" + brand (64) + "/" + subject (128) + NUL */

/* The rate-limit bucket of a development identity. */
static void dev_key(const hs_principal_t *who, char out[DEV_KEY_MAX]) {
  /* Both parts fit (see DEV_KEY_MAX): the brand is checked to be a name, the subject to be at
   * most 128 bytes. Not snprintf: this runs on every request. */
  size_t b = strnlen(who->brand, 64), n = strnlen(who->subject, 128);
  memcpy(out, "dev:", 4);
  memcpy(out + 4, who->brand, b);
  out[4 + b] = '/';
  memcpy(out + 5 + b, who->subject, n);
  out[5 + b + n] = '\0';
}

/* The token of an `Authorization: Bearer` header, or NULL when the request has none. */
static const char *bearer_token(const hs_req_t *req) {
  const char *authz = req->authorization;
  if (strncasecmp(authz, "Bearer ", 7) != 0) {
    return NULL;
  }
  const char *token = authz + 7;
  while (*token == ' ') {
    token++;
  }
  return token;
}

void hs_auth_charge(hs_req_t *req, const hs_principal_t *who, double n) {
  /* The bucket is found again as hs_auth_resolve found it: this is rare, per-request state
   * for it is not. */
  char key[DEV_KEY_MAX];
  const char *token = bearer_token(req);
  if (token == NULL) {
    dev_key(who, key);
  } else if (hs_token_hash(token, key) != HS_OK) {
    return; /* not reached: such a request was never authorized */
  }
  hs_rate_charge(req->worker->rate, key, n, uv_now(&req->worker->loop));
}

/* The rate limit and the role check, once the principal is known. key names the caller's
 * bucket: the token's hash, or the development identity. */
static void authorized(hs_req_t *req, const char *key, unsigned roles, const hs_principal_t *who,
                       hs_auth_cb cb) {
  uint64_t wait_ms = hs_rate_take(req->worker->rate, key, uv_now(&req->worker->loop));
  if (wait_ms > 0) {
    char seconds[24];
    snprintf(seconds, sizeof seconds, "%llu", (unsigned long long)((wait_ms + 999) / 1000));
    const char *const retry[] = {"retry-after", seconds};
    hs_req_respond_error_h(req, 429, retry, 1, "rate_limited",
                           "Too many requests with this token: wait %s s and retry", seconds);
    return;
  }
  if ((who->role & roles) == 0) {
    hs_req_respond_error(req, 403, "forbidden", "The %s role may not use %s %s",
                         hs_role_name(who->role), req->method,
                         req->match.route >= 0 ? req->worker->routes[req->match.route].pattern
                                               : req->path);
    return;
  }
  cb(req, who);
}

typedef struct auth_op {
  hs_req_t *req; /* NULL once the stream is gone */
  hs_auth_cb cb;
  unsigned roles;
  hs_principal_t who;
  hs_db_job_t *job;
  char hash[65];       /* bearer: the token's hash */
  uint64_t generation; /* bearer: the cache generation when the lookup began */
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
  unsigned roles = op->roles;
  char key[DEV_KEY_MAX];
  dev_key(&who, key);
  free(op);
  authorized(req, key, roles, &who, cb);
}

static void on_token(void *ctx, const hs_db_result_t *res) {
  auth_op_t *op = ctx;
  hs_req_t *req = op->req;
  req->on_cancel = NULL;
  req->data = NULL;
  if (res->status != HS_OK) {
    hs_api_unavailable(req, res->error);
    free(op);
    return;
  }
  PGresult *r = res->results[0];
  if (PQntuples(r) != 1 || hs_role_parse(PQgetvalue(r, 0, 2), &op->who.role) != HS_OK) {
    free(op);
    unauthorized(req, "The token is unknown or was revoked: ask your brand's admin for a new one");
    return;
  }
  op->who.brand_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
  hs_strlcpy(op->who.brand, PQgetvalue(r, 0, 1), sizeof op->who.brand);
  hs_strlcpy(op->who.subject, PQgetvalue(r, 0, 3), sizeof op->who.subject);
  hs_strlcpy(op->who.name, PQgetvalue(r, 0, 4), sizeof op->who.name);
  hs_store_token_put(req->worker->app, op->hash, &op->who, sizeof op->who, op->generation);
  hs_principal_t who = op->who;
  hs_auth_cb cb = op->cb;
  unsigned roles = op->roles;
  char key[65];
  hs_strlcpy(key, op->hash, sizeof key);
  free(op);
  authorized(req, key, roles, &who, cb);
}

static void resolve_bearer(hs_req_t *req, const char *token, unsigned roles, hs_auth_cb cb) {
  hs_store_t *store = req->worker->app;
  char hash[65];
  if (hs_token_hash(token, hash) != HS_OK) {
    unauthorized(req, "The bearer token is malformed: it is \"hst_\" and 64 hex digits");
    return;
  }
  const hs_principal_t *cached = hs_store_token_get(store, hash);
  if (cached != NULL) {
    hs_principal_t who = *cached;
    authorized(req, hash, roles, &who, cb);
    return;
  }
  auth_op_t *op = calloc(1, sizeof *op);
  if (op == NULL) {
    hs_api_unavailable(req, "out of memory");
    return;
  }
  op->req = req;
  op->cb = cb;
  op->roles = roles;
  hs_strlcpy(op->hash, hash, sizeof op->hash);
  op->generation = hs_store_token_generation(store);
  const char *params[] = {hash};
  hs_db_stmt_t stmt = {.name = "hs_token_lookup",
                       .sql = "SELECT t.brand_id, b.name, t.role, t.subject, t.name FROM tokens t"
                              " JOIN brands b ON b.id = t.brand_id"
                              " WHERE t.hash = decode($1, 'hex') AND t.revoked_at IS NULL",
                       .n_params = 1,
                       .values = params};
  if (hs_db_exec(hs_store_pool(store), &stmt, 1, on_token, op, &op->job) != HS_OK) {
    free(op);
    hs_api_unavailable(req, "the database is unavailable");
    return;
  }
  req->data = op;
  req->on_cancel = auth_cancel;
}

void hs_auth_resolve(hs_req_t *req, unsigned roles, hs_auth_cb cb) {
  hs_store_t *store = req->worker->app;
  if (store == NULL) {
    hs_api_unavailable(req, "no database is configured (HANDSEL_DB)");
    return;
  }
  const char *authz = req->authorization;
  const char *token = bearer_token(req);
  if (token != NULL) {
    resolve_bearer(req, token, roles, cb);
    return;
  }
  if (!req->config->dev_auth || hs_req_header(req, "x-handsel-dev-brand") == NULL) {
    unauthorized(req, authz[0] != '\0'
                          ? "Only bearer tokens are accepted: send Authorization: Bearer <token>"
                          : "Send Authorization: Bearer <token>; an admin of your brand can make "
                            "one");
    return;
  }
  const char *brand = hs_req_header(req, "x-handsel-dev-brand");
  const char *role = hs_req_header(req, "x-handsel-dev-role");
  const char *subject = hs_req_header(req, "x-handsel-dev-subject");
  hs_principal_t who;
  memset(&who, 0, sizeof who);
  if (brand == NULL || role == NULL || subject == NULL || !hs_api_valid_name(brand) ||
      hs_role_parse(role, &who.role) != HS_OK || subject[0] == '\0' || strlen(subject) > 128) {
    hs_req_respond_error(req, 401, "unauthorized",
                         "Send x-handsel-dev-brand (a name like acme-solar), x-handsel-dev-role "
                         "(admin, author, contractor or compliance) and x-handsel-dev-subject "
                         "(who you are, at most 128 bytes).");
    return;
  }
  hs_strlcpy(who.brand, brand, sizeof who.brand);
  hs_strlcpy(who.subject, subject, sizeof who.subject);
  hs_strlcpy(who.name, subject, sizeof who.name);
  who.brand_id = hs_store_brand_lookup(store, brand);
  if (who.brand_id > 0) {
    char key[DEV_KEY_MAX];
    dev_key(&who, key);
    authorized(req, key, roles, &who, cb);
    return;
  }
  auth_op_t *op = calloc(1, sizeof *op);
  if (op == NULL) {
    hs_api_unavailable(req, "out of memory");
    return;
  }
  op->req = req;
  op->cb = cb;
  op->roles = roles;
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
