#include "hs_test_h2.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "hs_test_server.h"

/* The client keeps at most this many encoded bytes queued for the socket, so a large request
 * body is produced as the socket takes it instead of all at once. */
#define OUT_HIGH_WATER (256 * 1024)
/* One pump reads at most this much, so a fast server cannot keep a pump from returning. */
#define READ_BUDGET    (1024 * 1024)

typedef struct stream {
  hs_h2_response_t resp;
  uint8_t *req_body; /* owned copy of the request body, NULL when none */
  size_t req_len;
  size_t req_off;
} stream_t;

struct hs_h2_conn {
  int fd;
  SSL_CTX *ctx; /* owned, NULL for h2c */
  SSL *ssl;     /* owned, NULL for h2c */
  bool alpn_h2;
  nghttp2_session *sess; /* owned */
  hs_h2_opts_t opts;
  hs_buf_t out; /* encoded frames not yet written */
  bool eof;     /* the peer closed, or reading/writing failed */
  bool failed;  /* nghttp2 reported a fatal error */
  bool got_settings;
  bool goaway;
  uint32_t goaway_code;
  int32_t goaway_last;
  stream_t **streams; /* owned: every submitted stream, oldest first */
  size_t n_streams;
  size_t cap_streams;
};

static stream_t *find_stream(hs_h2_conn_t *c, int32_t id) {
  /* Newest first: tests that run thousands of sequential streams look up recent ones. */
  for (size_t i = c->n_streams; i > 0; i--) {
    if (c->streams[i - 1]->resp.stream_id == id) {
      return c->streams[i - 1];
    }
  }
  return NULL;
}

static void mark_all_closed(hs_h2_conn_t *c) {
  for (size_t i = 0; i < c->n_streams; i++) {
    if (!c->streams[i]->resp.closed) {
      c->streams[i]->resp.closed = true;
      c->streams[i]->resp.close_code = NGHTTP2_CONNECT_ERROR;
    }
  }
}

/* ---- nghttp2 callbacks ---- */

static int on_header(nghttp2_session *sess, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user) {
  hs_h2_conn_t *c = user;
  if (frame->hd.type != NGHTTP2_HEADERS) {
    return 0;
  }
  stream_t *st = find_stream(c, frame->hd.stream_id);
  if (st == NULL) {
    return 0;
  }
  if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
    char tmp[8] = {0};
    memcpy(tmp, value, valuelen < 7 ? valuelen : 7);
    if (st->resp.status == 0) {
      st->resp.status = atoi(tmp);
    }
    return 0;
  }
  if (st->resp.n_headers < HS_H2_MAX_RESP_HEADERS) {
    char *n = strndup((const char *)name, namelen);
    char *v = strndup((const char *)value, valuelen);
    if (n == NULL || v == NULL) {
      free(n);
      free(v);
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    st->resp.names[st->resp.n_headers] = n;
    st->resp.values[st->resp.n_headers] = v;
    st->resp.n_headers++;
  }
  return 0;
}

static int on_data_chunk(nghttp2_session *sess, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user) {
  hs_h2_conn_t *c = user;
  stream_t *st = find_stream(c, stream_id);
  if (st == NULL) {
    return 0;
  }
  st->resp.body_total += len;
  /* Past the body limit the bytes are counted but not kept (HS_ELIMIT is expected). */
  (void)hs_buf_append(&st->resp.body, data, len);
  return 0;
}

static int on_frame_recv(nghttp2_session *sess, const nghttp2_frame *frame, void *user) {
  hs_h2_conn_t *c = user;
  switch (frame->hd.type) {
    case NGHTTP2_SETTINGS:
      if ((frame->hd.flags & NGHTTP2_FLAG_ACK) == 0) {
        c->got_settings = true;
      }
      break;
    case NGHTTP2_GOAWAY:
      c->goaway = true;
      c->goaway_code = frame->goaway.error_code;
      c->goaway_last = frame->goaway.last_stream_id;
      break;
    case NGHTTP2_RST_STREAM: {
      stream_t *st = find_stream(c, frame->hd.stream_id);
      if (st != NULL) {
        st->resp.reset_by_peer = true;
      }
      break;
    }
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA:
      if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
        stream_t *st = find_stream(c, frame->hd.stream_id);
        if (st != NULL) {
          st->resp.end_stream = true;
        }
      }
      break;
    default:
      break;
  }
  return 0;
}

