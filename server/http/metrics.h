/* Prometheus metrics. Each worker thread owns one hs_metrics_shard_t and is its only writer;
 * /metrics sums all shards. Counters are relaxed atomics: a scrape may see a request counted
 * a moment late, never a torn value, and workers never contend on a shared cache line. */
#ifndef HS_HTTP_METRICS_H
#define HS_HTTP_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum {
  HS_METRICS_MAX_ROUTES = 48, /* route table size cap; index HS_METRICS_MAX_ROUTES-1 = unmatched */
  HS_METRICS_STATUSES = 20,
  HS_METRICS_BUCKETS = 14,
};

typedef enum hs_close_reason {
  HS_CLOSE_NORMAL = 0, /* the peer closed, or finished after GOAWAY */
  HS_CLOSE_IDLE,
  HS_CLOSE_HEADER_TIMEOUT,
  HS_CLOSE_STALLED,
  HS_CLOSE_RAPID_RESET,
  HS_CLOSE_FLOOD, /* nghttp2 reported a flood of frames it must answer */
  HS_CLOSE_PROTOCOL,
  HS_CLOSE_GLITCH,
  HS_CLOSE_CONTROL_FLOOD,
  HS_CLOSE_SHUTDOWN,
  HS_CLOSE_OUTBUF,
  HS_CLOSE_TLS,
  HS_CLOSE_HTTP1,
  HS_CLOSE_ERROR,
  HS_CLOSE_PER_IP, /* the client address had too many connections open */
  HS_CLOSE_REASONS
} hs_close_reason_t;

typedef struct hs_metrics_shard {
  _Atomic uint64_t requests[HS_METRICS_MAX_ROUTES][HS_METRICS_STATUSES];
  _Atomic uint64_t latency[HS_METRICS_MAX_ROUTES][HS_METRICS_BUCKETS]; /* non-cumulative */
  _Atomic uint64_t latency_sum_us[HS_METRICS_MAX_ROUTES];
  _Atomic int64_t conns_open;
  _Atomic int64_t streams_open;
  _Atomic uint64_t conns_accepted;
  _Atomic uint64_t conns_closed[HS_CLOSE_REASONS];
  /* Sessions (written by the worker's store). */
  _Atomic int64_t sessions_live;
  _Atomic uint64_t session_evictions;
  _Atomic uint64_t session_replays;
  _Atomic uint64_t commit_batches;
  _Atomic uint64_t commit_writes;
  /* The compliance log's sealer (audit/sealer.c). */
  _Atomic uint64_t audit_sealed;
  _Atomic uint64_t audit_sealed_tapped; /* of them, handed over in memory (audit/tap.h) */
  _Atomic uint64_t audit_checkpoints;
  _Atomic uint64_t audit_rounds_unread; /* rounds whose every record was handed over */
  /* Records the workers could not hand to the sealer (the tap's own count, copied after each
     round): the sealer read them back from the database. */
  _Atomic uint64_t audit_tap_dropped;
} hs_metrics_shard_t;

/* Sets the route labels (borrowed: must outlive the metrics) and the number of shards.
 * Allocates the shards; call once before workers start. */
int hs_metrics_init(const char *const *route_names, size_t n_routes, unsigned n_shards);
void hs_metrics_free(void);

/* The shard of worker i (0-based). */
hs_metrics_shard_t *hs_metrics_shard(unsigned i);

/* route: index in the route table, or -1 for unmatched. */
void hs_metrics_request(hs_metrics_shard_t *s, int route, int status, uint64_t duration_us);
void hs_metrics_conn_closed(hs_metrics_shard_t *s, hs_close_reason_t reason);
const char *hs_close_reason_name(hs_close_reason_t reason);

/* Appends the Prometheus text exposition of all shards. */
int hs_metrics_render(hs_buf_t *out);

#endif
