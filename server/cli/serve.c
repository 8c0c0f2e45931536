#include "cli/commands.h"

#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "audit/sealer.h"
#include "audit/sign.h"
#include "core/log.h"
#include "core/str.h"
#include "db/probe.h"
#include "http/config.h"
#include "http/server.h"
#include "http/worker.h"
#include "store/seed.h"
#include "store/store.h"

void hs_cmd_serve_help(FILE *out) {
  fputs("usage: handsel serve [--listen HOST:PORT] [--workers N]\n"
        "\n"
        "Serves the HTTP/2 API (h2c with prior knowledge, and h2 over TLS on the same port when\n"
        "HANDSEL_TLS_CERT and HANDSEL_TLS_KEY are set) until SIGTERM or SIGINT, then stops\n"
        "accepting, sends GOAWAY, lets in-flight streams finish and exits 0. SIGHUP loads the\n"
        "TLS certificate and key again without dropping a connection.\n"
        "\n"
        "Configuration (flags override the environment):\n"
        "  HANDSEL_LISTEN          address to listen on (default 127.0.0.1:8080)\n"
        "  HANDSEL_WORKERS         worker threads, one event loop each (default: core count)\n"
        "  HANDSEL_DB              libpq conninfo of the PostgreSQL database (/readyz checks it)\n"
        "  HANDSEL_TLS_CERT/_KEY   PEM certificate chain and private key\n"
        "  HANDSEL_SIGNING_KEY     PEM Ed25519 private key that signs the compliance log's\n"
        "                          checkpoints, the same on every node (handsel key generate);\n"
        "                          unset: a development key under $XDG_STATE_HOME/handsel\n"
        "  HANDSEL_SEAL_MS (200)   how often new validation records are sealed and signed\n"
        "Limits:\n"
        "  HANDSEL_MAX_BODY (1048576)  HANDSEL_MAX_HEADER_LIST (16384)  HANDSEL_MAX_HEADERS (64)\n"
        "  HANDSEL_MAX_STREAMS (100)   HANDSEL_MAX_CONNS per worker (10000)\n"
        "  HANDSEL_IDLE_TIMEOUT_MS (60000)   HANDSEL_HEADER_TIMEOUT_MS (10000)\n"
        "  HANDSEL_STALL_TIMEOUT_MS (30000)  HANDSEL_GRACE_MS (10000)\n"
        "  HANDSEL_CONN_OUTBUF (1048576)     HANDSEL_STREAM_OUTBUF (262144)\n"
        "  HANDSEL_GLITCH_LIMIT (100)        HANDSEL_CONTROL_LIMIT (1000 per 10 s)\n"
        "  HANDSEL_LOG_LEVEL (info: debug, info, warn, error)\n"
        "  HANDSEL_MAX_CONNS_PER_IP (256) connections from one client address\n"
        "  HANDSEL_RATE_PER_S (200), HANDSEL_RATE_BURST (400) requests per token\n"
        "  HANDSEL_DB_POOL (2) database connections per worker (and 3 per node: LISTEN,\n"
        "    the compliance log's sealer, the readiness probe)\n"
        "  HANDSEL_SESSION_CACHE (100000) live sessions per worker before the oldest are evicted\n"
        "  HANDSEL_SESSION_MEMORY (536870912) bytes of Lua state per worker before evicting\n"
        "  HANDSEL_MAX_BLOB (16777216) bytes of one evidence upload\n"
        "  HANDSEL_DEBUG_ROUTES=1 enables /debug/echo and /debug/stream (tests only)\n"
        "  HANDSEL_PROCESSES=DIR deploys and activates every DIR/*.lua at start, for the brand\n"
        "    HANDSEL_PROCESSES_BRAND (default demo)\n"
        "  HANDSEL_DEV_AUTH=1 takes brand, role and subject from x-handsel-dev-* headers\n"
        "    (development only; never expose such a server)\n",
        out);
}

enum {
  /* Records waiting in memory for the sealer: about ten seconds of a busy node's completions.
     Past it, the sealer reads the rest back from the database. */
  AUDIT_TAP_BUDGET = 64 << 20,
};

