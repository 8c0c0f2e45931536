#include "http/metrics.h"

#include <stdlib.h>

#include "core/error.h"

static const int k_statuses[HS_METRICS_STATUSES - 1] = {
    200, 201, 202, 204, 400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 431, 500, 501, 503, 505};
/* Upper bounds in microseconds; the last bucket is +Inf. */
static const uint64_t k_bucket_us[HS_METRICS_BUCKETS - 1] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000, 5000000};
static const char *const k_bucket_le[HS_METRICS_BUCKETS] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
    "0.025",  "0.05",    "0.1",    "0.25",  "1",      "5",     "+Inf"};
static const char *const k_reasons[HS_CLOSE_REASONS] = {
    "normal", "idle",     "header_timeout", "stalled",       "rapid_reset",
    "flood",  "protocol", "glitch",         "control_flood", "shutdown",
    "outbuf", "tls",      "http1",          "error",         "per_ip"};

static hs_metrics_shard_t *g_shards; /* owned: calloc'd array of g_n_shards */
static unsigned g_n_shards;
static const char *const *g_route_names; /* borrowed */
static size_t g_n_routes;

int hs_metrics_init(const char *const *route_names, size_t n_routes, unsigned n_shards) {
  if (n_routes >= HS_METRICS_MAX_ROUTES) {
    return HS_ELIMIT;
  }
  g_shards = calloc(n_shards, sizeof *g_shards);
  if (g_shards == NULL) {
    return HS_ENOMEM;
  }
  g_n_shards = n_shards;
  g_route_names = route_names;
  g_n_routes = n_routes;
  return HS_OK;
}

void hs_metrics_free(void) {
  free(g_shards);
  g_shards = NULL;
  g_n_shards = 0;
}

hs_metrics_shard_t *hs_metrics_shard(unsigned i) {
  return &g_shards[i];
}

const char *hs_close_reason_name(hs_close_reason_t reason) {
  return reason < HS_CLOSE_REASONS ? k_reasons[reason] : "error";
}

static int status_index(int status) {
  for (int i = 0; i < HS_METRICS_STATUSES - 1; i++) {
    if (k_statuses[i] == status) {
      return i;
    }
  }
  return HS_METRICS_STATUSES - 1;
}

void hs_metrics_request(hs_metrics_shard_t *s, int route, int status, uint64_t duration_us) {
  size_t r = route < 0 || (size_t)route >= g_n_routes ? HS_METRICS_MAX_ROUTES - 1 : (size_t)route;
  atomic_fetch_add_explicit(&s->requests[r][status_index(status)], 1, memory_order_relaxed);
  int b = 0;
  while (b < HS_METRICS_BUCKETS - 1 && duration_us > k_bucket_us[b]) {
    b++;
  }
  atomic_fetch_add_explicit(&s->latency[r][b], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->latency_sum_us[r], duration_us, memory_order_relaxed);
}

void hs_metrics_conn_closed(hs_metrics_shard_t *s, hs_close_reason_t reason) {
  atomic_fetch_add_explicit(&s->conns_closed[reason < HS_CLOSE_REASONS ? reason : HS_CLOSE_ERROR],
                            1, memory_order_relaxed);
}

