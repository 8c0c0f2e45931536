#include "core/arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct hs_arena_chunk {
  hs_arena_chunk_t *next;
  size_t size; /* usable bytes in data */
  size_t off;  /* bytes used in data */
  alignas(max_align_t) unsigned char data[];
};

/* Small first chunk: most requests are a few hundred bytes. Chunks double up to 64 KiB so a
 * large message costs few mallocs without wasting much on small ones. */
enum { HS_ARENA_MIN_CHUNK = 1024, HS_ARENA_MAX_CHUNK = 64 * 1024 };

void hs_arena_init(hs_arena_t *a, size_t cap) {
  a->head = NULL;
  a->used = 0;
  a->cap = cap;
}

void *hs_arena_alloc(hs_arena_t *a, size_t n) {
  const size_t align = alignof(max_align_t);
  if (n > SIZE_MAX - align) {
    return NULL;
  }
  size_t need = (n + align - 1) & ~(align - 1);
  if (need == 0) {
    need = align;
  }
  hs_arena_chunk_t *c = a->head;
  if (c == NULL || c->size - c->off < need) {
    size_t size = c == NULL ? HS_ARENA_MIN_CHUNK : c->size * 2;
    if (size > HS_ARENA_MAX_CHUNK) {
      size = HS_ARENA_MAX_CHUNK;
    }
    if (size < need) {
      size = need;
    }
    size_t total = sizeof(hs_arena_chunk_t) + size;
    if (a->cap != 0 && (a->used > a->cap || total > a->cap - a->used)) {
      return NULL;
    }
    c = malloc(total);
    if (c == NULL) {
      return NULL;
    }
    c->next = a->head;
    c->size = size;
    c->off = 0;
    a->head = c;
    a->used += total;
  }
  void *p = c->data + c->off;
  c->off += need;
  return p;
}

void *hs_arena_calloc(hs_arena_t *a, size_t count, size_t size) {
  if (size != 0 && count > SIZE_MAX / size) {
    return NULL;
  }
  void *p = hs_arena_alloc(a, count * size);
  if (p != NULL) {
    memset(p, 0, count * size);
  }
  return p;
}

char *hs_arena_strndup(hs_arena_t *a, const char *s, size_t len) {
  if (len == SIZE_MAX) {
    return NULL;
  }
  char *p = hs_arena_alloc(a, len + 1);
  if (p != NULL) {
    if (len > 0) {
      memcpy(p, s, len);
    }
    p[len] = '\0';
  }
  return p;
}

void hs_arena_reset(hs_arena_t *a) {
  hs_arena_chunk_t *c = a->head;
  while (c != NULL) {
    hs_arena_chunk_t *next = c->next;
    free(c);
    c = next;
  }
  a->head = NULL;
  a->used = 0;
}
