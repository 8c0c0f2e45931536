#include "store/listen.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/error.h"

enum {
  RETRY_MS = 1000,
  /* Unread messages per worker. A worker this far behind (seconds of every node's commits) is
     told UP instead: it rebuilds each copy before its next use, which is always correct. */
  INBOX_LIMIT = 16 << 20,
};

struct hs_listen_inbox {
  uv_async_t async; /* first: the inbox is freed in its close callback */
  hs_listener_t *l; /* borrowed */
  hs_listen_cb cb;
  void *ctx;
  void (*done)(void *);
  void *done_ctx;
  /* Under lock: messages not yet read, each a kind byte then its payload and a NUL. */
  uv_mutex_t lock;
  hs_buf_t msgs; /* owned */
  bool lost;     /* a message could not be queued (over INBOX_LIMIT, out of memory): read as UP */
};

struct hs_listener {
  const char *conninfo; /* borrowed */
  /* The main thread's alone. */
  uv_loop_t *loop;
  PGconn *conn;      /* owned */
  uv_poll_t *poll;   /* owned: heap, freed in its close callback */
  uv_timer_t *retry; /* owned: heap, freed in its close callback */
  bool connected;
  /* Under lock: the subscribers, and whether they have been told UP (so that one subscribing
     late is told too). Held while messages are queued, so each inbox sees them in order. */
  uv_mutex_t lock;
  hs_listen_inbox_t **subs; /* owned array; the inboxes are their workers' */
  size_t n_subs, cap_subs;
  bool up;
};

int hs_listener_new(const char *conninfo, hs_listener_t **out) {
  hs_listener_t *l = calloc(1, sizeof *l);
  if (l == NULL || uv_mutex_init(&l->lock) != 0) {
    free(l);
    return HS_ENOMEM;
  }
  l->conninfo = conninfo;
  *out = l;
  return HS_OK;
}

void hs_listener_free(hs_listener_t *l) {
  if (l == NULL) {
    return;
  }
  uv_mutex_destroy(&l->lock);
  free(l->subs);
  free(l);
}

static void queue(hs_listen_inbox_t *in, hs_listen_kind_t kind, const char *payload) {
  uv_mutex_lock(&in->lock);
  uint8_t k = (uint8_t)kind;
  size_t n = strlen(payload) + 1;
  /* Whole messages only: the room for both parts first. */
  if (in->msgs.len + 1 + n > INBOX_LIMIT || hs_buf_reserve(&in->msgs, 1 + n) != HS_OK) {
    in->lost = true;
  } else {
    (void)hs_buf_append(&in->msgs, &k, 1);
    (void)hs_buf_append(&in->msgs, payload, n);
  }
  uv_mutex_unlock(&in->lock);
  uv_async_send(&in->async);
}

/* Every subscriber gets the message, under the listener's lock: a subscriber joining meanwhile
 * gets all of it or none. */
static void broadcast(hs_listener_t *l, hs_listen_kind_t kind, const char *payload) {
  uv_mutex_lock(&l->lock);
  if (kind == HS_LISTEN_UP || kind == HS_LISTEN_DOWN) {
    l->up = kind == HS_LISTEN_UP;
  }
  for (size_t i = 0; i < l->n_subs; i++) {
    queue(l->subs[i], kind, payload);
  }
  uv_mutex_unlock(&l->lock);
}

/* ------------------------------------------------------------ the connection */

static void close_conn(hs_listener_t *l) {
  if (l->poll != NULL) {
    uv_poll_stop(l->poll);
    uv_close((uv_handle_t *)l->poll, (uv_close_cb)free);
    l->poll = NULL;
  }
  if (l->conn != NULL) {
    PQfinish(l->conn);
    l->conn = NULL;
  }
}

