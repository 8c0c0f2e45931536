#include "api/common.h"

#include <string.h>

void hs_api_unavailable(hs_req_t *req, const char *detail) {
  static const char *const retry[] = {"retry-after", "1"};
  hs_req_respond_error_h(req, 503, retry, 1, "unavailable",
                         "Storage is unavailable right now (%s); retry in a moment",
                         detail != NULL && *detail != '\0' ? detail : "no detail");
}

void hs_api_fail(hs_req_t *req, int status, const char *message) {
  switch (status) {
    case HS_ENOTFOUND:
      hs_req_respond_error(req, 404, "not_found", "%s", message);
      return;
    case HS_ECONFLICT:
      hs_req_respond_error(req, 409, "conflict", "%s", message);
      return;
    case HS_EINVAL:
      hs_req_respond_error(req, 400, "malformed", "%s", message);
      return;
    case HS_ELIMIT:
      hs_req_respond_error(req, 413, "too_large", "%s", message);
      return;
    case HS_EVALIDATION:
      hs_req_respond_error(req, 422, "validation_failed", "%s", message);
      return;
    case HS_ESCRIPT:
      hs_req_respond_error(req, 422, "script_error", "%s", message);
      return;
    case HS_EUNAVAIL:
    case HS_ENOMEM:
      hs_api_unavailable(req, message);
      return;
    default:
      hs_req_respond_error(req, 500, "internal", "%s", message);
      return;
  }
}

bool hs_api_valid_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 64 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9'))) {
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-')) {
      return false;
    }
  }
  return true;
}

hs_value_t *hs_api_decode_map(hs_req_t *req, const char *const *allowed, const char *shape) {
  hs_value_t *body = NULL;
  if (hs_req_decode_body(req, &body) != HS_OK) {
    return NULL;
  }
  if (body->type != HS_V_MAP) {
    hs_req_respond_error(req, 400, "malformed", "The body must be a map %s", shape);
    return NULL;
  }
  for (size_t i = 0; i < body->as.map.len; i++) {
    const char *key = body->as.map.items[i].key;
    bool ok = false;
    for (const char *const *a = allowed; *a != NULL; a++) {
      ok = ok || strcmp(*a, key) == 0;
    }
    if (!ok) {
      hs_req_respond_error(req, 400, "malformed", "Unknown member \"%s\" in the request body", key);
      return NULL;
    }
  }
  return body;
}
