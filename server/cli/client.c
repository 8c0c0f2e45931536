/* The command line's HTTP/2 client: nghttp2's sans-I/O session over a non-blocking socket
 * (plain or OpenSSL), driven by poll() with a timeout on every wait. See client.h. */
#include "cli/client.h"
#include "core/str.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
  READ_CHUNK = 16384,          /* bytes read from the socket and fed to nghttp2 at a time */
  STREAM_WINDOW = 1 << 20,     /* what the server may send ahead on one stream */
  CONN_WINDOW = 1 << 20,       /* and on the connection */
  URL_PART_MAX = 256,          /* host and path prefix of --server */
  MAX_PATH_LEN = 8192,         /* prefix + path + query of one request */
  ERROR_EXCERPT = 120,         /* bytes of a non-JSON error body shown to the person */
  MAX_REQUEST_HEADERS = 16,    /* pseudo-headers, ours and the caller's */
  FRAMES_PER_RECV_BUDGET = 64, /* reads per pump before writing again */
};

typedef struct url {
  bool tls;
  char host[URL_PART_MAX];           /* without brackets */
  char port[8];                      /* decimal */
  char authority[URL_PART_MAX + 16]; /* as the URL gave it: host[:port] */
  char prefix[URL_PART_MAX];         /* "" or "/something" without a trailing slash */
} url_t;

/* The request in flight (one at a time). */
typedef struct call {
  const hs_client_request_t *req; /* borrowed */
  hs_client_response_t *resp;     /* borrowed */
  int32_t stream_id;
  bool head_seen;  /* the final (non-1xx) HEADERS arrived */
  bool streaming;  /* 2xx with an on_body callback: DATA goes to it */
  bool end_stream; /* the server ended the stream normally */
  bool closed;     /* the stream is closed, normally or not */
  uint32_t close_code;
  int cb_rc;       /* a callback's failure, or a limit hit while receiving */
  hs_err_t *err;   /* borrowed: where callbacks and limits write */
  size_t body_off; /* request body bytes handed to nghttp2 */
} call_t;

struct hs_client {
  url_t url;
  int fd;
  SSL_CTX *ssl_ctx; /* owned, NULL for h2c */
  SSL *ssl;         /* owned, NULL for h2c */
  nghttp2_session *sess;
  int timeout_ms;
  volatile sig_atomic_t *cancel; /* borrowed */
  bool eof;                      /* the server closed the connection (or it failed) */
  bool goaway;                   /* the server sent GOAWAY */
  uint32_t goaway_code;
  call_t *call; /* the request in flight, or NULL */
  hs_buf_t out; /* frames nghttp2 produced that the socket has not taken yet */
};

/* ------------------------------------------------------------------------------------ URL */