/* The connection failed or was lost: the retry timer makes a new one. */
static void disconnect(hs_listener_t *l) {
  close_conn(l);
  if (l->connected) {
    l->connected = false;
    broadcast(l, HS_LISTEN_DOWN, "");
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  (void)events;
  hs_listener_t *l = h->data;
  if (status < 0) {
    disconnect(l);
    return;
  }
  if (!l->connected) {
    PostgresPollingStatusType st = PQconnectPoll(l->conn);
    if (st == PGRES_POLLING_READING) {
      uv_poll_start(l->poll, UV_READABLE, on_poll);
    } else if (st == PGRES_POLLING_WRITING) {
      uv_poll_start(l->poll, UV_WRITABLE, on_poll);
    } else if (st == PGRES_POLLING_OK) {
      if (PQsetnonblocking(l->conn, 1) != 0 ||
          PQsendQuery(l->conn, "LISTEN handsel_session; LISTEN handsel_token") != 1) {
        disconnect(l);
        return;
      }
      PQflush(l->conn);
      l->connected = true;
      /* Told before the LISTEN has even run: whatever a worker holds may already be behind, and
       * anything committed from here on is announced after this. */
      broadcast(l, HS_LISTEN_UP, "");
      uv_poll_start(l->poll, UV_READABLE, on_poll);
    } else {
      disconnect(l);
    }
    return;
  }
  if (PQconsumeInput(l->conn) != 1) {
    disconnect(l);
    return;
  }
  while (!PQisBusy(l->conn)) {
    PGresult *r = PQgetResult(l->conn);
    if (r == NULL) {
      break;
    }
    PQclear(r);
  }
  PGnotify *n;
  while ((n = PQnotifies(l->conn)) != NULL) {
    bool token = strcmp(n->relname, "handsel_token") == 0;
    broadcast(l, token ? HS_LISTEN_TOKEN : HS_LISTEN_SESSIONS, n->extra);
    PQfreemem(n);
  }
}

static void connect_db(hs_listener_t *l) {
  l->conn = PQconnectStart(l->conninfo);
  if (l->conn == NULL || PQstatus(l->conn) == CONNECTION_BAD || PQsocket(l->conn) < 0) {
    disconnect(l);
    return;
  }
  l->poll = malloc(sizeof *l->poll);
  if (l->poll == NULL || uv_poll_init(l->loop, l->poll, PQsocket(l->conn)) != 0) {
    free(l->poll);
    l->poll = NULL;
    disconnect(l);
    return;
  }
  l->poll->data = l;
  /* libpq wants the socket writable first while connecting. */
  uv_poll_start(l->poll, UV_WRITABLE, on_poll);
}

static void on_retry(uv_timer_t *t) {
  hs_listener_t *l = t->data;
  if (l->conn == NULL) {
    connect_db(l);
  }
}

void hs_listener_start(hs_listener_t *l, uv_loop_t *loop) {
  l->loop = loop;
  l->retry = malloc(sizeof *l->retry);
  if (l->retry == NULL) {
    return; /* the workers stay without news: their copies are checked against each write */
  }
  uv_timer_init(loop, l->retry);
  l->retry->data = l;
  uv_timer_start(l->retry, on_retry, 0, RETRY_MS);
}

void hs_listener_stop(hs_listener_t *l) {
  /* DOWN all the same: a worker still draining its connections must not trust its cached
     tokens once no revocation can reach it. */
  disconnect(l);
  if (l->retry != NULL) {
    uv_timer_stop(l->retry);
    uv_close((uv_handle_t *)l->retry, (uv_close_cb)free);
    l->retry = NULL;
  }
}

/* ------------------------------------------------------------ inboxes */

static void on_inbox(uv_async_t *a) {
  hs_listen_inbox_t *in = (hs_listen_inbox_t *)a;
  uv_mutex_lock(&in->lock);
  hs_buf_t msgs = in->msgs;
  bool lost = in->lost;
  hs_buf_init(&in->msgs, 0);
  in->lost = false;
  uv_mutex_unlock(&in->lock);
  for (size_t at = 0; at < msgs.len;) {
    hs_listen_kind_t kind = (hs_listen_kind_t)msgs.data[at];
    const char *payload = (const char *)msgs.data + at + 1;
    at += 1 + strlen(payload) + 1;
    in->cb(in->ctx, kind, payload);
  }
  hs_buf_free(&msgs);
  if (lost) {
    in->cb(in->ctx, HS_LISTEN_UP, ""); /* something was missed: as after a reconnection */
  }
}

static void on_inbox_closed(uv_handle_t *h) {
  hs_listen_inbox_t *in = (hs_listen_inbox_t *)h;
  void (*done)(void *) = in->done;
  void *done_ctx = in->done_ctx;
  hs_buf_free(&in->msgs);
  uv_mutex_destroy(&in->lock);
  free(in);
  if (done != NULL) {
    done(done_ctx);
  }
}

int hs_listener_subscribe(hs_listener_t *l, uv_loop_t *loop, hs_listen_cb cb, void *ctx,
                          hs_listen_inbox_t **out) {
  hs_listen_inbox_t *in = calloc(1, sizeof *in);
  if (in == NULL || uv_mutex_init(&in->lock) != 0) {
    free(in);
    return HS_ENOMEM;
  }
  if (uv_async_init(loop, &in->async, on_inbox) != 0) {
    uv_mutex_destroy(&in->lock);
    free(in);
    return HS_ENOMEM;
  }
  in->l = l;
  in->cb = cb;
  in->ctx = ctx;
  hs_buf_init(&in->msgs, 0);
  uv_mutex_lock(&l->lock);
  int rc = HS_OK;
  if (l->n_subs == l->cap_subs) {
    size_t cap = l->cap_subs > 0 ? 2 * l->cap_subs : 8;
    hs_listen_inbox_t **grown = realloc(l->subs, cap * sizeof *grown);
    if (grown == NULL) {
      rc = HS_ENOMEM;
    } else {
      l->subs = grown;
      l->cap_subs = cap;
    }
  }
  if (rc == HS_OK) {
    l->subs[l->n_subs++] = in;
    if (l->up) {
      queue(in, HS_LISTEN_UP, "");
    }
  }
  uv_mutex_unlock(&l->lock);
  if (rc != HS_OK) {
    uv_close((uv_handle_t *)&in->async, on_inbox_closed); /* frees it when the loop runs */
    return rc;
  }
  *out = in;
  return HS_OK;
}

void hs_listen_inbox_close(hs_listen_inbox_t *in, void (*done)(void *), void *done_ctx) {
  hs_listener_t *l = in->l;
  uv_mutex_lock(&l->lock);
  for (size_t i = 0; i < l->n_subs; i++) {
    if (l->subs[i] == in) {
      l->subs[i] = l->subs[--l->n_subs];
      break;
    }
  }
  uv_mutex_unlock(&l->lock);
  in->done = done;
  in->done_ctx = done_ctx;
  uv_close((uv_handle_t *)&in->async, on_inbox_closed);
}
