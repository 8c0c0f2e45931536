/* One client connection: protocol sniffing, optional TLS, the HTTP/2 session, and every limit
 * that keeps one client from hurting the others.
 *
 * Byte flow. Input: socket -> (TLS: memory BIO -> SSL_read) -> sniff -> nghttp2, fed in bounded
 * chunks with a flush between them, as nghttp2's own flood defences require. Output: nghttp2 ->
 * (TLS: SSL_write -> memory BIO) -> `pending` -> one uv_write at a time (`inflight`). We stop
 * asking nghttp2 for bytes, and stop reading, while more than config.conn_outbuf bytes wait for
 * the socket: a client that does not read cannot make us buffer more than that.
 *
 * Lifetime. A connection is freed only in its uv_close callback (the libuv rule); a stream is
 * freed in nghttp2's on_stream_close callback or when its connection closes, after its
 * handler's on_cancel has run. */
#define _GNU_SOURCE /* memmem */
#include <jansson.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <uv.h>

#include "core/log.h"
#include "core/str.h"
#include "http/conn_limit.h"
#include "http/request.h"
#include "http/tls.h"
#include "http/worker.h"

/* Feeding nghttp2 at most this much at a time lets it notice a flood (and us flush its
 * GOAWAY) before it has queued work for the whole read. */
enum { FEED_CHUNK = 4096 };
static const char k_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
enum { PREFACE_LEN = sizeof k_preface - 1 };

typedef struct hs_stream hs_stream_t;

typedef enum conn_state {
  CONN_SNIFF_RAW, /* nothing read yet: TLS or cleartext? */
  CONN_TLS_HANDSHAKE,
  CONN_SNIFF_PLAIN, /* cleartext (or decrypted): HTTP/2 preface or HTTP/1.x? */
  CONN_H2,
  CONN_DONE, /* answered HTTP/1.x or failed: only flushing before close */
} conn_state_t;

struct hs_stream {
  hs_req_t req; /* first: a handler's hs_req_t* is the stream */
  hs_conn_t *conn;
  int32_t id;
  hs_stream_t *prev, *next;
  size_t hdr_bytes; /* name + value + 32 per field so far */
  uint32_t hdr_count;
  uint64_t content_length; /* UINT64_MAX when not sent */
  uint64_t start_ns;
  int status;
  bool routed;     /* req.match is set */
  bool accept_set; /* Accept named a format; otherwise answers follow the request's format */
  bool dispatched; /* the handler has the request */
  bool answered;   /* headers submitted */
  bool body_done;  /* no more body bytes will be queued */
  bool rejected;   /* answered early (413): further DATA is dropped, then RST NO_ERROR */
  bool deferred;   /* nghttp2 is waiting for hs_req_stream_write */
  bool want_drain; /* the producer hit stream_outbuf and waits for on_drain */
  hs_buf_t out;    /* response body not yet handed to nghttp2 */
  size_t out_off;
};

struct hs_conn {
  uv_tcp_t tcp; /* first: freed in its close callback */
  hs_worker_t *worker;
  hs_conn_t *prev, *next;
  conn_state_t state;
  nghttp2_session *h2;
  SSL *ssl;
  BIO *rbio, *wbio; /* owned by ssl */
  uint8_t sniff[PREFACE_LEN];
  size_t sniff_len;

  hs_buf_t pending;  /* bytes waiting for the socket */
  hs_buf_t inflight; /* bytes of the uv_write in progress */
  uv_write_t wreq;
  bool writing;
  bool read_paused;
  bool in_nghttp2; /* inside mem_recv/mem_send: no re-entrant flush */
  bool closing;    /* GOAWAY or error sent: close once flushed */
  bool closed;
  bool goaway_drain;   /* server draining: close once no stream is left */
  bool flush_queued;   /* on the worker's flush list */
  bool per_ip_counted; /* holds one count in the worker's per-address limit */
  char peer[64];       /* the client's address, for the per-address limit */
  hs_conn_t *flush_next;
  hs_close_reason_t reason;

  hs_stream_t *streams;
  unsigned n_streams;
  size_t streams_buffered; /* sum of unsent stream body bytes */

  uint64_t last_activity; /* ms: last byte in, or last stream closed */
  uint64_t last_progress; /* ms: last byte the peer took */
  uint64_t header_since;  /* ms: when the open header block began */
  bool header_open;
  uint64_t closing_since;
  uint64_t control_window_start;
  uint32_t control_frames;
  uint32_t glitches;
  uint32_t resets_received;
};

static void conn_flush(hs_conn_t *c);
static void conn_close(hs_conn_t *c, hs_close_reason_t reason);
static void conn_fail(hs_conn_t *c, hs_close_reason_t reason, uint32_t h2_error);
static void stream_free(hs_stream_t *st);

hs_conn_t *hs_conn_next(hs_conn_t *c) {
  return c->next;
}

static uint64_t now_ms(hs_conn_t *c) {
  return uv_now(&c->worker->loop);
}

/* ---------------------------------------------------------------- output */

static void on_write(uv_write_t *req, int status);
static void maybe_resume_read(hs_conn_t *c);

/* Sends `pending`. Most flushes fit in the socket's buffer: written at once by uv_try_write,
 * they need no write request, and so libuv does not re-arm the socket's poll after each one
 * (an epoll_ctl per flush: as many system calls as the writes themselves when each request
 * has a connection of its own, as phones do). What the socket does not take goes by uv_write,
 * one at a time. Returns true when everything was written. */
static bool start_write(hs_conn_t *c) {
  if (c->writing || c->closed || c->pending.len == 0) {
    return !c->writing && !c->closed;
  }
  uv_buf_t all = uv_buf_init((char *)c->pending.data, (unsigned)c->pending.len);
  int n = uv_try_write((uv_stream_t *)&c->tcp, &all, 1);
  if (n < 0 && n != UV_EAGAIN) {
    conn_close(c, HS_CLOSE_ERROR);
    return false;
  }
  if (n > 0) {
    c->last_progress = now_ms(c);
    hs_buf_consume(&c->pending, (size_t)n);
    if (c->pending.len == 0) {
      maybe_resume_read(c);
      return true;
    }
  }
  hs_buf_t tmp = c->inflight;
  c->inflight = c->pending;
  c->pending = tmp;
  c->pending.len = 0;
  uv_buf_t b = uv_buf_init((char *)c->inflight.data, (unsigned)c->inflight.len);
  int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
  if (rc != 0) {
    conn_close(c, HS_CLOSE_ERROR);
    return false;
  }
  c->writing = true;
  return false;
}

