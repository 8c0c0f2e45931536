#include "http/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int hs_config_set_listen(hs_config_t *cfg, const char *value, hs_err_t *err) {
  const char *colon = strrchr(value, ':');
  if (colon == NULL) {
    return hs_err_set(err, HS_EINVAL,
                      "HANDSEL_LISTEN must be host:port (e.g. 127.0.0.1:8080), got '%s'", value);
  }
  const char *host = value;
  size_t host_len = (size_t)(colon - value);
  if (host_len >= 2 && host[0] == '[' && host[host_len - 1] == ']') {
    host++;
    host_len -= 2;
  }
  if (host_len >= sizeof cfg->listen_host) {
    return hs_err_set(err, HS_EINVAL, "HANDSEL_LISTEN host is too long");
  }
  char *end = NULL;
  errno = 0;
  long port = strtol(colon + 1, &end, 10);
  if (errno != 0 || end == colon + 1 || *end != '\0' || port < 0 || port > 65535) {
    return hs_err_set(err, HS_EINVAL, "HANDSEL_LISTEN port must be 0-65535, got '%s'", colon + 1);
  }
  if (host_len == 0) {
    strcpy(cfg->listen_host, "0.0.0.0");
  } else {
    memcpy(cfg->listen_host, host, host_len);
    cfg->listen_host[host_len] = '\0';
  }
  cfg->listen_port = (uint16_t)port;
  return HS_OK;
}

/* Reads an unsigned integer variable in [min, max]; leaves *out alone when unset. */
static int env_u64(const char *name, uint64_t min, uint64_t max, uint64_t *out, hs_err_t *err) {
  const char *v = getenv(name);
  if (v == NULL || *v == '\0') {
    return HS_OK;
  }
  char *end = NULL;
  errno = 0;
  unsigned long long n = strtoull(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || v[0] == '-' || n < min || n > max) {
    return hs_err_set(err, HS_EINVAL, "%s must be a whole number from %llu to %llu, got '%s'", name,
                      (unsigned long long)min, (unsigned long long)max, v);
  }
  *out = n;
  return HS_OK;
}

static int env_str(const char *name, char *dst, size_t cap, hs_err_t *err) {
  const char *v = getenv(name);
  if (v == NULL) {
    return HS_OK;
  }
  if (strlen(v) >= cap) {
    return hs_err_set(err, HS_EINVAL, "%s is longer than %zu bytes", name, cap - 1);
  }
  strcpy(dst, v);
  return HS_OK;
}

#define ENV_NUM(name, field, min, max)                                                             \
  do {                                                                                             \
    uint64_t v_ = (uint64_t)cfg->field;                                                            \
    int rc_ = env_u64(name, min, max, &v_, err);                                                   \
    if (rc_ != HS_OK) {                                                                            \
      return rc_;                                                                                  \
    }                                                                                              \
    cfg->field = v_;                                                                               \
  } while (0)

