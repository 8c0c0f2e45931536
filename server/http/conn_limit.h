/* Connections per client address, counted across every worker: one client's connections
 * are spread over all of them, so a per-worker count would let it open the cap
 * times the number of workers. Accepts are rare next to requests, so one mutex is cheap. */
#ifndef HS_HTTP_CONN_LIMIT_H
#define HS_HTTP_CONN_LIMIT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/strmap.h"

typedef struct hs_conn_limit {
  pthread_mutex_t lock;
  hs_strmap_t counts; /* address -> open connections (in the pointer) */
  uint32_t max;
} hs_conn_limit_t;

void hs_conn_limit_init(hs_conn_limit_t *l, uint32_t max);
void hs_conn_limit_free(hs_conn_limit_t *l);
/* Counts one more connection from addr; false (and nothing counted) when it has max already. */
bool hs_conn_limit_acquire(hs_conn_limit_t *l, const char *addr);
void hs_conn_limit_release(hs_conn_limit_t *l, const char *addr);

#endif