static int parse_url(const char *s, url_t *u, hs_err_t *err) {
  memset(u, 0, sizeof *u);
  const char *rest;
  if (strncmp(s, "http://", 7) == 0) {
    rest = s + 7;
  } else if (strncmp(s, "https://", 8) == 0) {
    u->tls = true;
    rest = s + 8;
  } else {
    return hs_err_set(err, HS_EINVAL,
                      "The server URL must start with http:// (h2c) or https:// (TLS), e.g. "
                      "https://handsel.example.com");
  }
  size_t auth_len = strcspn(rest, "/?#");
  const char *path = rest + auth_len;
  if (*path == '?' || *path == '#' || strchr(path, '?') != NULL || strchr(path, '#') != NULL) {
    return hs_err_set(err, HS_EINVAL, "The server URL may not carry a query or a fragment");
  }
  if (auth_len == 0 || auth_len >= sizeof u->authority - 1) {
    return hs_err_set(err, HS_EINVAL, "The server URL has no host, or a host that is too long");
  }
  if (memchr(rest, '@', auth_len) != NULL) {
    return hs_err_set(err, HS_EINVAL,
                      "The server URL may not carry credentials: pass the token with --token or "
                      "HANDSEL_TOKEN");
  }
  memcpy(u->authority, rest, auth_len);
  const char *host = u->authority;
  const char *port = NULL;
  size_t host_len;
  if (host[0] == '[') {
    const char *close = strchr(host, ']');
    if (close == NULL) {
      return hs_err_set(err, HS_EINVAL, "The server URL's IPv6 address lacks its closing ]");
    }
    host++;
    host_len = (size_t)(close - host);
    if (close[1] == ':') {
      port = close + 2;
    } else if (close[1] != '\0') {
      return hs_err_set(err, HS_EINVAL, "Unexpected characters after ] in the server URL");
    }
  } else {
    const char *colon = strchr(host, ':');
    host_len = colon != NULL ? (size_t)(colon - host) : strlen(host);
    port = colon != NULL ? colon + 1 : NULL;
  }
  if (host_len == 0 || host_len >= sizeof u->host) {
    return hs_err_set(err, HS_EINVAL, "The server URL has no host");
  }
  memcpy(u->host, host, host_len);
  for (size_t i = 0; i < host_len; i++) {
    unsigned char ch = (unsigned char)u->host[i];
    if (!isalnum(ch) && ch != '.' && ch != '-' && ch != ':' && ch != '_' && ch != '%') {
      return hs_err_set(err, HS_EINVAL,
                        "The server URL's host has a character '%c' it cannot "
                        "have",
                        isprint(ch) ? ch : '?');
    }
  }
  if (port != NULL) {
    char *end = NULL;
    long p = strtol(port, &end, 10);
    if (end == port || *end != '\0' || p < 1 || p > 65535) {
      return hs_err_set(err, HS_EINVAL, "The server URL's port must be a number from 1 to 65535");
    }
    snprintf(u->port, sizeof u->port, "%ld", p);
  } else {
    hs_strlcpy(u->port, u->tls ? "443" : "80", sizeof u->port);
  }
  size_t plen = strlen(path);
  while (plen > 0 && path[plen - 1] == '/') {
    plen--;
  }
  if (plen >= sizeof u->prefix) {
    return hs_err_set(err, HS_EINVAL, "The server URL's path is too long");
  }
  memcpy(u->prefix, path, plen);
  for (size_t i = 0; i < plen; i++) {
    if ((unsigned char)u->prefix[i] <= ' ' || u->prefix[i] == 0x7f) {
      return hs_err_set(err, HS_EINVAL,
                        "The server URL's path may not hold spaces or control "
                        "characters");
    }
  }
  return HS_OK;
}

/* ---------------------------------------------------------------------------- time, poll */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for events on fd until deadline. Returns > 0 when ready, 0 on timeout, HS_ECANCELED
 * when the cancel flag went up, HS_EIO when poll failed. */
static int wait_fd(int fd, short events, int64_t deadline, volatile sig_atomic_t *cancel) {
  for (;;) {
    if (cancel != NULL && *cancel != 0) {
      return HS_ECANCELED;
    }
    int64_t left = deadline - now_ms();
    if (left <= 0) {
      return 0;
    }
    struct pollfd p = {.fd = fd, .events = events};
    int n = poll(&p, 1, left > 1000 ? 1000 : (int)left);
    if (n > 0) {
      return n;
    }
    if (n < 0 && errno != EINTR) {
      return HS_EIO;
    }
  }
}

/* ------------------------------------------------------------------------------ TCP, TLS */

