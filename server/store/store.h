/* A worker's view of durable state: its database pool and group committer, the brands' Lua
 * VMs, the process versions loaded in them, and the sessions live in memory.
 *
 * Sessions live in memory while active and are evicted under a budget; a request for one that
 * is not here rebuilds it by replaying its recorded events (SPEC §5), on this worker, another
 * worker or another node alike. PostgreSQL is the only authority: a completion commits only if
 * its (session, seq) is new, so two workers or nodes holding the same session can never both
 * advance it; the loser finds the winner's row and answers from it.
 *
 * Everything here belongs to one worker thread. */
#ifndef HS_STORE_STORE_H
#define HS_STORE_STORE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "audit/sign.h"
#include "db/pool.h"
#include "engine/engine.h"
#include "http/config.h"
#include "http/metrics.h"
#include "http/request.h"
#include "store/commit.h"
#include "store/listen.h"

typedef struct hs_store hs_store_t;
typedef struct hs_live hs_live_t;

/* A request waiting for a live session to be free (one completion commits at a time). */
typedef struct hs_waiter hs_waiter_t;
typedef void (*hs_waiter_fn)(hs_waiter_t *w, hs_live_t *live);
struct hs_waiter {
  hs_waiter_t *prev, *next;
  hs_waiter_fn run; /* called with the live session once it is free (or NULL if it is gone) */
};

/* A stream watching a session (GET …/stream). */
typedef struct hs_watcher hs_watcher_t;
typedef void (*hs_watcher_fn)(hs_watcher_t *w, hs_live_t *live);
struct hs_watcher {
  hs_watcher_t *prev, *next;
  hs_watcher_fn on_change; /* the session moved: send what is new */
  uint32_t sent_seq;       /* the last step seq this watcher sent */
};

struct hs_live {
  char id[40];
  int64_t brand_id;
  char contractor_id[129];
  char process[65];
  char version[65];
  char ref[129];         /* "" when the session was started without one */
  int64_t started_ms;    /* server time of the start */
  char outcome[65];      /* the latest outcome the script recorded, "" for none */
  hs_process_t *proc;    /* borrowed from the store's process cache */
  hs_session_t *session; /* owned */
  bool busy;             /* a completion's commit is in flight */
  bool stale;            /* another node advanced it: rebuild before use */
  bool evidence;         /* the current step has a photo or signature field */
  /* The latest completion this copy committed (0 for none) and the digest of its request: the
   * answer to it is {accepted, the current step}, so its retry is answered from memory. */
  uint32_t answered_seq;
  uint8_t answered_digest[32];
  hs_waiter_t *waiters; /* requests queued behind `busy`, in order (borrowed) */
  hs_waiter_t *waiters_tail;
  hs_watcher_t *watchers; /* open streams (borrowed) */
  hs_live_t *lru_prev, *lru_next;
};

/* Opens the pool and committer on loop. metrics (borrowed, may be NULL) receives the session
 * and commit counters. The store is owned by the caller: hs_store_close. */
int hs_store_new(uv_loop_t *loop, const hs_config_t *cfg, hs_metrics_shard_t *metrics,
                 hs_store_t **out, hs_err_t *err);
/* Hears session changes from other workers and nodes, and token revocations, through the
 * node's listener (borrowed; it must outlive the store). Before s's loop runs. Until the listener
 * first connects no token is cached, and when it does every live copy is rebuilt before its
 * next use. HS_ENOMEM. */
int hs_store_listen(hs_store_t *s, hs_listener_t *l);
/* Frees the caches and closes the database handles; the loop ends once they closed. */
void hs_store_close(hs_store_t *s);

/* The compliance log's key (borrowed; it must outlive the store), served by GET
 * /v1/audit/key. The sealer that signs with it runs apart from the workers (handsel serve); tap
 * (borrowed, may be NULL, must outlive the store) hands it the records this worker commits. */
void hs_store_set_audit(hs_store_t *s, const hs_audit_key_t *key, hs_audit_tap_t *tap);
const hs_audit_key_t *hs_store_audit_key(hs_store_t *s);

hs_db_pool_t *hs_store_pool(hs_store_t *s);
hs_committer_t *hs_store_committer(hs_store_t *s);

/* Brand ids by name, cached on this worker (brands are never renamed or deleted). 0 when not
 * cached. */
int64_t hs_store_brand_lookup(hs_store_t *s, const char *name);
void hs_store_brand_remember(hs_store_t *s, const char *name, int64_t id);

