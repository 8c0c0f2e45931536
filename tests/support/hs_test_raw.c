#include "hs_test_raw.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/endian.h"
#include "core/error.h"
#include "hs_test_server.h"

#define FRAME_HEADER 9
/* The largest frame accepted from the server. The client never raises SETTINGS_MAX_FRAME_SIZE,
 * so anything longer than 16384 is a server bug; a little slack gives a clear failure. */
#define MAX_FRAME    (1u << 24)

static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

int hs_raw_connect(hs_raw_t *r, int port) {
  signal(SIGPIPE, SIG_IGN);
  memset(r, 0, sizeof *r);
  r->fd = -1;
  r->max_concurrent_streams = 0xffffffffu;
  r->initial_window = 65535;
  r->max_header_list = 0xffffffffu;
  hs_buf_init(&r->in, 0);
  hs_buf_init(&r->hblock, 1u << 20);
  if (nghttp2_hd_deflate_new(&r->deflater, 4096) != 0 ||
      nghttp2_hd_inflate_new(&r->inflater) != 0) {
    hs_raw_close(r);
    return HS_ENOMEM;
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    hs_raw_close(r);
    return HS_EIO;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    int err = 0;
    socklen_t len = sizeof err;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    if (errno != EINPROGRESS || poll(&p, 1, 5000) != 1 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      close(fd);
      hs_raw_close(r);
      return HS_EIO;
    }
  }
  r->fd = fd;
  return HS_OK;
}

void hs_raw_close(hs_raw_t *r) {
  if (r->fd >= 0) {
    close(r->fd);
    r->fd = -1;
  }
  if (r->deflater != NULL) {
    nghttp2_hd_deflate_del(r->deflater);
    r->deflater = NULL;
  }
  if (r->inflater != NULL) {
    nghttp2_hd_inflate_del(r->inflater);
    r->inflater = NULL;
  }
  hs_buf_free(&r->in);
  hs_buf_free(&r->hblock);
}

/* ---- writing ---- */

int hs_raw_write(hs_raw_t *r, const void *p, size_t n, int timeout_ms) {
  const uint8_t *b = p;
  long long deadline = hs_test_now_ms() + timeout_ms;
  while (n > 0) {
    ssize_t w = send(r->fd, b, n, MSG_NOSIGNAL);
    if (w > 0) {
      b += w;
      n -= (size_t)w;
      continue;
    }
    if (w < 0 && errno == EINTR) {
      continue;
    }
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      r->write_failed = true;
      return HS_EIO;
    }
    long long left = deadline - hs_test_now_ms();
    if (left <= 0) {
      return HS_EUNAVAIL;
    }
    struct pollfd pf = {.fd = r->fd, .events = POLLOUT};
    int pr = poll(&pf, 1, (int)left);
    if (pr == 0) {
      return HS_EUNAVAIL;
    }
    if (pr > 0 && (pf.revents & (POLLERR | POLLHUP)) && !(pf.revents & POLLOUT)) {
      r->write_failed = true;
      return HS_EIO;
    }
  }
  return HS_OK;
}

static void put_frame_header(uint8_t *h, size_t len, uint8_t type, uint8_t flags,
                             int32_t stream_id) {
  h[0] = (uint8_t)(len >> 16);
  h[1] = (uint8_t)(len >> 8);
  h[2] = (uint8_t)len;
  h[3] = type;
  h[4] = flags;
  uint32_t sid = (uint32_t)stream_id & 0x7fffffffu;
  h[5] = (uint8_t)(sid >> 24);
  h[6] = (uint8_t)(sid >> 16);
  h[7] = (uint8_t)(sid >> 8);
  h[8] = (uint8_t)sid;
}

int hs_raw_frame_append(hs_buf_t *out, uint8_t type, uint8_t flags, int32_t stream_id,
                        const void *payload, size_t len) {
  uint8_t h[FRAME_HEADER];
  put_frame_header(h, len, type, flags, stream_id);
  int rc = hs_buf_append(out, h, sizeof h);
  if (rc == HS_OK && len > 0) {
    rc = hs_buf_append(out, payload, len);
  }
  return rc;
}