static int on_stream_close(nghttp2_session *sess, int32_t stream_id, uint32_t error_code,
                           void *user) {
  hs_h2_conn_t *c = user;
  stream_t *st = find_stream(c, stream_id);
  if (st != NULL) {
    st->resp.closed = true;
    st->resp.close_code = error_code;
  }
  return 0;
}

static ssize_t read_body(nghttp2_session *sess, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user) {
  stream_t *st = source->ptr;
  size_t n = st->req_len - st->req_off;
  if (n > length) {
    n = length;
  }
  memcpy(buf, st->req_body + st->req_off, n);
  st->req_off += n;
  if (st->req_off == st->req_len) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  }
  return (ssize_t)n;
}

/* ---- socket I/O ---- */

/* Returns bytes read (> 0), 0 when nothing is available now, HS_EIO on EOF or error. */
static ssize_t io_read(hs_h2_conn_t *c, uint8_t *buf, size_t len) {
  if (c->ssl != NULL) {
    ERR_clear_error();
    int n = SSL_read(c->ssl, buf, (int)len);
    if (n > 0) {
      return n;
    }
    int e = SSL_get_error(c->ssl, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      return 0;
    }
    return HS_EIO;
  }
  ssize_t n = recv(c->fd, buf, len, 0);
  if (n > 0) {
    return n;
  }
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    return 0;
  }
  return HS_EIO;
}

/* Returns bytes written (>= 0; 0 when the socket takes nothing now) or HS_EIO. */
static ssize_t io_write(hs_h2_conn_t *c, const uint8_t *buf, size_t len) {
  if (c->ssl != NULL) {
    ERR_clear_error();
    int n = SSL_write(c->ssl, buf, (int)(len > (1 << 20) ? (1 << 20) : len));
    if (n > 0) {
      return n;
    }
    int e = SSL_get_error(c->ssl, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      return 0;
    }
    return HS_EIO;
  }
  ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
  if (n >= 0) {
    return n;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
    return 0;
  }
  return HS_EIO;
}

/* Moves frames from nghttp2 into c->out (up to the high-water mark) and writes what the socket
 * takes now. */
static void flush_out(hs_h2_conn_t *c) {
  while (!c->eof && !c->failed) {
    while (c->out.len < OUT_HIGH_WATER && nghttp2_session_want_write(c->sess)) {
      const uint8_t *data;
      ssize_t n = nghttp2_session_mem_send(c->sess, &data);
      if (n < 0) {
        c->failed = true;
        return;
      }
      if (n == 0) {
        break;
      }
      if (hs_buf_append(&c->out, data, (size_t)n) != HS_OK) {
        c->failed = true;
        return;
      }
    }
    if (c->out.len == 0) {
      return;
    }
    ssize_t w = io_write(c, c->out.data, c->out.len);
    if (w < 0) {
      c->eof = true;
      return;
    }
    if (w == 0) {
      return;
    }
    hs_buf_consume(&c->out, (size_t)w);
  }
}

static void read_in(hs_h2_conn_t *c) {
  uint8_t buf[16384];
  size_t budget = READ_BUDGET;
  while (!c->eof && !c->failed && budget > 0) {
    ssize_t n = io_read(c, buf, sizeof buf);
    if (n == 0) {
      return;
    }
    if (n < 0) {
      c->eof = true;
      return;
    }
    ssize_t r = nghttp2_session_mem_recv(c->sess, buf, (size_t)n);
    if (r < 0) {
      c->failed = true;
      return;
    }
    budget -= (size_t)n < budget ? (size_t)n : budget;
  }
}

bool hs_h2_closed(const hs_h2_conn_t *c) {
  if (c->eof || c->failed) {
    return true;
  }
  return !nghttp2_session_want_read(c->sess) && !nghttp2_session_want_write(c->sess) &&
         c->out.len == 0;
}

int hs_h2_pump(hs_h2_conn_t *c, int timeout_ms) {
  flush_out(c);
  if (hs_h2_closed(c)) {
    mark_all_closed(c);
    return HS_EIO;
  }
  struct pollfd p = {.fd = c->fd, .events = POLLIN};
  if (c->out.len > 0) {
    p.events |= POLLOUT;
  }
  if (c->ssl != NULL && SSL_pending(c->ssl) > 0) {
    timeout_ms = 0;
  }
  int pr = poll(&p, 1, timeout_ms);
  if (pr < 0 && errno != EINTR) {
    c->eof = true;
  } else if (pr > 0 || (c->ssl != NULL && SSL_pending(c->ssl) > 0)) {
    read_in(c);
    flush_out(c);
  }
  if (hs_h2_closed(c)) {
    mark_all_closed(c);
    return HS_EIO;
  }
  return HS_OK;
}

