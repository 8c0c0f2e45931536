/* loadgen: closed-loop load on the completion route of a running `handsel serve`.
 *
 * N virtual contractors (one dev-auth subject each) each run one session of a looping process:
 * start it (POST /v1/sessions), then complete its current step (POST /v1/sessions/{id}/steps/
 * {seq}) as soon as the previous answer arrives, for as long as the run lasts. Their requests
 * are multiplexed as HTTP/2 streams over M cleartext connections (h2c with prior knowledge),
 * driven by nghttp2's sans-I/O client and one epoll loop per thread.
 *
 * A completion counts when its 200 arrives inside the measured window (after the warm-up), and
 * its latency is the time from submitting the request to the end of the response. Latencies go
 * into a log-linear histogram (HDR-style: 64 sub-buckets per power of two, under 1.6% error).
 *
 * The engine stops a session after a fixed number of steps (1000 by default), so a contractor
 * starts a fresh session after --steps-per-session completions, or when the script ends the
 * visit (`next` is nil). Those starts are counted apart from completions.
 *
 * The run is bounded: after warm-up + duration no new request is sent, answers still in flight
 * get a short grace period, and a watchdog alarm ends the process if anything hangs. Traffic
 * goes only to 127.0.0.1.
 *
 * The last line of output is the summary, one line of key=value pairs:
 *   RESULT completions_per_s=... p50_ms=... p99_ms=... p999_ms=... max_ms=... errors=... */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>
#include <nghttp2/nghttp2.h>

enum {
  MAX_SESSIONS = 100000,
  MAX_CONNECTIONS = 1024,
  MAX_THREADS = 64,
  MAX_STATUS = 600,
  BODY_CAP = 512,           /* request bodies are tiny maps */
  RESPONSE_CAP = 64 * 1024, /* an answer larger than this is not a step */
  READ_CHUNK = 64 * 1024,
  OUT_SOFT_CAP = 64 * 1024, /* bytes gathered from nghttp2 before one send() */
  HIST_SUB_BITS = 6,
  HIST_SUB = 1 << HIST_SUB_BITS,
  HIST_BUCKETS = (64 - HIST_SUB_BITS + 1) * HIST_SUB,
};

/* Backoffs: a refused or broken connection is retried after CONNECT_RETRY_NS; a request that
 * failed (503, a reset stream, ...) is sent again, or its session replaced, after RETRY_NS, so
 * an overloaded server is not flooded by instant retries. */
static const uint64_t CONNECT_RETRY_NS = 100 * 1000 * 1000ull;
static const uint64_t RETRY_NS = 20 * 1000 * 1000ull;

typedef struct config {
  char host[64]; /* always 127.0.0.1 */
  uint16_t port;
  char authority[80];
  unsigned sessions;
  unsigned connections;
  unsigned threads;
  double duration_s;
  double warmup_s;
  double grace_s;
  unsigned steps_per_session;
  char process[65];
  char brand[65];
  char run_id[40]; /* makes this run's refs unique in a database that outlives it */
} config_t;

/* Counters of one thread; merged at the end. Errors are counted over the whole run, warm-up
 * included: a failed request is a failure whenever it happens. */
typedef struct stats {
  uint64_t completions;     /* 200s that arrived inside the measured window */
  uint64_t completions_all; /* 200s over the whole run */
  uint64_t starts;          /* sessions started (200 or 201) over the whole run */
  uint64_t starts_window;
  uint64_t ended;              /* sessions whose script ended the visit */
  uint64_t status[MAX_STATUS]; /* non-2xx answers by HTTP status */
  uint64_t resets;             /* streams closed without a complete answer */
  uint64_t conn_failures;      /* connections refused, broken or closed by the server */
  uint64_t bad_answers;        /* a 2xx whose body was not what the protocol says */
  uint64_t seq_skips;          /* `next.seq` was not the completed seq + 1 */
  uint64_t max_ns;
  uint64_t hist[HIST_BUCKETS];
} stats_t;

typedef struct worker worker_t;
typedef struct conn conn_t;

typedef enum req_kind { REQ_START, REQ_COMPLETE } req_kind_t;

/* One virtual contractor and its current session. */
typedef struct vsess {
  worker_t *w;
  conn_t *conn;
  unsigned index; /* across all threads: names the subject and the refs */
  unsigned gen;   /* how many sessions this contractor started */
  char subject[32];
  char id[64]; /* the session id, "" before the first start */
  char path[160];
  uint64_t seq;          /* the step to complete next */
  uint64_t n;            /* the value sent in the next completion */
  unsigned done_in_sess; /* completions accepted in the current session */
  req_kind_t kind;
  bool in_flight;
  bool queued;
  uint64_t due_ns; /* not before this time (a retry's backoff) */
  uint64_t sent_ns;
  uint8_t body[BODY_CAP];
  size_t body_len;
  size_t body_off;
  char content_length[16];
  int status; /* :status of the answer, 0 until it arrives */
  uint8_t *resp;
  size_t resp_len;
  size_t resp_cap;
  bool resp_too_large;
} vsess_t;

struct conn {
  worker_t *w;
  int fd;
  nghttp2_session *h2;
  bool connecting;
  bool up;
  bool out_armed; /* EPOLLOUT is registered */
  bool dirty;     /* nghttp2 may have frames to send */
  uint64_t retry_at_ns;
  uint8_t *out;
  size_t out_len;
  size_t out_off;
  size_t out_cap;
};

