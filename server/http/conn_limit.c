#include "http/conn_limit.h"

void hs_conn_limit_init(hs_conn_limit_t *l, uint32_t max) {
  pthread_mutex_init(&l->lock, NULL);
  hs_strmap_init(&l->counts);
  l->max = max;
}

void hs_conn_limit_free(hs_conn_limit_t *l) {
  hs_strmap_free(&l->counts);
  pthread_mutex_destroy(&l->lock);
}

bool hs_conn_limit_acquire(hs_conn_limit_t *l, const char *addr) {
  pthread_mutex_lock(&l->lock);
  uintptr_t n = (uintptr_t)hs_strmap_get(&l->counts, addr);
  bool ok = n < l->max && hs_strmap_put(&l->counts, addr, (void *)(n + 1)) == 0;
  pthread_mutex_unlock(&l->lock);
  return ok;
}

void hs_conn_limit_release(hs_conn_limit_t *l, const char *addr) {
  pthread_mutex_lock(&l->lock);
  uintptr_t n = (uintptr_t)hs_strmap_get(&l->counts, addr);
  if (n <= 1) {
    hs_strmap_del(&l->counts, addr); /* the table holds only addresses with connections */
  } else {
    hs_strmap_put(&l->counts, addr, (void *)(n - 1));
  }
  pthread_mutex_unlock(&l->lock);
}
