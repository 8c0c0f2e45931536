#include "audit/tap.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

typedef struct entry {
  int64_t brand_id;
  hs_audit_record_t rec; /* its pointers point into the entry's block */
} entry_t;

/* One put: one allocation, its entries, then the bytes they point into. */
typedef struct block {
  struct block *next;
  size_t n;
  size_t bytes; /* charged to the budget */
  int64_t max_id;
  entry_t entries[];
} block_t;

struct hs_audit_tap {
  pthread_mutex_t lock;
  size_t budget;
  /* Under lock. */
  size_t bytes;
  size_t records;
  uint64_t dropped;
  bool closed;
  block_t *published; /* owned: put since the last sync */
  /* The consumer's alone. */
  block_t *held; /* owned: synced, not yet sealed */
  /* Open addressing by id over held's unsealed entries, rebuilt by each sync: a round looks up
     thousands of ids, and sorting them all again for each round cost more than the lookups. */
  const entry_t **slots; /* owned array; the entries are held's */
  size_t n_slots;        /* a power of two, at least twice the entries; 0 when empty */
  int64_t horizon;       /* of the last sync: entries at or below it are not in slots */
};

int hs_audit_tap_new(size_t budget, hs_audit_tap_t **out) {
  hs_audit_tap_t *t = calloc(1, sizeof *t);
  if (t == NULL) {
    return HS_ENOMEM;
  }
  if (pthread_mutex_init(&t->lock, NULL) != 0) {
    free(t);
    return HS_ENOMEM;
  }
  t->budget = budget;
  *out = t;
  return HS_OK;
}

static void free_blocks(block_t *b) {
  while (b != NULL) {
    block_t *next = b->next;
    free(b);
    b = next;
  }
}

void hs_audit_tap_free(hs_audit_tap_t *t) {
  if (t == NULL) {
    return;
  }
  free_blocks(t->published);
  free_blocks(t->held);
  free(t->slots);
  pthread_mutex_destroy(&t->lock);
  free(t);
}

void hs_audit_tap_close(hs_audit_tap_t *t) {
  pthread_mutex_lock(&t->lock);
  t->closed = true;
  pthread_mutex_unlock(&t->lock);
}

static bool text_ok(hs_audit_bytes_t b) {
  return b.n == 0 || memchr(b.p, 0, b.n) == NULL;
}

/* Copies b after *at as a NUL-terminated string. */
static const char *copy_text(char **at, hs_audit_bytes_t b) {
  char *s = *at;
  if (b.n > 0) {
    memcpy(s, b.p, b.n);
  }
  s[b.n] = '\0';
  *at += b.n + 1;
  return s;
}

static const uint8_t *copy_bytes(char **at, hs_audit_bytes_t b, size_t *len) {
  *len = b.n;
  if (b.p == NULL) {
    return NULL;
  }
  uint8_t *p = (uint8_t *)*at;
  if (b.n > 0) {
    memcpy(p, b.p, b.n);
  }
  *at += b.n;
  return p;
}

int hs_audit_tap_put(hs_audit_tap_t *t, const hs_audit_tap_record_t *recs, size_t n) {
  if (n == 0) {
    return HS_OK;
  }
  size_t size = sizeof(block_t) + n * sizeof(entry_t);
  for (size_t i = 0; i < n; i++) {
    const hs_audit_tap_record_t *r = &recs[i];
    if (!text_ok(r->session) || !text_ok(r->process) || !text_ok(r->version) || !text_ok(r->step) ||
        !text_ok(r->contractor)) {
      return HS_EINVAL;
    }
    size += r->session.n + r->process.n + r->version.n + r->step.n + r->contractor.n + 5 +
            r->errors.n + r->documents.n;
  }
  pthread_mutex_lock(&t->lock);
  bool room = !t->closed && size <= t->budget - t->bytes;
  if (room) {
    t->bytes += size; /* claimed before the copy, so producers never overshoot together */
    t->records += n;
  } else {
    t->dropped += n;
  }
  pthread_mutex_unlock(&t->lock);
  if (!room) {
    return HS_ELIMIT;
  }
  block_t *b = malloc(size);
  if (b == NULL) {
    pthread_mutex_lock(&t->lock);
    t->bytes -= size;
    t->records -= n;
    t->dropped += n;
    pthread_mutex_unlock(&t->lock);
    return HS_ENOMEM;
  }
  b->n = n;
  b->bytes = size;
  b->max_id = INT64_MIN;
  char *at = (char *)&b->entries[n];
  for (size_t i = 0; i < n; i++) {
    const hs_audit_tap_record_t *r = &recs[i];
    entry_t *e = &b->entries[i];
    e->brand_id = r->brand_id;
    hs_audit_record_t *rec = &e->rec;
    memset(rec, 0, sizeof *rec);
    rec->id = r->id;
    rec->seq = r->seq;
    rec->server_us = r->server_us;
    rec->has_device = r->has_device;
    rec->device_us = r->device_us;
    rec->result = r->accepted ? "accepted" : "rejected";
    rec->session = copy_text(&at, r->session);
    rec->process = copy_text(&at, r->process);
    rec->version = copy_text(&at, r->version);
    rec->step = copy_text(&at, r->step);
    rec->contractor = copy_text(&at, r->contractor);
    rec->errors = copy_bytes(&at, r->errors, &rec->errors_len);
    rec->documents = copy_bytes(&at, r->documents, &rec->documents_len);
    memcpy(rec->data_digest, r->data_digest, 32);
    if (r->id > b->max_id) {
      b->max_id = r->id;
    }
  }
  pthread_mutex_lock(&t->lock);
  b->next = t->published;
  t->published = b;
  pthread_mutex_unlock(&t->lock);
  return HS_OK;
}