struct worker {
  const config_t *cfg;
  unsigned index;
  int ep;
  conn_t *conns;
  unsigned n_conns;
  vsess_t *sess;
  unsigned n_sess;
  vsess_t **ready; /* sessions whose next request waits to be submitted */
  unsigned n_ready;
  uint64_t t0_ns, window_start_ns, window_end_ns, hard_end_ns;
  bool stopping;
  stats_t st;
  char fatal[200];
};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------ histogram */

/* Values below 2 * HIST_SUB are exact; above, each power of two is split into HIST_SUB equal
 * buckets, so a bucket is at most 1/64 of its value wide. */
static unsigned hist_index(uint64_t v) {
  if (v < 2 * HIST_SUB) {
    return (unsigned)v;
  }
  int msb = 63 - __builtin_clzll(v);
  int shift = msb - HIST_SUB_BITS;
  return (unsigned)(shift + 1) * HIST_SUB + (unsigned)((v >> shift) - HIST_SUB);
}

/* The middle of a bucket: what a percentile that falls in it reports. */
static uint64_t hist_value(unsigned idx) {
  if (idx < 2 * HIST_SUB) {
    return idx;
  }
  unsigned shift = idx / HIST_SUB - 1;
  uint64_t lo = (uint64_t)(idx % HIST_SUB + HIST_SUB) << shift;
  return lo + ((1ull << shift) >> 1);
}

static void hist_record(stats_t *st, uint64_t ns) {
  st->hist[hist_index(ns)]++;
  if (ns > st->max_ns) {
    st->max_ns = ns;
  }
}

static double hist_percentile_ms(const stats_t *st, uint64_t total, double q) {
  if (total == 0) {
    return 0.0;
  }
  uint64_t want = (uint64_t)(q * (double)total);
  if ((double)want < q * (double)total) {
    want++;
  }
  if (want == 0) {
    want = 1;
  }
  uint64_t seen = 0;
  for (unsigned i = 0; i < HIST_BUCKETS; i++) {
    seen += st->hist[i];
    if (seen >= want) {
      uint64_t v = hist_value(i);
      return (double)(v < st->max_ns ? v : st->max_ns) / 1e6;
    }
  }
  return (double)st->max_ns / 1e6;
}

/* ------------------------------------------------------------ request bodies (msgpack-c) */

typedef struct body_writer {
  vsess_t *s;
  bool overflow;
} body_writer_t;

static int body_write(void *data, const char *buf, size_t len) {
  body_writer_t *bw = data;
  if (bw->s->body_len + len > sizeof bw->s->body) {
    bw->overflow = true;
    return -1;
  }
  memcpy(bw->s->body + bw->s->body_len, buf, len);
  bw->s->body_len += len;
  return 0;
}

static void pack_cstr(msgpack_packer *pk, const char *s) {
  size_t n = strlen(s);
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, s, n);
}

/* {process, customer: {name}, ref}: the ref makes a retried start return the same session. */
static int build_start(vsess_t *s) {
  const config_t *cfg = s->w->cfg;
  char name[48], ref[128];
  snprintf(name, sizeof name, "Load %u", s->index);
  snprintf(ref, sizeof ref, "loadgen-%s-%u-%u", cfg->run_id, s->index, s->gen);
  body_writer_t bw = {.s = s, .overflow = false};
  msgpack_packer pk;
  msgpack_packer_init(&pk, &bw, body_write);
  s->body_len = 0;
  msgpack_pack_map(&pk, 3);
  pack_cstr(&pk, "process");
  pack_cstr(&pk, cfg->process);
  pack_cstr(&pk, "customer");
  msgpack_pack_map(&pk, 1);
  pack_cstr(&pk, "name");
  pack_cstr(&pk, name);
  pack_cstr(&pk, "ref");
  pack_cstr(&pk, ref);
  snprintf(s->path, sizeof s->path, "/v1/sessions");
  return bw.overflow ? -1 : 0;
}

/* {data: {n}}: the loop process's one integer field. */
static int build_complete(vsess_t *s) {
  body_writer_t bw = {.s = s, .overflow = false};
  msgpack_packer pk;
  msgpack_packer_init(&pk, &bw, body_write);
  s->body_len = 0;
  msgpack_pack_map(&pk, 1);
  pack_cstr(&pk, "data");
  msgpack_pack_map(&pk, 1);
  pack_cstr(&pk, "n");
  msgpack_pack_uint64(&pk, s->n);
  snprintf(s->path, sizeof s->path, "/v1/sessions/%s/steps/%" PRIu64, s->id, s->seq);
  return bw.overflow ? -1 : 0;
}

/* ------------------------------------------------------------ answers */

static const msgpack_object *map_get(const msgpack_object *m, const char *key) {
  if (m == NULL || m->type != MSGPACK_OBJECT_MAP) {
    return NULL;
  }
  size_t n = strlen(key);
  for (uint32_t i = 0; i < m->via.map.size; i++) {
    const msgpack_object *k = &m->via.map.ptr[i].key;
    if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
        memcmp(k->via.str.ptr, key, n) == 0) {
      return &m->via.map.ptr[i].val;
    }
  }
  return NULL;
}

