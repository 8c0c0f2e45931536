#define _GNU_SOURCE /* accept4 */
#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "http/metrics.h"
#include "http/conn_limit.h"
#include "http/rate.h"
#include "http/tls.h"
#include "http/worker.h"

enum {
  SWEEP_INTERVAL_MS = 100,
  ACCEPTS_PER_WAKEUP = 64, /* then the main loop polls again, so a flood cannot starve signals */
  ACCEPT_PAUSE_MS = 100,   /* out of descriptors: wait for connections to close, don't spin */
};

/* The one listening socket, accepted on by the main thread. SO_REUSEPORT with a socket per
 * worker would let the kernel hash connections to workers, and with few long-lived HTTP/2
 * connections that is lumpy: 8 connections often split 6 to 2, and the busier worker's
 * requests waited twice as long. */
static int open_listener(const hs_config_t *cfg, hs_err_t *err) {
  struct addrinfo hints = {
      .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *res = NULL;
  char port[8];
  snprintf(port, sizeof port, "%u", cfg->listen_port);
  int gai = getaddrinfo(cfg->listen_host, port, &hints, &res);
  if (gai != 0) {
    return hs_err_set(err, HS_EINVAL, "cannot resolve listen address '%s': %s", cfg->listen_host,
                      gai_strerror(gai));
  }
  int fd = -1;
  int saved = 0;
  for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      saved = errno;
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1024) == 0) {
      break;
    }
    saved = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    return hs_err_set(err, HS_EIO, "cannot listen on %s:%u: %s", cfg->listen_host, cfg->listen_port,
                      strerror(saved));
  }
  return fd;
}

/* Sockets the main thread handed over. A draining worker's hs_conn_open closes them at once;
 * the main thread stopped accepting before it asked the workers to drain, so none arrives
 * after. */
static void on_incoming(uv_async_t *a) {
  hs_worker_t *w = a->data;
  int fds[HS_HANDOFF_MAX];
  uv_mutex_lock(&w->handoff_lock);
  unsigned n = w->n_handoff;
  memcpy(fds, w->handoff, n * sizeof fds[0]);
  w->n_handoff = 0;
  uv_mutex_unlock(&w->handoff_lock);
  for (unsigned i = 0; i < n; i++) {
    hs_conn_open(w, fds[i]);
  }
}

static void worker_maybe_finish(hs_worker_t *w) {
  if (w->draining && w->n_conns == 0 && !w->stopped) {
    w->stopped = true;
    if (w->opts->worker_stop != NULL) {
      w->opts->worker_stop(w, w->opts->hook_ctx);
    }
    uv_close((uv_handle_t *)&w->sweep, NULL);
    uv_close((uv_handle_t *)&w->wakeup, NULL);
    uv_close((uv_handle_t *)&w->incoming, NULL);
    uv_close((uv_handle_t *)&w->flush, NULL);
  }
}

static void on_flush_check(uv_check_t *h) {
  hs_conn_flush_pending(h->data);
}

static void on_sweep(uv_timer_t *t) {
  hs_worker_t *w = t->data;
  uint64_t now = uv_now(&w->loop);
  bool force = w->draining && now >= w->drain_deadline;
  for (hs_conn_t *c = w->conns; c != NULL;) {
    hs_conn_t *next = hs_conn_next(c);
    if (force) {
      hs_conn_abort(c);
    } else {
      hs_conn_sweep(c, now);
    }
    c = next;
  }
  worker_maybe_finish(w);
}

static void on_wakeup(uv_async_t *a) {
  hs_worker_t *w = a->data;
  if (w->draining) {
    return;
  }
  w->draining = true;
  w->drain_deadline = uv_now(&w->loop) + w->config->grace_ms;
  on_incoming(&w->incoming);
  for (hs_conn_t *c = w->conns; c != NULL;) {
    hs_conn_t *next = hs_conn_next(c);
    hs_conn_drain(c);
    c = next;
  }
  worker_maybe_finish(w);
}

static void worker_main(void *arg) {
  hs_worker_t *w = arg;
  uv_run(&w->loop, UV_RUN_DEFAULT);
}

