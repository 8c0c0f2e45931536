#include "db/probe.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/str.h"
#include "db/migrate.h"

enum { PROBE_INTERVAL_MS = 1000, PROBE_TIMEOUT_MS = 3000 };

struct hs_db_probe {
  uv_loop_t *loop;
  uv_timer_t timer;
  uv_poll_t poll;
  bool poll_active;
  int poll_fd;
  PGconn *conn; /* owned */
  enum { P_IDLE, P_CONNECTING, P_QUERYING } state;
  uint64_t started_at;
  int handles_open;
  char *conninfo; /* owned */
};

static atomic_bool g_ready;
static pthread_mutex_t g_err_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_err[256] = "the database has not been checked yet";

bool hs_db_probe_ready(void) {
  return atomic_load(&g_ready);
}

void hs_db_probe_last_error(char *dst, size_t cap) {
  pthread_mutex_lock(&g_err_lock);
  hs_strlcpy(dst, g_err, cap);
  pthread_mutex_unlock(&g_err_lock);
}

static void set_state(bool ready, const char *why) {
  bool was = atomic_exchange(&g_ready, ready);
  if (!ready) {
    pthread_mutex_lock(&g_err_lock);
    hs_strlcpy(g_err, why, sizeof g_err);
    /* libpq messages end with a newline; a JSON field should not. */
    size_t n = strlen(g_err);
    while (n > 0 && (g_err[n - 1] == '\n' || g_err[n - 1] == ' ')) {
      g_err[--n] = '\0';
    }
    pthread_mutex_unlock(&g_err_lock);
  }
  if (was != ready) {
    char detail[256];
    hs_db_probe_last_error(detail, sizeof detail);
    hs_log(ready ? HS_LOG_INFO : HS_LOG_WARN, ready ? "database_ready" : "database_unavailable",
           "{s:s}", "detail", ready ? "ok" : detail);
  }
}

static void on_poll(uv_poll_t *h, int status, int events);

static void stop_poll(hs_db_probe_t *p) {
  if (p->poll_active) {
    uv_poll_stop(&p->poll);
  }
}

static void reset(hs_db_probe_t *p, const char *why) {
  /* why often points into the connection (PQerrorMessage): copy it before PQfinish frees it. */
  char msg[256];
  hs_strlcpy(msg, why, sizeof msg);
  why = msg;
  stop_poll(p);
  if (p->conn != NULL) {
    PQfinish(p->conn);
    p->conn = NULL;
  }
  p->state = P_IDLE;
  set_state(false, why);
}

/* Watches the connection's socket for the events libpq asks for. The socket can change while
 * connecting (libpq tries each host in turn), so the poll handle is re-made when it does. */
static void watch(hs_db_probe_t *p, int events) {
  int fd = PQsocket(p->conn);
  if (fd < 0) {
    reset(p, "the database connection has no socket");
    return;
  }
  if (p->poll_active && fd != p->poll_fd) {
    uv_poll_stop(&p->poll);
    /* A poll handle is bound to its fd: close and make a new one. */
    uv_close((uv_handle_t *)&p->poll, NULL);
    p->poll_active = false;
    /* Its memory is reused only after the loop processed the close; wait for the next tick. */
    p->poll_fd = -2;
    return;
  }
  if (!p->poll_active && p->poll_fd != -2) {
    uv_poll_init(p->loop, &p->poll, fd);
    p->poll.data = p;
    p->poll_fd = fd;
    p->poll_active = true;
  }
  if (p->poll_active) {
    uv_poll_start(&p->poll, events, on_poll);
  }
}