static bool get_seq(const msgpack_object *step, uint64_t *out) {
  const msgpack_object *seq = map_get(step, "seq");
  if (seq == NULL || seq->type != MSGPACK_OBJECT_POSITIVE_INTEGER || seq->via.u64 == 0) {
    return false;
  }
  *out = seq->via.u64;
  return true;
}

static void enqueue(vsess_t *s, uint64_t due_ns) {
  s->due_ns = due_ns;
  if (!s->queued) {
    s->queued = true;
    s->w->ready[s->w->n_ready++] = s;
  }
}

/* The next request is a new session for this contractor. */
static void restart(vsess_t *s, uint64_t due_ns) {
  s->gen++;
  s->kind = REQ_START;
  s->id[0] = '\0';
  s->done_in_sess = 0;
  if (build_start(s) != 0) {
    snprintf(s->w->fatal, sizeof s->w->fatal, "a session start body does not fit in %d bytes",
             BODY_CAP);
    return;
  }
  enqueue(s, due_ns);
}

static void next_completion(vsess_t *s, uint64_t seq) {
  s->kind = REQ_COMPLETE;
  s->seq = seq;
  s->n++;
  if (build_complete(s) != 0) {
    snprintf(s->w->fatal, sizeof s->w->fatal, "a completion body does not fit in %d bytes",
             BODY_CAP);
    return;
  }
  enqueue(s, 0);
}

static bool in_window(const worker_t *w, uint64_t t) {
  return t >= w->window_start_ns && t < w->window_end_ns;
}

/* A 2xx to a start: {session: {id, ...}, step: {seq, ...}}. */
static void on_started(vsess_t *s, const msgpack_object *root, uint64_t t) {
  worker_t *w = s->w;
  const msgpack_object *sess = map_get(root, "session");
  const msgpack_object *id = map_get(sess, "id");
  uint64_t seq = 0;
  if (id == NULL || id->type != MSGPACK_OBJECT_STR || id->via.str.size == 0 ||
      id->via.str.size >= sizeof s->id || !get_seq(map_get(root, "step"), &seq)) {
    w->st.bad_answers++;
    restart(s, t + RETRY_NS);
    return;
  }
  memcpy(s->id, id->via.str.ptr, id->via.str.size);
  s->id[id->via.str.size] = '\0';
  w->st.starts++;
  if (in_window(w, t)) {
    w->st.starts_window++;
  }
  next_completion(s, seq);
}

/* A 200 to a completion: {status: "accepted", next: step or nil}. */
static void on_completed(vsess_t *s, const msgpack_object *root, uint64_t t) {
  worker_t *w = s->w;
  const msgpack_object *status = map_get(root, "status");
  const msgpack_object *next = map_get(root, "next");
  if (status == NULL || status->type != MSGPACK_OBJECT_STR || status->via.str.size != 8 ||
      memcmp(status->via.str.ptr, "accepted", 8) != 0 || next == NULL) {
    w->st.bad_answers++;
    restart(s, t + RETRY_NS);
    return;
  }
  w->st.completions_all++;
  if (in_window(w, t)) {
    w->st.completions++;
    hist_record(&w->st, t - s->sent_ns);
  }
  s->done_in_sess++;
  if (next->type == MSGPACK_OBJECT_NIL) {
    w->st.ended++;
    restart(s, 0);
    return;
  }
  uint64_t seq = 0;
  if (!get_seq(next, &seq)) {
    w->st.bad_answers++;
    restart(s, t + RETRY_NS);
    return;
  }
  if (seq != s->seq + 1) {
    w->st.seq_skips++;
  }
  if (w->cfg->steps_per_session > 0 && s->done_in_sess >= w->cfg->steps_per_session) {
    restart(s, 0);
    return;
  }
  next_completion(s, seq);
}

/* The stream of s ended: read its answer and choose the next request. */
static void on_answer(vsess_t *s, uint32_t error_code) {
  worker_t *w = s->w;
  uint64_t t = now_ns();
  s->in_flight = false;
  int status = s->status;
  if (status == 0 || error_code != NGHTTP2_NO_ERROR || s->resp_too_large) {
    /* No complete answer: the same request again is safe, since starts (by ref) and
     * completions (by session and seq) are idempotent. */
    w->st.resets++;
    enqueue(s, t + RETRY_NS);
    return;
  }
  if (status < 200 || status >= 300) {
    w->st.status[status < MAX_STATUS ? status : 0]++;
    if (status == 503 || status == 429) {
      enqueue(s, t + RETRY_NS); /* overload: the same request, later */
    } else {
      restart(s, t + RETRY_NS); /* 409, 500, ...: this session cannot go on */
    }
    return;
  }
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  size_t off = 0;
  if (msgpack_unpack_next(&u, (const char *)s->resp, s->resp_len, &off) != MSGPACK_UNPACK_SUCCESS ||
      off != s->resp_len || u.data.type != MSGPACK_OBJECT_MAP) {
    w->st.bad_answers++;
    restart(s, t + RETRY_NS);
  } else if (s->kind == REQ_START) {
    on_started(s, &u.data, t);
  } else if (status != 200) {
    w->st.bad_answers++;
    restart(s, t + RETRY_NS);
  } else {
    on_completed(s, &u.data, t);
  }
  msgpack_unpacked_destroy(&u);
}

