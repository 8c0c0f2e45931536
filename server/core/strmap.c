#include "core/strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static char k_tombstone;
#define TOMBSTONE (&k_tombstone)

/* FNV-1a: keys are short ids and names; this is fast and spreads them well enough. */
static size_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s != '\0'; s++) {
    h ^= (unsigned char)*s;
    h *= 1099511628211ull;
  }
  return (size_t)h;
}

void hs_strmap_init(hs_strmap_t *m) {
  memset(m, 0, sizeof *m);
}

void hs_strmap_free(hs_strmap_t *m) {
  for (size_t i = 0; i < m->cap; i++) {
    if (m->slots[i].key != NULL && m->slots[i].key != TOMBSTONE) {
      free(m->slots[i].key);
    }
  }
  free(m->slots);
  hs_strmap_init(m);
}

static hs_strmap_slot_t *find(const hs_strmap_t *m, const char *key, size_t h) {
  if (m->cap == 0) {
    return NULL;
  }
  for (size_t i = h & (m->cap - 1), n = 0; n < m->cap; i = (i + 1) & (m->cap - 1), n++) {
    hs_strmap_slot_t *s = &m->slots[i];
    if (s->key == NULL) {
      return NULL;
    }
    if (s->key != TOMBSTONE && s->hash == h && strcmp(s->key, key) == 0) {
      return s;
    }
  }
  return NULL;
}

void *hs_strmap_get(const hs_strmap_t *m, const char *key) {
  hs_strmap_slot_t *s = find(m, key, hash_str(key));
  return s != NULL ? s->value : NULL;
}

static int grow(hs_strmap_t *m) {
  size_t cap = m->cap == 0 ? 16 : (m->len * 2 >= m->cap ? m->cap * 2 : m->cap);
  hs_strmap_slot_t *slots = calloc(cap, sizeof *slots);
  if (slots == NULL) {
    return HS_ENOMEM;
  }
  for (size_t i = 0; i < m->cap; i++) {
    hs_strmap_slot_t *s = &m->slots[i];
    if (s->key == NULL || s->key == TOMBSTONE) {
      continue;
    }
    size_t j = s->hash & (cap - 1);
    while (slots[j].key != NULL) {
      j = (j + 1) & (cap - 1);
    }
    slots[j] = *s;
  }
  free(m->slots);
  m->slots = slots;
  m->cap = cap;
  m->used = m->len;
  return HS_OK;
}

int hs_strmap_put(hs_strmap_t *m, const char *key, void *value) {
  size_t h = hash_str(key);
  hs_strmap_slot_t *s = find(m, key, h);
  if (s != NULL) {
    s->value = value;
    return HS_OK;
  }
  /* Keep the load (tombstones included) under 3/4 so probes stay short. */
  if ((m->used + 1) * 4 > m->cap * 3) {
    int rc = grow(m);
    if (rc != HS_OK) {
      return rc;
    }
  }
  char *copy = strdup(key);
  if (copy == NULL) {
    return HS_ENOMEM;
  }
  size_t i = h & (m->cap - 1);
  while (m->slots[i].key != NULL && m->slots[i].key != TOMBSTONE) {
    i = (i + 1) & (m->cap - 1);
  }
  if (m->slots[i].key == NULL) {
    m->used++;
  }
  m->slots[i] = (hs_strmap_slot_t){copy, value, h};
  m->len++;
  return HS_OK;
}

void *hs_strmap_del(hs_strmap_t *m, const char *key) {
  hs_strmap_slot_t *s = find(m, key, hash_str(key));
  if (s == NULL) {
    return NULL;
  }
  void *v = s->value;
  free(s->key);
  s->key = TOMBSTONE;
  s->value = NULL;
  m->len--;
  return v;
}

int hs_strmap_next(const hs_strmap_t *m, size_t *i, const char **key, void **value) {
  while (*i < m->cap) {
    hs_strmap_slot_t *s = &m->slots[(*i)++];
    if (s->key != NULL && s->key != TOMBSTONE) {
      *key = s->key;
      *value = s->value;
      return 1;
    }
  }
  return 0;
}
