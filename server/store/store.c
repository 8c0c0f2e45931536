#include "store/store.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "core/log.h"
#include "core/str.h"
#include "core/strmap.h"
#include "store/content.h"
#include "store/listen.h"

/* Payloads read back from our own tables: generous, but still bounded. */
static const hs_codec_limits_t k_stored_limits = {
    .max_bytes = 64u << 20,
    .max_depth = 32,
    .max_count = 1u << 20,
    .max_items = 1u << 24,
    .max_str_len = 16u << 20,
};

struct hs_store {
  uv_loop_t *loop;
  const hs_config_t *cfg;
  hs_db_pool_t *pool;              /* owned */
  hs_committer_t *committer;       /* owned */
  hs_posteriors_t *posteriors;     /* owned: what visit:suggest has learned */
  hs_metrics_shard_t *metrics;     /* borrowed; may be NULL */
  hs_strmap_t brands;              /* brand name -> id (stored in the pointer) */
  hs_strmap_t tokens;              /* token hash (hex) -> malloc'd opaque entry (owned) */
  uint64_t token_generation;       /* advanced by every revocation heard */
  hs_strmap_t vms;                 /* brand id -> hs_vm_t* (owned) */
  hs_strmap_t procs;               /* "brand/name/version" -> hs_process_t* (owned by their VM) */
  hs_strmap_t lives;               /* session id -> hs_live_t* (owned) */
  hs_live_t *lru_head, *lru_tail;  /* most recently used first */
  const hs_audit_key_t *audit_key; /* borrowed; NULL until hs_store_set_audit */

  /* What other workers and nodes announce (committed steps, revoked tokens), from the node's
     listener (store/listen.h). */
  hs_listen_inbox_t *inbox; /* owned; NULL until hs_store_listen */
  bool listening;           /* the listener hears everything (since its last UP) */
};

/* ------------------------------------------------------------ LISTEN */

static void on_token_notify(hs_store_t *s, const char *payload);

static void on_notify_one(hs_store_t *s, const char *item) {
  /* "<session id> <seq>": the session committed step seq somewhere. Every worker reads every
   * commit of every node here, so this is parsed by hand, not with sscanf. */
  const char *sp = strchr(item, ' ');
  size_t id_len = sp != NULL ? (size_t)(sp - item) : 0;
  char id[40];
  if (id_len == 0 || id_len >= sizeof id || sp[1] == '\0') {
    return;
  }
  memcpy(id, item, id_len);
  id[id_len] = '\0';
  uint64_t seq = 0;
  for (const char *d = sp + 1; *d != '\0'; d++) {
    if (*d < '0' || *d > '9' || seq > UINT32_MAX) {
      return;
    }
    seq = seq * 10 + (uint64_t)(*d - '0');
  }
  hs_live_t *live = hs_strmap_get(&s->lives, id);
  if (live == NULL || live->busy) {
    return;
  }
  if (hs_session_status(live->session) == HS_SESSION_WAITING &&
      hs_session_seq(live->session) > seq) {
    return; /* our own commit, already applied here */
  }
  if (hs_session_status(live->session) == HS_SESSION_ENDED) {
    return;
  }
  /* Another worker or node moved it: rebuild before anyone uses it, and tell the streams. */
  live->stale = true;
  hs_store_live_changed(live);
}

/* A token was revoked somewhere: its hash, or "*" for all. */
static void on_token_notify(hs_store_t *s, const char *payload) {
  s->token_generation++;
  if (strcmp(payload, "*") == 0) {
    size_t it = 0;
    const char *k;
    void *v;
    while (hs_strmap_next(&s->tokens, &it, &k, &v)) {
      free(v);
    }
    hs_strmap_free(&s->tokens);
    hs_strmap_init(&s->tokens);
    return;
  }
  free(hs_strmap_del(&s->tokens, payload));
}

const void *hs_store_token_get(hs_store_t *s, const char *hash_hex) {
  return hs_strmap_get(&s->tokens, hash_hex);
}

uint64_t hs_store_token_generation(const hs_store_t *s) {
  return s->token_generation;
}