static size_t queued_bytes(const hs_conn_t *c) {
  return c->pending.len + (c->writing ? c->inflight.len : 0);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

static void maybe_resume_read(hs_conn_t *c) {
  if (c->read_paused && !c->closed && !c->closing &&
      queued_bytes(c) < c->worker->config->conn_outbuf / 2) {
    c->read_paused = false;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  }
}

static void on_write(uv_write_t *req, int status) {
  hs_conn_t *c = req->data;
  c->writing = false;
  c->inflight.len = 0;
  if (c->closed) {
    return;
  }
  if (status < 0) {
    conn_close(c, HS_CLOSE_ERROR);
    return;
  }
  c->last_progress = now_ms(c);
  conn_flush(c);
  if (!c->closed) {
    maybe_resume_read(c);
  }
}

/* Appends bytes for the peer: through TLS when the connection has it. */
static int emit(hs_conn_t *c, const uint8_t *p, size_t n) {
  if (c->ssl == NULL) {
    return hs_buf_append(&c->pending, p, n);
  }
  while (n > 0) {
    int w = SSL_write(c->ssl, p, (int)(n > 16384 ? 16384 : n));
    if (w <= 0) {
      return HS_EIO;
    }
    p += w;
    n -= (size_t)w;
  }
  return HS_OK;
}

/* Moves whatever TLS produced (handshake records, encrypted data) to `pending`. */
static int drain_wbio(hs_conn_t *c) {
  if (c->wbio == NULL) {
    return HS_OK;
  }
  char tmp[16384];
  for (;;) {
    int n = BIO_read(c->wbio, tmp, sizeof tmp);
    if (n <= 0) {
      return HS_OK;
    }
    int rc = hs_buf_append(&c->pending, tmp, (size_t)n);
    if (rc != HS_OK) {
      return rc;
    }
  }
}

static void notify_drained(hs_conn_t *c) {
  size_t cap = c->worker->config->stream_outbuf;
  for (hs_stream_t *st = c->streams; st != NULL;) {
    hs_stream_t *next = st->next;
    if (st->want_drain && st->out.len - st->out_off < cap / 2 && st->req.on_drain != NULL) {
      st->want_drain = false;
      st->req.on_drain(&st->req);
      if (c->closed) {
        return;
      }
    }
    st = next;
  }
}

static void conn_flush(hs_conn_t *c) {
  if (c->closed || c->in_nghttp2) {
    return;
  }
  size_t cap = c->worker->config->conn_outbuf;
  /* Another pass only when the buffer filled up and the socket then took all of it. */
  bool more = true;
  while (more) {
    more = false;
    while (c->h2 != NULL && !(more = queued_bytes(c) >= cap)) {
      const uint8_t *data = NULL;
      c->in_nghttp2 = true;
      ssize_t n = nghttp2_session_mem_send(c->h2, &data);
      c->in_nghttp2 = false;
      if (c->closed) {
        return;
      }
      if (n < 0) {
        conn_close(c, HS_CLOSE_ERROR);
        return;
      }
      if (n == 0) {
        break;
      }
      if (emit(c, data, (size_t)n) != HS_OK) {
        conn_close(c, HS_CLOSE_ERROR);
        return;
      }
      drain_wbio(c);
      c->last_progress = now_ms(c);
    }
    drain_wbio(c);
    more = start_write(c) && more;
    if (c->closed) {
      return;
    }
  }
  if (c->h2 != NULL) {
    notify_drained(c);
    if (c->closed) {
      return;
    }
  }
  bool idle_out = queued_bytes(c) == 0;
  if (c->h2 != NULL && !nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2) &&
      idle_out) {
    /* nghttp2 is done with this connection (GOAWAY exchanged, or it gave up on a flood). */
    conn_close(c, c->closing                 ? c->reason
                  : c->resets_received > 100 ? HS_CLOSE_RAPID_RESET
                                             : HS_CLOSE_NORMAL);
    return;
  }
  if (c->state == CONN_DONE && idle_out) {
    conn_close(c, c->reason);
    return;
  }
  if (c->goaway_drain && c->n_streams == 0 && idle_out) {
    conn_close(c, HS_CLOSE_SHUTDOWN);
  }
}

/* Sends GOAWAY with the code, and closes once it is flushed (or by the sweep's deadline). */
static void conn_fail(hs_conn_t *c, hs_close_reason_t reason, uint32_t h2_error) {
  if (c->closed) {
    return;
  }
  if (!c->closing) {
    c->closing = true;
    c->reason = reason;
    c->closing_since = now_ms(c);
    hs_log(HS_LOG_WARN, "connection_closing", "{s:s, s:I}", "reason", hs_close_reason_name(reason),
           "worker", (json_int_t)c->worker->index);
  }
  if (c->h2 != NULL && !c->in_nghttp2) {
    nghttp2_session_terminate_session(c->h2, h2_error);
    conn_flush(c);
  } else if (c->h2 != NULL) {
    /* Inside a callback: nghttp2 sends the GOAWAY when control returns to conn_flush. */
    nghttp2_session_terminate_session(c->h2, h2_error);
  } else {
    conn_close(c, reason);
  }
}

/* Handlers answer through hs_req_*; the bytes go out from the worker's check handle at the end
 * of this loop iteration. So a request is never freed inside the hs_req_* call that answered
 * it (the stream may close as soon as its last frame is sent), and every answer made in one
 * iteration shares one write. */
static void conn_want_flush(hs_conn_t *c) {
  if (c->closed || c->flush_queued) {
    return;
  }
  c->flush_queued = true;
  c->flush_next = c->worker->flush_head;
  c->worker->flush_head = c;
}

void hs_conn_flush_pending(hs_worker_t *w) {
  while (w->flush_head != NULL) {
    hs_conn_t *c = w->flush_head;
    w->flush_head = c->flush_next;
    c->flush_queued = false;
    c->flush_next = NULL;
    conn_flush(c);
  }
}

static void unqueue_flush(hs_conn_t *c) {
  if (!c->flush_queued) {
    return;
  }
  for (hs_conn_t **p = &c->worker->flush_head; *p != NULL; p = &(*p)->flush_next) {
    if (*p == c) {
      *p = c->flush_next;
      break;
    }
  }
  c->flush_queued = false;
}

/* ---------------------------------------------------------------- close */

static void on_close(uv_handle_t *h) {
  hs_conn_t *c = h->data;
  hs_buf_free(&c->pending);
  hs_buf_free(&c->inflight);
  free(c);
}