static int tcp_connect(hs_client_t *c, hs_err_t *err) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  struct addrinfo *res = NULL;
  int gai = getaddrinfo(c->url.host, c->url.port, &hints, &res);
  if (gai != 0) {
    return hs_err_set(err, HS_EIO, "Cannot resolve the server's host %s: %s", c->url.host,
                      gai_strerror(gai));
  }
  int64_t deadline = now_ms() + c->timeout_ms;
  int rc = HS_EIO;
  char why[160] = "no address to try";
  char where[INET6_ADDRSTRLEN + 8] = "";
  for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
    char addr[INET6_ADDRSTRLEN] = "?";
    const void *sa = ai->ai_family == AF_INET6
                         ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
                         : (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
    inet_ntop(ai->ai_family, sa, addr, sizeof addr);
    snprintf(where, sizeof where, ai->ai_family == AF_INET6 ? "[%s]" : "%s", addr);
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      hs_strlcpy(why, strerror(errno), sizeof why);
      continue;
    }
    int e = 0;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      e = errno;
      if (e == EINPROGRESS) {
        int w = wait_fd(fd, POLLOUT, deadline, c->cancel);
        if (w == HS_ECANCELED) {
          close(fd);
          rc = HS_ECANCELED;
          snprintf(why, sizeof why, "interrupted");
          break;
        }
        if (w == 0) {
          close(fd);
          rc = HS_EUNAVAIL;
          snprintf(why, sizeof why, "no answer within %d s", c->timeout_ms / 1000);
          break;
        }
        socklen_t len = sizeof e;
        if (w < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) != 0) {
          e = errno;
        }
      }
    }
    if (e == 0) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      c->fd = fd;
      freeaddrinfo(res);
      return HS_OK;
    }
    hs_strlcpy(why, strerror(e), sizeof why);
    close(fd);
  }
  freeaddrinfo(res);
  if (rc == HS_ECANCELED) {
    return hs_err_set(err, rc, "Interrupted while connecting to %s", c->url.authority);
  }
  /* The address tried last is named when the URL gave a name: it tells IPv4 from IPv6. */
  char bare[sizeof where];
  hs_strlcpy(bare, where[0] == '[' ? where + 1 : where, sizeof bare);
  bare[strcspn(bare, "]")] = '\0';
  if (strcmp(bare, c->url.host) == 0 || where[0] == '\0') {
    return hs_err_set(err, rc, "Cannot connect to %s: %s", c->url.authority, why);
  }
  return hs_err_set(err, rc, "Cannot connect to %s (at %s): %s", c->url.authority, where, why);
}

/* The first OpenSSL error as text, or fallback. */
static const char *ssl_reason(char *buf, size_t n, const char *fallback) {
  unsigned long e = ERR_get_error();
  if (e == 0) {
    hs_strlcpy(buf, fallback, n);
  } else {
    ERR_error_string_n(e, buf, n);
  }
  return buf;
}

static int tls_setup(hs_client_t *c, const char *ca_file, hs_err_t *err) {
  char reason[256];
  ERR_clear_error();
  c->ssl_ctx = SSL_CTX_new(TLS_client_method());
  if (c->ssl_ctx == NULL) {
    return hs_err_set(err, HS_ENOMEM, "Cannot set up TLS: %s",
                      ssl_reason(reason, sizeof reason, "out of memory"));
  }
  SSL_CTX_set_min_proto_version(c->ssl_ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(c->ssl_ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_PEER, NULL);
  if (ca_file != NULL) {
    if (SSL_CTX_load_verify_locations(c->ssl_ctx, ca_file, NULL) != 1) {
      return hs_err_set(err, HS_EIO, "Cannot read the CA certificates in %s: %s", ca_file,
                        ssl_reason(reason, sizeof reason, "not PEM certificates"));
    }
  } else if (SSL_CTX_set_default_verify_paths(c->ssl_ctx) != 1) {
    return hs_err_set(err, HS_EIO, "Cannot load the system's trusted certificates: %s",
                      ssl_reason(reason, sizeof reason, "unknown error"));
  }
  static const unsigned char alpn[] = {2, 'h', '2'};
  SSL_CTX_set_alpn_protos(c->ssl_ctx, alpn, sizeof alpn);
  c->ssl = SSL_new(c->ssl_ctx);
  if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
    return hs_err_set(err, HS_ENOMEM, "Cannot set up TLS: %s",
                      ssl_reason(reason, sizeof reason, "out of memory"));
  }
  /* The certificate must name the host of the URL: an IP address is matched against the
   * certificate's IP entries, a name against its DNS entries (and sent as SNI). */
  unsigned char ip[16];
  bool is_ip =
      inet_pton(AF_INET, c->url.host, ip) == 1 || inet_pton(AF_INET6, c->url.host, ip) == 1;
  X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
  if (is_ip) {
    X509_VERIFY_PARAM_set1_ip_asc(param, c->url.host);
  } else {
    SSL_set_tlsext_host_name(c->ssl, c->url.host);
    SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    SSL_set1_host(c->ssl, c->url.host);
  }
  int64_t deadline = now_ms() + c->timeout_ms;
  for (;;) {
    ERR_clear_error();
    int r = SSL_connect(c->ssl);
    if (r == 1) {
      break;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      int w = wait_fd(c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline, c->cancel);
      if (w == HS_ECANCELED) {
        return hs_err_set(err, HS_ECANCELED, "Interrupted during the TLS handshake");
      }
      if (w == 0) {
        return hs_err_set(err, HS_EUNAVAIL, "TLS handshake with %s: no answer within %d s",
                          c->url.authority, c->timeout_ms / 1000);
      }
      continue;
    }
    long v = SSL_get_verify_result(c->ssl);
    if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH) {
      return hs_err_set(err, HS_EIO,
                        "TLS handshake with %s failed: the server's certificate is not "
                        "trusted for the name %s (it names other hosts): use a name it has",
                        c->url.authority, c->url.host);
    }
    if (v != X509_V_OK) {
      return hs_err_set(err, HS_EIO,
                        "TLS handshake with %s failed: the server's certificate is not trusted "
                        "(%s); pass its CA with --ca FILE or HANDSEL_CA",
                        c->url.authority, X509_verify_cert_error_string(v));
    }
    return hs_err_set(err, HS_EIO,
                      "TLS handshake with %s failed (%s): does the server speak TLS on that "
                      "port? http:// is for a server without a certificate",
                      c->url.authority, ssl_reason(reason, sizeof reason, "no reason given"));
  }
  const unsigned char *proto = NULL;
  unsigned int proto_len = 0;
  SSL_get0_alpn_selected(c->ssl, &proto, &proto_len);
  if (proto_len != 2 || memcmp(proto, "h2", 2) != 0) {
    return hs_err_set(err, HS_EIO,
                      "%s did not agree to HTTP/2 over TLS (ALPN h2): is it a handsel server?",
                      c->url.authority);
  }
  return HS_OK;
}