void hs_store_token_put(hs_store_t *s, const char *hash_hex, const void *entry, size_t len,
                        uint64_t generation) {
  /* Only while listening: a revocation could otherwise pass unseen and the entry live on. */
  if (generation != s->token_generation || !s->listening || s->tokens.len >= 100000) {
    return;
  }
  void *copy = malloc(len);
  if (copy == NULL) {
    return;
  }
  memcpy(copy, entry, len);
  free(hs_strmap_del(&s->tokens, hash_hex));
  if (hs_strmap_put(&s->tokens, hash_hex, copy) != HS_OK) {
    free(copy);
  }
}

/* A notification lists "<id> <seq>" pairs separated by commas (one per batch of commits). */
static void on_notify(hs_store_t *s, const char *payload) {
  char item[64];
  while (*payload != '\0') {
    const char *comma = strchr(payload, ',');
    size_t len = comma != NULL ? (size_t)(comma - payload) : strlen(payload);
    if (len < sizeof item) {
      memcpy(item, payload, len);
      item[len] = '\0';
      on_notify_one(s, item);
    }
    payload += len + (comma != NULL);
  }
}

/* A message from the node's listener, on this worker's loop. */
static void on_listen(void *ctx, hs_listen_kind_t kind, const char *payload) {
  hs_store_t *s = ctx;
  switch (kind) {
    case HS_LISTEN_UP: {
      s->listening = true;
      /* Notifications sent while nobody listened are lost: any live copy may be behind, so each
       * is rebuilt before its next use. */
      size_t it = 0;
      const char *k;
      void *v;
      while (hs_strmap_next(&s->lives, &it, &k, &v)) {
        ((hs_live_t *)v)->stale = true;
      }
      on_token_notify(s, "*"); /* and any token revoked meanwhile must be looked up again */
      break;
    }
    case HS_LISTEN_DOWN:
      s->listening = false;
      on_token_notify(s, "*"); /* revocations sent while we cannot hear them must not be missed */
      break;
    case HS_LISTEN_SESSIONS:
      on_notify(s, payload);
      break;
    case HS_LISTEN_TOKEN:
      on_token_notify(s, payload);
      break;
  }
}

int hs_store_listen(hs_store_t *s, hs_listener_t *l) {
  return hs_listener_subscribe(l, s->loop, on_listen, s, &s->inbox);
}

/* ------------------------------------------------------------ lifecycle */

int hs_store_new(uv_loop_t *loop, const hs_config_t *cfg, hs_metrics_shard_t *metrics,
                 hs_store_t **out, hs_err_t *err) {
  hs_store_t *s = calloc(1, sizeof *s);
  if (s == NULL) {
    return hs_err_set(err, HS_ENOMEM, "out of memory");
  }
  s->loop = loop;
  s->cfg = cfg;
  s->metrics = metrics;
  hs_strmap_init(&s->vms);
  hs_strmap_init(&s->brands);
  hs_strmap_init(&s->tokens);
  hs_strmap_init(&s->procs);
  hs_strmap_init(&s->lives);
  int rc = hs_db_pool_new(loop, cfg->db_conninfo, cfg->db_pool_size, &s->pool, err);
  if (rc != HS_OK) {
    free(s);
    return rc;
  }
  rc = hs_committer_new(loop, s->pool, metrics, &s->committer);
  if (rc != HS_OK) {
    hs_db_pool_close(s->pool);
    free(s);
    return hs_err_set(err, rc, "out of memory");
  }
  rc = hs_posteriors_new(loop, s->pool, &s->posteriors);
  if (rc != HS_OK) {
    hs_committer_close(s->committer);
    hs_db_pool_close(s->pool);
    free(s);
    return hs_err_set(err, rc, "out of memory");
  }
  *out = s;
  return HS_OK;
}

/* Adds n to a counter of this worker's metrics shard (when there is one). */
#define METRIC_ADD(s, field, n)                                                                    \
  do {                                                                                             \
    if ((s)->metrics != NULL) {                                                                    \
      atomic_fetch_add_explicit(&(s)->metrics->field, (n), memory_order_relaxed);                  \
    }                                                                                              \
  } while (0)

static void live_free(hs_live_t *live) {
  hs_session_free(live->session);
  free(live);
}