int hs_config_from_env(hs_config_t *cfg, hs_err_t *err) {
  memset(cfg, 0, sizeof *cfg);
  strcpy(cfg->listen_host, "127.0.0.1");
  cfg->listen_port = 8080;
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  cfg->workers = cores > 0 ? (unsigned)cores : 1;
  cfg->max_body = 1024 * 1024;
  cfg->max_header_list = 16 * 1024;
  cfg->max_headers = 64;
  cfg->max_streams = 100;
  cfg->idle_timeout_ms = 60000;
  cfg->header_timeout_ms = 10000;
  cfg->stall_timeout_ms = 30000;
  cfg->conn_outbuf = 1024 * 1024;
  cfg->stream_outbuf = 256 * 1024;
  cfg->glitch_limit = 100;
  cfg->control_limit = 1000;
  cfg->grace_ms = 10000;
  cfg->max_conns = 10000;
  cfg->max_conns_per_ip = 256;
  cfg->rate_per_s = 200;
  cfg->rate_burst = 400;
  cfg->db_pool_size = 2;
  cfg->session_cache = 100000;
  cfg->session_memory = 512u * 1024 * 1024;
  cfg->max_blob = 16 * 1024 * 1024;
  cfg->seal_ms = 200;

  const char *listen = getenv("HANDSEL_LISTEN");
  if (listen != NULL && *listen != '\0') {
    int rc = hs_config_set_listen(cfg, listen, err);
    if (rc != HS_OK) {
      return rc;
    }
  }
  int rc;
  if ((rc = env_str("HANDSEL_TLS_CERT", cfg->tls_cert, sizeof cfg->tls_cert, err)) != HS_OK ||
      (rc = env_str("HANDSEL_TLS_KEY", cfg->tls_key, sizeof cfg->tls_key, err)) != HS_OK ||
      (rc = env_str("HANDSEL_DB", cfg->db_conninfo, sizeof cfg->db_conninfo, err)) != HS_OK ||
      (rc = env_str("HANDSEL_SIGNING_KEY", cfg->signing_key, sizeof cfg->signing_key, err)) !=
          HS_OK) {
    return rc;
  }
  if ((cfg->tls_cert[0] == '\0') != (cfg->tls_key[0] == '\0')) {
    return hs_err_set(err, HS_EINVAL,
                      "set both HANDSEL_TLS_CERT and HANDSEL_TLS_KEY to serve TLS, or neither");
  }
  const char *dbg = getenv("HANDSEL_DEBUG_ROUTES");
  cfg->debug_routes = dbg != NULL && strcmp(dbg, "1") == 0;
  const char *dev = getenv("HANDSEL_DEV_AUTH");
  cfg->dev_auth = dev != NULL && strcmp(dev, "1") == 0;

  ENV_NUM("HANDSEL_WORKERS", workers, 1, 256);
  ENV_NUM("HANDSEL_MAX_BODY", max_body, 1024, 1024ull * 1024 * 1024);
  ENV_NUM("HANDSEL_MAX_HEADER_LIST", max_header_list, 1024, 1024 * 1024);
  ENV_NUM("HANDSEL_MAX_HEADERS", max_headers, 8, 1000);
  ENV_NUM("HANDSEL_MAX_STREAMS", max_streams, 1, 10000);
  ENV_NUM("HANDSEL_IDLE_TIMEOUT_MS", idle_timeout_ms, 100, 86400000);
  ENV_NUM("HANDSEL_HEADER_TIMEOUT_MS", header_timeout_ms, 100, 3600000);
  ENV_NUM("HANDSEL_STALL_TIMEOUT_MS", stall_timeout_ms, 100, 3600000);
  ENV_NUM("HANDSEL_CONN_OUTBUF", conn_outbuf, 16 * 1024, 1024ull * 1024 * 1024);
  ENV_NUM("HANDSEL_STREAM_OUTBUF", stream_outbuf, 1024, 1024ull * 1024 * 1024);
  ENV_NUM("HANDSEL_GLITCH_LIMIT", glitch_limit, 1, 1000000);
  ENV_NUM("HANDSEL_CONTROL_LIMIT", control_limit, 10, 10000000);
  ENV_NUM("HANDSEL_GRACE_MS", grace_ms, 0, 3600000);
  ENV_NUM("HANDSEL_MAX_CONNS", max_conns, 1, 1000000);
  ENV_NUM("HANDSEL_MAX_CONNS_PER_IP", max_conns_per_ip, 1, 1000000);
  ENV_NUM("HANDSEL_RATE_PER_S", rate_per_s, 1, 10000000);
  ENV_NUM("HANDSEL_RATE_BURST", rate_burst, 1, 10000000);
  ENV_NUM("HANDSEL_DB_POOL", db_pool_size, 1, 64);
  ENV_NUM("HANDSEL_SESSION_CACHE", session_cache, 1, 100000000);
  ENV_NUM("HANDSEL_SESSION_MEMORY", session_memory, 1024 * 1024, 1ull << 40);
  ENV_NUM("HANDSEL_MAX_BLOB", max_blob, 1024, 1024ull * 1024 * 1024);
  ENV_NUM("HANDSEL_SEAL_MS", seal_ms, 10, 3600000);
  return HS_OK;
}