/* ------------------------------------------------------------------------ socket I/O */

/* Bytes read (> 0), 0 when nothing is available now, HS_EIO at end of stream or on error. */
static ssize_t io_read(hs_client_t *c, uint8_t *buf, size_t len) {
  if (c->ssl != NULL) {
    ERR_clear_error();
    int n = SSL_read(c->ssl, buf, (int)len);
    if (n > 0) {
      return n;
    }
    int e = SSL_get_error(c->ssl, n);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : HS_EIO;
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

/* Bytes written (>= 0) or HS_EIO. */
static ssize_t io_write(hs_client_t *c, const uint8_t *buf, size_t len) {
  if (c->ssl != NULL) {
    ERR_clear_error();
    int n = SSL_write(c->ssl, buf, (int)(len > (1u << 20) ? (1u << 20) : len));
    if (n > 0) {
      return n;
    }
    int e = SSL_get_error(c->ssl, n);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : HS_EIO;
  }
  ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
  if (n >= 0) {
    return n;
  }
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : HS_EIO;
}

/* Moves frames out of nghttp2 and writes what the socket takes now. */
static int flush_out(hs_client_t *c, hs_err_t *err) {
  for (;;) {
    while (c->out.len < 65536 && nghttp2_session_want_write(c->sess)) {
      const uint8_t *data = NULL;
      ssize_t n = nghttp2_session_mem_send(c->sess, &data);
      if (n < 0) {
        return hs_err_set(err, HS_EIO, "HTTP/2 error: %s", nghttp2_strerror((int)n));
      }
      if (n == 0) {
        break;
      }
      if (hs_buf_append(&c->out, data, (size_t)n) != HS_OK) {
        return hs_err_set(err, HS_ENOMEM, "Out of memory");
      }
    }
    if (c->out.len == 0) {
      return HS_OK;
    }
    ssize_t w = io_write(c, c->out.data, c->out.len);
    if (w < 0) {
      c->eof = true;
      return hs_err_set(err, HS_EIO, "The connection to %s broke while sending", c->url.authority);
    }
    if (w == 0) {
      return HS_OK;
    }
    hs_buf_consume(&c->out, (size_t)w);
  }
}

/* Reads what is available now and feeds it to nghttp2 in bounded pieces. */
static int read_in(hs_client_t *c, hs_err_t *err) {
  uint8_t buf[READ_CHUNK];
  for (int i = 0; i < FRAMES_PER_RECV_BUDGET && !c->eof; i++) {
    ssize_t n = io_read(c, buf, sizeof buf);
    if (n == 0) {
      return HS_OK;
    }
    if (n < 0) {
      c->eof = true;
      return HS_OK; /* the caller decides whether the answer was complete */
    }
    ssize_t r = nghttp2_session_mem_recv(c->sess, buf, (size_t)n);
    if (c->call != NULL && c->call->cb_rc != HS_OK) {
      /* A callback or a limit stopped us (err is filled); nghttp2 treats the callback's
       * failure as fatal, so the connection is done. */
      c->eof = true;
      return c->call->cb_rc;
    }
    if (r < 0) {
      c->eof = true;
      return hs_err_set(err, HS_EIO, "The server broke the HTTP/2 protocol: %s",
                        nghttp2_strerror((int)r));
    }
  }
  return HS_OK;
}

/* --------------------------------------------------------------------- nghttp2 callbacks */

static call_t *call_of(hs_client_t *c, int32_t stream_id) {
  return c->call != NULL && c->call->stream_id == stream_id ? c->call : NULL;
}

static int fail_call(call_t *call, int code, const char *msg) {
  if (call->cb_rc == HS_OK) {
    call->cb_rc = hs_err_set(call->err, code, "%s", msg);
  }
  return NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *user) {
  return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user) {
  hs_client_t *c = user;
  call_t *call = frame->hd.type == NGHTTP2_HEADERS ? call_of(c, frame->hd.stream_id) : NULL;
  if (call == NULL || call->head_seen) {
    return 0; /* trailers and strays are ignored */
  }
  hs_client_response_t *resp = call->resp;
  /* nghttp2 does not enforce the header list size it advertises (HARDENING.md): count. */
  resp->header_list += namelen + valuelen + 32;
  if (resp->header_list > HS_CLIENT_MAX_HEADER_LIST || resp->n_headers >= HS_CLIENT_MAX_HEADERS) {
    return fail_call(call, HS_ELIMIT,
                     "The server's answer has more header fields than the client accepts");
  }
  if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
    int st = 0;
    for (size_t i = 0; i < valuelen && i < 3; i++) {
      st = st * 10 + (value[i] - '0');
    }
    resp->status = st;
    return 0;
  }
  size_t noff = resp->hbuf.len;
  static const char nul = '\0';
  if (hs_buf_append(&resp->hbuf, name, namelen) != HS_OK ||
      hs_buf_append(&resp->hbuf, &nul, 1) != HS_OK) {
    return fail_call(call, HS_ENOMEM, "Out of memory");
  }
  size_t voff = resp->hbuf.len;
  if (hs_buf_append(&resp->hbuf, value, valuelen) != HS_OK ||
      hs_buf_append(&resp->hbuf, &nul, 1) != HS_OK) {
    return fail_call(call, HS_ENOMEM, "Out of memory");
  }
  resp->name_off[resp->n_headers] = noff;
  resp->value_off[resp->n_headers] = voff;
  resp->n_headers++;
  return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *user) {
  hs_client_t *c = user;
  if (frame->hd.type == NGHTTP2_GOAWAY) {
    c->goaway = true;
    c->goaway_code = frame->goaway.error_code;
    return 0;
  }
  call_t *call = call_of(c, frame->hd.stream_id);
  if (call == NULL) {
    return 0;
  }
  if (frame->hd.type == NGHTTP2_HEADERS && !call->head_seen) {
    hs_client_response_t *resp = call->resp;
    if (resp->status >= 100 && resp->status < 200) {
      /* An interim answer: forget its fields and wait for the final one. */
      resp->status = 0;
      resp->n_headers = 0;
      resp->header_list = 0;
      resp->hbuf.len = 0;
    } else {
      call->head_seen = true;
      bool ok = resp->status >= 200 && resp->status < 300;
      call->streaming = ok && call->req->on_body != NULL;
      resp->body.limit = ok ? HS_CLIENT_MAX_BODY : HS_CLIENT_MAX_ERROR_BODY;
      if (ok && call->req->on_head != NULL) {
        int rc = call->req->on_head(call->req->ctx, resp, call->err);
        if (rc != HS_OK) {
          call->cb_rc = rc;
          return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
      }
    }
  }
  if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
      (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
    call->end_stream = true;
  }
  return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data,
                         size_t len, void *user) {
  hs_client_t *c = user;
  call_t *call = call_of(c, stream_id);
  if (call == NULL) {
    return 0;
  }
  call->resp->body_bytes += len;
  if (call->streaming) {
    int rc = call->req->on_body(call->req->ctx, data, len, call->err);
    if (rc != HS_OK) {
      call->cb_rc = rc;
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
  }
  int rc = hs_buf_append(&call->resp->body, data, len);
  if (rc == HS_ELIMIT && call->resp->status >= 300) {
    return 0; /* an error body is only read for its message: its start is enough */
  }
  if (rc != HS_OK) {
    return fail_call(call, rc == HS_ELIMIT ? HS_ELIMIT : HS_ENOMEM,
                     rc == HS_ELIMIT ? "The server's answer is larger than the client accepts"
                                     : "Out of memory");
  }
  return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *user) {
  hs_client_t *c = user;
  call_t *call = call_of(c, stream_id);
  if (call != NULL) {
    call->closed = true;
    call->close_code = error_code;
  }
  return 0;
}

static ssize_t read_req_body(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
                             uint32_t *data_flags, nghttp2_data_source *source, void *user) {
  call_t *call = source->ptr;
  size_t n = call->req->body_len - call->body_off;
  if (n > length) {
    n = length;
  }
  if (n > 0) {
    memcpy(buf, (const uint8_t *)call->req->body + call->body_off, n);
  }
  call->body_off += n;
  if (call->body_off == call->req->body_len) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  }
  return (ssize_t)n;
}

/* ------------------------------------------------------------------------------- public */

static int h2_setup(hs_client_t *c, hs_err_t *err) {
  nghttp2_session_callbacks *cbs = NULL;
  nghttp2_option *opt = NULL;
  if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0) {
    nghttp2_session_callbacks_del(cbs);
    return hs_err_set(err, HS_ENOMEM, "Out of memory");
  }
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  nghttp2_option_set_no_closed_streams(opt, 1);
  nghttp2_option_set_max_reserved_remote_streams(opt, 0);
  int rv = nghttp2_session_client_new2(&c->sess, cbs, c, opt);
  nghttp2_session_callbacks_del(cbs);
  nghttp2_option_del(opt);
  if (rv != 0) {
    return hs_err_set(err, HS_ENOMEM, "Out of memory");
  }
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, HS_CLIENT_MAX_HEADER_LIST},
  };
  if (nghttp2_submit_settings(c->sess, NGHTTP2_FLAG_NONE, settings,
                              sizeof settings / sizeof settings[0]) != 0 ||
      nghttp2_session_set_local_window_size(c->sess, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW) != 0) {
    return hs_err_set(err, HS_ENOMEM, "Out of memory");
  }
  return flush_out(c, err);
}