/* ------------------------------------------------------------ nghttp2 callbacks */

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data) {
  (void)flags;
  (void)user_data;
  if (frame->hd.type != NGHTTP2_HEADERS || namelen != 7 || memcmp(name, ":status", 7) != 0) {
    return 0;
  }
  vsess_t *s = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
  if (s == NULL) {
    return 0;
  }
  int v = 0;
  for (size_t i = 0; i < valuelen && i < 3; i++) {
    v = v * 10 + (value[i] - '0');
  }
  s->status = v;
  return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t stream_id, const uint8_t *data,
                         size_t len, void *user_data) {
  (void)flags;
  (void)user_data;
  vsess_t *s = nghttp2_session_get_stream_user_data(h2, stream_id);
  if (s == NULL || s->resp_too_large) {
    return 0;
  }
  if (s->resp_len + len > RESPONSE_CAP) {
    s->resp_too_large = true;
    return 0;
  }
  if (s->resp_len + len > s->resp_cap) {
    size_t cap = s->resp_cap > 0 ? s->resp_cap : 1024;
    while (cap < s->resp_len + len) {
      cap *= 2;
    }
    uint8_t *p = realloc(s->resp, cap);
    if (p == NULL) {
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    s->resp = p;
    s->resp_cap = cap;
  }
  memcpy(s->resp + s->resp_len, data, len);
  s->resp_len += len;
  return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t stream_id, uint32_t error_code,
                           void *user_data) {
  (void)user_data;
  vsess_t *s = nghttp2_session_get_stream_user_data(h2, stream_id);
  if (s != NULL && s->in_flight) {
    on_answer(s, error_code);
  }
  return 0;
}

static ssize_t body_read(nghttp2_session *h2, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user_data) {
  (void)h2;
  (void)stream_id;
  (void)user_data;
  vsess_t *s = source->ptr;
  size_t n = s->body_len - s->body_off;
  if (n > length) {
    n = length;
  }
  memcpy(buf, s->body + s->body_off, n);
  s->body_off += n;
  if (s->body_off == s->body_len) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  }
  return (ssize_t)n;
}

/* ------------------------------------------------------------ connections */

static void conn_arm(conn_t *c, bool want_out) {
  if (c->fd < 0 || (c->out_armed == want_out && !c->connecting)) {
    return;
  }
  struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0u), .data.ptr = c};
  epoll_ctl(c->w->ep, EPOLL_CTL_MOD, c->fd, &ev);
  c->out_armed = want_out;
}

/* The connection is gone: every request on it goes back to the queue, to be sent again once
 * the connection is back (they are idempotent). */
static void conn_fail(conn_t *c, uint64_t t) {
  worker_t *w = c->w;
  w->st.conn_failures++;
  if (c->h2 != NULL) {
    nghttp2_session_del(c->h2); /* calls no callbacks */
    c->h2 = NULL;
  }
  if (c->fd >= 0) {
    epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
  }
  c->up = false;
  c->connecting = false;
  c->out_armed = false;
  c->dirty = false;
  c->out_len = c->out_off = 0;
  c->retry_at_ns = t + CONNECT_RETRY_NS;
  for (unsigned i = 0; i < w->n_sess; i++) {
    vsess_t *s = &w->sess[i];
    if (s->conn == c && s->in_flight) {
      s->in_flight = false;
      enqueue(s, 0);
    }
  }
}

static int conn_connect(conn_t *c) {
  const config_t *cfg = c->w->cfg;
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) {
    return -1;
  }
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons(cfg->port);
  inet_pton(AF_INET, cfg->host, &sa.sin_addr);
  if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS) {
    close(c->fd);
    c->fd = -1;
    return -1;
  }
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
  if (epoll_ctl(c->w->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
    close(c->fd);
    c->fd = -1;
    return -1;
  }
  c->connecting = true;
  c->out_armed = true;
  return 0;
}

static int conn_start_h2(conn_t *c) {
  nghttp2_session_callbacks *cbs;
  if (nghttp2_session_callbacks_new(&cbs) != 0) {
    return -1;
  }
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  int rc = nghttp2_session_client_new(&c->h2, cbs, c);
  nghttp2_session_callbacks_del(cbs);
  if (rc != 0) {
    c->h2 = NULL;
    return -1;
  }
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
  };
  if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0 ||
      nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, 1 << 24) != 0) {
    return -1;
  }
  c->dirty = true;
  return 0;
}

/* Sends what nghttp2 has queued, gathering frames into one buffer per send(); what the socket
 * does not take waits for EPOLLOUT. */
static int conn_flush(conn_t *c) {
  if (!c->up || c->h2 == NULL) {
    return 0;
  }
  c->dirty = false;
  for (;;) {
    while (c->out_off < c->out_len) {
      ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) {
          continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          conn_arm(c, true);
          return 0;
        }
        return -1;
      }
      c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    while (c->out_len < OUT_SOFT_CAP) {
      const uint8_t *data = NULL;
      ssize_t n = nghttp2_session_mem_send(c->h2, &data);
      if (n < 0) {
        return -1;
      }
      if (n == 0) {
        break;
      }
      if (c->out_len + (size_t)n > c->out_cap) {
        size_t cap = c->out_cap > 0 ? c->out_cap : OUT_SOFT_CAP;
        while (cap < c->out_len + (size_t)n) {
          cap *= 2;
        }
        uint8_t *p = realloc(c->out, cap);
        if (p == NULL) {
          return -1;
        }
        c->out = p;
        c->out_cap = cap;
      }
      memcpy(c->out + c->out_len, data, (size_t)n);
      c->out_len += (size_t)n;
    }
    if (c->out_len == 0) {
      conn_arm(c, false);
      if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2)) {
        return -1; /* GOAWAY exchanged and nothing left: this connection is done */
      }
      return 0;
    }
  }
}