/* ---- connection set-up ---- */

static int tcp_connect(int port, int timeout_ms) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    if (errno != EINPROGRESS) {
      close(fd);
      return -1;
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int err = 0;
    socklen_t len = sizeof err;
    if (poll(&p, 1, timeout_ms) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 ||
        err != 0) {
      close(fd);
      return -1;
    }
  }
  return fd;
}

static int tls_handshake(hs_h2_conn_t *c, int timeout_ms) {
  c->ctx = SSL_CTX_new(TLS_client_method());
  if (c->ctx == NULL) {
    return HS_ENOMEM;
  }
  SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
  static const unsigned char alpn[] = {2, 'h', '2'};
  SSL_CTX_set_alpn_protos(c->ctx, alpn, sizeof alpn);
  c->ssl = SSL_new(c->ctx);
  if (c->ssl == NULL) {
    return HS_ENOMEM;
  }
  SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_set_tlsext_host_name(c->ssl, "localhost");
  SSL_set_fd(c->ssl, c->fd);
  long long deadline = hs_test_now_ms() + timeout_ms;
  for (;;) {
    ERR_clear_error();
    int r = SSL_connect(c->ssl);
    if (r == 1) {
      break;
    }
    int e = SSL_get_error(c->ssl, r);
    short ev;
    if (e == SSL_ERROR_WANT_READ) {
      ev = POLLIN;
    } else if (e == SSL_ERROR_WANT_WRITE) {
      ev = POLLOUT;
    } else {
      return HS_EIO;
    }
    long long left = deadline - hs_test_now_ms();
    struct pollfd p = {.fd = c->fd, .events = ev};
    if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
      return HS_EUNAVAIL;
    }
  }
  const unsigned char *proto = NULL;
  unsigned int plen = 0;
  SSL_get0_alpn_selected(c->ssl, &proto, &plen);
  c->alpn_h2 = plen == 2 && memcmp(proto, "h2", 2) == 0;
  return HS_OK;
}

int hs_h2_connect(hs_h2_conn_t **out, int port, const hs_h2_opts_t *opts) {
  signal(SIGPIPE, SIG_IGN);
  *out = NULL;
  hs_h2_conn_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    return HS_ENOMEM;
  }
  if (opts != NULL) {
    c->opts = *opts;
  }
  if (c->opts.max_body == 0) {
    c->opts.max_body = 64u << 20;
  }
  if (c->opts.connect_timeout_ms == 0) {
    c->opts.connect_timeout_ms = 5000;
  }
  hs_buf_init(&c->out, 0);
  c->fd = tcp_connect(port, c->opts.connect_timeout_ms);
  if (c->fd < 0) {
    free(c);
    return HS_EIO;
  }
  int rc = HS_OK;
  if (c->opts.tls) {
    rc = tls_handshake(c, c->opts.connect_timeout_ms);
  }
  nghttp2_session_callbacks *cb = NULL;
  if (rc == HS_OK && nghttp2_session_callbacks_new(&cb) != 0) {
    rc = HS_ENOMEM;
  }
  if (rc == HS_OK) {
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    if (nghttp2_session_client_new(&c->sess, cb, c) != 0) {
      rc = HS_ENOMEM;
    }
    nghttp2_session_callbacks_del(cb);
  }
  if (rc == HS_OK) {
    nghttp2_settings_entry iv[3];
    size_t n = 0;
    iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_ENABLE_PUSH, 0};
    iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100};
    if (c->opts.window > 0) {
      iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, c->opts.window};
    }
    if (nghttp2_submit_settings(c->sess, NGHTTP2_FLAG_NONE, iv, n) != 0) {
      rc = HS_EIO;
    }
  }
  if (rc == HS_OK && c->opts.conn_window > 65535) {
    if (nghttp2_session_set_local_window_size(c->sess, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)c->opts.conn_window) != 0) {
      rc = HS_EIO;
    }
  }
  if (rc == HS_OK) {
    long long deadline = hs_test_now_ms() + c->opts.connect_timeout_ms;
    while (!c->got_settings) {
      long long left = deadline - hs_test_now_ms();
      if (left <= 0) {
        rc = HS_EUNAVAIL;
        break;
      }
      if (hs_h2_pump(c, (int)(left > 100 ? 100 : left)) != HS_OK) {
        rc = HS_EIO;
        break;
      }
    }
  }
  if (rc != HS_OK) {
    hs_h2_close(c);
    return rc;
  }
  *out = c;
  return HS_OK;
}

