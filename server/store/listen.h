/* The node's one LISTEN connection.
 *
 * Every commit of every node announces the sessions it moved (NOTIFY handsel_session, see
 * store/commit.c), and every revocation the token it ended (handsel_token). PostgreSQL signals
 * and wakes each listening backend for each such commit, and each wakes its client, so a
 * listener per worker made the cost of every commit grow with the workers of every node. One
 * per node keeps it to the number of nodes.
 *
 * The listener runs on the main thread's loop and hands each notification, in the order it
 * arrived, to every subscribed worker's inbox; a worker reads its inbox on its own loop. Around
 * the notifications it says when it started hearing them (UP: anything sent before may have been
 * missed) and when it stopped (DOWN). */
#ifndef HS_STORE_LISTEN_H
#define HS_STORE_LISTEN_H

#include <uv.h>

typedef struct hs_listener hs_listener_t;
typedef struct hs_listen_inbox hs_listen_inbox_t;

typedef enum hs_listen_kind {
  HS_LISTEN_UP,       /* listening (again): notifications sent while it was not were lost */
  HS_LISTEN_DOWN,     /* not listening: until the next UP, nothing is heard */
  HS_LISTEN_SESSIONS, /* payload: "<session id> <seq>,..." */
  HS_LISTEN_TOKEN,    /* payload: a revoked token's hash (hex), or "*" for all */
} hs_listen_kind_t;

/* Runs on the subscriber's loop. payload is borrowed for the call ("" for UP and DOWN). */
typedef void (*hs_listen_cb)(void *ctx, hs_listen_kind_t kind, const char *payload);

/* A listener for the database at conninfo (borrowed; it must outlive the listener), not yet
 * connected. Owned by the caller: hs_listener_free. HS_ENOMEM. */
int hs_listener_new(const char *conninfo, hs_listener_t **out);
/* Connects on loop (the main thread's), and reconnects whenever the connection is lost. */
void hs_listener_start(hs_listener_t *l, uv_loop_t *loop);
/* Closes the connection and its handles, on the loop it started on. Subscribers hear DOWN, if
 * they had heard UP, and nothing after it. */
void hs_listener_stop(hs_listener_t *l);
/* Frees l once its loop and every subscriber's have ended. NULL is ignored. */
void hs_listener_free(hs_listener_t *l);

/* Subscribes a worker: cb(ctx, ...) runs on loop for every message from now on, beginning with
 * UP when the listener is listening already. Call it before loop runs or on loop's thread. The
 * inbox is owned by the caller: hs_listen_inbox_close. HS_ENOMEM. */
int hs_listener_subscribe(hs_listener_t *l, uv_loop_t *loop, hs_listen_cb cb, void *ctx,
                          hs_listen_inbox_t **out);
/* Unsubscribes, on the inbox's loop: no callback runs after this returns. done(done_ctx) runs on
 * that loop once the inbox's handle has closed and its memory is free. */
void hs_listen_inbox_close(hs_listen_inbox_t *in, void (*done)(void *), void *done_ctx);

#endif
