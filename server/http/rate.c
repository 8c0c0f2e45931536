#include "http/rate.h"

#include <stdlib.h>

#include "core/error.h"

enum { MAX_KEYS = 100000 };

typedef struct bucket {
  double tokens;
  uint64_t last_ms;
} bucket_t;

void hs_rate_init(hs_rate_t *r, uint32_t per_s, uint32_t burst) {
  pthread_mutex_init(&r->lock, NULL);
  hs_strmap_init(&r->buckets);
  r->per_s = per_s;
  r->burst = burst;
}

static void drop_all(hs_rate_t *r) {
  size_t it = 0;
  const char *k;
  void *v;
  while (hs_strmap_next(&r->buckets, &it, &k, &v)) {
    free(v);
  }
  hs_strmap_free(&r->buckets);
  hs_strmap_init(&r->buckets);
}

void hs_rate_free(hs_rate_t *r) {
  drop_all(r);
  hs_strmap_free(&r->buckets);
  pthread_mutex_destroy(&r->lock);
}

/* Adds what the time since the bucket's last use earned, up to a burst. */
static void refill(const hs_rate_t *r, bucket_t *b, uint64_t now_ms) {
  if (now_ms > b->last_ms) {
    b->tokens += (double)(now_ms - b->last_ms) * r->per_s / 1000.0;
    if (b->tokens > r->burst) {
      b->tokens = r->burst;
    }
    b->last_ms = now_ms;
  }
}

void hs_rate_charge(hs_rate_t *r, const char *key, double n, uint64_t now_ms) {
  pthread_mutex_lock(&r->lock);
  bucket_t *b = hs_strmap_get(&r->buckets, key);
  if (b != NULL) {
    refill(r, b, now_ms);
    b->tokens -= n;
    if (b->tokens < -(double)r->burst) {
      b->tokens = -(double)r->burst;
    }
  }
  pthread_mutex_unlock(&r->lock);
}

uint64_t hs_rate_take(hs_rate_t *r, const char *key, uint64_t now_ms) {
  uint64_t wait = 0;
  pthread_mutex_lock(&r->lock);
  bucket_t *b = hs_strmap_get(&r->buckets, key);
  if (b == NULL) {
    /* Bounded: past MAX_KEYS the table starts over, which at worst grants each key one fresh
     * burst. */
    if (r->buckets.len >= MAX_KEYS) {
      drop_all(r);
    }
    b = malloc(sizeof *b);
    if (b == NULL || hs_strmap_put(&r->buckets, key, b) != HS_OK) {
      free(b);
      pthread_mutex_unlock(&r->lock);
      return 0; /* out of memory is no reason to refuse service */
    }
    b->tokens = r->burst;
    b->last_ms = now_ms;
  }
  refill(r, b, now_ms);
  if (b->tokens >= 1.0) {
    b->tokens -= 1.0;
  } else {
    wait = (uint64_t)((1.0 - b->tokens) * 1000.0 / r->per_s) + 1;
  }
  pthread_mutex_unlock(&r->lock);
  return wait;
}
