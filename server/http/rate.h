/* Per-caller rate limits: a token bucket per key (a token's hash), shared by every worker of
 * the process so the limit does not grow with the number of workers. Each node keeps its own
 * buckets: a token spread over N nodes gets N allowances. */
#ifndef HS_HTTP_RATE_H
#define HS_HTTP_RATE_H

#include <pthread.h>
#include <stdint.h>

#include "core/strmap.h"

typedef struct hs_rate {
  pthread_mutex_t lock;
  hs_strmap_t buckets; /* key -> owned bucket */
  uint32_t per_s;      /* refill rate */
  uint32_t burst;      /* bucket size */
} hs_rate_t;

void hs_rate_init(hs_rate_t *r, uint32_t per_s, uint32_t burst);
void hs_rate_free(hs_rate_t *r);
/* Takes one request from key's bucket at time now_ms. Returns 0 when it may go ahead, else the
 * milliseconds until one may. */
uint64_t hs_rate_take(hs_rate_t *r, const char *key, uint64_t now_ms);
/* Takes n more requests' worth from key's bucket for work an accepted request caused beyond an
 * ordinary one; the bucket may go as far as one burst below empty, so the caller's next
 * requests wait for it. A key without a bucket is not charged. */
void hs_rate_charge(hs_rate_t *r, const char *key, double n, uint64_t now_ms);

#endif
