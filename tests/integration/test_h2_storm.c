/* Every HTTP/2 flood of HARDENING.md at once: one two-worker server, and for about 16 s nine
 * attacker threads, each with its own kind of attack over many connections that reconnect as
 * soon as the server closes them (rapid reset, CONTINUATION flood, header-list bomb, SETTINGS
 * and PING floods, server-provoked resets, invalid frames, slow readers, idle and half-open
 * connections, unfinished header blocks). Meanwhile a well-behaved client keeps asking for
 * /healthz and must keep getting 200s, and the server's RSS is sampled every 100 ms.
 *
 * test_h2_floods.c proves each defence alone; this test proves they hold together: that one
 * attack does not open a gap for another, that the limits do not starve honest traffic when
 * both workers are busy, and that the server forgets every hostile connection afterwards.
 *
 * Threads never call cmocka: they count what they saw, and the main thread prints and asserts
 * after joining them. Every loop is bounded by a deadline and by a count. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/buf.h"
#include "core/error.h"
#include "hs_test_h2.h"
#include "hs_test_metrics.h"
#include "hs_test_raw.h"
#include "hs_test_server.h"

/* How long the attacks run, and how long one round of one attacker may take at most (after
 * the storm ends, joining waits for the rounds in progress). */
#define STORM_MS 16000
#define ROUND_MS 6000

/* The server's limits, small so that every defence fires several times within the storm. */
#define IDLE_MS     1000
#define HEADER_MS   700
#define STALL_MS    1000
#define GLITCHES    50
#define CONTROL     500
#define CONN_OUTBUF 262144

/* The canary asks every CANARY_EVERY_MS; it must succeed for CANARY_MIN_OK of its requests,
 * and never wait longer than CANARY_MAX_GAP_MS between two 200s. */
#define CANARY_EVERY_MS   50
#define CANARY_MIN_OK     0.95
#define CANARY_MAX_GAP_MS 3000

/* The peak RSS allowed during the storm. The server itself starts at ~20-40 MiB under ASan
 * (shadow memory is mapped but mostly untouched). What the attacks may add is capped by the
 * server's own limits: the slow readers hold at most 8 connections x (256 KiB output cap + 8
 * streams x 256 KiB stream buffers) = ~18 MiB; a header block is cut at 16 KiB per stream, and
 * at most 100 streams are open per connection; every other attacker connection holds only
 * nghttp2's session (~tens of KiB) and some 40 KiB of input per read. With ~120 connections
 * open at once and ASan's 8 MiB quarantine and redzones, that stays well under 128 MiB; 256 MiB
 * leaves room for allocator slack while still catching a buffer that grows with the attack (a
 * single unbounded slow reader would pass it in a second, a header bomb in one request). */
#define RSS_LIMIT_KB (256L * 1024)

/* After the attackers stop, every hostile connection must be gone within this long (the
 * slowest defence is the stall timeout, plus the sweep interval and the closing deadline). */
#define SETTLE_MS 8000

#define MAX_CONNS            16
#define N_CODES              14 /* HTTP/2 error codes 0x0-0xd */
#define H2_PROTOCOL_ERROR    0x1
#define H2_ENHANCE_YOUR_CALM 0xb

/* ---------------------------------------------------------------- attackers */

typedef struct attacker attacker_t;
typedef void (*round_fn)(attacker_t *a, hs_raw_t **rs, int n, long long round_end);

/* What one attacker thread did; written by that thread only, read after the join. */
struct attacker {
  const char *name;
  const char *expect; /* the close reason(s) it should cause, for the report */
  round_fn round;
  int conns; /* connections per round */
  int port;
  atomic_llong deadline; /* the main thread may bring it forward */
  pthread_t thread;
  bool started;
  /* results */
  int rounds;
  int opened;          /* connections made */
  int connect_failed;  /* connections the server refused or dropped before the attack */
  int closed;          /* connections the server closed (EOF or reset seen) */
  int left_open;       /* connections still open when the round's wait ended */
  int client_closed;   /* connections the attack itself closes (bombs) */
  int goaway[N_CODES]; /* GOAWAY frames seen, by error code (the last one, per connection) */
  long long units;     /* frames or requests sent, per kind */
  int served;          /* hostile requests answered 200: must stay 0 where stated */
  int refused;         /* hostile requests refused (reset, 431, or the connection closed) */
  char anomaly[200];   /* the first thing that went wrong, for the failure message */
};

