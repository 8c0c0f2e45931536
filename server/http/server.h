/* The HTTP/2 server: N worker threads, each with its own libuv loop, serving the connections
 * the main thread accepts on one listening socket and hands to the least busy. hs_server_run blocks
 * until SIGTERM or SIGINT, drains (GOAWAY, in-flight streams get config.grace_ms to finish) and
 * returns. */
#ifndef HS_HTTP_SERVER_H
#define HS_HTTP_SERVER_H

#include <stddef.h>
#include <uv.h>

#include "core/error.h"
#include "http/config.h"
#include "http/router.h"

/* Called on the main thread's loop once the workers listen, to start background work there
 * (the database readiness probe). May be NULL. */
typedef void (*hs_server_main_hook)(uv_loop_t *loop, void *ctx);

typedef struct hs_worker hs_worker_t;

/* Called on each worker thread: start before it accepts (to set worker->app), stop once it has
 * no connection left (to close what start opened, so the loop can end). */
typedef int (*hs_server_worker_start)(hs_worker_t *w, void *ctx, hs_err_t *err);
typedef void (*hs_server_worker_stop)(hs_worker_t *w, void *ctx);

typedef struct hs_server_opts {
  const hs_config_t *config; /* borrowed for the whole run */
  const hs_route_t *routes;  /* borrowed for the whole run */
  size_t n_routes;
  hs_server_main_hook on_start;        /* may be NULL */
  hs_server_main_hook on_stop;         /* may be NULL: stop what on_start began */
  hs_server_worker_start worker_start; /* may be NULL */
  hs_server_worker_stop worker_stop;   /* may be NULL */
  void *hook_ctx;
} hs_server_opts_t;

/* Binds, serves until a stop signal, drains, returns HS_OK. Fails (before serving) with a
 * message when the address cannot be bound or TLS cannot be set up. */
int hs_server_run(const hs_server_opts_t *opts, hs_err_t *err);

#endif