int hs_raw_frame(hs_raw_t *r, uint8_t type, uint8_t flags, int32_t stream_id, const void *payload,
                 size_t len, int timeout_ms) {
  uint8_t small[FRAME_HEADER + 64];
  if (len <= 64) {
    put_frame_header(small, len, type, flags, stream_id);
    if (len > 0) {
      memcpy(small + FRAME_HEADER, payload, len);
    }
    return hs_raw_write(r, small, FRAME_HEADER + len, timeout_ms);
  }
  hs_buf_t b;
  hs_buf_init(&b, 0);
  int rc = hs_raw_frame_append(&b, type, flags, stream_id, payload, len);
  if (rc == HS_OK) {
    rc = hs_raw_write(r, b.data, b.len, timeout_ms);
  }
  hs_buf_free(&b);
  return rc;
}

#define WRITE_TIMEOUT 5000

int hs_raw_settings(hs_raw_t *r, const nghttp2_settings_entry *iv, size_t n) {
  uint8_t payload[6 * 16];
  if (n > 16) {
    return HS_EINVAL;
  }
  for (size_t i = 0; i < n; i++) {
    payload[6 * i] = (uint8_t)(iv[i].settings_id >> 8);
    payload[6 * i + 1] = (uint8_t)iv[i].settings_id;
    hs_put_be32(payload + 6 * i + 2, iv[i].value);
  }
  return hs_raw_frame(r, HS_RAW_SETTINGS, 0, 0, payload, 6 * n, WRITE_TIMEOUT);
}

int hs_raw_settings_ack(hs_raw_t *r) {
  return hs_raw_frame(r, HS_RAW_SETTINGS, HS_RAW_FLAG_ACK, 0, NULL, 0, WRITE_TIMEOUT);
}

int hs_raw_preface(hs_raw_t *r, const nghttp2_settings_entry *iv, size_t n) {
  int rc = hs_raw_write(r, PREFACE, sizeof PREFACE - 1, WRITE_TIMEOUT);
  if (rc == HS_OK) {
    rc = hs_raw_settings(r, iv, n);
  }
  return rc;
}

int hs_raw_preface_big_window(hs_raw_t *r) {
  nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                 {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0x7fffffff}};
  int rc = hs_raw_preface(r, iv, 2);
  if (rc == HS_OK) {
    rc = hs_raw_window_update(r, 0, 0x7fffffff - 65535);
  }
  return rc;
}

int hs_raw_ping(hs_raw_t *r, uint64_t opaque) {
  uint8_t p[8];
  for (int i = 0; i < 8; i++) {
    p[i] = (uint8_t)(opaque >> (56 - 8 * i));
  }
  return hs_raw_frame(r, HS_RAW_PING, 0, 0, p, 8, WRITE_TIMEOUT);
}

int hs_raw_rst_stream(hs_raw_t *r, int32_t stream_id, uint32_t code) {
  uint8_t p[4];
  hs_put_be32(p, code);
  return hs_raw_frame(r, HS_RAW_RST_STREAM, 0, stream_id, p, 4, WRITE_TIMEOUT);
}

int hs_raw_window_update(hs_raw_t *r, int32_t stream_id, uint32_t increment) {
  uint8_t p[4];
  hs_put_be32(p, increment & 0x7fffffffu);
  return hs_raw_frame(r, HS_RAW_WINDOW_UPDATE, 0, stream_id, p, 4, WRITE_TIMEOUT);
}

int hs_raw_priority(hs_raw_t *r, int32_t stream_id, int32_t depends_on, uint8_t weight) {
  uint8_t p[5];
  hs_put_be32(p, (uint32_t)depends_on & 0x7fffffffu);
  p[4] = weight;
  return hs_raw_frame(r, HS_RAW_PRIORITY, 0, stream_id, p, 5, WRITE_TIMEOUT);
}

int hs_raw_data(hs_raw_t *r, int32_t stream_id, bool end_stream, const void *p, size_t n) {
  return hs_raw_frame(r, HS_RAW_DATA, end_stream ? HS_RAW_FLAG_END_STREAM : 0, stream_id, p, n,
                      WRITE_TIMEOUT);
}

int hs_raw_headers(hs_raw_t *r, int32_t stream_id, uint8_t flags, const void *block, size_t n) {
  return hs_raw_frame(r, HS_RAW_HEADERS, flags, stream_id, block, n, WRITE_TIMEOUT);
}