int hs_client_connect(const hs_client_opts_t *opts, hs_client_t **out, hs_err_t *err) {
  *out = NULL;
  hs_client_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    return hs_err_set(err, HS_ENOMEM, "Out of memory");
  }
  c->fd = -1;
  c->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : HS_CLIENT_DEFAULT_TIMEOUT_MS;
  c->cancel = opts->cancel;
  hs_buf_init(&c->out, 0);
  int rc = parse_url(opts->url != NULL ? opts->url : "", &c->url, err);
  if (rc == HS_OK && !c->url.tls && opts->ca_file != NULL && opts->ca_file[0] != '\0') {
    rc = hs_err_set(err, HS_EINVAL,
                    "A CA file is only used with an https:// server URL, and this one is "
                    "http://");
  }
  if (rc == HS_OK) {
    rc = tcp_connect(c, err);
  }
  if (rc == HS_OK && c->url.tls) {
    const char *ca = opts->ca_file != NULL && opts->ca_file[0] != '\0' ? opts->ca_file : NULL;
    rc = tls_setup(c, ca, err);
  }
  if (rc == HS_OK) {
    rc = h2_setup(c, err);
  }
  if (rc != HS_OK) {
    hs_client_close(c);
    return rc;
  }
  *out = c;
  return HS_OK;
}