void hs_store_close(hs_store_t *s) {
  /* Sessions first (they reference processes in the VMs), then the VMs. */
  size_t it = 0;
  const char *k;
  void *v;
  while (hs_strmap_next(&s->lives, &it, &k, &v)) {
    live_free(v);
    METRIC_ADD(s, sessions_live, -1);
  }
  hs_strmap_free(&s->lives);
  hs_strmap_free(&s->procs);
  it = 0;
  while (hs_strmap_next(&s->vms, &it, &k, &v)) {
    hs_vm_free(v);
  }
  hs_strmap_free(&s->vms);
  hs_strmap_free(&s->brands);
  it = 0;
  while (hs_strmap_next(&s->tokens, &it, &k, &v)) {
    free(v);
  }
  hs_strmap_free(&s->tokens);
  hs_posteriors_close(s->posteriors);
  hs_committer_close(s->committer);
  hs_db_pool_close(s->pool);
  if (s->inbox != NULL) {
    hs_listen_inbox_close(s->inbox, free, s); /* no message reaches s after this */
  } else {
    free(s);
  }
}

void hs_store_set_audit(hs_store_t *s, const hs_audit_key_t *key, hs_audit_tap_t *tap) {
  s->audit_key = key;
  hs_committer_set_tap(s->committer, tap);
}

const hs_audit_key_t *hs_store_audit_key(hs_store_t *s) {
  return s->audit_key;
}

hs_db_pool_t *hs_store_pool(hs_store_t *s) {
  return s->pool;
}

hs_committer_t *hs_store_committer(hs_store_t *s) {
  return s->committer;
}

/* ------------------------------------------------------------ brands, VMs and processes */

int64_t hs_store_brand_lookup(hs_store_t *s, const char *name) {
  return (int64_t)(intptr_t)hs_strmap_get(&s->brands, name);
}

void hs_store_brand_remember(hs_store_t *s, const char *name, int64_t id) {
  hs_strmap_put(&s->brands, name, (void *)(intptr_t)id);
}

hs_vm_t *hs_store_vm(hs_store_t *s, int64_t brand_id, hs_err_t *err) {
  char key[24];
  snprintf(key, sizeof key, "%" PRId64, brand_id);
  hs_vm_t *vm = hs_strmap_get(&s->vms, key);
  if (vm != NULL) {
    return vm;
  }
  if (hs_vm_new(key, NULL, &vm, err) != HS_OK) {
    return NULL;
  }
  hs_vm_set_counts(vm, hs_posteriors_counts, s->posteriors);
  if (hs_strmap_put(&s->vms, key, vm) != HS_OK) {
    hs_vm_free(vm);
    hs_err_set(err, HS_ENOMEM, "out of memory");
    return NULL;
  }
  return vm;
}

hs_process_t *hs_store_process(hs_store_t *s, int64_t brand_id, const char *name,
                               const char *version, const char *source, size_t source_len,
                               hs_err_t *err) {
  char key[200];
  snprintf(key, sizeof key, "%" PRId64 "/%s/%s", brand_id, name, version);
  hs_process_t *p = hs_strmap_get(&s->procs, key);
  if (p != NULL || source == NULL) {
    if (p == NULL) {
      hs_err_set(err, HS_ENOTFOUND, "process %s version %s is not loaded", name, version);
    }
    return p;
  }
  hs_vm_t *vm = hs_store_vm(s, brand_id, err);
  if (vm == NULL) {
    return NULL;
  }
  char chunk[80];
  snprintf(chunk, sizeof chunk, "%s.lua", name);
  if (hs_process_load(vm, chunk, source, source_len, &p, err) != HS_OK) {
    return NULL;
  }
  if (strcmp(hs_process_version(p), version) != 0) {
    hs_process_release(p);
    hs_err_set(err, HS_ECONFLICT, "stored source of %s does not hash to its version %s", name,
               version);
    return NULL;
  }
  if (hs_strmap_put(&s->procs, key, p) != HS_OK) {
    hs_process_release(p);
    hs_err_set(err, HS_ENOMEM, "out of memory");
    return NULL;
  }
  return p;
}

/* ------------------------------------------------------------ live sessions */

static void lru_unlink(hs_store_t *s, hs_live_t *l) {
  if (l->lru_prev != NULL) {
    l->lru_prev->lru_next = l->lru_next;
  } else if (s->lru_head == l) {
    s->lru_head = l->lru_next;
  }
  if (l->lru_next != NULL) {
    l->lru_next->lru_prev = l->lru_prev;
  } else if (s->lru_tail == l) {
    s->lru_tail = l->lru_prev;
  }
  l->lru_prev = l->lru_next = NULL;
}

