/* Internal to server/http: a worker thread and its connections. Each worker owns one libuv
 * loop and every connection the main thread handed it (server.c accepts them all, so that
 * each goes to the worker with the fewest). Nothing here is touched by another thread except
 * `wakeup` (drain), `incoming`, the handoff queue under its lock, and `n_assigned`. */
#ifndef HS_HTTP_WORKER_H
#define HS_HTTP_WORKER_H

#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "http/config.h"
#include "http/metrics.h"
#include "http/router.h"

typedef struct hs_conn hs_conn_t;
typedef struct hs_worker hs_worker_t;

/* Accepted sockets that may wait for one worker to open them. A worker this far behind is
 * stuck, and the main thread closes what it cannot queue. */
enum { HS_HANDOFF_MAX = 512 };

struct hs_worker {
  unsigned index;
  uv_loop_t loop;
  uv_async_t wakeup;     /* main thread -> worker: start draining */
  uv_async_t incoming;   /* main thread -> worker: sockets wait in `handoff` */
  uv_timer_t sweep;      /* timeouts of every connection, checked together */
  uv_check_t flush;      /* sends what handlers answered during this loop iteration */
  hs_conn_t *flush_head; /* connections waiting for that (borrowed; linked via the conn) */
  uv_thread_t thread;
  uv_mutex_t handoff_lock;     /* guards handoff and n_handoff */
  int handoff[HS_HANDOFF_MAX]; /* owned: accepted sockets the worker has not opened yet */
  unsigned n_handoff;
  _Atomic unsigned n_assigned; /* connections handed to this worker and not closed yet: the
                                  main thread adds one per handoff, the worker takes it back */

  const hs_config_t *config; /* borrowed, read-only */
  const hs_route_t *routes;  /* borrowed, read-only */
  size_t n_routes;
  struct hs_tls *tls;           /* borrowed, shared by the workers; NULL when TLS is off */
  struct hs_conn_limit *per_ip; /* borrowed, shared: connections per client address */
  struct hs_rate *rate;         /* borrowed, shared: requests per token */
  hs_metrics_shard_t *metrics;
  void *app; /* application state for handlers (the session store); set by worker_start */
  const struct hs_server_opts *opts; /* borrowed */
  bool stopped;                      /* worker_stop ran */

  hs_conn_t *conns; /* owned: every open connection, doubly linked */
  unsigned n_conns;
  bool draining;
  uint64_t drain_deadline; /* uv_now() ms */
  /* Reads are processed synchronously, so one buffer per worker serves every connection. */
  char readbuf[64 * 1024];
};

/* conn.c: serves a socket the main thread accepted; takes fd (closed on failure) and the
 * connection's share of n_assigned, given back when it closes. */
void hs_conn_open(hs_worker_t *w, int fd);
/* conn.c: one pass of every timeout of one connection (called by the worker's sweep timer). */
void hs_conn_sweep(hs_conn_t *c, uint64_t now);
/* conn.c: sends GOAWAY and lets in-flight streams finish (server draining). */
void hs_conn_drain(hs_conn_t *c);
/* conn.c: closes at once (drain deadline passed). */
void hs_conn_abort(hs_conn_t *c);
/* conn.c: flushes every connection a handler answered on since the last loop iteration. */
void hs_conn_flush_pending(hs_worker_t *w);
/* conn.c: the next connection in the worker's list (for iteration that may close c). */
hs_conn_t *hs_conn_next(hs_conn_t *c);

#endif