void hs_h2_close(hs_h2_conn_t *c) {
  if (c == NULL) {
    return;
  }
  if (c->sess != NULL) {
    nghttp2_session_del(c->sess);
  }
  if (c->ssl != NULL) {
    SSL_free(c->ssl);
  }
  if (c->ctx != NULL) {
    SSL_CTX_free(c->ctx);
  }
  if (c->fd >= 0) {
    close(c->fd);
  }
  for (size_t i = 0; i < c->n_streams; i++) {
    stream_t *st = c->streams[i];
    for (size_t h = 0; h < st->resp.n_headers; h++) {
      free(st->resp.names[h]);
      free(st->resp.values[h]);
    }
    hs_buf_free(&st->resp.body);
    free(st->req_body);
    free(st);
  }
  free(c->streams);
  hs_buf_free(&c->out);
  free(c);
}

/* ---- requests ---- */

int32_t hs_h2_submit(hs_h2_conn_t *c, const char *method, const char *path,
                     const hs_h2_header_t *headers, size_t n_headers, const void *body,
                     size_t body_len) {
  if (c->n_streams == c->cap_streams) {
    size_t cap = c->cap_streams ? c->cap_streams * 2 : 16;
    stream_t **p = realloc(c->streams, cap * sizeof *p);
    if (p == NULL) {
      return HS_ENOMEM;
    }
    c->streams = p;
    c->cap_streams = cap;
  }
  stream_t *st = calloc(1, sizeof *st);
  if (st == NULL) {
    return HS_ENOMEM;
  }
  hs_buf_init(&st->resp.body, c->opts.max_body);
  if (body != NULL) {
    st->req_body = malloc(body_len ? body_len : 1);
    if (st->req_body == NULL) {
      free(st);
      return HS_ENOMEM;
    }
    memcpy(st->req_body, body, body_len);
    st->req_len = body_len;
  }
  size_t nnv = 4 + n_headers;
  nghttp2_nv *nv = calloc(nnv, sizeof *nv);
  if (nv == NULL) {
    free(st->req_body);
    free(st);
    return HS_ENOMEM;
  }
  const char *pseudo[4][2] = {{":method", method},
                              {":scheme", c->opts.tls ? "https" : "http"},
                              {":authority", "127.0.0.1"},
                              {":path", path}};
  for (size_t i = 0; i < 4; i++) {
    nv[i] = (nghttp2_nv){(uint8_t *)pseudo[i][0], (uint8_t *)pseudo[i][1], strlen(pseudo[i][0]),
                         strlen(pseudo[i][1]), NGHTTP2_NV_FLAG_NONE};
  }
  for (size_t i = 0; i < n_headers; i++) {
    nv[4 + i] =
        (nghttp2_nv){(uint8_t *)headers[i].name, (uint8_t *)headers[i].value,
                     strlen(headers[i].name), strlen(headers[i].value), NGHTTP2_NV_FLAG_NONE};
  }
  nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_body};
  int32_t id = nghttp2_submit_request(c->sess, NULL, nv, nnv, body != NULL ? &prd : NULL, NULL);
  free(nv);
  if (id < 0) {
    free(st->req_body);
    free(st);
    return HS_EIO;
  }
  st->resp.stream_id = id;
  c->streams[c->n_streams++] = st;
  return id;
}

static bool all_closed(hs_h2_conn_t *c) {
  for (size_t i = 0; i < c->n_streams; i++) {
    if (!c->streams[i]->resp.closed) {
      return false;
    }
  }
  return true;
}

int hs_h2_wait(hs_h2_conn_t *c, int32_t stream_id, int timeout_ms) {
  long long deadline = hs_test_now_ms() + timeout_ms;
  for (;;) {
    if (stream_id > 0) {
      stream_t *st = find_stream(c, stream_id);
      if (st == NULL || st->resp.closed) {
        return st == NULL || st->resp.end_stream || st->resp.reset_by_peer ? HS_OK : HS_EIO;
      }
    } else if (all_closed(c)) {
      return HS_OK;
    }
    long long left = deadline - hs_test_now_ms();
    if (left <= 0) {
      return HS_EUNAVAIL;
    }
    if (hs_h2_pump(c, (int)(left > 100 ? 100 : left)) != HS_OK) {
      /* The connection ended; a stream that finished just before still counts as done. */
      if (stream_id > 0) {
        stream_t *st = find_stream(c, stream_id);
        return st != NULL && (st->resp.end_stream || st->resp.reset_by_peer) ? HS_OK : HS_EIO;
      }
      return HS_EIO;
    }
  }
}

