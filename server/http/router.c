#include "http/router.h"

#include <string.h>

/* Matches one pattern; fills params on success. */
static int match_pattern(const char *pat, const char *path, size_t path_len, hs_route_match_t *m) {
  size_t n_params = 0;
  size_t pi = 0;
  size_t si = 0;
  size_t pat_len = strlen(pat);
  while (pi < pat_len && si <= path_len) {
    if (pat[pi] == '{') {
      const char *close = memchr(pat + pi, '}', pat_len - pi);
      if (close == NULL || n_params == HS_ROUTE_MAX_PARAMS) {
        return 0;
      }
      size_t seg_end = si;
      while (seg_end < path_len && path[seg_end] != '/') {
        seg_end++;
      }
      size_t seg_len = seg_end - si;
      if (seg_len == 0 || seg_len > HS_ROUTE_MAX_PARAM_LEN) {
        return 0;
      }
      m->params[n_params].name = pat + pi + 1;
      m->params[n_params].name_len = (size_t)(close - (pat + pi + 1));
      memcpy(m->params[n_params].value, path + si, seg_len);
      m->params[n_params].value[seg_len] = '\0';
      n_params++;
      pi = (size_t)(close - pat) + 1;
      si = seg_end;
    } else {
      if (si >= path_len || pat[pi] != path[si]) {
        return 0;
      }
      pi++;
      si++;
    }
  }
  if (pi != pat_len || si != path_len) {
    return 0;
  }
  m->n_params = n_params;
  return 1;
}

void hs_router_match(const hs_route_t *routes, size_t n_routes, int debug, const char *method,
                     const char *path, size_t path_len, hs_route_match_t *m) {
  m->route = -1;
  m->path_matched = 0;
  m->n_params = 0;
  /* The routes of the request's method first: the path is scanned against the others only
   * when none of those matched, to tell 405 (the path exists) from 404. */
  for (size_t i = 0; i < n_routes; i++) {
    if (((routes[i].flags & HS_ROUTE_DEBUG) && !debug) || strcmp(routes[i].method, method) != 0) {
      continue;
    }
    if (match_pattern(routes[i].pattern, path, path_len, m)) {
      m->route = (int)i;
      return;
    }
  }
  for (size_t i = 0; i < n_routes; i++) {
    if (((routes[i].flags & HS_ROUTE_DEBUG) && !debug) || strcmp(routes[i].method, method) == 0) {
      continue;
    }
    if (match_pattern(routes[i].pattern, path, path_len, m)) {
      m->path_matched = 1;
      break;
    }
  }
  m->n_params = 0;
}

const char *hs_route_param(const hs_route_match_t *m, const char *name) {
  size_t len = strlen(name);
  for (size_t i = 0; i < m->n_params; i++) {
    if (m->params[i].name_len == len && memcmp(m->params[i].name, name, len) == 0) {
      return m->params[i].value;
    }
  }
  return NULL;
}