static void conn_close(hs_conn_t *c, hs_close_reason_t reason) {
  if (c->closed) {
    return;
  }
  c->closed = true;
  hs_worker_t *w = c->worker;
  unqueue_flush(c);
  /* Streams first: their handlers may hold work in flight that must be cancelled. */
  while (c->streams != NULL) {
    stream_free(c->streams);
  }
  if (c->h2 != NULL) {
    nghttp2_session_del(c->h2);
    c->h2 = NULL;
  }
  if (c->ssl != NULL) {
    SSL_free(c->ssl);
    c->ssl = NULL;
  }
  if (c->prev != NULL) {
    c->prev->next = c->next;
  } else {
    w->conns = c->next;
  }
  if (c->next != NULL) {
    c->next->prev = c->prev;
  }
  w->n_conns--;
  atomic_fetch_sub_explicit(&w->n_assigned, 1, memory_order_relaxed);
  if (c->per_ip_counted) {
    hs_conn_limit_release(w->per_ip, c->peer);
  }
  atomic_fetch_sub_explicit(&w->metrics->conns_open, 1, memory_order_relaxed);
  hs_metrics_conn_closed(w->metrics, reason);
  uv_close((uv_handle_t *)&c->tcp, on_close);
}

/* ---------------------------------------------------------------- streams */

static hs_stream_t *stream_new(hs_conn_t *c, int32_t id) {
  hs_stream_t *st = calloc(1, sizeof *st);
  if (st == NULL) {
    return NULL;
  }
  st->conn = c;
  st->id = id;
  st->content_length = UINT64_MAX;
  st->start_ns = uv_hrtime();
  hs_arena_init(&st->req.arena, 0);
  hs_buf_init(&st->req.body, c->worker->config->max_body);
  hs_buf_init(&st->out, 0);
  st->req.method = "";
  st->req.path = "";
  st->req.query = "";
  st->req.content_type = "";
  st->req.authorization = "";
  st->req.config = c->worker->config;
  st->req.worker = c->worker;
  st->req.match.route = -1;
  st->next = c->streams;
  if (c->streams != NULL) {
    c->streams->prev = st;
  }
  c->streams = st;
  c->n_streams++;
  atomic_fetch_add_explicit(&c->worker->metrics->streams_open, 1, memory_order_relaxed);
  return st;
}

/* Unlinks and frees a stream, cancelling its handler's work if it was still running. */
static void stream_free(hs_stream_t *st) {
  hs_conn_t *c = st->conn;
  if (st->dispatched && !st->body_done && st->req.on_cancel != NULL) {
    hs_req_cb cancel = st->req.on_cancel;
    st->req.on_cancel = NULL;
    cancel(&st->req);
  }
  if (c->h2 != NULL) {
    nghttp2_session_set_stream_user_data(c->h2, st->id, NULL);
  }
  if (st->prev != NULL) {
    st->prev->next = st->next;
  } else {
    c->streams = st->next;
  }
  if (st->next != NULL) {
    st->next->prev = st->prev;
  }
  c->n_streams--;
  c->streams_buffered -= st->out.len - st->out_off;
  atomic_fetch_sub_explicit(&c->worker->metrics->streams_open, 1, memory_order_relaxed);
  hs_buf_free(&st->req.body);
  hs_buf_free(&st->out);
  hs_arena_reset(&st->req.arena);
  free(st);
  c->last_activity = now_ms(c);
}

static ssize_t data_read_cb(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *user) {
  (void)s;
  (void)id;
  (void)buf;
  (void)user;
  hs_stream_t *st = src->ptr;
  size_t avail = st->out.len - st->out_off;
  if (avail == 0) {
    if (st->body_done) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      return 0;
    }
    st->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  size_t n = avail < length ? avail : length;
  /* The bytes stay where they are: send_data_cb copies them once, straight to the output,
   * instead of into nghttp2's frame buffer first and from there to the output. */
  *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  if (n == avail && st->body_done) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
  }
  return (ssize_t)n;
}

/* The DATA frame data_read_cb sized: its 9-byte header, then length bytes of the stream's
 * buffer (no padding is ever asked for). nghttp2 calls it right after data_read_cb, within the
 * same nghttp2_session_mem_send, and not at all once the stream is closed. */