void hs_client_close(hs_client_t *c) {
  if (c == NULL) {
    return;
  }
  if (c->sess != NULL && !c->eof) {
    /* A polite goodbye; one attempt, without waiting for the socket. */
    hs_err_t ignored;
    nghttp2_session_terminate_session(c->sess, NGHTTP2_NO_ERROR);
    (void)flush_out(c, &ignored);
  }
  if (c->ssl != NULL) {
    SSL_free(c->ssl);
  }
  SSL_CTX_free(c->ssl_ctx);
  if (c->fd >= 0) {
    close(c->fd);
  }
  nghttp2_session_del(c->sess);
  hs_buf_free(&c->out);
  free(c);
}

void hs_client_response_free(hs_client_response_t *resp) {
  hs_buf_free(&resp->body);
  hs_buf_free(&resp->hbuf);
  memset(resp, 0, sizeof *resp);
}

const char *hs_client_header(const hs_client_response_t *resp, const char *name) {
  for (size_t i = 0; i < resp->n_headers; i++) {
    const char *n = (const char *)resp->hbuf.data + resp->name_off[i];
    if (strcmp(n, name) == 0) {
      return (const char *)resp->hbuf.data + resp->value_off[i];
    }
  }
  return NULL;
}

int hs_client_status_code(int status) {
  switch (status) {
    case 404:
      return HS_ENOTFOUND;
    case 409:
      return HS_ECONFLICT;
    case 413:
      return HS_ELIMIT;
    case 422:
      return HS_EVALIDATION;
    case 429:
    case 503:
      return HS_EUNAVAIL;
    case 501:
      return HS_EUNSUPPORTED;
    default:
      return status >= 400 && status < 500 ? HS_EINVAL : HS_EIO;
  }
}

