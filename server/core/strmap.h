/* A string-keyed hash map of pointers (open addressing, linear probing). Used for the caches a
 * worker keeps (brands, process versions, live sessions); each is touched by one thread only.
 * Keys are copied; values are borrowed (the map never frees them). */
#ifndef HS_CORE_STRMAP_H
#define HS_CORE_STRMAP_H

#include <stddef.h>

typedef struct hs_strmap_slot {
  char *key; /* owned; NULL = empty, HS_STRMAP_TOMBSTONE = deleted */
  void *value;
  size_t hash;
} hs_strmap_slot_t;

typedef struct hs_strmap {
  hs_strmap_slot_t *slots; /* owned */
  size_t cap;              /* a power of two, or 0 */
  size_t len;              /* live entries */
  size_t used;             /* live + tombstones */
} hs_strmap_t;

void hs_strmap_init(hs_strmap_t *m);
void hs_strmap_free(hs_strmap_t *m); /* frees keys and slots, not values */

void *hs_strmap_get(const hs_strmap_t *m, const char *key);
/* Inserts or replaces. Returns HS_OK or HS_ENOMEM. */
int hs_strmap_put(hs_strmap_t *m, const char *key, void *value);
/* Removes key; returns its value or NULL. */
void *hs_strmap_del(hs_strmap_t *m, const char *key);

/* Iteration: for (size_t i = 0; hs_strmap_next(m, &i, &k, &v);) { ... } — no changes meanwhile. */
int hs_strmap_next(const hs_strmap_t *m, size_t *i, const char **key, void **value);

#endif