static int send_data_cb(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *src, void *user) {
  (void)s;
  (void)frame;
  hs_stream_t *st = src->ptr;
  hs_conn_t *c = user;
  if (emit(c, framehd, 9) != HS_OK || emit(c, st->out.data + st->out_off, length) != HS_OK) {
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  st->out_off += length;
  c->streams_buffered -= length;
  if (st->out_off == st->out.len) {
    st->out.len = 0;
    st->out_off = 0;
  } else if (st->out_off > 64 * 1024 && st->out_off > st->out.len / 2) {
    /* Keep the unsent tail at the front so the buffer does not creep. */
    hs_buf_consume(&st->out, st->out_off);
    st->out_off = 0;
  }
  return 0;
}

static void record_request(hs_stream_t *st) {
  uint64_t us = (uv_hrtime() - st->start_ns) / 1000;
  hs_metrics_request(st->conn->worker->metrics, st->req.match.route, st->status, us);
}

/* Submits response headers (and, when has_body, a data source reading st->out). */
static int submit_headers(hs_stream_t *st, int status, const char *content_type,
                          const char *const *extra, size_t n_extra, bool has_body,
                          size_t content_length) {
  hs_conn_t *c = st->conn;
  if (st->answered || c->h2 == NULL) {
    return HS_ECONFLICT;
  }
  char status_str[21];
  hs_fmt_uint(status_str, (unsigned)(status >= 100 && status < 1000 ? status : 500));
  char len_str[21];
  hs_fmt_uint(len_str, content_length);
  nghttp2_nv nva[16];
  size_t n = 0;
  /* Every name is a string constant, so nghttp2 need not copy it. */
#define NV(name, value)                                                                            \
  nva[n++] = (nghttp2_nv){(uint8_t *)(name), (uint8_t *)(value), strlen(name), strlen(value),      \
                          NGHTTP2_NV_FLAG_NO_COPY_NAME}
  NV(":status", status_str);
  if (content_type != NULL) {
    NV("content-type", content_type);
  }
  if (content_length != SIZE_MAX) {
    NV("content-length", len_str);
  }
  for (size_t i = 0; i + 1 < n_extra * 2 && n < 16; i += 2) {
    NV(extra[i], extra[i + 1]);
  }
#undef NV
  nghttp2_data_provider prd = {.source.ptr = st, .read_callback = data_read_cb};
  int rv = nghttp2_submit_response(c->h2, st->id, nva, n, has_body ? &prd : NULL);
  if (rv != 0) {
    return HS_EIO;
  }
  st->answered = true;
  st->status = status;
  record_request(st);
  return HS_OK;
}

/* ---------------------------------------------------------------- request API */

static hs_stream_t *stream_of(hs_req_t *req) {
  return (hs_stream_t *)req;
}

static void respond_bytes(hs_req_t *req, int status, const char *content_type,
                          const char *const *extra, size_t n_extra, const void *body, size_t len) {
  hs_stream_t *st = stream_of(req);
  hs_conn_t *c = st->conn;
  if (st->answered) {
    /* A handler that fails after starting a stream can only end it. */
    hs_req_stream_end(req);
    return;
  }
  st->out.len = 0;
  st->out_off = 0;
  if (len > 0 && hs_buf_append(&st->out, body, len) != HS_OK) {
    status = 500;
    len = 0;
    content_type = NULL;
  }
  c->streams_buffered += st->out.len;
  st->body_done = true;
  req->on_cancel = NULL;
  if (submit_headers(st, status, content_type, extra, n_extra, len > 0, len) != HS_OK) {
    nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
  }
  conn_want_flush(c);
}

static const char *format_content_type(hs_format_t f) {
  return f == HS_FMT_JSON ? "application/json" : "application/msgpack";
}

void hs_req_respond_raw(hs_req_t *req, int status, const char *content_type, const void *body,
                        size_t len) {
  respond_bytes(req, status, content_type, NULL, 0, body, len);
}

static void respond_value_h(hs_req_t *req, int status, const char *const *extra, size_t n_extra,
                            const hs_value_t *body) {
  if (body == NULL) {
    respond_bytes(req, status, NULL, extra, n_extra, NULL, 0);
    return;
  }
  hs_buf_t out;
  hs_buf_init(&out, 0);
  int rc = hs_codec_encode(req->out_format, body, &out);
  if (rc != HS_OK) {
    hs_buf_free(&out);
    static const char k_msg[] = "{\"error\":{\"code\":\"internal\",\"message\":\"the response "
                                "could not be encoded\"}}";
    respond_bytes(req, 500, "application/json", NULL, 0, k_msg, sizeof k_msg - 1);
    return;
  }
  if (req->out_format == HS_FMT_JSON) {
    hs_buf_append(&out, "\n", 1);
  }
  respond_bytes(req, status, format_content_type(req->out_format), extra, n_extra, out.data,
                out.len);
  hs_buf_free(&out);
}

void hs_req_respond(hs_req_t *req, int status, const hs_value_t *body) {
  respond_value_h(req, status, NULL, 0, body);
}

static void respond_error_v(hs_req_t *req, int status, const char *const *headers, size_t n_headers,
                            const char *code, const char *fmt, va_list ap)
    __attribute__((format(printf, 6, 0)));

static void respond_error_v(hs_req_t *req, int status, const char *const *headers, size_t n_headers,
                            const char *code, const char *fmt, va_list ap) {
  char msg[1024];
  vsnprintf(msg, sizeof msg, fmt, ap);
  hs_arena_t *a = &req->arena;
  hs_value_t *root = hs_value_new_map(a, 1);
  hs_value_t *e = root != NULL ? hs_map_add_map(a, root, "error") : NULL;
  if (e == NULL || hs_map_add_str(a, e, "code", code) != HS_OK ||
      hs_map_add_str(a, e, "message", msg) != HS_OK) {
    respond_bytes(req, status, NULL, headers, n_headers, NULL, 0);
    return;
  }
  respond_value_h(req, status, headers, n_headers, root);
}

void hs_req_respond_error(hs_req_t *req, int status, const char *code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  respond_error_v(req, status, NULL, 0, code, fmt, ap);
  va_end(ap);
}

void hs_req_respond_error_h(hs_req_t *req, int status, const char *const *headers, size_t n_headers,
                            const char *code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  respond_error_v(req, status, headers, n_headers, code, fmt, ap);
  va_end(ap);
}

const char *hs_req_header(const hs_req_t *req, const char *name) {
  for (const hs_header_t *h = req->headers; h != NULL; h = h->next) {
    if (strcmp(h->name, name) == 0) {
      return h->value;
    }
  }
  return NULL;
}

/* True when the Content-Type names exactly this media type (parameters after ';' allowed):
 * "application/json-seq" is not JSON. */
static bool media_is(const char *ct, const char *type) {
  size_t n = strlen(type);
  if (strncasecmp(ct, type, n) != 0) {
    return false;
  }
  return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ';
}

int hs_req_decode_body(hs_req_t *req, hs_value_t **out) {
  const char *ct = req->content_type;
  if (ct[0] != '\0' && !media_is(ct, "application/json") && !media_is(ct, "application/msgpack") &&
      !media_is(ct, "application/x-msgpack")) {
    hs_req_respond_error(req, 415, "unsupported",
                         "A body of type %.100s cannot be read here: send application/msgpack or "
                         "application/json",
                         ct);
    return HS_EUNSUPPORTED;
  }
  hs_err_t err;
  hs_err_clear(&err);
  hs_codec_limits_t lim = hs_codec_default_limits;
  lim.max_bytes = req->config->max_body;
  int rc =
      hs_codec_decode(req->in_format, req->body.data, req->body.len, &lim, &req->arena, out, &err);
  if (rc == HS_OK) {
    return HS_OK;
  }
  const char *fmt_name = req->in_format == HS_FMT_JSON ? "JSON" : "msgpack";
  if (rc == HS_ELIMIT) {
    hs_req_respond_error(req, 413, "too_large", "The %s body is over a limit: %s", fmt_name,
                         err.msg);
  } else if (rc == HS_EUNSUPPORTED) {
    hs_req_respond_error(req, 400, "unsupported",
                         "The %s body uses what this API has no place for: %s", fmt_name, err.msg);
  } else if (rc == HS_ENOMEM) {
    hs_req_respond_error(req, 503, "unavailable", "The server is short of memory; retry later");
  } else {
    hs_req_respond_error(req, 400, "malformed", "The body is not valid %s: %s", fmt_name, err.msg);
  }
  return rc;
}

int hs_req_stream_start(hs_req_t *req, int status, const char *content_type) {
  return hs_req_stream_start_h(req, status, content_type, NULL, 0);
}

int hs_req_stream_start_h(hs_req_t *req, int status, const char *content_type,
                          const char *const *headers, size_t n_headers) {
  hs_stream_t *st = stream_of(req);
  int rc = submit_headers(st, status, content_type, headers, n_headers, true, SIZE_MAX);
  if (rc == HS_OK) {
    conn_want_flush(st->conn);
  }
  return rc;
}

static void stream_written(hs_stream_t *st, size_t n);

int hs_req_stream_write(hs_req_t *req, const void *p, size_t n) {
  hs_stream_t *st = stream_of(req);
  hs_conn_t *c = st->conn;
  if (!st->answered || st->body_done) {
    return HS_ECONFLICT;
  }
  if (st->out.len - st->out_off >= c->worker->config->stream_outbuf) {
    st->want_drain = true;
    return HS_ELIMIT;
  }
  int rc = hs_buf_append(&st->out, p, n);
  if (rc != HS_OK) {
    return rc;
  }
  stream_written(st, n);
  return HS_OK;
}

int hs_req_stream_write_buf(hs_req_t *req, hs_buf_t *b) {
  hs_stream_t *st = stream_of(req);
  if (st->out.len != st->out_off || !st->answered || st->body_done) {
    /* Something is queued, or the stream takes nothing: the copying path decides. */
    int rc = hs_req_stream_write(req, b->data, b->len);
    if (rc == HS_OK) {
      b->len = 0;
    }
    return rc;
  }
  /* Nothing is waiting (so the cap is not reached): take the caller's buffer as it is and
   * hand back ours. */
  size_t n = b->len;
  hs_buf_t mine = st->out;
  mine.len = 0;
  st->out = *b;
  st->out_off = 0;
  *b = mine;
  stream_written(st, n);
  return HS_OK;
}

static void stream_written(hs_stream_t *st, size_t n) {
  hs_conn_t *c = st->conn;
  c->streams_buffered += n;
  if (st->deferred) {
    st->deferred = false;
    nghttp2_session_resume_data(c->h2, st->id);
  }
  conn_want_flush(c);
}

size_t hs_req_stream_buffered(const hs_req_t *req) {
  const hs_stream_t *st = (const hs_stream_t *)req;
  return st->out.len - st->out_off;
}

void hs_req_stream_end(hs_req_t *req) {
  hs_stream_t *st = stream_of(req);
  if (st->body_done) {
    return;
  }
  st->body_done = true;
  req->on_cancel = NULL;
  req->on_drain = NULL;
  if (st->deferred) {
    st->deferred = false;
    nghttp2_session_resume_data(st->conn->h2, st->id);
  }
  conn_want_flush(st->conn);
}

static int hexval(int ch) {
  if (ch >= '0' && ch <= '9') {
    return ch - '0';
  }
  if (ch >= 'a' && ch <= 'f') {
    return ch - 'a' + 10;
  }
  if (ch >= 'A' && ch <= 'F') {
    return ch - 'A' + 10;
  }
  return -1;
}

int hs_req_query(const hs_req_t *req, const char *name, char *dst, size_t cap) {
  size_t name_len = strlen(name);
  const char *q = req->query;
  while (*q != '\0') {
    const char *amp = strchr(q, '&');
    size_t len = amp != NULL ? (size_t)(amp - q) : strlen(q);
    const char *eq = memchr(q, '=', len);
    size_t key_len = eq != NULL ? (size_t)(eq - q) : len;
    if (key_len == name_len && memcmp(q, name, name_len) == 0) {
      const char *v = eq != NULL ? eq + 1 : q + len;
      const char *end = q + len;
      size_t o = 0;
      while (v < end) {
        int ch = (unsigned char)*v;
        if (ch == '%' && end - v >= 3 && hexval(v[1]) >= 0 && hexval(v[2]) >= 0) {
          ch = hexval(v[1]) * 16 + hexval(v[2]);
          v += 3;
        } else {
          if (ch == '+') {
            ch = ' ';
          }
          v++;
        }
        if (o + 1 >= cap) {
          return HS_ELIMIT;
        }
        dst[o++] = (char)ch;
      }
      if (cap == 0) {
        return HS_ELIMIT;
      }
      dst[o] = '\0';
      return HS_OK;
    }
    q += len;
    if (*q == '&') {
      q++;
    }
  }
  return HS_ENOTFOUND;
}

/* ---------------------------------------------------------------- dispatch */

static bool header_is(const uint8_t *name, size_t len, const char *lit) {
  return strlen(lit) == len && memcmp(name, lit, len) == 0;
}

/* Answers early with a status, drops the rest of the request, and resets the stream once the
 * answer is out (see on_frame_send). */
static void reject(hs_stream_t *st, int status, const char *code, const char *msg) {
  st->rejected = true;
  st->dispatched = true;
  hs_req_respond_error(&st->req, status, code, "%s", msg);
}

/* Matches the route once the headers are complete, so that the body limit can follow the
 * route (evidence uploads may be larger than ordinary bodies). */
static void route_request(hs_stream_t *st) {
  hs_worker_t *w = st->conn->worker;
  hs_req_t *req = &st->req;
  if (st->routed) {
    return;
  }
  st->routed = true;
  const char *qm = strchr(req->path, '?');
  size_t path_len = strlen(req->path);
  if (qm != NULL) {
    req->query = qm + 1;
    path_len = (size_t)(qm - req->path);
  }
  hs_router_match(w->routes, w->n_routes, w->config->debug_routes, req->method, req->path, path_len,
                  &req->match);
  if (qm != NULL) {
    char *p = hs_arena_strndup(&req->arena, req->path, path_len);
    if (p != NULL) {
      req->path = p;
    }
  }
  if (req->match.route >= 0 && (w->routes[req->match.route].flags & HS_ROUTE_LARGE_BODY)) {
    req->body.limit = w->config->max_blob;
  }
}

static void dispatch(hs_stream_t *st) {
  hs_worker_t *w = st->conn->worker;
  hs_req_t *req = &st->req;
  st->dispatched = true;
  const char *ct = req->content_type;
  req->in_format = media_is(ct, "application/json") ? HS_FMT_JSON : HS_FMT_MSGPACK;
  if (!st->accept_set) {
    req->out_format =
        req->in_format; /* no preference (absent, or any type): answer in the request format */
  }
  if (*req->path != '/') {
    hs_req_respond_error(req, 400, "malformed", "The request path must start with '/'");
    return;
  }
  route_request(st);
  if (req->match.route < 0) {
    if (req->match.path_matched) {
      hs_req_respond_error(req, 405, "method_not_allowed",
                           "%s is not allowed on %s; see proto/README.md for the methods of each "
                           "route",
                           req->method, req->path);
    } else {
      hs_req_respond_error(req, 404, "not_found", "There is no route %s %s", req->method,
                           req->path);
    }
    return;
  }
  w->routes[req->match.route].handler(req);
}

/* ---------------------------------------------------------------- nghttp2 callbacks */

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *user) {
  hs_conn_t *c = user;
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
    return 0;
  }
  c->header_open = true;
  c->header_since = now_ms(c);
  hs_stream_t *st = stream_new(c, frame->hd.stream_id);
  if (st == NULL) {
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  nghttp2_session_set_stream_user_data(s, frame->hd.stream_id, st);
  return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user) {
  hs_conn_t *c = user;
  if (frame->hd.type != NGHTTP2_HEADERS) {
    return 0;
  }
  hs_stream_t *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
  if (st == NULL) {
    return 0;
  }
  const hs_config_t *cfg = c->worker->config;
  /* nghttp2 advertises SETTINGS_MAX_HEADER_LIST_SIZE but does not enforce it: count here, as
   * RFC 9113 §6.5.2 does, before storing anything. */
  st->hdr_bytes += namelen + valuelen + 32;
  st->hdr_count++;
  if (st->hdr_bytes > cfg->max_header_list || st->hdr_count > cfg->max_headers) {
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  hs_arena_t *a = &st->req.arena;
  const char **slot = NULL;
  const char *known = NULL; /* the name, when it is one looked at here: kept without a copy */
  if (header_is(name, namelen, ":method")) {
    slot = &st->req.method;
  } else if (header_is(name, namelen, ":path")) {
    slot = &st->req.path;
  } else if (header_is(name, namelen, "content-type")) {
    slot = &st->req.content_type;
    known = "content-type";
  } else if (header_is(name, namelen, "authorization")) {
    slot = &st->req.authorization;
    known = "authorization";
  } else if (header_is(name, namelen, "accept")) {
    known = "accept";
    /* JSON only when asked for before (or without) msgpack. A lone type, what apps send, is
     * settled without the two searches (they were 0.7% of a completion's instructions). */
    const char *j = NULL, *m = NULL;
    if (valuelen == 19 && memcmp(value, "application/msgpack", 19) == 0) {
      m = (const char *)value;
    } else if (valuelen == 16 && memcmp(value, "application/json", 16) == 0) {
      j = (const char *)value;
    } else {
      j = memmem(value, valuelen, "application/json", 16);
      m = memmem(value, valuelen, "application/msgpack", 19);
    }
    if (j != NULL || m != NULL) {
      st->accept_set = true;
      st->req.out_format = j != NULL && (m == NULL || j < m) ? HS_FMT_JSON : HS_FMT_MSGPACK;
    }
  } else if (header_is(name, namelen, "content-length")) {
    known = "content-length";
    uint64_t v = 0;
    for (size_t i = 0; i < valuelen && i < 20; i++) {
      if (value[i] < '0' || value[i] > '9') {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
      }
      v = v * 10 + (uint64_t)(value[i] - '0');
    }
    st->content_length = valuelen > 19 ? UINT64_MAX - 1 : v;
  }
  char *copy = hs_arena_strndup(a, (const char *)value, valuelen);
  if (copy == NULL) {
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  if (slot != NULL) {
    *slot = copy;
  }
  if (name[0] != ':') { /* pseudo-headers are kept only in their slots */
    hs_header_t *h = hs_arena_alloc(a, sizeof *h);
    const char *name_copy =
        known != NULL ? known : hs_arena_strndup(a, (const char *)name, namelen);
    if (h == NULL || name_copy == NULL) {
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    h->name = name_copy;
    h->value = copy;
    h->next = st->req.headers;
    st->req.headers = h;
  }
  return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data,
                         size_t len, void *user) {
  hs_stream_t *st = nghttp2_session_get_stream_user_data(s, stream_id);
  if (st == NULL || st->rejected || st->dispatched) {
    return 0;
  }
  int rc = hs_buf_append(&st->req.body, data, len);
  if (rc == HS_ELIMIT) {
    char msg[160];
    snprintf(msg, sizeof msg, "The request body is larger than the limit of %zu bytes",
             st->req.body.limit);
    reject(st, 413, "too_large", msg);
  } else if (rc != HS_OK) {
    reject(st, 503, "unavailable", "The server is short of memory; retry later");
  }
  return 0;
}

static void count_glitch(hs_conn_t *c) {
  if (++c->glitches > c->worker->config->glitch_limit) {
    conn_fail(c, HS_CLOSE_GLITCH, NGHTTP2_ENHANCE_YOUR_CALM);
  }
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *user) {
  hs_conn_t *c = user;
  switch (frame->hd.type) {
    case NGHTTP2_PING:
    case NGHTTP2_SETTINGS: {
      if (frame->hd.flags & NGHTTP2_FLAG_ACK) {
        break;
      }
      uint64_t now = now_ms(c);
      if (now - c->control_window_start > 10000) {
        c->control_window_start = now;
        c->control_frames = 0;
      }
      if (++c->control_frames > c->worker->config->control_limit) {
        conn_fail(c, HS_CLOSE_CONTROL_FLOOD, NGHTTP2_ENHANCE_YOUR_CALM);
        return 0;
      }
      break;
    }
    case NGHTTP2_RST_STREAM:
      c->resets_received++;
      break;
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA: {
      if (frame->hd.type == NGHTTP2_HEADERS) {
        c->header_open = false;
      }
      hs_stream_t *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
      if (st == NULL) {
        break;
      }
      if (frame->hd.type == NGHTTP2_HEADERS && !st->dispatched && *st->req.path == '/') {
        route_request(st);
      }
      if (frame->hd.type == NGHTTP2_HEADERS && !st->dispatched &&
          st->content_length != UINT64_MAX && st->content_length > st->req.body.limit) {
        char msg[160];
        snprintf(msg, sizeof msg, "The request body is larger than the limit of %zu bytes",
                 st->req.body.limit);
        reject(st, 413, "too_large", msg);
        break;
      }
      if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && !st->dispatched) {
        if (c->goaway_drain) {
          reject(st, 503, "unavailable", "The server is shutting down; retry on a new connection");
        } else {
          dispatch(st);
        }
      }
      break;
    }
    default:
      break;
  }
  return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *user) {
  hs_conn_t *c = user;
  if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR &&
      !c->closing) {
    /* nghttp2 ended the connection itself (a frame it would not accept, or its own reset-rate
     * limiter): the close is the peer's fault, and /metrics should say which. */
    c->closing = true;
    c->closing_since = now_ms(c);
    c->reason = c->resets_received > 100 ? HS_CLOSE_RAPID_RESET : HS_CLOSE_PROTOCOL;
  }
  if (frame->hd.type == NGHTTP2_RST_STREAM && frame->rst_stream.error_code != NGHTTP2_NO_ERROR) {
    /* Resets we send are work a client made us do: count them (CVE-2025-8671). */
    count_glitch(c);
  } else if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
             (frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS)) {
    hs_stream_t *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (st != NULL && st->rejected) {
      nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    }
  }
  return 0;
}