/* Copies at most n bytes of s into out (size cap), control characters replaced by '?'. */
static void clean_copy(char *out, size_t cap, const char *s, size_t n) {
  size_t j = 0;
  for (size_t i = 0; i < n && s[i] != '\0' && j + 1 < cap; i++) {
    unsigned char ch = (unsigned char)s[i];
    out[j++] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
  }
  out[j] = '\0';
}

int hs_client_error_from(const hs_client_response_t *resp, hs_err_t *err) {
  int code = hs_client_status_code(resp->status);
  char ecode[64] = "error";
  char msg[HS_ERR_MSG_MAX - 96] = "";
  json_t *root = NULL;
  if (resp->body.len > 0) {
    root = json_loadb((const char *)resp->body.data, resp->body.len, 0, NULL);
  }
  json_t *e = json_is_object(root) ? json_object_get(root, "error") : NULL;
  const char *c = json_string_value(json_object_get(e, "code"));
  const char *m = json_string_value(json_object_get(e, "message"));
  if (c != NULL && m != NULL) {
    clean_copy(ecode, sizeof ecode, c, strlen(c));
    clean_copy(msg, sizeof msg, m, strlen(m));
  } else if (resp->body.len > 0) {
    /* Not handsel's error shape (a proxy in between?): show how the body starts. */
    size_t n = resp->body.len < ERROR_EXCERPT ? resp->body.len : ERROR_EXCERPT;
    clean_copy(msg, sizeof msg, (const char *)resp->body.data, n);
  } else {
    snprintf(msg, sizeof msg, "the server sent no explanation");
  }
  json_decref(root);
  return hs_err_set(err, code, "%d %s: %s", resp->status, ecode, msg);
}

/* Runs the connection until the call's stream closed. */
static int run_call(hs_client_t *c, call_t *call, hs_err_t *err) {
  int64_t deadline = now_ms() + c->timeout_ms;
  uint64_t seen = 0;
  while (!call->closed) {
    int rc = flush_out(c, err);
    if (rc != HS_OK) {
      return rc;
    }
    if (c->eof) {
      break;
    }
    /* OpenSSL may hold decrypted bytes the socket no longer signals. */
    bool pending = c->ssl != NULL && SSL_pending(c->ssl) > 0;
    int w = 1;
    if (!pending) {
      short ev = POLLIN | (c->out.len > 0 ? POLLOUT : 0);
      w = wait_fd(c->fd, ev, deadline, c->cancel);
    }
    if (w == HS_ECANCELED) {
      return hs_err_set(err, HS_ECANCELED, "Interrupted");
    }
    if (w == 0) {
      return hs_err_set(err, HS_EUNAVAIL,
                        "%s sent nothing for %d s: giving up (a longer wait: --timeout SECONDS)",
                        c->url.authority, c->timeout_ms / 1000);
    }
    if (w < 0) {
      return hs_err_set(err, HS_EIO, "Waiting for %s failed: %s", c->url.authority,
                        strerror(errno));
    }
    rc = read_in(c, err);
    if (rc != HS_OK) {
      return rc;
    }
    /* The timeout is for silence, not for the whole answer: a long export that keeps
     * arriving never times out. */
    uint64_t now_seen = call->resp->body_bytes + call->resp->hbuf.len + (call->closed ? 1 : 0);
    if (now_seen != seen) {
      seen = now_seen;
      deadline = now_ms() + c->timeout_ms;
    }
  }
  if (!call->closed || !call->end_stream || call->close_code != NGHTTP2_NO_ERROR) {
    if (call->head_seen && call->resp->status >= 200 && call->resp->status < 300) {
      return hs_err_set(err, HS_EIO,
                        "The server ended the answer before it was complete (after %llu body "
                        "bytes%s%s)",
                        (unsigned long long)call->resp->body_bytes,
                        c->goaway ? ", it went away" : "",
                        call->close_code == NGHTTP2_REFUSED_STREAM ? ", request refused" : "");
    }
    if (!call->head_seen) {
      return hs_err_set(
          err, HS_EIO, "The connection to %s closed before an answer came%s", c->url.authority,
          c->goaway ? " (the server is shutting down or refused the connection)" : "");
    }
  }
  return HS_OK;
}