static void lru_push_front(hs_store_t *s, hs_live_t *l) {
  l->lru_prev = NULL;
  l->lru_next = s->lru_head;
  if (s->lru_head != NULL) {
    s->lru_head->lru_prev = l;
  }
  s->lru_head = l;
  if (s->lru_tail == NULL) {
    s->lru_tail = l;
  }
}

hs_live_t *hs_store_live_get(hs_store_t *s, const char *id) {
  hs_live_t *l = hs_strmap_get(&s->lives, id);
  if (l != NULL && s->lru_head != l) {
    lru_unlink(s, l);
    lru_push_front(s, l);
  }
  return l;
}

size_t hs_store_live_count(const hs_store_t *s) {
  return s->lives.len;
}

static size_t vm_memory(hs_store_t *s) {
  size_t total = 0, it = 0;
  const char *k;
  void *v;
  while (hs_strmap_next(&s->vms, &it, &k, &v)) {
    total += hs_vm_memory(v);
  }
  return total;
}

static void evict(hs_store_t *s) {
  /* Oldest first; a session that is busy, awaited or watched stays. Over the memory budget,
   * at most a batch goes per call: a freed session's memory returns only as the Lua collector
   * gets to it, so the measure lags and must not empty the cache in one go. */
  enum { MEMORY_BATCH = 64 };
  unsigned memory_evictions = vm_memory(s) > s->cfg->session_memory ? MEMORY_BATCH : 0;
  hs_live_t *l = s->lru_tail;
  while (l != NULL && (s->lives.len > s->cfg->session_cache || memory_evictions > 0)) {
    hs_live_t *prev = l->lru_prev;
    if (!l->busy && l->waiters == NULL && l->watchers == NULL) {
      if (s->lives.len <= s->cfg->session_cache) {
        memory_evictions--;
      }
      lru_unlink(s, l);
      hs_strmap_del(&s->lives, l->id);
      live_free(l);
      METRIC_ADD(s, sessions_live, -1);
      METRIC_ADD(s, session_evictions, 1);
    }
    l = prev;
  }
}

int hs_store_live_add(hs_store_t *s, hs_live_t **live) {
  hs_live_t *have = hs_strmap_get(&s->lives, (*live)->id);
  if (have != NULL) {
    live_free(*live);
    *live = have;
    return HS_OK;
  }
  if (hs_strmap_put(&s->lives, (*live)->id, *live) != HS_OK) {
    live_free(*live);
    *live = NULL;
    return HS_ENOMEM;
  }
  lru_push_front(s, *live);
  METRIC_ADD(s, sessions_live, 1);
  evict(s);
  return HS_OK;
}

void hs_store_live_drop(hs_store_t *s, hs_live_t *live) {
  lru_unlink(s, live);
  if (hs_strmap_get(&s->lives, live->id) == live) {
    hs_strmap_del(&s->lives, live->id);
    METRIC_ADD(s, sessions_live, -1);
  }
  /* Waiters and watchers learn that this copy is gone; they reload. Unlink each before the call
   * so a callback may re-queue itself on a new copy. */
  while (live->waiters != NULL) {
    hs_waiter_t *w = live->waiters;
    hs_store_live_unwait(live, w);
    w->run(w, NULL);
  }
  while (live->watchers != NULL) {
    hs_watcher_t *w = live->watchers;
    hs_store_live_unwatch(live, w);
    w->on_change(w, NULL);
  }
  live_free(live);
}

void hs_store_live_wait(hs_store_t *s, hs_live_t *live, hs_waiter_t *w) {
  if (!live->busy && live->waiters == NULL) {
    w->run(w, live);
    return;
  }
  w->next = NULL;
  w->prev = live->waiters_tail;
  if (live->waiters_tail != NULL) {
    live->waiters_tail->next = w;
  } else {
    live->waiters = w;
  }
  live->waiters_tail = w;
}

void hs_store_live_unwait(hs_live_t *live, hs_waiter_t *w) {
  if (w->prev != NULL) {
    w->prev->next = w->next;
  } else {
    live->waiters = w->next;
  }
  if (w->next != NULL) {
    w->next->prev = w->prev;
  } else {
    live->waiters_tail = w->prev;
  }
  w->prev = w->next = NULL;
}