static int on_invalid_frame(nghttp2_session *s, const nghttp2_frame *frame, int lib_error,
                            void *user) {
  count_glitch(user);
  return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *user) {
  hs_conn_t *c = user;
  hs_stream_t *st = nghttp2_session_get_stream_user_data(s, stream_id);
  if (st != NULL) {
    if (c->header_open && !st->dispatched && st->hdr_count > 0) {
      c->header_open = false;
    }
    stream_free(st);
  }
  return 0;
}

static nghttp2_session_callbacks *g_callbacks; /* shared, read-only after init */
static nghttp2_option *g_option;
static uv_once_t g_once = UV_ONCE_INIT;

static void init_callbacks(void) {
  nghttp2_session_callbacks_new(&g_callbacks);
  nghttp2_session_callbacks_set_on_begin_headers_callback(g_callbacks, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(g_callbacks, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(g_callbacks, on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_recv_callback(g_callbacks, on_frame_recv);
  nghttp2_session_callbacks_set_on_frame_send_callback(g_callbacks, on_frame_send);
  nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(g_callbacks, on_invalid_frame);
  nghttp2_session_callbacks_set_on_stream_close_callback(g_callbacks, on_stream_close);
  nghttp2_session_callbacks_set_send_data_callback(g_callbacks, send_data_cb);
  nghttp2_option_new(&g_option);
  /* Closed streams are not kept for priority bookkeeping: memory per connection stays small. */
  nghttp2_option_set_no_closed_streams(g_option, 1);
}

static int start_h2(hs_conn_t *c) {
  uv_once(&g_once, init_callbacks);
  if (nghttp2_session_server_new2(&c->h2, g_callbacks, c, g_option) != 0) {
    return HS_ENOMEM;
  }
  const hs_config_t *cfg = c->worker->config;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, cfg->max_streams},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)cfg->max_header_list},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1024 * 1024},
  };
  if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0) {
    return HS_ENOMEM;
  }
  c->state = CONN_H2;
  if (c->worker->draining) {
    hs_conn_drain(c);
  }
  return HS_OK;
}