static int worker_init(hs_worker_t *w, hs_err_t *err) {
  int rc = uv_loop_init(&w->loop);
  if (rc != 0) {
    return hs_err_set(err, HS_EIO, "cannot create an event loop: %s", uv_strerror(rc));
  }
  rc = uv_mutex_init(&w->handoff_lock);
  if (rc != 0) {
    uv_loop_close(&w->loop);
    return hs_err_set(err, HS_EIO, "cannot create a lock: %s", uv_strerror(rc));
  }
  uv_async_init(&w->loop, &w->wakeup, on_wakeup);
  w->wakeup.data = w;
  uv_async_init(&w->loop, &w->incoming, on_incoming);
  w->incoming.data = w;
  uv_timer_init(&w->loop, &w->sweep);
  w->sweep.data = w;
  uv_timer_start(&w->sweep, on_sweep, SWEEP_INTERVAL_MS, SWEEP_INTERVAL_MS);
  uv_check_init(&w->loop, &w->flush);
  w->flush.data = w;
  uv_check_start(&w->flush, on_flush_check);
  /* The check handle alone must not keep the loop alive. */
  uv_unref((uv_handle_t *)&w->flush);
  return HS_OK;
}

typedef struct main_ctx {
  hs_worker_t *workers;
  unsigned n;
  unsigned next; /* where the search for the least busy worker starts, so ties rotate */
  int listen_fd; /* owned */
  uv_poll_t accept_poll;
  uv_timer_t accept_pause;
  uv_signal_t sigterm, sigint, sighup;
  hs_tls_t *tls; /* borrowed; NULL without TLS */
  const hs_server_opts_t *opts;
  bool stopping;
} main_ctx_t;

/* Each connection goes to the worker with the fewest: HTTP/2 connections are long-lived and
 * carry many requests each, so an even count is an even load. */
static void hand_off(main_ctx_t *m, int fd) {
  hs_worker_t *best = NULL;
  unsigned best_n = 0;
  for (unsigned k = 0; k < m->n; k++) {
    hs_worker_t *w = &m->workers[(m->next + k) % m->n];
    unsigned n = atomic_load_explicit(&w->n_assigned, memory_order_relaxed);
    if (best == NULL || n < best_n) {
      best = w;
      best_n = n;
    }
  }
  m->next = (m->next + 1) % m->n;
  uv_mutex_lock(&best->handoff_lock);
  bool queued = best->n_handoff < HS_HANDOFF_MAX;
  if (queued) {
    best->handoff[best->n_handoff++] = fd;
    atomic_fetch_add_explicit(&best->n_assigned, 1, memory_order_relaxed);
  }
  uv_mutex_unlock(&best->handoff_lock);
  if (!queued) {
    hs_log(HS_LOG_WARN, "connection_refused", "{s:s, s:i}", "reason", "worker_backlog", "worker",
           (int)best->index);
    close(fd);
    return;
  }
  uv_async_send(&best->incoming);
}

static void on_accept_resume(uv_timer_t *t);

static void on_acceptable(uv_poll_t *p, int status, int events) {
  (void)events;
  main_ctx_t *m = p->data;
  if (status < 0) {
    hs_log(HS_LOG_WARN, "accept_failed", "{s:s}", "error", uv_strerror(status));
    return;
  }
  for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
    int fd = accept4(m->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      hand_off(m, fd);
      continue;
    }
    int e = errno; /* before logging can change it */
    if (e == EINTR || e == ECONNABORTED) {
      continue;
    }
    if (e == EAGAIN || e == EWOULDBLOCK) {
      return;
    }
    /* Out of descriptors or memory the socket stays readable until some frees up: polling
     * again at once would spin, so accepting pauses and the connections wait in the backlog. */
    bool out_of_room = e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
    hs_log(HS_LOG_WARN, "accept_failed", "{s:s, s:i}", "error", strerror(e), "pause_ms",
           out_of_room ? ACCEPT_PAUSE_MS : 0);
    if (out_of_room) {
      uv_poll_stop(&m->accept_poll);
      uv_timer_start(&m->accept_pause, on_accept_resume, ACCEPT_PAUSE_MS, 0);
    }
    return;
  }
}

