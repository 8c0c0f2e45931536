/* Internal to server/http: a worker thread and its connections. Each worker owns one libuv
 * loop, one listening socket (SO_REUSEPORT on the shared address, so the kernel spreads
 * connections) and every connection it accepted; nothing here is touched by another thread
 * except `wakeup`, which is how the main thread asks a worker to drain. */
#ifndef HS_HTTP_WORKER_H
#define HS_HTTP_WORKER_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "http/config.h"
#include "http/metrics.h"
#include "http/router.h"

typedef struct hs_conn hs_conn_t;
typedef struct hs_worker hs_worker_t;

struct hs_worker {
  unsigned index;
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_async_t wakeup;     /* main thread -> worker: start draining */
  uv_timer_t sweep;      /* timeouts of every connection, checked together */
  uv_check_t flush;      /* sends what handlers answered during this loop iteration */
  hs_conn_t *flush_head; /* connections waiting for that (borrowed; linked via the conn) */
  uv_thread_t thread;
  int listen_fd; /* owned until handed to the listener */

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

/* conn.c: accepts one pending connection on the worker's listener. */
void hs_conn_accept(hs_worker_t *w);
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