/* ---------------------------------------------------------------- input */

static void feed_h2(hs_conn_t *c, const uint8_t *p, size_t n) {
  while (n > 0 && !c->closed && !c->closing) {
    size_t chunk = n < FEED_CHUNK ? n : FEED_CHUNK;
    c->in_nghttp2 = true;
    ssize_t rv = nghttp2_session_mem_recv(c->h2, p, chunk);
    c->in_nghttp2 = false;
    if (c->closed) {
      return;
    }
    if (rv < 0) {
      /* Every negative return is fatal (HARDENING: CONTINUATION floods return -905 and send no
       * GOAWAY of their own). */
      hs_close_reason_t reason = rv == NGHTTP2_ERR_FLOODED ? HS_CLOSE_FLOOD : HS_CLOSE_PROTOCOL;
      hs_log(HS_LOG_WARN, "h2_error", "{s:s, s:i}", "error", nghttp2_strerror((int)rv), "code",
             (int)rv);
      conn_fail(c, reason,
                rv == NGHTTP2_ERR_FLOODED ? NGHTTP2_ENHANCE_YOUR_CALM : NGHTTP2_PROTOCOL_ERROR);
      if (!c->closed) {
        conn_close(c, reason);
      }
      return;
    }
    p += chunk;
    n -= chunk;
    conn_flush(c);
  }
}