int hs_client_request(hs_client_t *c, const hs_client_request_t *req, hs_client_response_t *resp,
                      hs_err_t *err) {
  memset(resp, 0, sizeof *resp);
  hs_buf_init(&resp->body, HS_CLIENT_MAX_BODY);
  hs_buf_init(&resp->hbuf, HS_CLIENT_MAX_HEADER_LIST);
  if (c->eof || c->goaway) {
    return hs_err_set(err, HS_EIO, "The connection to %s is closed", c->url.authority);
  }
  char path[MAX_PATH_LEN];
  int plen = snprintf(path, sizeof path, "%s%s", c->url.prefix, req->path);
  if (plen < 0 || (size_t)plen >= sizeof path) {
    return hs_err_set(err, HS_ELIMIT, "The request path is longer than %d bytes", MAX_PATH_LEN);
  }
  char auth[512];
  nghttp2_nv nv[MAX_REQUEST_HEADERS];
  size_t n = 0;
#define HS_NV(N, V)                                                                                \
  nv[n++] = (nghttp2_nv){(uint8_t *)(N), (uint8_t *)(V), strlen(N), strlen(V), NGHTTP2_NV_FLAG_NONE}
  HS_NV(":method", req->method);
  HS_NV(":scheme", c->url.tls ? "https" : "http");
  HS_NV(":authority", c->url.authority);
  HS_NV(":path", path);
  HS_NV("accept", "application/json");
  HS_NV("user-agent", "handsel/" HANDSEL_VERSION);
  if (req->token != NULL) {
    int alen = snprintf(auth, sizeof auth, "Bearer %s", req->token);
    if (alen < 0 || (size_t)alen >= sizeof auth) {
      return hs_err_set(err, HS_EINVAL, "The token is too long to be a handsel token");
    }
    HS_NV("authorization", auth);
    /* Never kept in HPACK's dynamic table: the secret does not linger in compression state. */
    nv[n - 1].flags = NGHTTP2_NV_FLAG_NO_INDEX;
  }
  if (req->body != NULL && req->content_type != NULL) {
    HS_NV("content-type", req->content_type);
  }
  for (size_t i = 0; i < req->n_headers && n < MAX_REQUEST_HEADERS; i++) {
    HS_NV(req->headers[i].name, req->headers[i].value);
  }
#undef HS_NV
  call_t call = {.req = req, .resp = resp, .err = err};
  nghttp2_data_provider prd = {.source.ptr = &call, .read_callback = read_req_body};
  int32_t id = nghttp2_submit_request(c->sess, NULL, nv, n, req->body != NULL ? &prd : NULL, NULL);
  if (id < 0) {
    return hs_err_set(err, HS_EINVAL, "Cannot send the request: %s", nghttp2_strerror(id));
  }
  call.stream_id = id;
  c->call = &call;
  int rc = run_call(c, &call, err);
  c->call = NULL;
  if (rc != HS_OK) {
    if (!call.closed && !c->eof) {
      /* Stop the server sending the rest of an answer nobody will read. */
      nghttp2_submit_rst_stream(c->sess, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
      hs_err_t ignored;
      (void)flush_out(c, &ignored);
    }
    return rc;
  }
  if (resp->status < 200 || resp->status >= 300) {
    return hs_client_error_from(resp, err);
  }
  return HS_OK;
}