int hs_raw_continuation(hs_raw_t *r, int32_t stream_id, bool end_headers, const void *block,
                        size_t n) {
  return hs_raw_frame(r, HS_RAW_CONTINUATION, end_headers ? HS_RAW_FLAG_END_HEADERS : 0, stream_id,
                      block, n, WRITE_TIMEOUT);
}

int hs_raw_encode(hs_raw_t *r, const nghttp2_nv *nv, size_t n, hs_buf_t *out) {
  size_t bound = nghttp2_hd_deflate_bound(r->deflater, nv, n);
  int rc = hs_buf_reserve(out, bound);
  if (rc != HS_OK) {
    return rc;
  }
  ssize_t w = nghttp2_hd_deflate_hd(r->deflater, out->data + out->len, bound, nv, n);
  if (w < 0) {
    return HS_EINVAL;
  }
  out->len += (size_t)w;
  return HS_OK;
}

#define NV(n, v)                                                                                   \
  (nghttp2_nv) {                                                                                   \
    (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE                     \
  }

int hs_raw_request(hs_raw_t *r, int32_t stream_id, const char *method, const char *path,
                   const nghttp2_nv *extra, size_t n_extra, bool end_stream) {
  nghttp2_nv *nv = calloc(4 + n_extra, sizeof *nv);
  if (nv == NULL) {
    return HS_ENOMEM;
  }
  nv[0] = NV(":method", method);
  nv[1] = NV(":scheme", "http");
  nv[2] = NV(":authority", "127.0.0.1");
  nv[3] = NV(":path", path);
  for (size_t i = 0; i < n_extra; i++) {
    nv[4 + i] = extra[i];
  }
  hs_buf_t block;
  hs_buf_init(&block, 0);
  int rc = hs_raw_encode(r, nv, 4 + n_extra, &block);
  free(nv);
  if (rc == HS_OK) {
    if (block.len > 16384) {
      rc = HS_ELIMIT; /* would need CONTINUATION: tests that want that build it themselves */
    } else {
      uint8_t flags = HS_RAW_FLAG_END_HEADERS | (end_stream ? HS_RAW_FLAG_END_STREAM : 0);
      rc = hs_raw_headers(r, stream_id, flags, block.data, block.len);
    }
  }
  hs_buf_free(&block);
  return rc;
}

/* ---- reading ---- */

static hs_raw_stream_t *stream_slot(hs_raw_t *r, int32_t id) {
  for (size_t i = 0; i < r->n_streams; i++) {
    if (r->streams[i].id == id) {
      return &r->streams[i];
    }
  }
  if (r->n_streams == HS_RAW_MAX_STREAMS) {
    return NULL;
  }
  hs_raw_stream_t *s = &r->streams[r->n_streams++];
  memset(s, 0, sizeof *s);
  s->id = id;
  return s;
}

const hs_raw_stream_t *hs_raw_stream(const hs_raw_t *r, int32_t stream_id) {
  for (size_t i = 0; i < r->n_streams; i++) {
    if (r->streams[i].id == stream_id) {
      return &r->streams[i];
    }
  }
  return NULL;
}

/* Inflates a complete header block from the server, so the HPACK state stays in sync and the
 * response status is known. */
static void inflate_block(hs_raw_t *r) {
  hs_raw_stream_t *s = stream_slot(r, r->hblock_stream);
  const uint8_t *in = r->hblock.data;
  size_t left = r->hblock.len;
  for (;;) {
    nghttp2_nv nv;
    int flags = 0;
    ssize_t n = nghttp2_hd_inflate_hd2(r->inflater, &nv, &flags, in, left, 1);
    if (n < 0) {
      break;
    }
    in += n;
    left -= (size_t)n;
    if ((flags & NGHTTP2_HD_INFLATE_EMIT) && s != NULL && nv.namelen == 7 &&
        memcmp(nv.name, ":status", 7) == 0 && s->status == 0) {
      char tmp[8] = {0};
      memcpy(tmp, nv.value, nv.valuelen < 7 ? nv.valuelen : 7);
      s->status = atoi(tmp);
    }
    if (flags & NGHTTP2_HD_INFLATE_FINAL) {
      nghttp2_hd_inflate_end_headers(r->inflater);
      break;
    }
    if (!(flags & NGHTTP2_HD_INFLATE_EMIT) && left == 0) {
      break;
    }
  }
  r->hblock.len = 0;
}

static void summarize(hs_raw_t *r, const hs_raw_frame_t *f) {
  const uint8_t *p = f->payload;
  size_t len = f->length;
  r->frames++;
  switch (f->type) {
    case HS_RAW_SETTINGS:
      if (f->flags & HS_RAW_FLAG_ACK) {
        r->settings_acks++;
        break;
      }
      r->got_settings = true;
      for (size_t i = 0; i + 6 <= len; i += 6) {
        uint16_t id = (uint16_t)(p[i] << 8 | p[i + 1]);
        uint32_t v = hs_get_be32(p + i + 2);
        if (id == NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) {
          r->max_concurrent_streams = v;
        } else if (id == NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE) {
          r->initial_window = v;
        } else if (id == NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE) {
          r->max_header_list = v;
        }
      }
      break;
    case HS_RAW_PING:
      if (f->flags & HS_RAW_FLAG_ACK) {
        r->ping_acks++;
      }
      break;
    case HS_RAW_GOAWAY:
      if (len >= 8) {
        r->goaway = true;
        r->goaway_last_stream = (int32_t)(hs_get_be32(p) & 0x7fffffffu);
        r->goaway_code = hs_get_be32(p + 4);
      }
      break;
    case HS_RAW_RST_STREAM: {
      r->rst_count++;
      hs_raw_stream_t *s = stream_slot(r, f->stream_id);
      if (s != NULL && len >= 4) {
        s->reset = true;
        s->reset_code = hs_get_be32(p);
      }
      break;
    }
    case HS_RAW_DATA: {
      hs_raw_stream_t *s = stream_slot(r, f->stream_id);
      if (s != NULL) {
        size_t pad = (f->flags & HS_RAW_FLAG_PADDED) && len > 0 ? (size_t)p[0] + 1 : 0;
        s->data_bytes += len >= pad ? len - pad : 0;
        if (f->flags & HS_RAW_FLAG_END_STREAM) {
          s->end_stream = true;
        }
      }
      break;
    }
    case HS_RAW_HEADERS: {
      size_t off = 0, pad = 0;
      if ((f->flags & HS_RAW_FLAG_PADDED) && len > 0) {
        pad = p[0];
        off = 1;
      }
      if (f->flags & HS_RAW_FLAG_PRIORITY) {
        off += 5;
      }
      r->hblock.len = 0;
      r->hblock_stream = f->stream_id;
      if (off + pad <= len) {
        (void)hs_buf_append(&r->hblock, p + off, len - off - pad);
      }
      if (f->flags & HS_RAW_FLAG_END_STREAM) {
        hs_raw_stream_t *s = stream_slot(r, f->stream_id);
        if (s != NULL) {
          s->end_stream = true;
        }
      }
      if (f->flags & HS_RAW_FLAG_END_HEADERS) {
        inflate_block(r);
      }
      break;
    }
    case HS_RAW_CONTINUATION:
      (void)hs_buf_append(&r->hblock, p, len);
      if (f->flags & HS_RAW_FLAG_END_HEADERS) {
        inflate_block(r);
      }
      break;
    default:
      break;
  }
}

/* Takes one complete frame off r->in if there is one. */
static bool take_frame(hs_raw_t *r, hs_raw_frame_t *out) {
  if (r->in.len < FRAME_HEADER) {
    return false;
  }
  const uint8_t *h = r->in.data;
  uint32_t len = (uint32_t)h[0] << 16 | (uint32_t)h[1] << 8 | h[2];
  if (r->in.len < FRAME_HEADER + (size_t)len) {
    return false;
  }
  hs_raw_frame_t f = {.length = len,
                      .type = h[3],
                      .flags = h[4],
                      .stream_id = (int32_t)(hs_get_be32(h + 5) & 0x7fffffffu)};
  f.payload = malloc(len ? len : 1);
  if (f.payload == NULL) {
    return false;
  }
  memcpy(f.payload, h + FRAME_HEADER, len);
  hs_buf_consume(&r->in, FRAME_HEADER + (size_t)len);
  summarize(r, &f);
  if (out != NULL) {
    *out = f;
  } else {
    free(f.payload);
  }
  return true;
}

void hs_raw_frame_free(hs_raw_frame_t *f) {
  free(f->payload);
  f->payload = NULL;
}

int hs_raw_read_frame(hs_raw_t *r, hs_raw_frame_t *f, int timeout_ms) {
  long long deadline = hs_test_now_ms() + timeout_ms;
  for (;;) {
    if (take_frame(r, f)) {
      return 1;
    }
    if (r->closed) {
      return HS_EIO;
    }
    long long left = deadline - hs_test_now_ms();
    struct pollfd pf = {.fd = r->fd, .events = POLLIN};
    int pr = poll(&pf, 1, left > 0 ? (int)left : 0);
    if (pr < 0 && errno == EINTR) {
      continue;
    }
    if (pr <= 0) {
      return 0;
    }
    /* Reads big slices so a flood of small frames is parsed quickly. */
    if (hs_buf_reserve(&r->in, 65536) != HS_OK) {
      return HS_ENOMEM;
    }
    ssize_t n = recv(r->fd, r->in.data + r->in.len, 65536, 0);
    if (n > 0) {
      r->in.len += (size_t)n;
      r->bytes += (uint64_t)n;
      if (r->in.len >= FRAME_HEADER) {
        const uint8_t *h = r->in.data;
        uint32_t len = (uint32_t)h[0] << 16 | (uint32_t)h[1] << 8 | h[2];
        if (len > MAX_FRAME) {
          r->closed = true; /* garbage: treat it as the end */
        }
      }
    } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      r->closed = true;
    }
  }
}

