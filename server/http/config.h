/* Server configuration: where to listen, how many workers, TLS, and every limit an outsider
 * could otherwise spend without bound. Read once at start-up from HANDSEL_* variables (flags of
 * `handsel serve` override them) and then shared read-only by every worker thread. */
#ifndef HS_HTTP_CONFIG_H
#define HS_HTTP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct hs_config {
  char listen_host[256]; /* numeric address or host name */
  uint16_t listen_port;
  unsigned workers;
  char tls_cert[1024]; /* empty when TLS is off */
  char tls_key[1024];
  char db_conninfo[2048]; /* empty when no database is configured */
  bool debug_routes;      /* the /debug routes for tests; never on in production */

  /* Limits. Every one of these is an outsider-controlled resource. */
  size_t max_body;            /* request body bytes */
  size_t max_header_list;     /* sum of name + value + 32 per field (RFC 9113 §6.5.2) */
  uint32_t max_headers;       /* header fields per request */
  uint32_t max_streams;       /* SETTINGS_MAX_CONCURRENT_STREAMS */
  uint32_t idle_timeout_ms;   /* no stream open and no bytes in: close */
  uint32_t header_timeout_ms; /* a header block begun but not finished: close */
  uint32_t stall_timeout_ms;  /* output pending but none taken by the peer: close */
  size_t conn_outbuf;         /* bytes queued for one connection before we stop producing */
  size_t stream_outbuf;       /* bytes a streaming response may buffer before its producer waits */
  uint32_t glitch_limit;      /* server-sent resets + invalid frames per connection */
  uint32_t control_limit;     /* PING + SETTINGS received per connection per 10 s */
  uint32_t grace_ms;          /* SIGTERM: how long in-flight streams may take to finish */
  uint32_t max_conns;         /* connections per worker */
  uint32_t max_conns_per_ip;  /* connections from one client address, all workers together */
  uint32_t rate_per_s;        /* requests per second one token may make (per worker) */
  uint32_t rate_burst;        /* requests a token may make at once before the rate applies */

  /* Sessions and the database. */
  uint32_t db_pool_size;  /* PostgreSQL connections per worker */
  uint32_t session_cache; /* live sessions a worker keeps in memory before evicting */
  size_t session_memory;  /* bytes the brands' Lua states of a worker may hold before evicting */
  size_t max_blob;        /* bytes of one evidence upload */
  bool dev_auth; /* development only: brand, role and subject from x-handsel-dev-* headers */

  /* The compliance log. */
  char signing_key[1024]; /* PEM Ed25519 private key; empty: a development key (see serve) */
  uint32_t seal_ms;       /* how often new validation records are sealed into the chain */
} hs_config_t;

/* Fills *cfg with defaults, then applies HANDSEL_* environment variables. Fails with a message
 * naming the variable and the accepted range. */
int hs_config_from_env(hs_config_t *cfg, hs_err_t *err);

/* Parses "host:port", "[v6]:port" or ":port" into cfg->listen_host/port. */
int hs_config_set_listen(hs_config_t *cfg, const char *value, hs_err_t *err);

#endif
