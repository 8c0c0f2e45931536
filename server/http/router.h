/* Matching a request's method and path against a static route table. Patterns are literal
 * segments and {name} parameters: "/v1/sessions/{id}/steps/{seq}". A parameter matches one
 * non-empty segment. The table is data so that /metrics can label requests by pattern. */
#ifndef HS_HTTP_ROUTER_H
#define HS_HTTP_ROUTER_H

#include <stddef.h>

typedef struct hs_req hs_req_t;

/* A handler owns the request until it responds (hs_req_respond*, or ends a stream). It may
 * respond before returning or later from a callback; see http/request.h. */
typedef void (*hs_handler_fn)(hs_req_t *req);

typedef struct hs_route {
  const char *method;  /* "GET", "POST", ... */
  const char *pattern; /* also the metrics label */
  hs_handler_fn handler;
  unsigned flags; /* HS_ROUTE_* */
} hs_route_t;

enum {
  HS_ROUTE_DEBUG = 1u << 0,      /* only when debug routes are enabled */
  HS_ROUTE_LARGE_BODY = 1u << 1, /* the body may be up to config.max_blob (evidence uploads) */
  HS_ROUTE_MAX_PARAMS = 4,
  HS_ROUTE_MAX_PARAM_LEN = 128,
};

typedef struct hs_route_match {
  int route;        /* index in the table, -1 when no pattern matched the path */
  int path_matched; /* 1 when some pattern matched the path but not the method (405) */
  size_t n_params;
  struct {
    const char *name; /* borrowed from the pattern: "{id}" without braces, not NUL-terminated */
    size_t name_len;
    char value[HS_ROUTE_MAX_PARAM_LEN + 1]; /* copied, NUL-terminated */
  } params[HS_ROUTE_MAX_PARAMS];
} hs_route_match_t;

/* Finds the first route whose pattern matches path (no query string) and whose method matches.
 * Routes with HS_ROUTE_DEBUG are skipped unless debug is non-zero. Never fails: the result says
 * what matched. */
void hs_router_match(const hs_route_t *routes, size_t n_routes, int debug, const char *method,
                     const char *path, size_t path_len, hs_route_match_t *m);

/* The value of parameter `name` from a match, or NULL. */
const char *hs_route_param(const hs_route_match_t *m, const char *name);

#endif