void hs_store_live_release(hs_store_t *s, hs_live_t *live) {
  live->busy = false;
  while (!live->busy && live->waiters != NULL) {
    hs_waiter_t *w = live->waiters;
    hs_store_live_unwait(live, w);
    w->run(w, live);
  }
  evict(s);
}

void hs_store_live_watch(hs_live_t *live, hs_watcher_t *w) {
  w->prev = NULL;
  w->next = live->watchers;
  if (live->watchers != NULL) {
    live->watchers->prev = w;
  }
  live->watchers = w;
}

void hs_store_live_unwatch(hs_live_t *live, hs_watcher_t *w) {
  if (w->prev != NULL) {
    w->prev->next = w->next;
  } else {
    live->watchers = w->next;
  }
  if (w->next != NULL) {
    w->next->prev = w->prev;
  }
  w->prev = w->next = NULL;
}

void hs_store_live_changed(hs_live_t *live) {
  for (hs_watcher_t *w = live->watchers; w != NULL;) {
    hs_watcher_t *next = w->next;
    w->on_change(w, live);
    w = next;
  }
}

bool hs_step_needs_evidence(const hs_value_t *step) {
  const hs_value_t *fields = step != NULL ? hs_map_get(step, "fields") : NULL;
  for (size_t i = 0; fields != NULL && fields->type == HS_V_ARRAY && i < fields->as.arr.len; i++) {
    const hs_value_t *type = hs_map_get(&fields->as.arr.items[i], "type");
    if (type != NULL && type->type == HS_V_STR &&
        (strcmp(type->as.str.ptr, "photo") == 0 || strcmp(type->as.str.ptr, "signature") == 0)) {
      return true;
    }
  }
  return false;
}

void hs_evidence_missing_message(char *out, size_t cap, const char *type, const char *value) {
  snprintf(out, cap, "Upload the %s first: %s has not been uploaded (PUT /v1/blobs/%s)", type,
           value, strncmp(value, "sha256:", 7) == 0 ? value + 7 : value);
}

/* ------------------------------------------------------------ loading by replay */

struct hs_load {
  hs_store_t *s;
  int64_t brand_id;
  char id[40];
  uint32_t upto;          /* hs_store_answer: the completion whose answer is wanted; else 0 */
  hs_load_cb cb;          /* hs_store_load's; NULL once cancelled */
  hs_answer_cb answer_cb; /* hs_store_answer's; NULL once cancelled */
  void *ctx;
};

static const char k_load_session_sql[] =
    "SELECT s.process, s.version, s.contractor_id, s.events, pv.source, coalesce(s.ref, ''),"
    " (extract(epoch FROM s.created_at) * 1000)::bigint"
    " FROM sessions s JOIN process_versions pv"
    " ON pv.brand_id = s.brand_id AND pv.name = s.process AND pv.version = s.version"
    " WHERE s.id = $1 AND s.brand_id = $2";
static const char k_load_events_sql[] =
    "SELECT events FROM step_completions WHERE session_id = $1 ORDER BY seq";
/* The record up to completion $2, and that completion's digest (in its row alone). */
static const char k_answer_events_sql[] =
    "SELECT events, seq, CASE WHEN seq = $2 THEN encode(digest, 'hex') END"
    " FROM step_completions WHERE session_id = $1 AND seq <= $2 ORDER BY seq";

/* Appends the events of one stored msgpack array (a bytea column in text form) to all. */
static int append_events(hs_arena_t *a, hs_value_t *all, const char *bytea_text, hs_err_t *err) {
  size_t n = 0;
  unsigned char *raw = PQunescapeBytea((const unsigned char *)bytea_text, &n);
  if (raw == NULL) {
    return hs_err_set(err, HS_ENOMEM, "out of memory");
  }
  hs_value_t *v = NULL;
  int rc = hs_msgpack_decode(raw, n, &k_stored_limits, a, &v, err);
  PQfreemem(raw);
  if (rc != HS_OK) {
    return rc;
  }
  if (v->type != HS_V_ARRAY) {
    return hs_err_set(err, HS_EINVAL, "stored events are not an array");
  }
  for (size_t i = 0; i < v->as.arr.len; i++) {
    if (hs_array_push(a, all, &v->as.arr.items[i]) == NULL) {
      return hs_err_set(err, HS_ENOMEM, "out of memory");
    }
  }
  return HS_OK;
}

