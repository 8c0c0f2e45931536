/* Untrusted bytes into the server's HTTP/2 connection code (server/http/conn.c) through its
 * real entry point: a loopback TCP connection is accepted and handed to a worker's libuv loop
 * with hs_conn_open, exactly as the server's main thread does, and the input, after the client
 * preface, is what the client sends. The loop runs on this thread until the server has nothing more
 * to say; the client side reads and discards the answers (so output backpressure does not stall the
 * server), then closes. Handlers are the product's own routes that need no database (health,
 * metrics, the debug echo and stream, a 501 route with a large-body flag), so requests travel the
 * whole path: nghttp2 callbacks, limits, routing, body decoding, responses and cancellation.
 *
 * Nothing in server/ knows it is being fuzzed: the harness builds the minimal hs_worker_t that
 * conn.c reads (loop, config, routes, metrics, the flush check) as server.c does. */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <poll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "api/api.h"
#include "core/log.h"
#include "http/config.h"
#include "http/metrics.h"
#include "http/worker.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char k_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static const hs_route_t k_routes[] = {
    {"GET", "/healthz", hs_api_healthz, 0},
    {"GET", "/readyz", hs_api_readyz, 0},
    {"GET", "/metrics", hs_api_metrics, 0},
    {"PUT", "/v1/blobs/{hash}", hs_api_not_implemented, HS_ROUTE_LARGE_BODY},
    {"POST", "/v1/sessions/{id}/steps/{seq}", hs_api_not_implemented, 0},
    {"POST", "/debug/echo", hs_api_debug_echo, HS_ROUTE_DEBUG},
    {"GET", "/debug/stream", hs_api_debug_stream, HS_ROUTE_DEBUG},
};
enum { N_ROUTES = sizeof k_routes / sizeof k_routes[0] };

/* Bounds on one input's conversation, in loop iterations: enough for every answer the routes
 * give synchronously to be written, small enough that a never-ending stream cannot stall. */
enum { MAX_ROUNDS = 2000, IDLE_ROUNDS = 3 };

static hs_config_t g_config;
static hs_worker_t *g_worker; /* lives for the whole process: fuzzing never ends it */
static struct sockaddr_in g_addr;
static int g_listen_fd = -1; /* blocking: a loopback connect is ready to accept at once */

static void on_flush_check(uv_check_t *h) {
  hs_conn_flush_pending(h->data);
}

static void die(const char *what, int rc) {
  fprintf(stderr, "fuzz_h2_session: %s: %s\n", what, rc != 0 ? uv_strerror(rc) : strerror(errno));
  abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  signal(SIGPIPE, SIG_IGN);
  /* Protocol errors are the point of fuzzing; their warnings would drown libFuzzer's output. */
  hs_log_set_level(HS_LOG_ERROR);
  hs_err_t err = {0};
  if (hs_config_from_env(&g_config, &err) != HS_OK) {
    fprintf(stderr, "fuzz_h2_session: %s\n", err.msg);
    abort();
  }
  g_config.db_conninfo[0] = '\0';
  g_config.tls_cert[0] = g_config.tls_key[0] = '\0';
  g_config.debug_routes = true;
  g_config.workers = 1;

  static const char *names[N_ROUTES]; /* borrowed by the metrics for good */
  for (size_t i = 0; i < N_ROUTES; i++) {
    names[i] = k_routes[i].pattern;
  }
  if (hs_metrics_init(names, N_ROUTES, 1) != HS_OK) {
    die("cannot set up metrics", 0);
  }
  hs_worker_t *w = calloc(1, sizeof *w);
  if (w == NULL) {
    die("out of memory", 0);
  }
  w->config = &g_config;
  w->routes = k_routes;
  w->n_routes = N_ROUTES;
  w->metrics = hs_metrics_shard(0);
  int rc = uv_loop_init(&w->loop);
  if (rc != 0) {
    die("uv_loop_init", rc);
  }
  uv_ip4_addr("127.0.0.1", 0, &g_addr);
  socklen_t len = sizeof g_addr;
  g_listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (g_listen_fd < 0 || bind(g_listen_fd, (const struct sockaddr *)&g_addr, sizeof g_addr) != 0 ||
      listen(g_listen_fd, 64) != 0 ||
      getsockname(g_listen_fd, (struct sockaddr *)&g_addr, &len) != 0) {
    die("cannot listen on 127.0.0.1", 0);
  }
  uv_check_init(&w->loop, &w->flush);
  w->flush.data = w;
  uv_check_start(&w->flush, on_flush_check);
  uv_unref((uv_handle_t *)&w->flush);
  g_worker = w;
  return 0;
}