int hs_raw_drain(hs_raw_t *r, int timeout_ms) {
  long long deadline = hs_test_now_ms() + timeout_ms;
  for (;;) {
    long long left = deadline - hs_test_now_ms();
    int rc = hs_raw_read_frame(r, NULL, left > 0 ? (int)left : 0);
    if (rc == HS_EIO) {
      return HS_EIO;
    }
    if (rc == 0 && hs_test_now_ms() >= deadline) {
      return HS_OK;
    }
  }
}

int hs_raw_wait_closed(hs_raw_t *r, int timeout_ms) {
  return hs_raw_drain(r, timeout_ms) == HS_EIO ? HS_OK : HS_EUNAVAIL;
}

int hs_raw_read_until(hs_raw_t *r, bool (*pred)(const hs_raw_t *, const void *), const void *arg,
                      int timeout_ms) {
  long long deadline = hs_test_now_ms() + timeout_ms;
  for (;;) {
    if (pred(r, arg)) {
      return HS_OK;
    }
    long long left = deadline - hs_test_now_ms();
    if (left <= 0) {
      return HS_EUNAVAIL;
    }
    int rc = hs_raw_read_frame(r, NULL, (int)left);
    if (rc == HS_EIO) {
      return pred(r, arg) ? HS_OK : HS_EIO;
    }
  }
}

static bool got_settings(const hs_raw_t *r, const void *arg) {
  return r->got_settings;
}

int hs_raw_handshake(hs_raw_t *r, int timeout_ms) {
  int rc = hs_raw_read_until(r, got_settings, NULL, timeout_ms);
  if (rc == HS_OK) {
    rc = hs_raw_settings_ack(r);
  }
  return rc;
}

const char *hs_raw_error_name(uint32_t code) {
  static const char *const names[] = {"NO_ERROR",
                                      "PROTOCOL_ERROR",
                                      "INTERNAL_ERROR",
                                      "FLOW_CONTROL_ERROR",
                                      "SETTINGS_TIMEOUT",
                                      "STREAM_CLOSED",
                                      "FRAME_SIZE_ERROR",
                                      "REFUSED_STREAM",
                                      "CANCEL",
                                      "COMPRESSION_ERROR",
                                      "CONNECT_ERROR",
                                      "ENHANCE_YOUR_CALM",
                                      "INADEQUATE_SECURITY",
                                      "HTTP_1_1_REQUIRED"};
  return code < sizeof names / sizeof names[0] ? names[code] : "UNKNOWN";
}