static int conn_read(conn_t *c) {
  uint8_t buf[READ_CHUNK];
  for (;;) {
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return 0;
      }
      return -1;
    }
    if (n == 0) {
      return -1; /* the server closed the connection */
    }
    ssize_t used = nghttp2_session_mem_recv(c->h2, buf, (size_t)n);
    if (used < 0 || used != n) {
      return -1;
    }
    c->dirty = true; /* WINDOW_UPDATE, SETTINGS ACK, ... */
    if ((size_t)n < sizeof buf) {
      return 0;
    }
  }
}

static void conn_event(conn_t *c, uint32_t events, uint64_t t) {
  if (c->connecting) {
    int err = 0;
    socklen_t len = sizeof err;
    if ((events & (EPOLLERR | EPOLLHUP)) != 0 ||
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      conn_fail(c, t);
      return;
    }
    if ((events & EPOLLOUT) == 0) {
      return;
    }
    c->connecting = false;
    c->up = true;
    if (conn_start_h2(c) != 0) {
      conn_fail(c, t);
      return;
    }
    conn_arm(c, false);
    return;
  }
  if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0 && conn_read(c) != 0) {
    conn_fail(c, t);
    return;
  }
  if ((events & EPOLLOUT) != 0) {
    c->dirty = true;
  }
}

/* ------------------------------------------------------------ the loop */

static int submit(vsess_t *s, uint64_t t) {
  conn_t *c = s->conn;
  const config_t *cfg = s->w->cfg;
  snprintf(s->content_length, sizeof s->content_length, "%zu", s->body_len);
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}
  nghttp2_nv nva[] = {
      NV(":method", "POST"),
      NV(":scheme", "http"),
      NV(":authority", cfg->authority),
      NV(":path", s->path),
      NV("content-type", "application/msgpack"),
      NV("accept", "application/msgpack"),
      NV("content-length", s->content_length),
      NV("x-handsel-dev-brand", cfg->brand),
      NV("x-handsel-dev-role", "contractor"),
      NV("x-handsel-dev-subject", s->subject),
  };
#undef NV
  nghttp2_data_provider prd = {.source.ptr = s, .read_callback = body_read};
  s->body_off = 0;
  s->status = 0;
  s->resp_len = 0;
  s->resp_too_large = false;
  int32_t id = nghttp2_submit_request(c->h2, NULL, nva, sizeof nva / sizeof nva[0], &prd, s);
  if (id < 0) {
    return -1;
  }
  s->in_flight = true;
  s->sent_ns = t;
  c->dirty = true;
  return 0;
}

/* Sends every queued request that is due and whose connection is up; keeps the others. */
static void submit_ready(worker_t *w, uint64_t t, uint64_t *next_due) {
  unsigned keep = 0;
  for (unsigned i = 0; i < w->n_ready; i++) {
    vsess_t *s = w->ready[i];
    if (w->stopping) {
      s->queued = false;
      continue;
    }
    if (s->due_ns > t || !s->conn->up) {
      uint64_t due = s->due_ns > t ? s->due_ns : t + 1000000;
      if (due < *next_due) {
        *next_due = due;
      }
      w->ready[keep++] = s;
      continue;
    }
    s->queued = false;
    if (submit(s, t) != 0) {
      snprintf(w->fatal, sizeof w->fatal, "nghttp2 refused a request");
      return;
    }
  }
  w->n_ready = keep;
}

static unsigned in_flight(const worker_t *w) {
  unsigned n = 0;
  for (unsigned i = 0; i < w->n_sess; i++) {
    n += w->sess[i].in_flight ? 1u : 0u;
  }
  return n;
}

static void *worker_run(void *arg) {
  worker_t *w = arg;
  struct epoll_event events[256];
  for (;;) {
    uint64_t t = now_ns();
    if (w->fatal[0] != '\0' || t >= w->hard_end_ns) {
      break;
    }
    if (!w->stopping && t >= w->window_end_ns) {
      w->stopping = true;
    }
    if (w->stopping && in_flight(w) == 0) {
      break;
    }
    uint64_t next_due = t + 50 * 1000000ull;
    for (unsigned i = 0; i < w->n_conns; i++) {
      conn_t *c = &w->conns[i];
      if (c->fd < 0 && !w->stopping) {
        if (c->retry_at_ns <= t) {
          if (conn_connect(c) != 0) {
            w->st.conn_failures++;
            c->retry_at_ns = t + CONNECT_RETRY_NS;
          }
        }
        if (c->fd < 0 && c->retry_at_ns < next_due) {
          next_due = c->retry_at_ns;
        }
      }
    }
    submit_ready(w, t, &next_due);
    for (unsigned i = 0; i < w->n_conns; i++) {
      conn_t *c = &w->conns[i];
      if (c->dirty && conn_flush(c) != 0) {
        conn_fail(c, t);
      }
    }
    uint64_t until = w->stopping ? w->hard_end_ns : w->window_end_ns;
    if (next_due > until) {
      next_due = until;
    }
    int timeout_ms = next_due > t ? (int)((next_due - t + 999999) / 1000000) : 0;
    int n = epoll_wait(w->ep, events, (int)(sizeof events / sizeof events[0]), timeout_ms);
    if (n < 0 && errno != EINTR) {
      snprintf(w->fatal, sizeof w->fatal, "epoll_wait: %s", strerror(errno));
      break;
    }
    t = now_ns();
    for (int i = 0; i < n; i++) {
      conn_t *c = events[i].data.ptr;
      if (c->fd >= 0) {
        conn_event(c, events[i].events, t);
      }
    }
  }
  return NULL;
}