static void on_accept_resume(uv_timer_t *t) {
  main_ctx_t *m = t->data;
  uv_poll_start(&m->accept_poll, UV_READABLE, on_acceptable);
}

static void on_listen_closed(uv_handle_t *h) {
  main_ctx_t *m = h->data;
  close(m->listen_fd);
  m->listen_fd = -1;
}

static void on_signal(uv_signal_t *s, int signum) {
  main_ctx_t *m = s->data;
  if (m->stopping) {
    return;
  }
  m->stopping = true;
  hs_log(HS_LOG_INFO, "draining", "{s:s, s:i}", "signal", signum == SIGTERM ? "SIGTERM" : "SIGINT",
         "grace_ms", (int)m->opts->config->grace_ms);
  /* No handoff after this point: a worker closes its handle once it drained. */
  uv_close((uv_handle_t *)&m->accept_poll, on_listen_closed);
  uv_close((uv_handle_t *)&m->accept_pause, NULL);
  for (unsigned i = 0; i < m->n; i++) {
    uv_async_send(&m->workers[i].wakeup);
  }
  uv_close((uv_handle_t *)&m->sigterm, NULL);
  uv_close((uv_handle_t *)&m->sigint, NULL);
  uv_close((uv_handle_t *)&m->sighup, NULL);
  if (m->opts->on_stop != NULL) {
    m->opts->on_stop(s->loop, m->opts->hook_ctx);
  }
}

/* SIGHUP: load the certificate and key again (an operator renewed them). New connections use
 * the new pair; open ones are not disturbed. A pair that does not load changes nothing. */
static void on_sighup(uv_signal_t *s, int signum) {
  main_ctx_t *m = s->data;
  const hs_config_t *cfg = m->opts->config;
  if (m->tls == NULL) {
    hs_log(HS_LOG_INFO, "sighup_ignored", "{s:s}", "reason", "TLS is not configured");
    return;
  }
  hs_err_t err;
  hs_err_clear(&err);
  if (hs_tls_reload(m->tls, cfg->tls_cert, cfg->tls_key, &err) != HS_OK) {
    hs_log(HS_LOG_ERROR, "tls_reload_failed", "{s:s}", "error", err.msg);
    return;
  }
  hs_log(HS_LOG_INFO, "tls_reloaded", "{s:s}", "cert", cfg->tls_cert);
}