static void answer_http1(hs_conn_t *c) {
  static const char k_body[] = "handsel speaks HTTP/2 only: use h2 over TLS (ALPN) or h2c with "
                               "prior knowledge. See proto/README.md.\n";
  char resp[512];
  int n = snprintf(resp, sizeof resp,
                   "HTTP/1.1 505 HTTP Version Not Supported\r\n"
                   "Content-Type: text/plain; charset=utf-8\r\n"
                   "Content-Length: %zu\r\n"
                   "Connection: close\r\n\r\n%s",
                   sizeof k_body - 1, k_body);
  c->state = CONN_DONE;
  c->reason = HS_CLOSE_HTTP1;
  if (emit(c, (const uint8_t *)resp, (size_t)n) != HS_OK) {
    conn_close(c, HS_CLOSE_ERROR);
    return;
  }
  uv_read_stop((uv_stream_t *)&c->tcp);
  conn_flush(c);
}

/* Cleartext bytes (after TLS, if any). */
static void on_plain(hs_conn_t *c, const uint8_t *p, size_t n) {
  if (c->state == CONN_SNIFF_PLAIN) {
    size_t take = PREFACE_LEN - c->sniff_len;
    if (take > n) {
      take = n;
    }
    memcpy(c->sniff + c->sniff_len, p, take);
    c->sniff_len += take;
    p += take;
    n -= take;
    if (memcmp(c->sniff, k_preface, c->sniff_len) != 0) {
      /* Not HTTP/2. A request line starts with an upper-case method and a space. */
      size_t i = 0;
      while (i < c->sniff_len && c->sniff[i] >= 'A' && c->sniff[i] <= 'Z') {
        i++;
      }
      if (i > 0 && (i == c->sniff_len || c->sniff[i] == ' ')) {
        if (i == c->sniff_len && c->sniff_len < PREFACE_LEN) {
          return; /* need more bytes to tell */
        }
        answer_http1(c);
      } else {
        conn_close(c, HS_CLOSE_PROTOCOL);
      }
      return;
    }
    if (c->sniff_len < PREFACE_LEN) {
      return;
    }
    if (start_h2(c) != HS_OK) {
      conn_close(c, HS_CLOSE_ERROR);
      return;
    }
    feed_h2(c, c->sniff, c->sniff_len);
  }
  if (c->state == CONN_H2 && n > 0) {
    feed_h2(c, p, n);
  }
}