int hs_metrics_render(hs_buf_t *out) {
  int rc = HS_OK;
  rc |= hs_buf_puts(out, "# HELP handsel_http_requests_total HTTP requests answered, by route "
                         "and status.\n# TYPE handsel_http_requests_total counter\n");
  for (size_t r = 0; r < HS_METRICS_MAX_ROUTES; r++) {
    const char *name = r < g_n_routes                   ? g_route_names[r]
                       : r == HS_METRICS_MAX_ROUTES - 1 ? "unmatched"
                                                        : NULL;
    if (name == NULL) {
      continue;
    }
    for (int s = 0; s < HS_METRICS_STATUSES; s++) {
      uint64_t v = 0;
      for (unsigned w = 0; w < g_n_shards; w++) {
        v += atomic_load_explicit(&g_shards[w].requests[r][s], memory_order_relaxed);
      }
      if (v == 0) {
        continue;
      }
      if (s < HS_METRICS_STATUSES - 1) {
        rc |= hs_buf_printf(out, "handsel_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                            name, k_statuses[s], (unsigned long long)v);
      } else {
        rc |=
            hs_buf_printf(out, "handsel_http_requests_total{route=\"%s\",status=\"other\"} %llu\n",
                          name, (unsigned long long)v);
      }
    }
  }
  rc |= hs_buf_puts(out, "# HELP handsel_http_request_duration_seconds Time from a complete "
                         "request to its response headers.\n"
                         "# TYPE handsel_http_request_duration_seconds histogram\n");
  for (size_t r = 0; r < HS_METRICS_MAX_ROUTES; r++) {
    const char *name = r < g_n_routes                   ? g_route_names[r]
                       : r == HS_METRICS_MAX_ROUTES - 1 ? "unmatched"
                                                        : NULL;
    if (name == NULL) {
      continue;
    }
    uint64_t cum = 0;
    uint64_t buckets[HS_METRICS_BUCKETS];
    for (int b = 0; b < HS_METRICS_BUCKETS; b++) {
      uint64_t v = 0;
      for (unsigned w = 0; w < g_n_shards; w++) {
        v += atomic_load_explicit(&g_shards[w].latency[r][b], memory_order_relaxed);
      }
      cum += v;
      buckets[b] = cum;
    }
    if (cum == 0) {
      continue;
    }
    for (int b = 0; b < HS_METRICS_BUCKETS; b++) {
      rc |= hs_buf_printf(out,
                          "handsel_http_request_duration_seconds_bucket{route=\"%s\",le=\"%s\"} "
                          "%llu\n",
                          name, k_bucket_le[b], (unsigned long long)buckets[b]);
    }
    uint64_t sum_us = 0;
    for (unsigned w = 0; w < g_n_shards; w++) {
      sum_us += atomic_load_explicit(&g_shards[w].latency_sum_us[r], memory_order_relaxed);
    }
    rc |= hs_buf_printf(out,
                        "handsel_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
                        "handsel_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
                        name, (double)sum_us / 1e6, name, (unsigned long long)cum);
  }
  int64_t conns = 0, streams = 0;
  uint64_t accepted = 0;
  for (unsigned w = 0; w < g_n_shards; w++) {
    conns += atomic_load_explicit(&g_shards[w].conns_open, memory_order_relaxed);
    streams += atomic_load_explicit(&g_shards[w].streams_open, memory_order_relaxed);
    accepted += atomic_load_explicit(&g_shards[w].conns_accepted, memory_order_relaxed);
  }
  rc |= hs_buf_printf(out,
                      "# HELP handsel_http_connections_open Client connections open now.\n"
                      "# TYPE handsel_http_connections_open gauge\n"
                      "handsel_http_connections_open %lld\n"
                      "# HELP handsel_http_streams_open HTTP/2 streams open now.\n"
                      "# TYPE handsel_http_streams_open gauge\n"
                      "handsel_http_streams_open %lld\n"
                      "# HELP handsel_http_connections_accepted_total Connections accepted.\n"
                      "# TYPE handsel_http_connections_accepted_total counter\n"
                      "handsel_http_connections_accepted_total %llu\n",
                      (long long)conns, (long long)streams, (unsigned long long)accepted);
  /* Per worker as well: the main thread hands each connection to the worker with the fewest,
     and an operator can see that it did. */
  rc |= hs_buf_printf(out, "# HELP handsel_worker_connections_open Client connections open now, by "
                           "worker thread.\n# TYPE handsel_worker_connections_open gauge\n");
  for (unsigned w = 0; w < g_n_shards; w++) {
    rc |= hs_buf_printf(
        out, "handsel_worker_connections_open{worker=\"%u\"} %lld\n", w,
        (long long)atomic_load_explicit(&g_shards[w].conns_open, memory_order_relaxed));
  }
  int64_t live = 0;
  uint64_t evictions = 0, replays = 0, batches = 0, writes = 0, sealed = 0, tapped = 0,
           checkpoints = 0, unread = 0, tap_dropped = 0;
  for (unsigned w = 0; w < g_n_shards; w++) {
    live += atomic_load_explicit(&g_shards[w].sessions_live, memory_order_relaxed);
    evictions += atomic_load_explicit(&g_shards[w].session_evictions, memory_order_relaxed);
    replays += atomic_load_explicit(&g_shards[w].session_replays, memory_order_relaxed);
    batches += atomic_load_explicit(&g_shards[w].commit_batches, memory_order_relaxed);
    writes += atomic_load_explicit(&g_shards[w].commit_writes, memory_order_relaxed);
    sealed += atomic_load_explicit(&g_shards[w].audit_sealed, memory_order_relaxed);
    tapped += atomic_load_explicit(&g_shards[w].audit_sealed_tapped, memory_order_relaxed);
    checkpoints += atomic_load_explicit(&g_shards[w].audit_checkpoints, memory_order_relaxed);
    unread += atomic_load_explicit(&g_shards[w].audit_rounds_unread, memory_order_relaxed);
    tap_dropped += atomic_load_explicit(&g_shards[w].audit_tap_dropped, memory_order_relaxed);
  }
  rc |= hs_buf_printf(
      out,
      "# HELP handsel_sessions_live Sessions held in memory now.\n"
      "# TYPE handsel_sessions_live gauge\n"
      "handsel_sessions_live %lld\n"
      "# HELP handsel_session_evictions_total Sessions evicted from memory.\n"
      "# TYPE handsel_session_evictions_total counter\n"
      "handsel_session_evictions_total %llu\n"
      "# HELP handsel_session_replays_total Sessions rebuilt from their events.\n"
      "# TYPE handsel_session_replays_total counter\n"
      "handsel_session_replays_total %llu\n"
      "# HELP handsel_commit_batches_total Group-commit transactions.\n"
      "# TYPE handsel_commit_batches_total counter\n"
      "handsel_commit_batches_total %llu\n"
      "# HELP handsel_commit_writes_total Writes committed by group commit.\n"
      "# TYPE handsel_commit_writes_total counter\n"
      "handsel_commit_writes_total %llu\n"
      "# HELP handsel_audit_sealed_total Validation records sealed into the chain.\n"
      "# TYPE handsel_audit_sealed_total counter\n"
      "handsel_audit_sealed_total %llu\n"
      "# HELP handsel_audit_sealed_tapped_total Of those, records this node's "
      "workers handed to the sealer, which so did not read them back.\n"
      "# TYPE handsel_audit_sealed_tapped_total counter\n"
      "handsel_audit_sealed_tapped_total %llu\n"
      "# HELP handsel_audit_checkpoints_total Signed checkpoints written.\n"
      "# TYPE handsel_audit_checkpoints_total counter\n"
      "handsel_audit_checkpoints_total %llu\n"
      "# HELP handsel_audit_rounds_unread_total Sealing rounds that read nothing back: this "
      "node's workers had handed over every record in the round's range.\n"
      "# TYPE handsel_audit_rounds_unread_total counter\n"
      "handsel_audit_rounds_unread_total %llu\n"
      "# HELP handsel_audit_tap_dropped_total Records the workers could not hand to the sealer "
      "(over its memory budget), which so read them back.\n"
      "# TYPE handsel_audit_tap_dropped_total counter\n"
      "handsel_audit_tap_dropped_total %llu\n",
      (long long)live, (unsigned long long)evictions, (unsigned long long)replays,
      (unsigned long long)batches, (unsigned long long)writes, (unsigned long long)sealed,
      (unsigned long long)tapped, (unsigned long long)checkpoints, (unsigned long long)unread,
      (unsigned long long)tap_dropped);
  /* A family's samples follow its HELP and TYPE lines, with no other family between. */
  rc |= hs_buf_printf(out, "# HELP handsel_http_connections_closed_total Connections closed, by "
                           "reason.\n# TYPE handsel_http_connections_closed_total counter\n");
  for (int i = 0; i < HS_CLOSE_REASONS; i++) {
    uint64_t v = 0;
    for (unsigned w = 0; w < g_n_shards; w++) {
      v += atomic_load_explicit(&g_shards[w].conns_closed[i], memory_order_relaxed);
    }
    rc |= hs_buf_printf(out, "handsel_http_connections_closed_total{reason=\"%s\"} %llu\n",
                        k_reasons[i], (unsigned long long)v);
  }
  return rc == HS_OK ? HS_OK : HS_ENOMEM;
}