/* Replays the session of l from its row (k_load_session_sql) and its completions' events
 * (column 0 of comps, in order). On HS_OK *sess belongs to the caller and *step is in a. */
static int replay_rows(hs_load_t *l, const PGresult *row, const PGresult *comps, hs_arena_t *a,
                       hs_process_t **p, hs_session_t **sess, hs_step_result_t *step,
                       hs_err_t *err) {
  *p = hs_store_process(l->s, l->brand_id, PQgetvalue(row, 0, 0), PQgetvalue(row, 0, 1),
                        PQgetvalue(row, 0, 4), (size_t)PQgetlength(row, 0, 4), err);
  if (*p == NULL) {
    return err->code != HS_OK ? err->code : HS_ESCRIPT;
  }
  hs_value_t *events = hs_value_new_array(a, 16);
  if (events == NULL) {
    return hs_err_set(err, HS_ENOMEM, "out of memory");
  }
  int rc = append_events(a, events, PQgetvalue(row, 0, 3), err);
  for (int i = 0; rc == HS_OK && i < PQntuples(comps); i++) {
    rc = append_events(a, events, PQgetvalue(comps, i, 0), err);
  }
  if (rc == HS_OK) {
    rc = hs_session_replay(*p, events, a, sess, step, err);
  }
  if (rc == HS_OK) {
    METRIC_ADD(l->s, session_replays, 1);
  }
  return rc;
}

/* hs_store_answer's rows: the session, then its completions up to l->upto. */
static void on_answer_rows(hs_load_t *l, const hs_db_result_t *res) {
  hs_err_t err;
  hs_err_clear(&err);
  hs_arena_t arena;
  hs_arena_init(&arena, 0);
  const hs_value_t *next = NULL;
  const char *digest = NULL;
  hs_session_t *sess = NULL;
  int rc = HS_OK;
  if (res->status != HS_OK) {
    rc = hs_err_set(&err, HS_EUNAVAIL, "the database is unavailable: %s", res->error);
    goto done;
  }
  const PGresult *row = res->results[0];
  const PGresult *comps = res->results[1];
  int n = PQntuples(comps);
  if (PQntuples(row) != 1 || n == 0 ||
      strtoul(PQgetvalue(comps, n - 1, 1), NULL, 10) != (unsigned long)l->upto) {
    rc = hs_err_set(&err, HS_ENOTFOUND, "session %s has no completion %" PRIu32, l->id, l->upto);
    goto done;
  }
  digest = PQgetvalue(comps, n - 1, 2);
  hs_process_t *p = NULL;
  hs_step_result_t step;
  rc = replay_rows(l, row, comps, &arena, &p, &sess, &step, &err);
  if (rc == HS_OK) {
    next = step.step;
  }
done:
  l->answer_cb(l->ctx, rc, rc == HS_OK ? digest : NULL, next, &err);
  if (sess != NULL) {
    hs_session_free(sess);
  }
  hs_arena_reset(&arena);
  free(l);
}