typedef struct serve_ctx {
  const hs_config_t *cfg;
  hs_db_probe_t *probe;
  hs_audit_key_t *key; /* owned: signs the compliance log's checkpoints */
  /* The node's one sealer, on the main thread's loop with a connection of its own: a round
     hashes thousands of records, and no worker's requests should wait behind that. */
  hs_db_pool_t *seal_pool;          /* owned */
  hs_sealer_t *sealer;              /* owned */
  hs_metrics_shard_t *seal_metrics; /* borrowed: the first worker's, whose counters are atomic */
  hs_audit_tap_t *tap;     /* owned: the records the workers commit, handed to the sealer */
  hs_listener_t *listener; /* owned: the node's LISTEN, on the main thread's loop */
} serve_ctx_t;

static void start_main(uv_loop_t *loop, void *arg) {
  serve_ctx_t *s = arg;
  if (s->cfg->db_conninfo[0] == '\0') {
    return;
  }
  s->probe = hs_db_probe_start(loop, s->cfg->db_conninfo);
  hs_listener_start(s->listener, loop);
  hs_err_t err;
  hs_err_clear(&err);
  if (hs_db_pool_new(loop, s->cfg->db_conninfo, 1, &s->seal_pool, &err) != HS_OK ||
      hs_sealer_new(loop, s->seal_pool, s->key, s->cfg->seal_ms, s->tap, s->seal_metrics,
                    &s->sealer) != HS_OK) {
    hs_audit_tap_close(s->tap); /* nothing would take what the workers hand over */
    /* Records are still written and exported; only new checkpoints wait for a restart. */
    hs_log(HS_LOG_ERROR, "audit_sealer_not_started", "{s:s}", "error",
           err.msg[0] != '\0' ? err.msg : "out of memory");
  }
}

static void stop_main(uv_loop_t *loop, void *arg) {
  serve_ctx_t *s = arg;
  if (s->probe != NULL) {
    hs_db_probe_stop(s->probe);
    s->probe = NULL;
  }
  if (s->listener != NULL) {
    hs_listener_stop(s->listener);
  }
  hs_sealer_close(s->sealer);
  s->sealer = NULL;
  if (s->seal_pool != NULL) {
    hs_db_pool_close(s->seal_pool);
    s->seal_pool = NULL;
  }
}

static int worker_start(hs_worker_t *w, void *arg, hs_err_t *err) {
  serve_ctx_t *s = arg;
  if (s->cfg->db_conninfo[0] == '\0') {
    return HS_OK; /* no database: only health, metrics and test routes work */
  }
  hs_store_t *store = NULL;
  int rc = hs_store_new(&w->loop, s->cfg, w->metrics, &store, err);
  if (rc == HS_OK && hs_store_listen(store, s->listener) != HS_OK) {
    hs_store_close(store);
    rc = hs_err_set(err, HS_ENOMEM, "out of memory");
  }
  if (rc == HS_OK) {
    w->app = store;
    hs_store_set_audit(store, s->key, s->tap);
    if (w->index == 0) {
      s->seal_metrics = w->metrics;
    }
  }
  return rc;
}

static void worker_stop(hs_worker_t *w, void *arg) {
  if (w->app != NULL) {
    hs_store_close(w->app);
    w->app = NULL;
  }
}

/* HANDSEL_SIGNING_KEY names the deployment's key, shared by every node. Without it this is a
 * development server: it makes a key of its own on first start and says so loudly, because
 * checkpoints signed with it prove nothing to anyone who cannot trust this machine. */
static int load_signing_key(const hs_config_t *cfg, hs_audit_key_t **out) {
  hs_err_t err;
  hs_err_clear(&err);
  char path[1100];
  bool dev = cfg->signing_key[0] == '\0';
  if (dev) {
    const char *state = getenv("XDG_STATE_HOME");
    const char *home = getenv("HOME");
    if (state != NULL && *state != '\0') {
      snprintf(path, sizeof path, "%s/handsel/signing-key.pem", state);
    } else {
      snprintf(path, sizeof path, "%s/.local/state/handsel/signing-key.pem",
               home != NULL && *home != '\0' ? home : ".");
    }
  } else {
    hs_strlcpy(path, cfg->signing_key, sizeof path);
  }
  bool created = false;
  if (hs_audit_key_load(path, dev, out, &created, &err) != HS_OK) {
    fprintf(stderr, "handsel serve: %s (HANDSEL_SIGNING_KEY)\n", err.msg);
    return HS_EINVAL;
  }
  if (dev) {
    hs_log(HS_LOG_WARN, "development_signing_key", "{s:s, s:s, s:b, s:s}", "path", path, "key_id",
           hs_audit_key_id(*out), "created", created, "hint",
           "set HANDSEL_SIGNING_KEY to the deployment's key (handsel key generate FILE)");
  }
  return HS_OK;
}