/* Resolved API tokens, by the hex SHA-256 of the secret. Entries are opaque bytes to the store
 * (the auth module's principal). Revocations arrive on the channel handsel_token from any node
 * and drop the entry at once; each drop advances the generation, and a lookup that began
 * before it must not be cached (hs_store_token_put refuses an older generation). */
const void *hs_store_token_get(hs_store_t *s, const char *hash_hex);
uint64_t hs_store_token_generation(const hs_store_t *s);
void hs_store_token_put(hs_store_t *s, const char *hash_hex, const void *entry, size_t len,
                        uint64_t generation);

/* The brand's VM on this worker, created on first use. NULL when out of memory (err says). */
hs_vm_t *hs_store_vm(hs_store_t *s, int64_t brand_id, hs_err_t *err);

/* The process version loaded in the brand's VM, from the cache or by compiling source (when
 * source is not NULL). NULL with err on failure, or when not cached and source is NULL. */
hs_process_t *hs_store_process(hs_store_t *s, int64_t brand_id, const char *name,
                               const char *version, const char *source, size_t source_len,
                               hs_err_t *err);

/* A live session by id, marked most recently used; NULL when not in memory. */
hs_live_t *hs_store_live_get(hs_store_t *s, const char *id);
/* Takes ownership of a new live session; evicts the least recently used idle ones past the
 * budget. Returns HS_OK or HS_ENOMEM (live freed). If the id is live already, the new one is
 * freed and *live is replaced by the existing one. */
int hs_store_live_add(hs_store_t *s, hs_live_t **live);
/* Forgets a live session (its commit failed, or it turned out stale); waiters are run with NULL
 * so they reload, watchers stay attached to nothing and are told with NULL too. */
void hs_store_live_drop(hs_store_t *s, hs_live_t *live);
/* After a commit: clears busy and runs the waiters, in order, until one makes it busy again. */
void hs_store_live_release(hs_store_t *s, hs_live_t *live);
/* Queues w behind a busy session, or runs it at once when the session is free. */
void hs_store_live_wait(hs_store_t *s, hs_live_t *live, hs_waiter_t *w);
void hs_store_live_unwait(hs_live_t *live, hs_waiter_t *w);
void hs_store_live_watch(hs_live_t *live, hs_watcher_t *w);
void hs_store_live_unwatch(hs_live_t *live, hs_watcher_t *w);
/* Tells every watcher of the session that it moved. */
void hs_store_live_changed(hs_live_t *live);
size_t hs_store_live_count(const hs_store_t *s);

/* Loading a session that is not in memory: reads its row and completions and replays them.
 * cb gets HS_OK with the live session (now in the cache), HS_ENOTFOUND (no such session of
 * this brand), HS_EUNAVAIL (database), or HS_ECONFLICT/HS_ESCRIPT (replay failed: err says). */
typedef struct hs_load hs_load_t;
typedef void (*hs_load_cb)(void *ctx, int status, hs_live_t *live, const hs_err_t *err);
int hs_store_load(hs_store_t *s, int64_t brand_id, const char *id, hs_load_cb cb, void *ctx,
                  hs_load_t **out);
/* The caller is gone: cb will not be called. */
void hs_load_cancel(hs_load_t *l);

/* What a retry of completion seq of a session needs to be answered. Answers are not stored:
 * this replays the session's record up to that completion in a scratch session, which reaches
 * the same next step the live run sent (replay holds the script to its record). cb gets HS_OK
 * with the completion's request digest (64 hex digits) and that next step (NULL when the
 * completion ended the session), both valid only during the call; HS_ENOTFOUND when the
 * session (of this brand) has no completion seq; otherwise as hs_store_load's. Cancelled with
 * hs_load_cancel. */
typedef void (*hs_answer_cb)(void *ctx, int status, const char *digest_hex, const hs_value_t *next,
                             const hs_err_t *err);
int hs_store_answer(hs_store_t *s, int64_t brand_id, const char *id, uint32_t seq, hs_answer_cb cb,
                    void *ctx, hs_load_t **out);

/* True when a step (as sent to a device) has a photo or signature field, whose blob must be
 * checked before a completion is accepted. */
bool hs_step_needs_evidence(const hs_value_t *step);

/* The per-field message of a completion rejected because its photo or signature (type, a
 * field type) names a blob (value, "sha256:<hex>") the brand has not stored. One function, so
 * the live check and `handsel audit replay` write the same words. */
void hs_evidence_missing_message(char *out, size_t cap, const char *type, const char *value);

#endif