static void advance(hs_db_probe_t *p) {
  if (p->state == P_CONNECTING) {
    switch (PQconnectPoll(p->conn)) {
      case PGRES_POLLING_READING:
        watch(p, UV_READABLE);
        return;
      case PGRES_POLLING_WRITING:
        watch(p, UV_WRITABLE);
        return;
      case PGRES_POLLING_OK:
        p->state = P_QUERYING;
        break;
      default:
        reset(p, PQerrorMessage(p->conn));
        return;
    }
    if (PQsetnonblocking(p->conn, 1) != 0 || PQsendQuery(p->conn, hs_migrate_version_sql) != 1) {
      reset(p, PQerrorMessage(p->conn));
      return;
    }
    PQflush(p->conn);
    watch(p, UV_READABLE);
    return;
  }
  if (p->state == P_QUERYING) {
    if (PQconsumeInput(p->conn) != 1) {
      reset(p, PQerrorMessage(p->conn));
      return;
    }
    while (!PQisBusy(p->conn)) {
      PGresult *r = PQgetResult(p->conn);
      if (r == NULL) {
        /* The check finished; the state stands until the next one. */
        stop_poll(p);
        p->state = P_IDLE;
        return;
      }
      if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        set_state(false, PQresultErrorMessage(r));
      } else {
        /* Reachable is not enough: the schema must be the one this binary was built for. */
        int have = atoi(PQgetvalue(r, 0, 0));
        int want = hs_migrate_latest();
        if (have == want) {
          set_state(true, NULL);
        } else {
          char why[160];
          snprintf(why, sizeof why,
                   "the database schema is at version %d but this server needs %d: run "
                   "`handsel migrate`",
                   have, want);
          set_state(false, why);
        }
      }
      PQclear(r);
    }
    watch(p, UV_READABLE);
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  hs_db_probe_t *p = h->data;
  if (status < 0) {
    reset(p, uv_strerror(status));
    return;
  }
  advance(p);
}

static void on_tick(uv_timer_t *t) {
  hs_db_probe_t *p = t->data;
  uint64_t now = uv_now(p->loop);
  if (p->state != P_IDLE) {
    if (now - p->started_at > PROBE_TIMEOUT_MS) {
      reset(p, "the database did not answer within 3 seconds");
    }
    return;
  }
  if (p->poll_fd == -2) {
    p->poll_fd = -1;
  }
  p->started_at = now;
  if (p->conn != NULL && PQstatus(p->conn) == CONNECTION_OK) {
    if (PQsendQuery(p->conn, hs_migrate_version_sql) != 1) {
      reset(p, PQerrorMessage(p->conn));
      return;
    }
    p->state = P_QUERYING;
    PQflush(p->conn);
    watch(p, UV_READABLE);
    return;
  }
  if (p->conn != NULL) {
    PQfinish(p->conn);
  }
  p->conn = PQconnectStart(p->conninfo);
  if (p->conn == NULL || PQstatus(p->conn) == CONNECTION_BAD) {
    reset(p, p->conn != NULL ? PQerrorMessage(p->conn) : "out of memory");
    return;
  }
  p->state = P_CONNECTING;
  advance(p);
}

hs_db_probe_t *hs_db_probe_start(uv_loop_t *loop, const char *conninfo) {
  hs_db_probe_t *p = calloc(1, sizeof *p);
  if (p == NULL) {
    return NULL;
  }
  p->conninfo = strdup(conninfo);
  if (p->conninfo == NULL) {
    free(p);
    return NULL;
  }
  p->loop = loop;
  p->poll_fd = -1;
  uv_timer_init(loop, &p->timer);
  p->timer.data = p;
  uv_timer_start(&p->timer, on_tick, 0, PROBE_INTERVAL_MS);
  return p;
}

static void on_handle_closed(uv_handle_t *h) {
  hs_db_probe_t *p = h->data;
  if (--p->handles_open == 0) {
    free(p->conninfo);
    free(p);
  }
}

void hs_db_probe_stop(hs_db_probe_t *p) {
  stop_poll(p); /* before PQfinish closes the socket the poll handle watches */
  if (p->conn != NULL) {
    PQfinish(p->conn);
    p->conn = NULL;
  }
  p->handles_open = 1;
  uv_close((uv_handle_t *)&p->timer, on_handle_closed);
  if (p->poll_active) {
    p->handles_open++;
    uv_close((uv_handle_t *)&p->poll, on_handle_closed);
  }
}