int hs_cmd_serve_main(int argc, char **argv) {
  hs_config_t cfg;
  hs_err_t err;
  hs_err_clear(&err);
  const char *lvl = getenv("HANDSEL_LOG_LEVEL");
  if (lvl != NULL) {
    hs_log_set_level(strcmp(lvl, "debug") == 0   ? HS_LOG_DEBUG
                     : strcmp(lvl, "warn") == 0  ? HS_LOG_WARN
                     : strcmp(lvl, "error") == 0 ? HS_LOG_ERROR
                                                 : HS_LOG_INFO);
  }
  if (hs_config_from_env(&cfg, &err) != HS_OK) {
    fprintf(stderr, "handsel serve: %s\n", err.msg);
    return 2;
  }
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      hs_cmd_serve_help(stdout);
      return 0;
    }
    if (strcmp(a, "--listen") == 0 && i + 1 < argc) {
      if (hs_config_set_listen(&cfg, argv[++i], &err) != HS_OK) {
        fprintf(stderr, "handsel serve: %s\n", err.msg);
        return 2;
      }
    } else if (strcmp(a, "--workers") == 0 && i + 1 < argc) {
      char *end = NULL;
      long n = strtol(argv[++i], &end, 10);
      if (end == argv[i] || *end != '\0' || n < 1 || n > 256) {
        fprintf(stderr, "handsel serve: --workers must be a whole number from 1 to 256\n");
        return 2;
      }
      cfg.workers = (unsigned)n;
    } else {
      fprintf(stderr, "handsel serve: unknown argument '%s' (see handsel serve --help)\n", a);
      return 2;
    }
  }
  const char *dir = getenv("HANDSEL_PROCESSES");
  if (dir != NULL && *dir != '\0') {
    const char *brand = getenv("HANDSEL_PROCESSES_BRAND");
    if (cfg.db_conninfo[0] == '\0') {
      fprintf(stderr, "handsel serve: HANDSEL_PROCESSES needs a database: set HANDSEL_DB\n");
      return 2;
    }
    if (hs_seed_processes(cfg.db_conninfo, dir, brand != NULL && *brand ? brand : "demo", stderr,
                          &err) != HS_OK) {
      fprintf(stderr, "handsel serve: %s\n", err.msg);
      return 1;
    }
  }
  serve_ctx_t ctx = {.cfg = &cfg};
  if (cfg.db_conninfo[0] != '\0' && load_signing_key(&cfg, &ctx.key) != HS_OK) {
    return 1;
  }
  if (cfg.db_conninfo[0] != '\0' && (hs_audit_tap_new(AUDIT_TAP_BUDGET, &ctx.tap) != HS_OK ||
                                     hs_listener_new(cfg.db_conninfo, &ctx.listener) != HS_OK)) {
    hs_audit_tap_free(ctx.tap);
    hs_audit_key_free(ctx.key);
    fprintf(stderr, "handsel serve: out of memory\n");
    return 1;
  }
  hs_server_opts_t opts = {.config = &cfg,
                           .routes = hs_api_routes,
                           .n_routes = hs_api_routes_len,
                           .on_start = start_main,
                           .on_stop = stop_main,
                           .worker_start = worker_start,
                           .worker_stop = worker_stop,
                           .hook_ctx = &ctx};
  int rc = hs_server_run(&opts, &err);
  hs_listener_free(ctx.listener);
  hs_audit_tap_free(ctx.tap);
  hs_audit_key_free(ctx.key);
  if (rc != HS_OK) {
    hs_log(HS_LOG_ERROR, "serve_failed", "{s:s}", "error", err.msg);
    fprintf(stderr, "handsel serve: %s\n", err.msg);
    return 1;
  }
  return 0;
}