static void note(attacker_t *a, const char *fmt, ...) {
  if (a->anomaly[0] != '\0') {
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(a->anomaly, sizeof a->anomaly, fmt, ap);
  va_end(ap);
}

static int remaining(long long end) {
  long long left = end - hs_test_now_ms();
  return left > 0 ? (int)left : 0;
}

/* Reads every connection until the server closes it or round_end passes; counts the outcome. */
static void wait_all_closed(attacker_t *a, hs_raw_t **rs, int n, long long round_end) {
  for (int i = 0; i < n; i++) {
    if (rs[i] == NULL) {
      continue;
    }
    if (hs_raw_wait_closed(rs[i], remaining(round_end)) == 0) {
      a->closed++;
    } else {
      a->left_open++;
      note(a, "a connection was still open %d ms into its round", ROUND_MS);
    }
    if (rs[i]->goaway) {
      a->goaway[rs[i]->goaway_code < N_CODES ? rs[i]->goaway_code : N_CODES - 1]++;
    }
  }
}

/* The client preface and the handshake, or the bare connection when preface is false. */
static hs_raw_t *open_conn(attacker_t *a, bool preface, const nghttp2_settings_entry *iv,
                           size_t n_iv, bool big_window) {
  hs_raw_t *r = malloc(sizeof *r);
  if (r == NULL) {
    return NULL;
  }
  if (hs_raw_connect(r, a->port) != HS_OK) {
    free(r);
    a->connect_failed++;
    note(a, "connect to the server failed");
    return NULL;
  }
  a->opened++;
  if (!preface) {
    return r;
  }
  int rc = big_window ? hs_raw_preface_big_window(r) : hs_raw_preface(r, iv, n_iv);
  if (rc == HS_OK) {
    rc = hs_raw_handshake(r, 3000);
  }
  if (rc != HS_OK) {
    a->connect_failed++;
    note(a, "the handshake failed (rc %d)", rc);
    hs_raw_close(r);
    free(r);
    return NULL;
  }
  return r;
}

/* A request header block that needs no HPACK state, so one batch can go to every connection:
 * :method GET, :scheme http (static table), :path and :authority as literals without indexing. */
static size_t stateless_request(uint8_t *out, const char *path, bool with_path) {
  size_t n = 0;
  out[n++] = 0x82;
  out[n++] = 0x86;
  if (with_path) {
    size_t len = strlen(path);
    out[n++] = 0x04; /* literal without indexing, name :path (static index 4) */
    out[n++] = (uint8_t)len;
    memcpy(out + n, path, len);
    n += len;
  }
  out[n++] = 0x01; /* :authority */
  out[n++] = 9;
  memcpy(out + n, "127.0.0.1", 9);
  n += 9;
  return n;
}

/* Appends one field as a literal without indexing, with a new name. */
static size_t literal(uint8_t *out, const char *name, const char *value) {
  size_t n = 0, nl = strlen(name), vl = strlen(value);
  out[n++] = 0x00;
  out[n++] = (uint8_t)nl;
  memcpy(out + n, name, nl);
  n += nl;
  out[n++] = (uint8_t)vl;
  memcpy(out + n, value, vl);
  return n + vl;
}

/* Rapid Reset: HEADERS + RST_STREAM pairs, 250 per write, on every connection in turn. */
static void round_rapid_reset(attacker_t *a, hs_raw_t **rs, int n, long long round_end) {
  enum { BATCH = 250, MAX_PAIRS = 20000 };
  uint8_t block[64];
  size_t blen = stateless_request(block, "/healthz", true);
  static const uint8_t cancel[4] = {0, 0, 0, 8};
  bool done[MAX_CONNS] = {false};
  hs_buf_t batch;
  hs_buf_init(&batch, 0);
  for (int32_t first = 1; first < 2 * MAX_PAIRS && hs_test_now_ms() < round_end;
       first += 2 * BATCH) {
    batch.len = 0;
    for (int32_t sid = first; sid < first + 2 * BATCH; sid += 2) {
      hs_raw_frame_append(&batch, HS_RAW_HEADERS, HS_RAW_FLAG_END_HEADERS | HS_RAW_FLAG_END_STREAM,
                          sid, block, blen);
      hs_raw_frame_append(&batch, HS_RAW_RST_STREAM, 0, sid, cancel, 4);
    }
    int live = 0;
    for (int i = 0; i < n; i++) {
      if (rs[i] == NULL || done[i]) {
        continue;
      }
      if (hs_raw_write(rs[i], batch.data, batch.len, 1000) != HS_OK ||
          hs_raw_drain(rs[i], 0) == HS_EIO) {
        done[i] = true;
        continue;
      }
      a->units += BATCH;
      live++;
    }
    if (live == 0) {
      break;
    }
  }
  hs_buf_free(&batch);
  wait_all_closed(a, rs, n, round_end);
}

/* CONTINUATION flood: a HEADERS that never ends, then up to 20000 CONTINUATION frames. */
static void round_continuation(attacker_t *a, hs_raw_t **rs, int n, long long round_end) {
  uint8_t block[64];
  size_t blen = stateless_request(block, "/healthz", true);
  static const uint8_t field[] = {0x00, 3, 'x', '-', 'c', 1, 'v'};
  hs_buf_t batch;
  hs_buf_init(&batch, 0);
  for (int i = 0; i < 1000; i++) {
    hs_raw_frame_append(&batch, HS_RAW_CONTINUATION, 0, 1, field, sizeof field);
  }
  bool done[MAX_CONNS] = {false};
  for (int i = 0; i < n; i++) {
    if (rs[i] != NULL && hs_raw_headers(rs[i], 1, HS_RAW_FLAG_END_STREAM, block, blen) != HS_OK) {
      done[i] = true;
    }
  }
  for (int k = 0; k < 20 && hs_test_now_ms() < round_end; k++) {
    int live = 0;
    for (int i = 0; i < n; i++) {
      if (rs[i] == NULL || done[i]) {
        continue;
      }
      if (hs_raw_write(rs[i], batch.data, batch.len, 1000) != HS_OK) {
        done[i] = true;
        continue;
      }
      a->units += 1000;
      live++;
    }
    if (live == 0) {
      break;
    }
  }
  hs_buf_free(&batch);
  wait_all_closed(a, rs, n, round_end);
  for (int i = 0; i < n; i++) {
    const hs_raw_stream_t *s = rs[i] != NULL ? hs_raw_stream(rs[i], 1) : NULL;
    if (s != NULL && s->status != 0) {
      a->served++;
      note(a, "a header block that never ended was answered %d", s->status);
    }
  }
}

/* 128 KiB of HPACK that expands to ~500 MiB: the pseudo-headers, one 4000-byte field added to
 * the dynamic table, then one-byte references to it (as in test_h2_floods.c). Each connection
 * gets a fresh decoder table, so the same bytes work on every one. */
enum { BOMB = 128 * 1024 };
static size_t build_bomb(uint8_t *out, size_t cap) {
  size_t n = 0;
  out[n++] = 0x82;
  out[n++] = 0x86;
  out[n++] = 0x84;
  out[n++] = 0x01;
  out[n++] = 9;
  memcpy(out + n, "127.0.0.1", 9);
  n += 9;
  out[n++] = 0x40;
  out[n++] = 6;
  memcpy(out + n, "x-bomb", 6);
  n += 6;
  out[n++] = 0x7f;
  out[n++] = 0x80 | (3873 & 0x7f);
  out[n++] = 3873 >> 7;
  memset(out + n, 'a', 4000);
  n += 4000;
  while (n < cap) {
    out[n++] = 0x80 | 62;
  }
  return n;
}

static bool stream_done(const hs_raw_t *r, const void *arg) {
  const hs_raw_stream_t *s = hs_raw_stream(r, *(const int32_t *)arg);
  return (s != NULL && (s->reset || s->end_stream)) || r->goaway;
}

/* Header-list bomb: up to 4 bombs per connection, each as HEADERS + 7 CONTINUATION (under
 * nghttp2's own CONTINUATION cap). Every one must be refused; the connection may stay open, so
 * the attacker closes it itself. Each bomb adds its 4000-byte field to the dynamic table anew,
 * so index 62 always names it. */
static void round_bomb(attacker_t *a, hs_raw_t **rs, int n, long long round_end) {
  uint8_t *bomb = malloc(BOMB);
  hs_buf_t out;
  hs_buf_init(&out, 0);
  if (bomb == NULL) {
    note(a, "out of memory");
    return;
  }
  size_t len = build_bomb(bomb, BOMB);
  for (int i = 0; i < n; i++) {
    hs_raw_t *r = rs[i];
    if (r == NULL) {
      continue;
    }
    for (int32_t sid = 1; sid <= 7 && hs_test_now_ms() < round_end; sid += 2) {
      out.len = 0;
      for (size_t off = 0; off < len; off += 16384) {
        size_t chunk = len - off > 16384 ? 16384 : len - off;
        uint8_t flags = off + chunk == len ? HS_RAW_FLAG_END_HEADERS : 0;
        if (off == 0) {
          flags |= HS_RAW_FLAG_END_STREAM;
        }
        hs_raw_frame_append(&out, off == 0 ? HS_RAW_HEADERS : HS_RAW_CONTINUATION, flags, sid,
                            bomb + off, chunk);
      }
      if (hs_raw_write(r, out.data, out.len, 2000) != HS_OK) {
        a->refused++; /* the connection is closed: refused as well */
        break;
      }
      a->units++;
      int rc = hs_raw_read_until(r, stream_done, &sid, remaining(round_end));
      const hs_raw_stream_t *s = hs_raw_stream(r, sid);
      if (s != NULL && s->status == 200) {
        a->served++;
        note(a, "a header-list bomb was answered 200");
      } else if (rc == HS_EUNAVAIL) {
        note(a, "no answer to a header-list bomb before the round ended");
      } else {
        a->refused++;
      }
      if (r->goaway || r->closed) {
        break;
      }
    }
    if (r->closed || r->goaway) {
      a->closed++;
      if (r->goaway) {
        a->goaway[r->goaway_code < N_CODES ? r->goaway_code : N_CODES - 1]++;
      }
    } else {
      a->client_closed++;
    }
  }
  hs_buf_free(&out);
  free(bomb);
}

/* SETTINGS (even connections) or PING (odd) floods, never reading an ACK. */
static void round_control(attacker_t *a, hs_raw_t **rs, int n, long long round_end) {
  static const uint8_t opaque[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  hs_buf_t pings, settings;
  hs_buf_init(&pings, 0);
  hs_buf_init(&settings, 0);
  for (int i = 0; i < 500; i++) {
    hs_raw_frame_append(&pings, HS_RAW_PING, 0, 0, opaque, 8);
    hs_raw_frame_append(&settings, HS_RAW_SETTINGS, 0, 0, NULL, 0);
  }
  bool done[MAX_CONNS] = {false};
  for (int k = 0; k < 40 && hs_test_now_ms() < round_end; k++) {
    int live = 0;
    for (int i = 0; i < n; i++) {
      if (rs[i] == NULL || done[i]) {
        continue;
      }
      const hs_buf_t *b = i % 2 == 0 ? &settings : &pings;
      if (hs_raw_write(rs[i], b->data, b->len, 500) != HS_OK) {
        done[i] = true;
        continue;
      }
      a->units += 500;
      live++;
    }
    if (live == 0) {
      break;
    }
  }
  hs_buf_free(&pings);
  hs_buf_free(&settings);
  wait_all_closed(a, rs, n, round_end);
}

/* Requests the server must reset itself (CVE-2025-8671): no :path, an upper-case field name, a
 * connection-specific field, "te: gzip". Ten per write, reading what comes back in between. */
static void round_glitch(attacker_t *a, hs_raw_t **rs, int n, long long round_end) {
  uint8_t blocks[4][96];
  size_t lens[4];
  lens[0] = stateless_request(blocks[0], NULL, false);
  lens[1] = stateless_request(blocks[1], "/healthz", true);
  lens[1] += literal(blocks[1] + lens[1], "X-Upper", "v");
  lens[2] = stateless_request(blocks[2], "/healthz", true);
  lens[2] += literal(blocks[2] + lens[2], "connection", "close");
  lens[3] = stateless_request(blocks[3], "/healthz", true);
  lens[3] += literal(blocks[3] + lens[3], "te", "gzip");
  bool done[MAX_CONNS] = {false};
  hs_buf_t batch;
  hs_buf_init(&batch, 0);
  for (int32_t first = 1; first < 2000 && hs_test_now_ms() < round_end; first += 20) {
    batch.len = 0;
    for (int32_t sid = first; sid < first + 20; sid += 2) {
      int k = (sid / 2) % 4;
      hs_raw_frame_append(&batch, HS_RAW_HEADERS, HS_RAW_FLAG_END_HEADERS | HS_RAW_FLAG_END_STREAM,
                          sid, blocks[k], lens[k]);
    }
    int live = 0;
    for (int i = 0; i < n; i++) {
      if (rs[i] == NULL || done[i]) {
        continue;
      }
      if (hs_raw_write(rs[i], batch.data, batch.len, 1000) != HS_OK ||
          hs_raw_drain(rs[i], 5) == HS_EIO || rs[i]->goaway) {
        done[i] = true;
        continue;
      }
      a->units += 10;
      live++;
    }
    if (live == 0) {
      break;
    }
  }
  hs_buf_free(&batch);
  wait_all_closed(a, rs, n, round_end);
  for (int i = 0; i < n; i++) {
    if (rs[i] == NULL) {
      continue;
    }
    for (size_t k = 0; k < rs[i]->n_streams; k++) {
      if (rs[i]->streams[k].status == 200) {
        a->served++;
        note(a, "a malformed request on stream %d was answered 200", rs[i]->streams[k].id);
      }
    }
  }
}

/* Frames that break the protocol, one kind per connection. The first kind is not HTTP/2 at
 * all (garbage where the preface belongs); the others follow a valid handshake. */
enum { INVALID_KINDS = 8 };
static const char *const k_invalid[INVALID_KINDS] = {
    "garbage preface",     "DATA on stream 0",   "oversized frame",  "HEADERS on stream 2",
    "SETTINGS of 5 bytes", "WINDOW_UPDATE of 0", "PING on stream 1", "CONTINUATION out of place"};

static void send_invalid(hs_raw_t *r, int kind) {
  uint8_t zero[20000] = {0};
  uint8_t block[64];
  size_t blen = stateless_request(block, "/healthz", true);
  switch (kind) {
    case 1:
      hs_raw_frame(r, HS_RAW_DATA, 0, 0, zero, 8, 1000);
      break;
    case 2:
      hs_raw_frame(r, HS_RAW_DATA, 0, 1, zero, sizeof zero, 1000);
      break;
    case 3:
      hs_raw_frame(r, HS_RAW_HEADERS, HS_RAW_FLAG_END_HEADERS | HS_RAW_FLAG_END_STREAM, 2, block,
                   blen, 1000);
      break;
    case 4:
      hs_raw_frame(r, HS_RAW_SETTINGS, 0, 0, zero, 5, 1000);
      break;
    case 5:
      hs_raw_frame(r, HS_RAW_WINDOW_UPDATE, 0, 0, zero, 4, 1000);
      break;
    case 6:
      hs_raw_frame(r, HS_RAW_PING, 0, 1, zero, 8, 1000);
      break;
    default:
      hs_raw_frame(r, HS_RAW_CONTINUATION, HS_RAW_FLAG_END_HEADERS, 1, block, blen, 1000);
      break;
  }
}

static int g_invalid_closed[INVALID_KINDS]; /* written by the invalid-frame thread only */
static int g_invalid_sent[INVALID_KINDS];

static void round_invalid(attacker_t *a, hs_raw_t **rs, int n, long long round_end) {
  for (int i = 0; i < n; i++) {
    if (rs[i] == NULL) {
      continue;
    }
    int kind = (i + a->rounds) % INVALID_KINDS;
    g_invalid_sent[kind]++;
    a->units++;
    if (kind == 0) {
      static const char garbage[] = "\x01\x02\x03 this is not HTTP at all \r\n\r\n";
      hs_raw_write(rs[i], garbage, sizeof garbage - 1, 1000);
    } else if (hs_raw_preface(rs[i], NULL, 0) != HS_OK || hs_raw_handshake(rs[i], 3000) != HS_OK) {
      continue;
    } else {
      send_invalid(rs[i], kind);
    }
  }
  for (int i = 0; i < n; i++) {
    if (rs[i] == NULL) {
      continue;
    }
    int kind = (i + a->rounds) % INVALID_KINDS;
    wait_all_closed(a, &rs[i], 1, round_end);
    if (rs[i]->closed) {
      g_invalid_closed[kind]++;
    } else {
      note(a, "the connection stayed open after %s", k_invalid[kind]);
    }
  }
}

/* Slow readers: eight endless /debug/stream responses per connection, never read. Half the
 * connections announce a window of zero (the server may send HEADERS only), half a window so
 * large that only TCP and the server's own caps hold it back. The stall timeout must close
 * them; reading starts only after it could have. */
static void round_slow(attacker_t *a, hs_raw_t **rs, int n, long long round_end) {
  for (int i = 0; i < n; i++) {
    if (rs[i] == NULL) {
      continue;
    }
    for (int32_t sid = 1; sid <= 15; sid += 2) {
      if (hs_raw_request(rs[i], sid, "GET", "/debug/stream?chunks=100000&size=65536&interval_ms=0",
                         NULL, 0, true) != HS_OK) {
        break;
      }
      a->units++;
    }
  }
  long long quiet_until = hs_test_now_ms() + STALL_MS + 1500;
  while (hs_test_now_ms() < quiet_until && hs_test_now_ms() < round_end) {
    hs_test_sleep_ms(50);
  }
  wait_all_closed(a, rs, n, round_end);
}

/* Idle and half-open connections: a third never send anything, a third stop halfway through the
 * preface, a third finish the handshake and then say nothing. */
static void round_idle(attacker_t *a, hs_raw_t **rs, int n, long long round_end) {
  for (int i = 0; i < n; i++) {
    if (rs[i] != NULL && i % 3 == 1) {
      hs_raw_write(rs[i], "PRI * HTTP/2.0\r\n", 16, 1000);
    } else if (rs[i] != NULL && i % 3 == 2) {
      if (hs_raw_preface(rs[i], NULL, 0) == HS_OK) {
        hs_raw_handshake(rs[i], 3000);
      }
    }
    a->units++;
  }
  wait_all_closed(a, rs, n, round_end);
}

/* Unfinished header blocks: a HEADERS without END_HEADERS, then (on every other connection) a
 * CONTINUATION every 150 ms that still does not end it, a slowloris that keeps bytes coming. */
static void round_unfinished(attacker_t *a, hs_raw_t **rs, int n, long long round_end) {
  uint8_t block[64];
  size_t blen = stateless_request(block, "/healthz", true);
  static const uint8_t field[] = {0x00, 3, 'x', '-', 's', 1, 'v'};
  for (int i = 0; i < n; i++) {
    if (rs[i] != NULL && hs_raw_preface(rs[i], NULL, 0) == HS_OK &&
        hs_raw_handshake(rs[i], 3000) == HS_OK) {
      hs_raw_headers(rs[i], 1, HS_RAW_FLAG_END_STREAM, block, blen);
      a->units++;
    }
  }
  for (int k = 0; k < 7 && hs_test_now_ms() < round_end; k++) {
    hs_test_sleep_ms(150);
    for (int i = 1; i < n; i += 2) {
      if (rs[i] != NULL && !rs[i]->closed && hs_raw_drain(rs[i], 0) != HS_EIO) {
        hs_raw_continuation(rs[i], 1, false, field, sizeof field);
      }
    }
  }
  wait_all_closed(a, rs, n, round_end);
}

static void *attacker_main(void *arg) {
  attacker_t *a = arg;
  hs_raw_t *rs[MAX_CONNS];
  bool needs_preface = a->round != round_invalid && a->round != round_idle &&
                       a->round != round_unfinished && a->round != round_slow;
  for (int round = 0; round < 1000 && hs_test_now_ms() < atomic_load(&a->deadline); round++) {
    long long round_end = hs_test_now_ms() + ROUND_MS;
    for (int i = 0; i < a->conns; i++) {
      if (a->round == round_slow) {
        /* Even connections: a zero stream window; odd ones: the largest windows there are. */
        nghttp2_settings_entry zero[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0}};
        rs[i] = open_conn(a, true, zero, i % 2 == 0 ? 1 : 0, i % 2 == 1);
      } else {
        rs[i] = open_conn(a, needs_preface, NULL, 0, false);
      }
    }
    a->round(a, rs, a->conns, round_end);
    a->rounds++;
    for (int i = 0; i < a->conns; i++) {
      if (rs[i] != NULL) {
        hs_raw_close(rs[i]);
        free(rs[i]);
      }
    }
  }
  return NULL;
}

/* ---------------------------------------------------------------- the canary and the sampler */

/* A well-behaved client: a new connection and GET /healthz every CANARY_EVERY_MS. Unlike
 * hs_test_canary_t it also measures the longest time between two 200s: starvation, not only
 * slowness. */
typedef struct canary {
  int port;
  pthread_t thread;
  atomic_bool stop;
  int ok, failed;       /* read after the join */
  long long max_gap_ms; /* the longest time without a 200, including to the stop */
  long long max_ms;     /* the slowest single request */
  char last_error[200];
} canary_t;

static void *canary_main(void *arg) {
  canary_t *k = arg;
  long long last_ok = hs_test_now_ms();
  for (int i = 0; i < 100000 && !atomic_load(&k->stop); i++) {
    long long t0 = hs_test_now_ms();
    int status = 0;
    int rc = hs_h2_get(k->port, false, "/healthz", NULL, 0, 5000, &status, NULL);
    long long t1 = hs_test_now_ms();
    if (t1 - t0 > k->max_ms) {
      k->max_ms = t1 - t0;
    }
    if (rc == HS_OK && status == 200) {
      k->ok++;
      if (t1 - last_ok > k->max_gap_ms) {
        k->max_gap_ms = t1 - last_ok;
      }
      last_ok = t1;
    } else {
      k->failed++;
      snprintf(k->last_error, sizeof k->last_error, "GET /healthz: rc %d, status %d after %lld ms",
               rc, status, t1 - t0);
    }
    hs_test_sleep_ms(CANARY_EVERY_MS);
  }
  long long end = hs_test_now_ms();
  if (end - last_ok > k->max_gap_ms) {
    k->max_gap_ms = end - last_ok;
  }
  return NULL;
}

typedef struct sampler {
  const hs_test_server_t *server;
  pthread_t thread;
  atomic_bool stop;
  long peak_kb;
  long long peak_at_ms;
  int samples, failed;
} sampler_t;

static void *sampler_main(void *arg) {
  sampler_t *s = arg;
  long long t0 = hs_test_now_ms();
  for (int i = 0; i < 10000 && !atomic_load(&s->stop); i++) {
    long kb = hs_test_server_rss_kb(s->server);
    if (kb < 0) {
      s->failed++;
    } else {
      s->samples++;
      if (kb > s->peak_kb) {
        s->peak_kb = kb;
        s->peak_at_ms = hs_test_now_ms() - t0;
      }
    }
    hs_test_sleep_ms(100);
  }
  return NULL;
}

/* ---------------------------------------------------------------- the test */

static const char *const k_reasons[] = {
    "rapid_reset", "flood",  "protocol", "glitch", "control_flood", "stalled",  "header_timeout",
    "idle",        "normal", "outbuf",   "error",  "per_ip",        "shutdown", NULL};
enum { N_REASONS = sizeof k_reasons / sizeof k_reasons[0] - 1 };

static void read_reasons(int port, double *out) {
  char *text = NULL;
  int rc = hs_test_metrics_fetch(port, &text);
  if (rc != HS_OK) {
    fail_msg("GET /metrics failed (rc %d)", rc);
  }
  for (int i = 0; i < N_REASONS; i++) {
    char label[64];
    snprintf(label, sizeof label, "reason=%s", k_reasons[i]);
    const char *const labels[] = {label, NULL};
    double v = 0;
    hs_test_metric_sum(text, "handsel_http_connections_closed_total", labels, &v);
    out[i] = v;
  }
  free(text);
}

static double reason_delta(const double *before, const double *after, const char *reason) {
  for (int i = 0; i < N_REASONS; i++) {
    if (strcmp(k_reasons[i], reason) == 0) {
      return after[i] - before[i];
    }
  }
  return -1;
}

typedef struct fixture {
  hs_test_server_t server;
  attacker_t attackers[9];
  canary_t canary;
  bool canary_running;
  sampler_t sampler;
  bool sampler_running;
} fixture_t;

static int setup(void **state) {
  fixture_t *f = calloc(1, sizeof *f);
  *state = f;
  return f != NULL ? 0 : -1;
}

static void stop_threads(fixture_t *f) {
  for (size_t i = 0; i < sizeof f->attackers / sizeof f->attackers[0]; i++) {
    if (f->attackers[i].started) {
      atomic_store(&f->attackers[i].deadline, 0);
      pthread_join(f->attackers[i].thread, NULL);
      f->attackers[i].started = false;
    }
  }
  if (f->canary_running) {
    atomic_store(&f->canary.stop, true);
    pthread_join(f->canary.thread, NULL);
    f->canary_running = false;
  }
  if (f->sampler_running) {
    atomic_store(&f->sampler.stop, true);
    pthread_join(f->sampler.thread, NULL);
    f->sampler_running = false;
  }
}

static int teardown(void **state) {
  fixture_t *f = *state;
  stop_threads(f);
  hs_test_server_stop(&f->server);
  free(f);
  return 0;
}

static void print_attacker(const attacker_t *a) {
  char codes[160] = "";
  size_t off = 0;
  for (int c = 0; c < N_CODES; c++) {
    if (a->goaway[c] > 0 && off < sizeof codes) {
      off += (size_t)snprintf(codes + off, sizeof codes - off, " %s:%d",
                              hs_raw_error_name((uint32_t)c), a->goaway[c]);
    }
  }
  print_message(
      "%-20s %3d rounds, %4d conns (%d failed to start), %4d closed by the server, %d "
      "left open, %d closed by us; %lld written; refused %d, served %d; GOAWAY%s; expects "
      "%s\n",
      a->name, a->rounds, a->opened, a->connect_failed, a->closed, a->left_open, a->client_closed,
      a->units, a->refused, a->served, off > 0 ? codes : " none", a->expect);
}

static void test_storm(void **state) {
  fixture_t *f = *state;
  char idle[64], header[64], stall[64], glitch[64], control[64], outbuf[64];
  snprintf(idle, sizeof idle, "HANDSEL_IDLE_TIMEOUT_MS=%d", IDLE_MS);
  snprintf(header, sizeof header, "HANDSEL_HEADER_TIMEOUT_MS=%d", HEADER_MS);
  snprintf(stall, sizeof stall, "HANDSEL_STALL_TIMEOUT_MS=%d", STALL_MS);
  snprintf(glitch, sizeof glitch, "HANDSEL_GLITCH_LIMIT=%d", GLITCHES);
  snprintf(control, sizeof control, "HANDSEL_CONTROL_LIMIT=%d", CONTROL);
  snprintf(outbuf, sizeof outbuf, "HANDSEL_CONN_OUTBUF=%d", CONN_OUTBUF);
  const char *const env[] = {"HANDSEL_WORKERS=2", "HANDSEL_DEBUG_ROUTES=1",
                             /* Every connection comes from 127.0.0.1. */
                             "HANDSEL_MAX_CONNS_PER_IP=100000", "HANDSEL_GRACE_MS=2000", idle,
                             header, stall, glitch, control, outbuf, NULL};
  hs_test_server_must_start(&f->server, env, false);
  int port = f->server.port;
  for (int i = 0; i < 20; i++) {
    int status = 0;
    hs_h2_get(port, false, "/healthz", NULL, 0, 5000, &status, NULL);
  }
  long rss0 = hs_test_server_rss_kb(&f->server);
  assert_true(rss0 > 0);
  double before[N_REASONS], after[N_REASONS];
  read_reasons(port, before);

  f->sampler.server = &f->server;
  assert_int_equal(pthread_create(&f->sampler.thread, NULL, sampler_main, &f->sampler), 0);
  f->sampler_running = true;
  f->canary.port = port;
  assert_int_equal(pthread_create(&f->canary.thread, NULL, canary_main, &f->canary), 0);
  f->canary_running = true;

  const attacker_t kinds[] = {
      {.name = "rapid reset",
       .expect = "rapid_reset or flood",
       .round = round_rapid_reset,
       .conns = 4},
      {.name = "continuation flood",
       .expect = "protocol or flood",
       .round = round_continuation,
       .conns = 4},
      {.name = "header-list bomb", .expect = "every bomb refused", .round = round_bomb, .conns = 4},
      {.name = "settings/ping flood",
       .expect = "control_flood",
       .round = round_control,
       .conns = 8},
      {.name = "server resets", .expect = "glitch", .round = round_glitch, .conns = 8},
      {.name = "invalid frames",
       .expect = "protocol (a close for each)",
       .round = round_invalid,
       .conns = 16},
      {.name = "slow readers", .expect = "stalled", .round = round_slow, .conns = 8},
      {.name = "idle/half-open", .expect = "idle", .round = round_idle, .conns = 12},
      {.name = "unfinished headers",
       .expect = "header_timeout",
       .round = round_unfinished,
       .conns = 8},
  };
  _Static_assert(sizeof kinds / sizeof kinds[0] == sizeof f->attackers / sizeof f->attackers[0],
                 "one thread per kind");
  long long t_start = hs_test_now_ms();
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
    attacker_t *a = &f->attackers[i];
    *a = kinds[i];
    a->port = port;
    atomic_store(&a->deadline, t_start + STORM_MS);
    assert_int_equal(pthread_create(&a->thread, NULL, attacker_main, a), 0);
    a->started = true;
  }
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
    pthread_join(f->attackers[i].thread, NULL);
    f->attackers[i].started = false;
  }
  long long t_end = hs_test_now_ms();
  /* The canary goes on a little after the storm, then stops. */
  hs_test_sleep_ms(500);
  atomic_store(&f->canary.stop, true);
  pthread_join(f->canary.thread, NULL);
  f->canary_running = false;

  /* Every hostile connection is gone: only the one asking for /metrics is left. */
  double open = -1;
  long long settle_deadline = hs_test_now_ms() + SETTLE_MS;
  for (int i = 0; i < 200; i++) {
    open = hs_test_metric(port, "handsel_http_connections_open", NULL);
    if ((open >= 0 && open <= 2) || hs_test_now_ms() > settle_deadline) {
      break;
    }
    hs_test_sleep_ms(100);
  }
  long long settled_ms = hs_test_now_ms() - t_end;
  atomic_store(&f->sampler.stop, true);
  pthread_join(f->sampler.thread, NULL);
  f->sampler_running = false;
  read_reasons(port, after);

  /* ---- the report ---- */
  print_message("storm: %lld ms of attacks, 9 threads, 2 workers\n", t_end - t_start);
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
    print_attacker(&f->attackers[i]);
  }
  for (int k = 0; k < INVALID_KINDS; k++) {
    print_message("  invalid frames: %-26s %3d sent, %3d closed\n", k_invalid[k], g_invalid_sent[k],
                  g_invalid_closed[k]);
  }
  print_message("closed by reason during the storm:");
  for (int i = 0; i < N_REASONS; i++) {
    print_message(" %s %.0f", k_reasons[i], after[i] - before[i]);
  }
  print_message("\n");
  print_message("canary: %d ok, %d failed, longest without a 200 %lld ms, slowest %lld ms\n",
                f->canary.ok, f->canary.failed, f->canary.max_gap_ms, f->canary.max_ms);
  print_message("RSS: %ld KiB before, peak %ld KiB at %lld ms (%d samples); connections open "
                "%.0f, %lld ms after the attacks\n",
                rss0, f->sampler.peak_kb, f->sampler.peak_at_ms, f->sampler.samples, open,
                settled_ms);

  /* ---- the assertions ---- */
  int total = f->canary.ok + f->canary.failed;
  if (total < 50 || (double)f->canary.ok < CANARY_MIN_OK * total ||
      f->canary.max_gap_ms > CANARY_MAX_GAP_MS) {
    fail_msg("the well-behaved client was not served through the storm: %d of %d ok, %lld ms "
             "without a 200 at worst (allowed %d); last failure: %s",
             f->canary.ok, total, f->canary.max_gap_ms, CANARY_MAX_GAP_MS, f->canary.last_error);
  }
  if (f->sampler.samples < 100 || f->sampler.failed > 0) {
    fail_msg("RSS was sampled %d times (%d failures): the server may have died", f->sampler.samples,
             f->sampler.failed);
  }
  if (f->sampler.peak_kb > RSS_LIMIT_KB) {
    fail_msg("the server's RSS peaked at %ld KiB (from %ld), over the bound of %ld KiB",
             f->sampler.peak_kb, rss0, RSS_LIMIT_KB);
  }
  if (open < 0 || open > 2) {
    fail_msg("%.0f connections still open %lld ms after the attacks stopped", open, settled_ms);
  }
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
    const attacker_t *a = &f->attackers[i];
    /* Each attack ran more than once, and the server dealt with every connection it made. */
    if (a->rounds < 2 || a->opened < 2 * a->conns) {
      fail_msg("%s: only %d rounds and %d connections in %d ms", a->name, a->rounds, a->opened,
               STORM_MS);
    }
    if (a->left_open > 0 || a->served > 0 || a->connect_failed > 0) {
      fail_msg("%s: %d connections left open, %d hostile requests served, %d failed to start; "
               "first: %s",
               a->name, a->left_open, a->served, a->connect_failed, a->anomaly);
    }
    if (a->round != round_bomb && a->closed != a->opened) {
      fail_msg("%s: the server closed %d of %d connections", a->name, a->closed, a->opened);
    }
  }
  const attacker_t *bomb = &f->attackers[2];
  assert_true(bomb->refused >= bomb->rounds * bomb->conns);
  /* Each defence was the one that fired. */
  if (reason_delta(before, after, "rapid_reset") + reason_delta(before, after, "flood") < 1) {
    fail_msg("neither reason=\"rapid_reset\" nor reason=\"flood\" was counted");
  }
  const char *const expected[] = {"protocol", "glitch",         "control_flood",
                                  "stalled",  "header_timeout", "idle"};
  for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
    if (reason_delta(before, after, expected[i]) < 1) {
      fail_msg("reason=\"%s\" was not counted during the storm", expected[i]);
    }
  }
  /* The attacks that close for sure counted at least once per connection. */
  const attacker_t *glitchers = &f->attackers[4];
  if (reason_delta(before, after, "glitch") < glitchers->closed) {
    fail_msg("%d connections were closed for resets the server sent, but glitch counts %.0f",
             glitchers->closed, reason_delta(before, after, "glitch"));
  }
  const attacker_t *idlers = &f->attackers[7];
  if (reason_delta(before, after, "idle") < idlers->closed) {
    fail_msg("%d idle connections were closed, but idle counts %.0f", idlers->closed,
             reason_delta(before, after, "idle"));
  }
  const attacker_t *unfinished = &f->attackers[8];
  if (reason_delta(before, after, "header_timeout") < unfinished->closed) {
    fail_msg("%d unfinished header blocks were closed, but header_timeout counts %.0f",
             unfinished->closed, reason_delta(before, after, "header_timeout"));
  }
  const attacker_t *slow = &f->attackers[6];
  if (reason_delta(before, after, "stalled") < slow->closed) {
    fail_msg("%d slow readers were closed, but stalled counts %.0f", slow->closed,
             reason_delta(before, after, "stalled"));
  }

  /* Served afterwards, and a clean exit on SIGTERM. */
  int status = 0;
  assert_int_equal(hs_h2_get(port, false, "/healthz", NULL, 0, 5000, &status, NULL), 0);
  assert_int_equal(status, 200);
  assert_int_equal(hs_test_server_signal(&f->server, SIGTERM), 0);
  int ws = 0;
  if (hs_test_server_wait(&f->server, 15000, &ws) != 0) {
    fail_msg("the server has not exited 15 s after SIGTERM");
  }
  if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
    hs_test_server_dump_stderr(&f->server, 4000);
    fail_msg("the server exited with wait status 0x%x after SIGTERM, not 0", ws);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_storm, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