/* ------------------------------------------------------------ set-up and report */

static void usage(FILE *f) {
  fprintf(f, "usage: loadgen [options]\n"
             "  --url URL              the server, http://127.0.0.1:PORT (h2c; default "
             "http://127.0.0.1:8080)\n"
             "  --sessions N           concurrent sessions, one contractor each (default 256)\n"
             "  --connections M        HTTP/2 connections they share (default 8)\n"
             "  -t, --threads T        threads, each with its share of both (default 1)\n"
             "  --duration S           seconds measured after the warm-up (default 10)\n"
             "  --warmup S             seconds of load before measuring (default 2)\n"
             "  --process NAME         a deployed process whose steps loop on one integer field\n"
             "                         `n` (default bench-loop)\n"
             "  --brand NAME           the development brand (default bench)\n"
             "  --steps-per-session K  start a new session after K completions, below the\n"
             "                         engine's step limit; 0 never (default 900)\n"
             "Needs a server started with HANDSEL_DEV_AUTH=1. The last line printed is\n"
             "RESULT key=value ...; the exit status is 1 when nothing was completed.\n");
}

static int parse_double(const char *s, double lo, double hi, double *out) {
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !(v >= lo && v <= hi)) {
    return -1;
  }
  *out = v;
  return 0;
}

static int parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out) {
  char *end = NULL;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < lo || v > hi) {
    return -1;
  }
  *out = (unsigned)v;
  return 0;
}

/* http://127.0.0.1:PORT[/]: cleartext only, and only this machine's loopback address. */
static int parse_url(const char *url, config_t *cfg) {
  const char *p = url;
  if (strncmp(p, "http://", 7) != 0) {
    return -1;
  }
  p += 7;
  const char *colon = strchr(p, ':');
  if (colon == NULL) {
    return -1;
  }
  size_t hlen = (size_t)(colon - p);
  if (!((hlen == 9 && strncmp(p, "127.0.0.1", 9) == 0) ||
        (hlen == 9 && strncmp(p, "localhost", 9) == 0))) {
    return -1;
  }
  unsigned port = 0;
  char portbuf[8];
  const char *end = colon + 1;
  size_t plen = strcspn(end, "/");
  if (plen == 0 || plen >= sizeof portbuf || (end[plen] == '/' && end[plen + 1] != '\0')) {
    return -1;
  }
  memcpy(portbuf, end, plen);
  portbuf[plen] = '\0';
  if (parse_uint(portbuf, 1, 65535, &port) != 0) {
    return -1;
  }
  snprintf(cfg->host, sizeof cfg->host, "127.0.0.1");
  cfg->port = (uint16_t)port;
  snprintf(cfg->authority, sizeof cfg->authority, "127.0.0.1:%u", port);
  return 0;
}

static bool valid_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 64) {
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) {
      return false;
    }
  }
  return true;
}