int hs_h2_request(hs_h2_conn_t *c, const char *method, const char *path,
                  const hs_h2_header_t *headers, size_t n_headers, const void *body,
                  size_t body_len, int timeout_ms, hs_h2_response_t **resp) {
  *resp = NULL;
  int32_t id = hs_h2_submit(c, method, path, headers, n_headers, body, body_len);
  if (id < 0) {
    return id;
  }
  int rc = hs_h2_wait(c, id, timeout_ms);
  *resp = hs_h2_response(c, id);
  return rc;
}

hs_h2_response_t *hs_h2_response(hs_h2_conn_t *c, int32_t stream_id) {
  stream_t *st = find_stream(c, stream_id);
  return st != NULL ? &st->resp : NULL;
}

const char *hs_h2_response_header(const hs_h2_response_t *r, const char *name) {
  for (size_t i = 0; i < r->n_headers; i++) {
    if (strcmp(r->names[i], name) == 0) {
      return r->values[i];
    }
  }
  return NULL;
}

uint32_t hs_h2_remote_setting(hs_h2_conn_t *c, int32_t id) {
  return nghttp2_session_get_remote_settings(c->sess, (nghttp2_settings_id)id);
}

bool hs_h2_goaway(const hs_h2_conn_t *c, uint32_t *code, int32_t *last_stream_id) {
  if (c->goaway) {
    if (code != NULL) {
      *code = c->goaway_code;
    }
    if (last_stream_id != NULL) {
      *last_stream_id = c->goaway_last;
    }
  }
  return c->goaway;
}

bool hs_h2_alpn_h2(const hs_h2_conn_t *c) {
  return c->alpn_h2;
}

int hs_h2_get(int port, bool tls, const char *path, const hs_h2_header_t *headers, size_t n_headers,
              int timeout_ms, int *status, hs_buf_t *body) {
  *status = 0;
  hs_h2_opts_t o = {.tls = tls, .connect_timeout_ms = timeout_ms};
  hs_h2_conn_t *c = NULL;
  int rc = hs_h2_connect(&c, port, &o);
  if (rc != HS_OK) {
    return rc;
  }
  hs_h2_response_t *r = NULL;
  rc = hs_h2_request(c, "GET", path, headers, n_headers, NULL, 0, timeout_ms, &r);
  if (r != NULL) {
    *status = r->status;
    if (body != NULL && r->body.len > 0) {
      if (hs_buf_append(body, r->body.data, r->body.len) != HS_OK) {
        rc = HS_ENOMEM;
      }
    }
  }
  hs_h2_close(c);
  return rc;
}

/* ---- the canary ---- */

static void *canary_main(void *arg) {
  hs_test_canary_t *k = arg;
  while (!atomic_load(&k->stop)) {
    long long t0 = hs_test_now_ms();
    int status = 0;
    int rc = hs_h2_get(k->port, k->tls, "/healthz", NULL, 0, 5000, &status, NULL);
    long long dt = hs_test_now_ms() - t0;
    if (rc == HS_OK && status == 200) {
      atomic_fetch_add(&k->ok, 1);
    } else {
      atomic_fetch_add(&k->failed, 1);
      snprintf(k->last_error, sizeof k->last_error, "GET /healthz: rc %d, status %d after %lld ms",
               rc, status, dt);
    }
    if (dt > atomic_load(&k->max_ms)) {
      atomic_store(&k->max_ms, dt);
    }
    hs_test_sleep_ms(k->interval_ms);
  }
  return NULL;
}

int hs_test_canary_start(hs_test_canary_t *k, int port, bool tls, int interval_ms) {
  memset(k, 0, sizeof *k);
  k->port = port;
  k->tls = tls;
  k->interval_ms = interval_ms > 0 ? interval_ms : 50;
  atomic_init(&k->stop, false);
  atomic_init(&k->ok, 0);
  atomic_init(&k->failed, 0);
  atomic_init(&k->max_ms, 0);
  if (pthread_create(&k->thread, NULL, canary_main, k) != 0) {
    return HS_EIO;
  }
  return HS_OK;
}

void hs_test_canary_stop(hs_test_canary_t *k) {
  atomic_store(&k->stop, true);
  pthread_join(k->thread, NULL);
}