static void on_loaded(void *ctx, const hs_db_result_t *res) {
  hs_load_t *l = ctx;
  hs_store_t *s = l->s;
  hs_err_t err;
  hs_err_clear(&err);
  hs_live_t *live = NULL;
  int rc = HS_OK;
  if (l->cb == NULL && l->answer_cb == NULL) {
    free(l);
    return;
  }
  if (l->upto > 0) {
    on_answer_rows(l, res);
    return;
  }
  hs_arena_t arena;
  hs_arena_init(&arena, 0);
  if (res->status != HS_OK) {
    rc = hs_err_set(&err, HS_EUNAVAIL, "the database is unavailable: %s", res->error);
    goto done;
  }
  PGresult *row = res->results[0];
  if (PQntuples(row) != 1) {
    rc = hs_err_set(&err, HS_ENOTFOUND, "there is no session %s", l->id);
    goto done;
  }
  /* Someone may have loaded it while we waited. */
  live = hs_strmap_get(&s->lives, l->id);
  if (live != NULL && !live->stale) {
    goto done;
  }
  live = NULL;
  hs_process_t *p = NULL;
  hs_step_result_t step;
  hs_session_t *sess = NULL;
  rc = replay_rows(l, row, res->results[1], &arena, &p, &sess, &step, &err);
  if (rc != HS_OK) {
    goto done;
  }
  live = calloc(1, sizeof *live);
  if (live == NULL) {
    hs_session_free(sess);
    rc = hs_err_set(&err, HS_ENOMEM, "out of memory");
    goto done;
  }
  hs_strlcpy(live->id, l->id, sizeof live->id);
  live->brand_id = l->brand_id;
  hs_strlcpy(live->contractor_id, PQgetvalue(row, 0, 2), sizeof live->contractor_id);
  hs_strlcpy(live->process, PQgetvalue(row, 0, 0), sizeof live->process);
  hs_strlcpy(live->version, PQgetvalue(row, 0, 1), sizeof live->version);
  hs_strlcpy(live->ref, PQgetvalue(row, 0, 5), sizeof live->ref);
  live->started_ms = strtoll(PQgetvalue(row, 0, 6), NULL, 10);
  if (step.outcome != NULL) {
    hs_strlcpy(live->outcome, step.outcome, sizeof live->outcome);
  }
  live->proc = p;
  live->session = sess;
  live->evidence = hs_step_needs_evidence(step.step);
  /* A stale copy is replaced: its waiters and watchers move to the fresh one via reload. A copy
   * whose commit is in flight is not: its writer still holds it. The caller queues behind it and
   * reloads once it is free. */
  hs_live_t *old = hs_strmap_get(&s->lives, l->id);
  if (old != NULL && old->busy) {
    hs_session_free(live->session);
    free(live);
    live = old;
    goto done;
  }
  if (old != NULL) {
    hs_store_live_drop(s, old);
  }
  rc = hs_store_live_add(s, &live);
  if (rc != HS_OK) {
    hs_err_set(&err, rc, "out of memory");
  }
done:
  l->cb(l->ctx, rc, rc == HS_OK ? live : NULL, &err);
  hs_arena_reset(&arena);
  free(l);
}

/* Sends the reads of l (l->upto says which); on_loaded takes the result. */
static int load_send(hs_load_t *l, hs_load_t **out) {
  char brand[24], upto[16];
  snprintf(brand, sizeof brand, "%" PRId64, l->brand_id);
  snprintf(upto, sizeof upto, "%" PRIu32, l->upto);
  const char *p1[] = {l->id, brand};
  const char *p2[] = {l->id, upto};
  hs_db_stmt_t stmts[] = {
      {.name = "hs_load_session", .sql = k_load_session_sql, .n_params = 2, .values = p1},
      l->upto > 0 ? (hs_db_stmt_t){.name = "hs_answer_events",
                                   .sql = k_answer_events_sql,
                                   .n_params = 2,
                                   .values = p2}
                  : (hs_db_stmt_t){.name = "hs_load_events",
                                   .sql = k_load_events_sql,
                                   .n_params = 1,
                                   .values = p2},
  };
  int rc = hs_db_exec(l->s->pool, stmts, 2, on_loaded, l, NULL);
  if (rc != HS_OK) {
    free(l);
    return rc;
  }
  if (out != NULL) {
    *out = l;
  }
  return HS_OK;
}

static hs_load_t *load_new(hs_store_t *s, int64_t brand_id, const char *id, void *ctx) {
  hs_load_t *l = calloc(1, sizeof *l);
  if (l != NULL) {
    l->s = s;
    l->brand_id = brand_id;
    hs_strlcpy(l->id, id, sizeof l->id);
    l->ctx = ctx;
  }
  return l;
}

int hs_store_load(hs_store_t *s, int64_t brand_id, const char *id, hs_load_cb cb, void *ctx,
                  hs_load_t **out) {
  hs_load_t *l = load_new(s, brand_id, id, ctx);
  if (l == NULL) {
    return HS_ENOMEM;
  }
  l->cb = cb;
  return load_send(l, out);
}

int hs_store_answer(hs_store_t *s, int64_t brand_id, const char *id, uint32_t seq, hs_answer_cb cb,
                    void *ctx, hs_load_t **out) {
  if (seq == 0) {
    return HS_ENOTFOUND; /* completions start at 1 */
  }
  hs_load_t *l = load_new(s, brand_id, id, ctx);
  if (l == NULL) {
    return HS_ENOMEM;
  }
  l->upto = seq;
  l->answer_cb = cb;
  return load_send(l, out);
}

void hs_load_cancel(hs_load_t *l) {
  l->cb = NULL;
  l->answer_cb = NULL;
}