static int parse_args(int argc, char **argv, config_t *cfg) {
  memset(cfg, 0, sizeof *cfg);
  parse_url("http://127.0.0.1:8080", cfg);
  cfg->sessions = 256;
  cfg->connections = 8;
  cfg->threads = 1;
  cfg->duration_s = 10;
  cfg->warmup_s = 2;
  cfg->grace_s = 5;
  cfg->steps_per_session = 900;
  snprintf(cfg->process, sizeof cfg->process, "bench-loop");
  snprintf(cfg->brand, sizeof cfg->brand, "bench");
  enum {
    OPT_URL = 256,
    OPT_SESSIONS,
    OPT_CONNS,
    OPT_DURATION,
    OPT_WARMUP,
    OPT_PROCESS,
    OPT_BRAND,
    OPT_STEPS
  };
  static const struct option opts[] = {
      {"url", required_argument, NULL, OPT_URL},
      {"sessions", required_argument, NULL, OPT_SESSIONS},
      {"connections", required_argument, NULL, OPT_CONNS},
      {"threads", required_argument, NULL, 't'},
      {"duration", required_argument, NULL, OPT_DURATION},
      {"warmup", required_argument, NULL, OPT_WARMUP},
      {"process", required_argument, NULL, OPT_PROCESS},
      {"brand", required_argument, NULL, OPT_BRAND},
      {"steps-per-session", required_argument, NULL, OPT_STEPS},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  int ch;
  while ((ch = getopt_long(argc, argv, "t:h", opts, NULL)) != -1) {
    int bad = 0;
    const char *what = NULL;
    switch (ch) {
      case OPT_URL:
        what = "--url must be http://127.0.0.1:PORT (this tool only loads the local machine)";
        bad = parse_url(optarg, cfg);
        break;
      case OPT_SESSIONS:
        what = "--sessions must be 1 to 100000";
        bad = parse_uint(optarg, 1, MAX_SESSIONS, &cfg->sessions);
        break;
      case OPT_CONNS:
        what = "--connections must be 1 to 1024";
        bad = parse_uint(optarg, 1, MAX_CONNECTIONS, &cfg->connections);
        break;
      case 't':
        what = "--threads must be 1 to 64";
        bad = parse_uint(optarg, 1, MAX_THREADS, &cfg->threads);
        break;
      case OPT_DURATION:
        what = "--duration must be 0.1 to 3600 seconds";
        bad = parse_double(optarg, 0.1, 3600, &cfg->duration_s);
        break;
      case OPT_WARMUP:
        what = "--warmup must be 0 to 600 seconds";
        bad = parse_double(optarg, 0, 600, &cfg->warmup_s);
        break;
      case OPT_PROCESS:
        what = "--process must be a process name (a-z, 0-9, -, at most 64 bytes)";
        bad = valid_name(optarg) ? 0 : -1;
        snprintf(cfg->process, sizeof cfg->process, "%s", optarg);
        break;
      case OPT_BRAND:
        what = "--brand must be a brand name (a-z, 0-9, -, at most 64 bytes)";
        bad = valid_name(optarg) ? 0 : -1;
        snprintf(cfg->brand, sizeof cfg->brand, "%s", optarg);
        break;
      case OPT_STEPS:
        what = "--steps-per-session must be 0 to 1000000";
        bad = parse_uint(optarg, 0, 1000000, &cfg->steps_per_session);
        break;
      case 'h':
        usage(stdout);
        exit(0);
      default:
        usage(stderr);
        return -1;
    }
    if (bad != 0) {
      fprintf(stderr, "loadgen: %s, got '%s'\n", what, optarg);
      return -1;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "loadgen: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return -1;
  }
  if (cfg->threads > cfg->connections || cfg->connections > cfg->sessions) {
    fprintf(stderr, "loadgen: need threads <= connections <= sessions (got %u, %u, %u)\n",
            cfg->threads, cfg->connections, cfg->sessions);
    return -1;
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  snprintf(cfg->run_id, sizeof cfg->run_id, "%lld-%ld-%d", (long long)ts.tv_sec, ts.tv_nsec / 1000,
           (int)getpid());
  return 0;
}

static void stats_merge(stats_t *into, const stats_t *from) {
  into->completions += from->completions;
  into->completions_all += from->completions_all;
  into->starts += from->starts;
  into->starts_window += from->starts_window;
  into->ended += from->ended;
  for (unsigned i = 0; i < MAX_STATUS; i++) {
    into->status[i] += from->status[i];
  }
  into->resets += from->resets;
  into->conn_failures += from->conn_failures;
  into->bad_answers += from->bad_answers;
  into->seq_skips += from->seq_skips;
  if (from->max_ns > into->max_ns) {
    into->max_ns = from->max_ns;
  }
  for (unsigned i = 0; i < HIST_BUCKETS; i++) {
    into->hist[i] += from->hist[i];
  }
}

static int worker_init(worker_t *w, const config_t *cfg, unsigned index, uint64_t t0) {
  memset(w, 0, sizeof *w);
  w->cfg = cfg;
  w->index = index;
  w->ep = epoll_create1(EPOLL_CLOEXEC);
  unsigned c_lo = cfg->connections * index / cfg->threads;
  unsigned c_hi = cfg->connections * (index + 1) / cfg->threads;
  unsigned s_lo = cfg->sessions * index / cfg->threads;
  unsigned s_hi = cfg->sessions * (index + 1) / cfg->threads;
  w->n_conns = c_hi - c_lo;
  w->n_sess = s_hi - s_lo;
  w->conns = calloc(w->n_conns, sizeof *w->conns);
  w->sess = calloc(w->n_sess, sizeof *w->sess);
  w->ready = calloc(w->n_sess, sizeof *w->ready);
  if (w->ep < 0 || w->conns == NULL || w->sess == NULL || w->ready == NULL) {
    return -1;
  }
  w->t0_ns = t0;
  w->window_start_ns = t0 + (uint64_t)(cfg->warmup_s * 1e9);
  w->window_end_ns = w->window_start_ns + (uint64_t)(cfg->duration_s * 1e9);
  w->hard_end_ns = w->window_end_ns + (uint64_t)(cfg->grace_s * 1e9);
  for (unsigned i = 0; i < w->n_conns; i++) {
    w->conns[i].w = w;
    w->conns[i].fd = -1;
  }
  for (unsigned i = 0; i < w->n_sess; i++) {
    vsess_t *s = &w->sess[i];
    s->w = w;
    s->index = s_lo + i;
    s->conn = &w->conns[i % w->n_conns];
    snprintf(s->subject, sizeof s->subject, "loadgen-%u", s->index);
    s->gen = 0;
    restart(s, 0);
  }
  return 0;
}

static void worker_free(worker_t *w) {
  for (unsigned i = 0; i < w->n_conns; i++) {
    conn_t *c = &w->conns[i];
    if (c->h2 != NULL) {
      nghttp2_session_del(c->h2);
    }
    if (c->fd >= 0) {
      close(c->fd);
    }
    free(c->out);
  }
  for (unsigned i = 0; w->sess != NULL && i < w->n_sess; i++) {
    free(w->sess[i].resp);
  }
  if (w->ep >= 0) {
    close(w->ep);
  }
  free(w->conns);
  free(w->sess);
  free(w->ready);
}

int main(int argc, char **argv) {
  config_t cfg;
  if (parse_args(argc, argv, &cfg) != 0) {
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  /* A watchdog: whatever happens, the process ends a little after the run should have. */
  alarm((unsigned)(cfg.warmup_s + cfg.duration_s + cfg.grace_s) + 30);

  printf("loadgen: %u sessions over %u HTTP/2 connections (%u thread%s) to %s, process %s;"
         " warm-up %.1f s, measured %.1f s\n",
         cfg.sessions, cfg.connections, cfg.threads, cfg.threads == 1 ? "" : "s", cfg.authority,
         cfg.process, cfg.warmup_s, cfg.duration_s);
  fflush(stdout);

  worker_t *workers = calloc(cfg.threads, sizeof *workers);
  pthread_t *tids = calloc(cfg.threads, sizeof *tids);
  stats_t *total = calloc(1, sizeof *total);
  if (workers == NULL || tids == NULL || total == NULL) {
    fprintf(stderr, "loadgen: out of memory\n");
    return 1;
  }
  uint64_t t0 = now_ns();
  int rc = 0;
  for (unsigned i = 0; i < cfg.threads; i++) {
    if (worker_init(&workers[i], &cfg, i, t0) != 0) {
      fprintf(stderr, "loadgen: out of memory or file descriptors\n");
      return 1;
    }
  }
  unsigned started = 0;
  for (unsigned i = 0; i < cfg.threads; i++) {
    if (pthread_create(&tids[i], NULL, worker_run, &workers[i]) != 0) {
      fprintf(stderr, "loadgen: cannot start thread %u\n", i);
      rc = 1;
      break;
    }
    started++;
  }
  for (unsigned i = 0; i < started; i++) {
    pthread_join(tids[i], NULL);
  }
  const char *fatal = NULL;
  for (unsigned i = 0; i < cfg.threads; i++) {
    stats_merge(total, &workers[i].st);
    if (workers[i].fatal[0] != '\0') {
      fatal = workers[i].fatal;
    }
  }
  if (fatal != NULL) {
    fprintf(stderr, "loadgen: %s\n", fatal);
    rc = 1;
  }

  const stats_t *st = total;
  double rate = (double)st->completions / cfg.duration_s;
  double p50 = hist_percentile_ms(st, st->completions, 0.50);
  double p90 = hist_percentile_ms(st, st->completions, 0.90);
  double p99 = hist_percentile_ms(st, st->completions, 0.99);
  double p999 = hist_percentile_ms(st, st->completions, 0.999);
  double max = (double)st->max_ns / 1e6;
  uint64_t errors = st->resets + st->bad_answers + st->conn_failures;
  char by_status[512] = "";
  size_t off = 0;
  for (unsigned i = 0; i < MAX_STATUS; i++) {
    if (st->status[i] == 0) {
      continue;
    }
    errors += st->status[i];
    int n = snprintf(by_status + off, sizeof by_status - off, "%s%u:%" PRIu64, off > 0 ? "," : "",
                     i, st->status[i]);
    if (n < 0 || (size_t)n >= sizeof by_status - off) {
      break;
    }
    off += (size_t)n;
  }
  printf("  completions  %" PRIu64 " in the window, %.0f/s (%" PRIu64 " in the whole run)\n",
         st->completions, rate, st->completions_all);
  printf("  latency ms   p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n", p50, p90, p99, p999,
         max);
  printf("  sessions     %" PRIu64 " started (%" PRIu64 " in the window), %" PRIu64
         " ended by the script\n",
         st->starts, st->starts_window, st->ended);
  printf("  errors       %" PRIu64 ": by status {%s}, reset streams %" PRIu64
         ", bad answers %" PRIu64 ", connection failures %" PRIu64 ", seq skips %" PRIu64 "\n",
         errors, by_status, st->resets, st->bad_answers, st->conn_failures, st->seq_skips);
  printf("RESULT completions_per_s=%.1f completions=%" PRIu64 " completions_all=%" PRIu64
         " p50_ms=%.3f p90_ms=%.3f"
         " p99_ms=%.3f p999_ms=%.3f max_ms=%.3f errors=%" PRIu64 " by_status=%s"
         " conn_failures=%" PRIu64 " starts=%" PRIu64 " sessions=%u connections=%u threads=%u"
         " duration_s=%.1f\n",
         rate, st->completions, st->completions_all, p50, p90, p99, p999, max, errors,
         off > 0 ? by_status : "-", st->conn_failures, st->starts, cfg.sessions, cfg.connections,
         cfg.threads, cfg.duration_s);
  if (st->completions == 0) {
    fprintf(stderr,
            "loadgen: no completion succeeded in the window: is `handsel serve` "
            "listening on %s with HANDSEL_DEV_AUTH=1, and is process %s deployed?\n",
            cfg.authority, cfg.process);
    rc = 1;
  }
  for (unsigned i = 0; i < cfg.threads; i++) {
    worker_free(&workers[i]);
  }
  free(workers);
  free(tids);
  free(total);
  return rc;
}