static void on_tls_bytes(hs_conn_t *c, const uint8_t *p, size_t n) {
  if (BIO_write(c->rbio, p, (int)n) != (int)n) {
    conn_close(c, HS_CLOSE_ERROR);
    return;
  }
  if (c->state == CONN_TLS_HANDSHAKE) {
    int rc = SSL_do_handshake(c->ssl);
    if (rc != 1) {
      int e = SSL_get_error(c->ssl, rc);
      drain_wbio(c);
      start_write(c);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        ERR_clear_error();
        c->state = CONN_DONE;
        c->reason = HS_CLOSE_TLS;
        conn_flush(c); /* send the alert, then close */
      }
      return;
    }
    c->state = CONN_SNIFF_PLAIN;
    drain_wbio(c);
    start_write(c);
  }
  uint8_t plain[16384];
  while (!c->closed && c->state != CONN_DONE && !c->closing) {
    int r = SSL_read(c->ssl, plain, sizeof plain);
    if (r <= 0) {
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        break;
      }
      ERR_clear_error();
      conn_close(c, e == SSL_ERROR_ZERO_RETURN ? HS_CLOSE_NORMAL : HS_CLOSE_TLS);
      return;
    }
    on_plain(c, plain, (size_t)r);
  }
  if (!c->closed) {
    conn_flush(c);
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  hs_conn_t *c = h->data;
  buf->base = c->worker->readbuf;
  buf->len = sizeof c->worker->readbuf;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  hs_conn_t *c = s->data;
  if (nread == 0 || c->closed) {
    return;
  }
  if (nread < 0) {
    conn_close(c, c->closing ? c->reason : HS_CLOSE_NORMAL);
    return;
  }
  c->last_activity = now_ms(c);
  const uint8_t *p = (const uint8_t *)buf->base;
  size_t n = (size_t)nread;
  if (c->state == CONN_SNIFF_RAW) {
    /* 0x16 is a TLS handshake record; an HTTP/2 preface or HTTP/1 request is ASCII. */
    if (p[0] == 0x16 && c->worker->tls != NULL) {
      c->ssl = hs_tls_new_ssl(c->worker->tls);
      c->rbio = BIO_new(BIO_s_mem());
      c->wbio = BIO_new(BIO_s_mem());
      if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        c->rbio = c->wbio = NULL;
        conn_close(c, HS_CLOSE_ERROR);
        return;
      }
      SSL_set_bio(c->ssl, c->rbio, c->wbio);
      SSL_set_accept_state(c->ssl);
      c->state = CONN_TLS_HANDSHAKE;
    } else {
      c->state = CONN_SNIFF_PLAIN;
    }
  }
  if (c->ssl != NULL) {
    on_tls_bytes(c, p, n);
  } else if (c->state != CONN_DONE) {
    on_plain(c, p, n);
  }
  if (!c->closed && !c->read_paused && queued_bytes(c) >= c->worker->config->conn_outbuf) {
    /* The peer is not taking what we send: stop reading until it does. */
    c->read_paused = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
  }
}

/* ---------------------------------------------------------------- worker hooks */

/* A socket that never became a connection: closed, and its share of n_assigned given back. */
static void refuse_socket(hs_worker_t *w, int fd) {
  close(fd);
  atomic_fetch_sub_explicit(&w->n_assigned, 1, memory_order_relaxed);
}

void hs_conn_open(hs_worker_t *w, int fd) {
  hs_conn_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    refuse_socket(w, fd);
    return;
  }
  uv_tcp_init(&w->loop, &c->tcp);
  c->tcp.data = c;
  c->wreq.data = c;
  c->worker = w;
  hs_buf_init(&c->pending, 0);
  hs_buf_init(&c->inflight, 0);
  if (uv_tcp_open(&c->tcp, fd) != 0) {
    refuse_socket(w, fd); /* the handle did not take it */
    uv_close((uv_handle_t *)&c->tcp, on_close);
    return;
  }
  c->next = w->conns;
  if (w->conns != NULL) {
    w->conns->prev = c;
  }
  w->conns = c;
  w->n_conns++;
  atomic_fetch_add_explicit(&w->metrics->conns_open, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&w->metrics->conns_accepted, 1, memory_order_relaxed);
  if (w->n_conns > w->config->max_conns || w->draining) {
    conn_close(c, HS_CLOSE_SHUTDOWN);
    return;
  }
  struct sockaddr_storage sa;
  int sa_len = sizeof sa;
  if (w->per_ip != NULL && uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &sa_len) == 0) {
    if (sa.ss_family == AF_INET6) {
      uv_ip6_name((struct sockaddr_in6 *)&sa, c->peer, sizeof c->peer);
    } else {
      uv_ip4_name((struct sockaddr_in *)&sa, c->peer, sizeof c->peer);
    }
    if (!hs_conn_limit_acquire(w->per_ip, c->peer)) {
      hs_log(HS_LOG_WARN, "connection_refused", "{s:s, s:s}", "reason", "per_ip", "peer", c->peer);
      conn_close(c, HS_CLOSE_PER_IP);
      return;
    }
    c->per_ip_counted = true;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  c->last_activity = c->last_progress = c->control_window_start = uv_now(&w->loop);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

void hs_conn_drain(hs_conn_t *c) {
  if (c->closed) {
    return;
  }
  if (c->h2 == NULL) {
    conn_close(c, HS_CLOSE_SHUTDOWN);
    return;
  }
  if (!c->goaway_drain) {
    c->goaway_drain = true;
    nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->h2),
                          NGHTTP2_NO_ERROR, NULL, 0);
  }
  conn_flush(c);
}

void hs_conn_abort(hs_conn_t *c) {
  conn_close(c, HS_CLOSE_SHUTDOWN);
}

static bool output_pending(const hs_conn_t *c) {
  return queued_bytes(c) > 0 || c->streams_buffered > 0;
}

void hs_conn_sweep(hs_conn_t *c, uint64_t now) {
  const hs_config_t *cfg = c->worker->config;
  if (c->closed) {
    return;
  }
  if ((c->closing || c->state == CONN_DONE) && now - c->closing_since > 2000 &&
      c->closing_since != 0) {
    conn_close(c, c->reason);
    return;
  }
  if (c->state == CONN_DONE && c->closing_since == 0) {
    c->closing_since = now;
  }
  if (c->header_open && now - c->header_since > cfg->header_timeout_ms) {
    conn_fail(c, HS_CLOSE_HEADER_TIMEOUT, NGHTTP2_PROTOCOL_ERROR);
    return;
  }
  if (output_pending(c) && now - c->last_progress > cfg->stall_timeout_ms) {
    /* Give up on the buffered bytes: the peer has not taken any for too long. */
    conn_close(c, HS_CLOSE_STALLED);
    return;
  }
  if (c->n_streams == 0 && !output_pending(c) && now - c->last_activity > cfg->idle_timeout_ms) {
    conn_fail(c, HS_CLOSE_IDLE, NGHTTP2_NO_ERROR);
    return;
  }
}