/* Reads and discards what the server sent; returns the number of bytes, or -1 once the server
 * closed its side. */
static ssize_t drain_client(int fd) {
  char buf[65536];
  ssize_t total = 0;
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      total += n;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return total;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    return -1; /* EOF or reset */
  }
}

static void turn(void) {
  uv_run(&g_worker->loop, UV_RUN_NOWAIT);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hs_worker_t *w = g_worker;
  /* Non-blocking from the start: libFuzzer's timers interrupt blocking calls, and the server
   * may stop reading, or close, at any point. */
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    die("socket", 0);
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (const struct sockaddr *)&g_addr, sizeof g_addr) != 0 && errno != EINPROGRESS &&
      errno != EINTR) {
    die("connect", 0);
  }
  int sfd = accept4(g_listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (sfd < 0) {
    die("accept4", 0);
  }
  atomic_fetch_add(&w->n_assigned, 1); /* as server.c's handoff counts it */
  hs_conn_open(w, sfd);
  if (w->n_conns != 1) {
    die("the worker did not open the connection", 0);
  }
  struct pollfd pfd = {.fd = fd, .events = POLLOUT};
  while (poll(&pfd, 1, 1000) < 0 && errno == EINTR) {
  }

  const uint8_t *parts[2] = {(const uint8_t *)k_preface, data};
  size_t lens[2] = {sizeof k_preface - 1, size};
  int rounds = 0;
  bool server_gone = false;
  for (int part = 0; part < 2 && !server_gone; part++) {
    size_t off = 0;
    while (off < lens[part] && !server_gone && rounds++ < MAX_ROUNDS) {
      ssize_t n = send(fd, parts[part] + off, lens[part] - off, MSG_NOSIGNAL);
      if (n > 0) {
        off += (size_t)n;
      } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        server_gone = true; /* reset: the server refused the input */
        break;
      }
      turn();
      if (drain_client(fd) < 0 || w->n_conns == 0) {
        server_gone = true;
      }
    }
  }
  /* Let the server answer everything it was asked (each answer goes out in the loop's check
   * phase) until it falls silent, then hang up. */
  int idle = 0;
  while (!server_gone && idle < IDLE_ROUNDS && rounds++ < MAX_ROUNDS) {
    turn();
    ssize_t got = drain_client(fd);
    if (got < 0 || w->n_conns == 0) {
      break;
    }
    idle = got == 0 ? idle + 1 : 0;
  }
  close(fd);
  rounds = 0;
  while (w->n_conns != 0 && rounds++ < MAX_ROUNDS) {
    turn();
  }
  if (w->n_conns != 0) {
    /* A connection that stopped reading (its output was not taken) learns of the hang-up only
     * from the worker's stall timeout, which this loop does not run: end it as a draining
     * worker does when its deadline passes. */
    for (hs_conn_t *c = w->conns; c != NULL;) {
      hs_conn_t *next = hs_conn_next(c);
      hs_conn_abort(c);
      c = next;
    }
  }
  /* Close callbacks (the connection's, a stream timer's) run on the next turn. */
  turn();
  turn();
  return 0;
}