static size_t slot_of(int64_t id, size_t n_slots) {
  /* Fibonacci hashing: ids are consecutive, and the multiply spreads them over the table. */
  return (size_t)(((uint64_t)id * 0x9E3779B97F4A7C15u) >> 32) & (n_slots - 1);
}

int hs_audit_tap_sync(hs_audit_tap_t *t, int64_t horizon) {
  pthread_mutex_lock(&t->lock);
  block_t *fresh = t->published;
  t->published = NULL;
  pthread_mutex_unlock(&t->lock);
  while (fresh != NULL) {
    block_t *next = fresh->next;
    fresh->next = t->held;
    t->held = fresh;
    fresh = next;
  }
  /* Sealed blocks go; the rest are indexed. */
  size_t freed_bytes = 0, freed_records = 0, live = 0;
  for (block_t **p = &t->held; *p != NULL;) {
    block_t *b = *p;
    if (b->max_id <= horizon) {
      *p = b->next;
      freed_bytes += b->bytes;
      freed_records += b->n;
      free(b);
      continue;
    }
    live += b->n;
    p = &b->next;
  }
  if (freed_bytes > 0) {
    pthread_mutex_lock(&t->lock);
    t->bytes -= freed_bytes;
    t->records -= freed_records;
    pthread_mutex_unlock(&t->lock);
  }
  t->horizon = horizon;
  if (live == 0) {
    free(t->slots); /* a quiet node does not keep a busy hour's table */
    t->slots = NULL;
    t->n_slots = 0;
    return HS_OK;
  }
  size_t want = 16;
  while (want < 2 * live) {
    want *= 2;
  }
  if (want > t->n_slots || want * 4 <= t->n_slots) {
    free(t->slots);
    t->slots = malloc(want * sizeof *t->slots);
    t->n_slots = t->slots != NULL ? want : 0;
    if (t->slots == NULL) {
      return HS_ENOMEM;
    }
  }
  memset(t->slots, 0, t->n_slots * sizeof *t->slots);
  for (const block_t *b = t->held; b != NULL; b = b->next) {
    for (size_t i = 0; i < b->n; i++) {
      const entry_t *e = &b->entries[i];
      if (e->rec.id <= horizon) {
        continue;
      }
      size_t k = slot_of(e->rec.id, t->n_slots);
      while (t->slots[k] != NULL) {
        k = (k + 1) & (t->n_slots - 1);
      }
      t->slots[k] = e;
    }
  }
  return HS_OK;
}

size_t hs_audit_tap_holds(const hs_audit_tap_t *t, int64_t after, int64_t through) {
  size_t n = 0;
  for (const block_t *b = t->n_slots > 0 ? t->held : NULL; b != NULL; b = b->next) {
    for (size_t i = 0; i < b->n; i++) {
      int64_t id = b->entries[i].rec.id;
      n += id > after && id <= through && id > t->horizon;
    }
  }
  return n;
}

const hs_audit_record_t *hs_audit_tap_get(const hs_audit_tap_t *t, int64_t id, int64_t *brand_id) {
  if (t->n_slots == 0 || id <= t->horizon) {
    return NULL;
  }
  for (size_t k = slot_of(id, t->n_slots); t->slots[k] != NULL; k = (k + 1) & (t->n_slots - 1)) {
    const entry_t *e = t->slots[k];
    if (e->rec.id == id) {
      *brand_id = e->brand_id;
      return &e->rec;
    }
  }
  return NULL;
}

const hs_audit_record_t *hs_audit_tap_find(const hs_audit_tap_t *t, int64_t brand_id, int64_t id) {
  int64_t held_brand = 0;
  const hs_audit_record_t *rec = hs_audit_tap_get(t, id, &held_brand);
  return rec != NULL && held_brand == brand_id ? rec : NULL;
}

void hs_audit_tap_stats(hs_audit_tap_t *t, hs_audit_tap_stats_t *out) {
  pthread_mutex_lock(&t->lock);
  out->records = t->records;
  out->bytes = t->bytes;
  out->dropped = t->dropped;
  pthread_mutex_unlock(&t->lock);
}
