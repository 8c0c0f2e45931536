/* A bump allocator for everything that lives exactly as long as one message or one request:
 * decoded values, response trees. Freeing the arena frees all of it at once, so no decoded
 * value ever needs its own free, and a failed decode leaves nothing to clean up but the arena.
 *
 * An arena has an optional byte cap, so a hostile message cannot make it grow without bound. */
#ifndef HS_CORE_ARENA_H
#define HS_CORE_ARENA_H

#include <stddef.h>

typedef struct hs_arena_chunk hs_arena_chunk_t;

typedef struct hs_arena {
  hs_arena_chunk_t *head; /* owned: the chain of chunks, newest first */
  size_t used;            /* bytes handed out plus chunk overhead */
  size_t cap;             /* 0 = no cap; otherwise allocations past it fail */
} hs_arena_t;

/* Initializes an empty arena; allocates nothing yet. cap 0 means unlimited. */
void hs_arena_init(hs_arena_t *a, size_t cap);

/* Returns n bytes aligned for any type, owned by the arena, or NULL when out of memory or over
 * the cap. The memory is not zeroed. */
void *hs_arena_alloc(hs_arena_t *a, size_t n);

/* Like hs_arena_alloc but zeroed. */
void *hs_arena_calloc(hs_arena_t *a, size_t count, size_t size);

/* Copies len bytes of s and appends a NUL; owned by the arena. */
char *hs_arena_strndup(hs_arena_t *a, const char *s, size_t len);

/* Frees every chunk; the arena can be reused after this (it is left initialized). */
void hs_arena_reset(hs_arena_t *a);

#endif