int hs_server_run(const hs_server_opts_t *opts, hs_err_t *err) {
  const hs_config_t *cfg = opts->config;
  signal(SIGPIPE, SIG_IGN);
  hs_conn_limit_t per_ip;
  hs_conn_limit_init(&per_ip, cfg->max_conns_per_ip);
  hs_rate_t rate;
  hs_rate_init(&rate, cfg->rate_per_s, cfg->rate_burst);
  hs_tls_t tls_holder;
  hs_tls_t *tls = NULL;
  if (cfg->tls_cert[0] != '\0') {
    int rc = hs_tls_init(&tls_holder, cfg->tls_cert, cfg->tls_key, err);
    if (rc != HS_OK) {
      hs_conn_limit_free(&per_ip);
      hs_rate_free(&rate);
      return rc;
    }
    tls = &tls_holder;
  }
  const char *names[HS_METRICS_MAX_ROUTES];
  size_t n_names = 0;
  for (size_t i = 0; i < opts->n_routes && i < HS_METRICS_MAX_ROUTES - 1; i++) {
    names[n_names++] = opts->routes[i].pattern;
  }
  int rc = hs_metrics_init(names, n_names, cfg->workers);
  if (rc != HS_OK) {
    if (tls != NULL) {
      hs_tls_free(tls);
    }
    hs_conn_limit_free(&per_ip);
    hs_rate_free(&rate);
    return hs_err_set(err, rc, "cannot set up metrics");
  }
  hs_worker_t *workers = calloc(cfg->workers, sizeof *workers);
  int listen_fd =
      workers == NULL ? hs_err_set(err, HS_ENOMEM, "out of memory") : open_listener(cfg, err);
  if (listen_fd < 0) {
    free(workers);
    if (tls != NULL) {
      hs_tls_free(tls);
    }
    hs_metrics_free();
    hs_conn_limit_free(&per_ip);
    hs_rate_free(&rate);
    return listen_fd;
  }
  unsigned started = 0;
  rc = HS_OK;
  for (unsigned i = 0; i < cfg->workers && rc == HS_OK; i++) {
    hs_worker_t *w = &workers[i];
    w->index = i;
    w->config = cfg;
    w->routes = opts->routes;
    w->n_routes = opts->n_routes;
    w->tls = tls;
    w->per_ip = &per_ip;
    w->rate = &rate;
    w->metrics = hs_metrics_shard(i);
    w->opts = opts;
    rc = worker_init(w, err);
    if (rc == HS_OK) {
      started++;
      if (opts->worker_start != NULL) {
        /* On the main thread, before the worker's thread runs: the loop is not running yet, so
         * this is the only thread touching it. */
        rc = opts->worker_start(w, opts->hook_ctx, err);
      }
    }
  }
  if (rc != HS_OK) {
    for (unsigned i = 0; i < started; i++) {
      if (workers[i].app != NULL && opts->worker_stop != NULL) {
        opts->worker_stop(&workers[i], opts->hook_ctx);
      }
      uv_close((uv_handle_t *)&workers[i].wakeup, NULL);
      uv_close((uv_handle_t *)&workers[i].incoming, NULL);
      uv_close((uv_handle_t *)&workers[i].sweep, NULL);
      uv_close((uv_handle_t *)&workers[i].flush, NULL);
      uv_run(&workers[i].loop, UV_RUN_DEFAULT);
      uv_loop_close(&workers[i].loop);
      uv_mutex_destroy(&workers[i].handoff_lock);
    }
    close(listen_fd);
    free(workers);
    if (tls != NULL) {
      hs_tls_free(tls);
    }
    hs_metrics_free();
    hs_conn_limit_free(&per_ip);
    hs_rate_free(&rate);
    return rc;
  }

  uv_loop_t main_loop;
  uv_loop_init(&main_loop);
  main_ctx_t m = {
      .workers = workers, .n = cfg->workers, .listen_fd = listen_fd, .opts = opts, .tls = tls};
  uv_poll_init_socket(&main_loop, &m.accept_poll, listen_fd);
  uv_timer_init(&main_loop, &m.accept_pause);
  m.accept_poll.data = m.accept_pause.data = &m;
  uv_signal_init(&main_loop, &m.sigterm);
  uv_signal_init(&main_loop, &m.sigint);
  uv_signal_init(&main_loop, &m.sighup);
  m.sigterm.data = m.sigint.data = m.sighup.data = &m;
  uv_signal_start(&m.sigterm, on_signal, SIGTERM);
  uv_signal_start(&m.sigint, on_signal, SIGINT);
  uv_signal_start(&m.sighup, on_sighup, SIGHUP);

  for (unsigned i = 0; i < cfg->workers; i++) {
    uv_thread_create(&workers[i].thread, worker_main, &workers[i]);
  }
  uv_poll_start(&m.accept_poll, UV_READABLE, on_acceptable);
  hs_log(HS_LOG_INFO, "listening", "{s:s, s:i, s:i, s:b}", "host", cfg->listen_host, "port",
         (int)cfg->listen_port, "workers", (int)cfg->workers, "tls", tls != NULL);
  if (opts->on_start != NULL) {
    opts->on_start(&main_loop, opts->hook_ctx);
  }
  uv_run(&main_loop, UV_RUN_DEFAULT);
  for (unsigned i = 0; i < cfg->workers; i++) {
    uv_thread_join(&workers[i].thread);
    uv_loop_close(&workers[i].loop);
    uv_mutex_destroy(&workers[i].handoff_lock);
  }
  uv_loop_close(&main_loop);
  free(workers);
  if (tls != NULL) {
    hs_tls_free(tls);
  }
  hs_metrics_free();
  hs_conn_limit_free(&per_ip);
  hs_rate_free(&rate);
  hs_log(HS_LOG_INFO, "stopped", NULL);
  return HS_OK;
}
