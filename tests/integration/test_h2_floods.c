/* One test per nghttp2 gap of HARDENING.md: each sends the attack over a raw connection to the
 * real server, checks the server's answer (a reset, a GOAWAY, a close, and the reason it
 * counts in /metrics), and shows that a well-behaved client on another connection is served
 * meanwhile and afterwards, and that the server's memory stays bounded.
 *
 * Every server runs one worker, so the attack and the well-behaved client share one event
 * loop: if the attack starved the loop, the canary would see it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/error.h"
#include "hs_test_h2.h"
#include "hs_test_metrics.h"
#include "hs_test_raw.h"
#include "hs_test_server.h"

#define PROMPTLY_MS          5000 /* "closed promptly": generous, never a benchmark */
#define CANARY_MAX_MS        3000
#define H2_REFUSED_STREAM    0x7
#define H2_PROTOCOL_ERROR    0x1
#define H2_ENHANCE_YOUR_CALM 0xb

typedef struct fixture {
  hs_test_server_t server;
  hs_test_canary_t canary;
  bool canary_running;
  long rss0_kb;
  hs_raw_t raw; /* the attacking connection; large, so it lives here and not on the stack */
  bool raw_open;
} fixture_t;

static int setup(void **state) {
  fixture_t *f = calloc(1, sizeof *f);
  *state = f;
  return f != NULL ? 0 : -1;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  if (f->canary_running) {
    hs_test_canary_stop(&f->canary);
  }
  if (f->raw_open) {
    hs_raw_close(&f->raw);
  }
  hs_test_server_stop(&f->server);
  free(f);
  return 0;
}

/* Starts a one-worker server with debug routes and the given extra settings, notes its RSS,
 * and starts the canary beside it. */
static void start(fixture_t *f, const char *const *extra) {
  const char *env[HS_TEST_MAX_ENV] = {"HANDSEL_WORKERS=1", "HANDSEL_DEBUG_ROUTES=1"};
  size_t n = 2;
  for (size_t i = 0; extra != NULL && extra[i] != NULL && n < HS_TEST_MAX_ENV - 1; i++) {
    env[n++] = extra[i];
  }
  env[n] = NULL;
  hs_test_server_must_start(&f->server, env, false);
  /* A few requests first, so the baseline includes the memory every server settles at. */
  for (int i = 0; i < 20; i++) {
    int status = 0;
    hs_h2_get(f->server.port, false, "/healthz", NULL, 0, 5000, &status, NULL);
  }
  f->rss0_kb = hs_test_server_rss_kb(&f->server);
  assert_true(f->rss0_kb > 0);
  assert_int_equal(hs_test_canary_start(&f->canary, f->server.port, false, 50), 0);
  f->canary_running = true;
}

static hs_raw_t *attacker(fixture_t *f, bool big_window) {
  assert_int_equal(hs_raw_connect(&f->raw, f->server.port), 0);
  f->raw_open = true;
  if (big_window) {
    assert_int_equal(hs_raw_preface_big_window(&f->raw), 0);
  } else {
    assert_int_equal(hs_raw_preface(&f->raw, NULL, 0), 0);
  }
  assert_int_equal(hs_raw_handshake(&f->raw, 5000), 0);
  return &f->raw;
}

static void close_attacker(fixture_t *f) {
  if (f->raw_open) {
    hs_raw_close(&f->raw);
    f->raw_open = false;
  }
}

/* The memory the server grew by since start(), in MiB. */
static double rss_growth_mib(fixture_t *f) {
  long now = hs_test_server_rss_kb(&f->server);
  assert_true(now > 0);
  return (double)(now - f->rss0_kb) / 1024.0;
}

/* The most the server's memory grew by (as rss_growth_mib) over `samples` looks 100 ms apart. */
static double peak_rss_growth_mib(fixture_t *f, int samples) {
  double peak = 0;
  for (int i = 0; i < samples; i++) {
    hs_test_sleep_ms(100);
    double g = rss_growth_mib(f);
    peak = g > peak ? g : peak;
  }
  return peak;
}

static void assert_rss_below(fixture_t *f, double mib, const char *what) {
  double g = rss_growth_mib(f);
  if (g > mib) {
    fail_msg("%s: the server's RSS grew by %.1f MiB (from %ld KiB), more than %.0f MiB", what, g,
             f->rss0_kb, mib);
  }
}

/* Stops the canary and checks that it was served all along, then serves one more request. */
static void assert_others_served(fixture_t *f) {
  /* Let it make a request or two after the attack as well. */
  hs_test_sleep_ms(200);
  hs_test_canary_stop(&f->canary);
  f->canary_running = false;
  int ok = atomic_load(&f->canary.ok), failed = atomic_load(&f->canary.failed);
  long long max_ms = atomic_load(&f->canary.max_ms);
  if (failed > 0 || ok < 1 || max_ms > CANARY_MAX_MS) {
    fail_msg("a well-behaved client was not served during the attack: %d ok, %d failed, slowest "
             "%lld ms; last failure: %s",
             ok, failed, max_ms, f->canary.last_error);
  }
  int status = 0;
  assert_int_equal(hs_h2_get(f->server.port, false, "/healthz", NULL, 0, 5000, &status, NULL), 0);
  assert_int_equal(status, 200);
  assert_true(hs_test_server_running(&f->server));
}

static double closed_count(fixture_t *f, const char *reason) {
  double v = hs_test_closed_count(f->server.port, reason);
  assert_true(v >= 0);
  return v;
}

/* Waits until one of the reasons (NULL-terminated) counts more than its value in before[]. */
static const char *wait_reason(fixture_t *f, const char *const *reasons, const double *before) {
  long long deadline = hs_test_now_ms() + PROMPTLY_MS;
  do {
    for (size_t i = 0; reasons[i] != NULL; i++) {
      if (closed_count(f, reasons[i]) > before[i]) {
        return reasons[i];
      }
    }
    hs_test_sleep_ms(50);
  } while (hs_test_now_ms() < deadline);
  return NULL;
}

#define NV(n, v)                                                                                   \
  { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE }

/* Writes a header block of any size as HEADERS + CONTINUATION frames of at most 16384 bytes. */
static int send_block(hs_raw_t *r, int32_t stream, const uint8_t *block, size_t len,
                      bool end_stream) {
  hs_buf_t out;
  hs_buf_init(&out, 0);
  size_t off = 0;
  bool first = true;
  int rc = HS_OK;
  do {
    size_t n = len - off > 16384 ? 16384 : len - off;
    bool last = off + n == len;
    uint8_t flags = last ? HS_RAW_FLAG_END_HEADERS : 0;
    if (first && end_stream) {
      flags |= HS_RAW_FLAG_END_STREAM;
    }
    rc = hs_raw_frame_append(&out, first ? HS_RAW_HEADERS : HS_RAW_CONTINUATION, flags, stream,
                             block + off, n);
    off += n;
    first = false;
  } while (rc == HS_OK && off < len);
  if (rc == HS_OK) {
    rc = hs_raw_write(r, out.data, out.len, 5000);
  }
  hs_buf_free(&out);
  return rc;
}

/* ---- Rapid Reset (CVE-2023-44487) ---- */

static void test_rapid_reset(void **state) {
  fixture_t *f = *state;
  start(f, NULL);
  double before = closed_count(f, "rapid_reset");
  hs_raw_t *r = attacker(f, false);

  /* HEADERS + RST_STREAM, as fast as the socket takes them, far past nghttp2's burst of 1000. */
  enum { PAIRS = 20000, BATCH = 250 };
  hs_buf_t batch;
  hs_buf_init(&batch, 0);
  int32_t sid = 1;
  int sent = 0;
  const nghttp2_nv extra[] = {NV("user-agent", "reset")};
  for (; sent < PAIRS; sent += BATCH) {
    batch.len = 0;
    for (int i = 0; i < BATCH; i++, sid += 2) {
      hs_buf_t block;
      hs_buf_init(&block, 0);
      nghttp2_nv nv[] = {NV(":method", "GET"), NV(":scheme", "http"), NV(":authority", "127.0.0.1"),
                         NV(":path", "/healthz"), extra[0]};
      assert_int_equal(hs_raw_encode(r, nv, 5, &block), 0);
      hs_raw_frame_append(&batch, HS_RAW_HEADERS, HS_RAW_FLAG_END_HEADERS | HS_RAW_FLAG_END_STREAM,
                          sid, block.data, block.len);
      hs_buf_free(&block);
      uint8_t cancel[4] = {0, 0, 0, 8};
      hs_raw_frame_append(&batch, HS_RAW_RST_STREAM, 0, sid, cancel, 4);
    }
    if (hs_raw_write(r, batch.data, batch.len, 2000) != 0) {
      break; /* closed (the expected outcome) or no longer read */
    }
    if (hs_raw_drain(r, 0) == HS_EIO) {
      break;
    }
  }
  hs_buf_free(&batch);
  long long t0 = hs_test_now_ms();
  if (hs_raw_wait_closed(r, PROMPTLY_MS) != 0) {
    fail_msg("the connection is still open %d ms after %d HEADERS+RST_STREAM pairs", PROMPTLY_MS,
             sent);
  }
  print_message("rapid reset: closed after %d+ pairs, %lld ms after the last write; GOAWAY %s\n",
                sent, hs_test_now_ms() - t0,
                r->goaway ? hs_raw_error_name(r->goaway_code) : "not seen");
  close_attacker(f);

  const char *const reasons[] = {"rapid_reset", NULL};
  double b[] = {before};
  if (wait_reason(f, reasons, b) == NULL) {
    fail_msg("handsel_http_connections_closed_total{reason=\"rapid_reset\"} did not grow");
  }
  assert_others_served(f);
  assert_rss_below(f, 48, "rapid reset");
}

/* ---- SETTINGS_MAX_CONCURRENT_STREAMS ---- */

static bool stream_refused(const hs_raw_t *r, const void *arg) {
  const hs_raw_stream_t *s = hs_raw_stream(r, *(const int32_t *)arg);
  return (s != NULL && s->reset) || r->goaway;
}

static void test_max_concurrent_streams(void **state) {
  fixture_t *f = *state;
  start(f, NULL);
  hs_raw_t *r = attacker(f, true);
  assert_int_equal(r->max_concurrent_streams, 100);

  /* 100 slow streams that stay open for ~10 s, then one more. */
  for (int32_t i = 0; i < 100; i++) {
    assert_int_equal(hs_raw_request(r, 1 + 2 * i, "GET",
                                    "/debug/stream?chunks=50&size=16&interval_ms=200", NULL, 0,
                                    true),
                     0);
  }
  /* Until all 100 answered, the 101st would race their HEADERS. */
  for (int32_t i = 0; i < 100; i++) {
    long long deadline = hs_test_now_ms() + PROMPTLY_MS;
    while (hs_raw_stream(r, 1 + 2 * i) == NULL || hs_raw_stream(r, 1 + 2 * i)->status == 0) {
      assert_true(hs_test_now_ms() < deadline);
      assert_true(hs_raw_read_frame(r, NULL, 100) >= 0);
    }
    assert_int_equal(hs_raw_stream(r, 1 + 2 * i)->status, 200);
  }
  int32_t extra = 201;
  assert_int_equal(hs_raw_request(r, extra, "GET", "/healthz", NULL, 0, true), 0);
  int rc = hs_raw_read_until(r, stream_refused, &extra, PROMPTLY_MS);
  if (rc == HS_EUNAVAIL) {
    fail_msg("stream 101 on a connection with 100 open streams was neither refused nor answered "
             "with GOAWAY");
  }
  const hs_raw_stream_t *s = hs_raw_stream(r, extra);
  /* RFC 9113 §5.1.2: a stream error REFUSED_STREAM or PROTOCOL_ERROR (nghttp2 makes it a
   * connection error once our SETTINGS ACK arrived; either way the stream is not served). */
  assert_true(s == NULL || s->status == 0);
  if (s != NULL && s->reset) {
    assert_true(s->reset_code == H2_REFUSED_STREAM || s->reset_code == H2_PROTOCOL_ERROR);
    /* A stream error only: the first streams keep flowing. */
    uint64_t d = hs_raw_stream(r, 1)->data_bytes;
    hs_raw_drain(r, 600);
    assert_true(hs_raw_stream(r, 1)->data_bytes > d);
  } else {
    assert_true(r->goaway);
    assert_true(r->goaway_last_stream < extra);
  }
  close_attacker(f);
  assert_others_served(f);
}

/* ---- CONTINUATION flood (CVE-2024-28182) ---- */

static void test_continuation_flood(void **state) {
  fixture_t *f = *state;
  start(f, NULL);
  hs_raw_t *r = attacker(f, false);
  hs_buf_t block;
  hs_buf_init(&block, 0);
  nghttp2_nv nv[] = {NV(":method", "GET"), NV(":scheme", "http"), NV(":authority", "127.0.0.1"),
                     NV(":path", "/healthz")};
  assert_int_equal(hs_raw_encode(r, nv, 4, &block), 0);
  assert_int_equal(hs_raw_headers(r, 1, HS_RAW_FLAG_END_STREAM, block.data, block.len), 0);
  hs_buf_free(&block);

  /* Thousands of CONTINUATION frames that never end the block (most of them may still sit in
   * socket buffers when the server closes; what counts is that it closes), each one field
   * (literal without indexing, new name): "x-c: v". */
  static const uint8_t field[] = {0x00, 3, 'x', '-', 'c', 1, 'v'};
  hs_buf_t batch;
  hs_buf_init(&batch, 0);
  for (int i = 0; i < 1000; i++) {
    hs_raw_frame_append(&batch, HS_RAW_CONTINUATION, 0, 1, field, sizeof field);
  }
  int frames = 0;
  for (; frames < 20000; frames += 1000) {
    if (hs_raw_write(r, batch.data, batch.len, 2000) != 0) {
      break;
    }
  }
  hs_buf_free(&batch);
  long long t0 = hs_test_now_ms();
  if (hs_raw_wait_closed(r, PROMPTLY_MS) != 0) {
    fail_msg("the connection is still open after %d CONTINUATION frames", frames);
  }
  print_message("continuation flood: closed %lld ms after %d+ frames; GOAWAY %s\n",
                hs_test_now_ms() - t0, frames,
                r->goaway ? hs_raw_error_name(r->goaway_code) : "not seen");
  /* The block never ended, so no request may have been served. */
  const hs_raw_stream_t *s1 = hs_raw_stream(r, 1);
  assert_true(s1 == NULL || s1->status == 0);
  close_attacker(f);
  assert_others_served(f);
  assert_rss_below(f, 48, "continuation flood");
}

/* ---- the header-list bomb (SETTINGS_MAX_HEADER_LIST_SIZE is not enforced by nghttp2) ---- */

/* 128 KiB of HPACK: the pseudo-headers, one 4000-byte field added to the dynamic table, then
 * one-byte references to it. Expanded, that is ~500 MiB of header fields. */
static size_t build_bomb(uint8_t *out, size_t cap) {
  size_t n = 0;
  out[n++] = 0x82; /* :method GET */
  out[n++] = 0x86; /* :scheme http */
  out[n++] = 0x84; /* :path / */
  out[n++] = 0x01; /* :authority, literal without indexing */
  out[n++] = 9;
  memcpy(out + n, "127.0.0.1", 9);
  n += 9;
  out[n++] = 0x40; /* literal with incremental indexing, new name */
  out[n++] = 6;
  memcpy(out + n, "x-bomb", 6);
  n += 6;
  /* Value length 4000 as a 7-bit prefix integer: 127, then 3873 in 7-bit groups. */
  out[n++] = 0x7f;
  out[n++] = 0x80 | (3873 & 0x7f);
  out[n++] = 3873 >> 7;
  memset(out + n, 'a', 4000);
  n += 4000;
  /* Index 62 is the newest dynamic table entry: x-bomb. */
  while (n < cap) {
    out[n++] = 0x80 | 62;
  }
  return n;
}

static bool stream_done(const hs_raw_t *r, const void *arg) {
  const hs_raw_stream_t *s = hs_raw_stream(r, *(const int32_t *)arg);
  return (s != NULL && (s->reset || s->end_stream)) || r->goaway;
}

static void test_header_list_bomb(void **state) {
  fixture_t *f = *state;
  start(f, NULL);
  enum { BOMB = 128 * 1024 };
  uint8_t *bomb = malloc(BOMB);
  assert_non_null(bomb);
  size_t len = build_bomb(bomb, BOMB);

  for (int conn = 0; conn < 3; conn++) {
    hs_raw_t *r = attacker(f, false);
    /* The block is 8 frames: HEADERS + 7 CONTINUATION, under nghttp2's own CONTINUATION cap,
     * so only handsel's header-list limit stands in the way. */
    int32_t sid = 1;
    for (int i = 0; i < 4; i++, sid += 2) {
      if (send_block(r, sid, bomb, len, true) != 0) {
        break;
      }
      int rc = hs_raw_read_until(r, stream_done, &sid, PROMPTLY_MS);
      const hs_raw_stream_t *s = hs_raw_stream(r, sid);
      if (rc == HS_EUNAVAIL) {
        fail_msg("no answer to a 128 KiB header-list bomb within %d ms", PROMPTLY_MS);
      }
      /* Refused: a reset, a 431, or the connection closed. Never a 200. */
      assert_true(s == NULL || s->status == 0 || s->status == 431);
      if (r->goaway || r->closed) {
        break;
      }
      assert_rss_below(f, 64, "header-list bomb");
    }
    close_attacker(f);
    assert_rss_below(f, 64, "header-list bomb");
  }
  free(bomb);
  assert_others_served(f);
}

/* ---- too many header fields, and a header list over the byte limit ---- */

static void check_refused_then_usable(fixture_t *f, hs_raw_t *r, int32_t sid, const char *what) {
  int rc = hs_raw_read_until(r, stream_done, &sid, PROMPTLY_MS);
  if (rc == HS_EUNAVAIL) {
    fail_msg("%s: no answer within %d ms", what, PROMPTLY_MS);
  }
  const hs_raw_stream_t *s = hs_raw_stream(r, sid);
  if (s != NULL && s->status != 0 && s->status != 431) {
    fail_msg("%s: answered %d, expected a reset or 431", what, s->status);
  }
  if (r->goaway || r->closed) {
    return; /* closing the connection is also a refusal */
  }
  /* The connection is still usable for an ordinary request. */
  int32_t next = sid + 2;
  assert_int_equal(hs_raw_request(r, next, "GET", "/healthz", NULL, 0, true), 0);
  assert_int_equal(hs_raw_read_until(r, stream_done, &next, PROMPTLY_MS), 0);
  assert_int_equal(hs_raw_stream(r, next)->status, 200);
}

static void test_too_many_header_fields(void **state) {
  fixture_t *f = *state;
  start(f, (const char *const[]){"HANDSEL_MAX_HEADERS=64", NULL});
  hs_raw_t *r = attacker(f, false);
  /* 100 small fields: 100 * (5 + 1 + 32) bytes is well under the 16384-byte list limit, so only
   * the field count is over. */
  enum { N = 100 };
  nghttp2_nv nv[N];
  char names[N][16];
  for (int i = 0; i < N; i++) {
    snprintf(names[i], sizeof names[i], "x-%03d", i);
    nv[i] = (nghttp2_nv){(uint8_t *)names[i], (uint8_t *)"v", 5, 1, NGHTTP2_NV_FLAG_NONE};
  }
  assert_int_equal(hs_raw_request(r, 1, "GET", "/healthz", nv, N, true), 0);
  check_refused_then_usable(f, r, 1, "100 header fields");

  /* And under the limit, 50 fields are fine. */
  if (!r->goaway && !r->closed) {
    assert_int_equal(hs_raw_request(r, 5, "GET", "/healthz", nv, 50, true), 0);
    int32_t sid = 5;
    assert_int_equal(hs_raw_read_until(r, stream_done, &sid, PROMPTLY_MS), 0);
    assert_int_equal(hs_raw_stream(r, 5)->status, 200);
  }
  close_attacker(f);
  assert_others_served(f);
}

static void test_header_list_too_large(void **state) {
  fixture_t *f = *state;
  start(f, NULL);
  hs_raw_t *r = attacker(f, false);
  /* Two 9000-byte values: 18064 bytes of header list by RFC 9113's count, over 16384. */
  char *v = malloc(9001);
  assert_non_null(v);
  memset(v, 'h', 9000);
  v[9000] = '\0';
  nghttp2_nv base[] = {NV(":method", "GET"), NV(":scheme", "http"), NV(":authority", "127.0.0.1"),
                       NV(":path", "/healthz")};
  nghttp2_nv nv[6];
  memcpy(nv, base, sizeof base);
  nv[4] = (nghttp2_nv){(uint8_t *)"x-big-1", (uint8_t *)v, 7, 9000, NGHTTP2_NV_FLAG_NO_INDEX};
  nv[5] = (nghttp2_nv){(uint8_t *)"x-big-2", (uint8_t *)v, 7, 9000, NGHTTP2_NV_FLAG_NO_INDEX};
  hs_buf_t block;
  hs_buf_init(&block, 0);
  assert_int_equal(hs_raw_encode(r, nv, 6, &block), 0);
  assert_int_equal(send_block(r, 1, block.data, block.len, true), 0);
  hs_buf_free(&block);
  free(v);
  check_refused_then_usable(f, r, 1, "an 18 KiB header list");
  close_attacker(f);
  assert_others_served(f);
}

/* ---- SETTINGS and PING floods ---- */

static void control_flood(fixture_t *f, uint8_t type) {
  start(f, NULL);
  const char *const reasons[] = {"control_flood", "flood", NULL};
  double before[] = {closed_count(f, "control_flood"), closed_count(f, "flood")};
  hs_raw_t *r = attacker(f, false);
  hs_buf_t batch;
  hs_buf_init(&batch, 0);
  static const uint8_t opaque[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  for (int i = 0; i < 1000; i++) {
    if (type == HS_RAW_PING) {
      hs_raw_frame_append(&batch, HS_RAW_PING, 0, 0, opaque, 8);
    } else {
      hs_raw_frame_append(&batch, HS_RAW_SETTINGS, 0, 0, NULL, 0);
    }
  }
  /* Without reading a single ACK, far more than the 1000-per-10-s limit. */
  int sent = 0;
  for (; sent < 100000; sent += 1000) {
    if (hs_raw_write(r, batch.data, batch.len, 2000) != 0) {
      break;
    }
  }
  hs_buf_free(&batch);
  const char *type_name = type == HS_RAW_PING ? "PING" : "SETTINGS";
  /* Now read: the ACKs the server did send, then the close. */
  if (hs_raw_wait_closed(r, PROMPTLY_MS) != 0) {
    fail_msg("the connection is still open after %d %s frames", sent, type_name);
  }
  print_message("%s flood: closed after %d+ frames; GOAWAY %s\n", type_name, sent,
                r->goaway ? hs_raw_error_name(r->goaway_code) : "not seen");
  if (r->goaway) {
    assert_int_equal(r->goaway_code, H2_ENHANCE_YOUR_CALM);
  }
  close_attacker(f);
  if (wait_reason(f, reasons, before) == NULL) {
    fail_msg("neither reason=\"control_flood\" nor reason=\"flood\" grew after a %s flood",
             type_name);
  }
  assert_others_served(f);
  assert_rss_below(f, 48, type_name);
}

static void test_settings_flood(void **state) {
  control_flood(*state, HS_RAW_SETTINGS);
}

static void test_ping_flood(void **state) {
  control_flood(*state, HS_RAW_PING);
}

/* Under the limit, control frames are simply answered. */
static void test_control_frames_under_limit(void **state) {
  fixture_t *f = *state;
  start(f, NULL);
  hs_raw_t *r = attacker(f, false);
  /* Let the ACK of our preface SETTINGS arrive first, so it is not counted below. */
  hs_raw_drain(r, 200);
  for (int i = 0; i < 50; i++) {
    assert_int_equal(hs_raw_ping(r, (uint64_t)i), 0);
  }
  uint64_t acks0 = r->settings_acks;
  for (int i = 0; i < 20; i++) {
    assert_int_equal(hs_raw_settings(r, NULL, 0), 0);
  }
  hs_raw_drain(r, 500);
  assert_false(r->closed);
  assert_int_equal(r->ping_acks, 50);
  assert_int_equal(r->settings_acks - acks0, 20);
  close_attacker(f);
  assert_others_served(f);
}

/* ---- timers: idle connections, unfinished header blocks, stalled output ---- */

static void test_idle_timeout(void **state) {
  fixture_t *f = *state;
  start(f, (const char *const[]){"HANDSEL_IDLE_TIMEOUT_MS=500", NULL});
  double before = closed_count(f, "idle");

  /* A connection with nothing open is closed with a GOAWAY. */
  hs_raw_t *r = attacker(f, false);
  long long t0 = hs_test_now_ms();
  if (hs_raw_wait_closed(r, PROMPTLY_MS) != 0) {
    fail_msg("an idle connection is still open after %d ms (idle timeout 500 ms)", PROMPTLY_MS);
  }
  long long dt = hs_test_now_ms() - t0;
  print_message("idle: closed after %lld ms\n", dt);
  assert_true(dt >= 250);
  assert_true(r->goaway);
  close_attacker(f);

  /* So is one that never even sends the preface. */
  hs_raw_t bare;
  assert_int_equal(hs_raw_connect(&bare, f->server.port), 0);
  int rc = hs_raw_wait_closed(&bare, PROMPTLY_MS);
  hs_raw_close(&bare);
  if (rc != 0) {
    fail_msg("a connection that sent nothing is still open after %d ms", PROMPTLY_MS);
  }

  const char *const reasons[] = {"idle", NULL};
  double b[] = {before};
  assert_non_null(wait_reason(f, reasons, b));

  /* A connection with a stream open is not idle, even when the stream outlives the timeout. */
  hs_h2_conn_t *c = NULL;
  assert_int_equal(hs_h2_connect(&c, f->server.port, NULL), 0);
  hs_h2_response_t *resp = NULL;
  assert_int_equal(hs_h2_request(c, "GET", "/debug/stream?chunks=10&size=100&interval_ms=150", NULL,
                                 0, NULL, 0, PROMPTLY_MS, &resp),
                   0);
  assert_int_equal(resp->status, 200);
  assert_true(resp->end_stream);
  assert_int_equal(resp->body_total, 1000);
  hs_h2_close(c);
  /* The canary reconnects for every request, so the idle timer never touches it. */
  assert_others_served(f);
}

static void test_header_timeout(void **state) {
  fixture_t *f = *state;
  start(f, (const char *const[]){"HANDSEL_HEADER_TIMEOUT_MS=500", NULL});
  double before = closed_count(f, "header_timeout");
  hs_raw_t *r = attacker(f, false);
  hs_buf_t block;
  hs_buf_init(&block, 0);
  nghttp2_nv nv[] = {NV(":method", "GET"), NV(":scheme", "http"), NV(":authority", "127.0.0.1"),
                     NV(":path", "/healthz")};
  assert_int_equal(hs_raw_encode(r, nv, 4, &block), 0);
  long long t0 = hs_test_now_ms();
  assert_int_equal(hs_raw_headers(r, 1, HS_RAW_FLAG_END_STREAM, block.data, block.len), 0);
  hs_buf_free(&block);
  /* A slowloris: a CONTINUATION every 150 ms keeps bytes coming, but the block never ends.
   * Seven stays under nghttp2's own CONTINUATION cap. */
  static const uint8_t field[] = {0x00, 3, 'x', '-', 's', 1, 'v'};
  for (int i = 0; i < 7; i++) {
    if (hs_raw_drain(r, 150) == HS_EIO) {
      break;
    }
    if (hs_raw_continuation(r, 1, false, field, sizeof field) != 0) {
      break;
    }
  }
  if (hs_raw_wait_closed(r, PROMPTLY_MS) != 0) {
    fail_msg("an unfinished header block is still open after %lld ms (header timeout 500 ms)",
             hs_test_now_ms() - t0);
  }
  print_message("header timeout: closed after %lld ms\n", hs_test_now_ms() - t0);
  close_attacker(f);
  const char *const reasons[] = {"header_timeout", NULL};
  double b[] = {before};
  if (wait_reason(f, reasons, b) == NULL) {
    fail_msg("reason=\"header_timeout\" did not grow");
  }
  assert_others_served(f);
}

static void test_stalled_zero_window(void **state) {
  fixture_t *f = *state;
  start(f, (const char *const[]){"HANDSEL_STALL_TIMEOUT_MS=1000", NULL});
  double before = closed_count(f, "stalled");
  hs_raw_t *r = &f->raw;
  assert_int_equal(hs_raw_connect(r, f->server.port), 0);
  f->raw_open = true;
  /* A stream window of zero: the server may send HEADERS but no DATA, ever. */
  nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0}};
  assert_int_equal(hs_raw_preface(r, iv, 1), 0);
  assert_int_equal(hs_raw_handshake(r, 5000), 0);
  long long t0 = hs_test_now_ms();
  assert_int_equal(hs_raw_request(r, 1, "GET", "/debug/stream?chunks=64&size=65536&interval_ms=0",
                                  NULL, 0, true),
                   0);
  if (hs_raw_wait_closed(r, 1000 + PROMPTLY_MS) != 0) {
    fail_msg("a stream stalled on a zero window is still open after %lld ms (stall timeout "
             "1000 ms)",
             hs_test_now_ms() - t0);
  }
  long long dt = hs_test_now_ms() - t0;
  print_message("zero window: closed after %lld ms\n", dt);
  assert_true(dt >= 500);
  const hs_raw_stream_t *s = hs_raw_stream(r, 1);
  assert_true(s == NULL || s->data_bytes == 0);
  close_attacker(f);
  const char *const reasons[] = {"stalled", NULL};
  double b[] = {before};
  if (wait_reason(f, reasons, b) == NULL) {
    fail_msg("reason=\"stalled\" did not grow");
  }
  assert_others_served(f);
  assert_rss_below(f, 32, "zero window");
}

static void test_stalled_not_reading(void **state) {
  fixture_t *f = *state;
  start(f, (const char *const[]){"HANDSEL_STALL_TIMEOUT_MS=1000", NULL});
  double before = closed_count(f, "stalled");
  hs_raw_t *r = attacker(f, true);
  /* 64 MiB that flow control allows, to a client that never reads: only TCP and the server's
   * output cap hold it back. */
  long long t0 = hs_test_now_ms();
  assert_int_equal(hs_raw_request(r, 1, "GET", "/debug/stream?chunks=1024&size=65536&interval_ms=0",
                                  NULL, 0, true),
                   0);
  /* Not reading; watch the server's memory meanwhile. */
  double peak = peak_rss_growth_mib(f, 15);
  print_message("not reading: RSS grew by at most %.1f MiB while stalled\n", peak);
  if (peak > 24) {
    fail_msg("the server buffered %.1f MiB for a client that does not read", peak);
  }
  const char *const reasons[] = {"stalled", NULL};
  double b[] = {before};
  if (wait_reason(f, reasons, b) == NULL) {
    fail_msg("reason=\"stalled\" did not grow %lld ms after the request (stall timeout 1000 ms)",
             hs_test_now_ms() - t0);
  }
  /* What reached the socket before the close can be read; then it ends, short of 64 MiB. */
  assert_int_equal(hs_raw_wait_closed(r, 10000), 0);
  const hs_raw_stream_t *s = hs_raw_stream(r, 1);
  assert_non_null(s);
  assert_true(s->data_bytes < 64u * 1024 * 1024);
  assert_false(s->end_stream);
  close_attacker(f);
  assert_others_served(f);
}

/* ---- the glitch limit (MadeYouReset, CVE-2025-8671) ---- */

static void send_bad_request(hs_raw_t *r, int32_t sid) {
  /* No :path: nghttp2 answers with RST_STREAM PROTOCOL_ERROR, a reset the server sends. */
  nghttp2_nv nv[] = {NV(":method", "GET"), NV(":scheme", "http"), NV(":authority", "127.0.0.1")};
  hs_buf_t block;
  hs_buf_init(&block, 0);
  assert_int_equal(hs_raw_encode(r, nv, 3, &block), 0);
  hs_raw_headers(r, sid, HS_RAW_FLAG_END_HEADERS | HS_RAW_FLAG_END_STREAM, block.data, block.len);
  hs_buf_free(&block);
}

static void test_glitch_limit(void **state) {
  fixture_t *f = *state;
  start(f, (const char *const[]){"HANDSEL_GLITCH_LIMIT=20", NULL});
  double before = closed_count(f, "glitch");
  hs_raw_t *r = attacker(f, false);

  /* Under the limit: each bad request is reset, and the connection carries on. */
  int32_t sid = 1;
  for (int i = 0; i < 10; i++, sid += 2) {
    send_bad_request(r, sid);
  }
  hs_raw_drain(r, 300);
  assert_false(r->closed);
  assert_true(r->rst_count >= 10);
  int32_t good = sid;
  sid += 2;
  assert_int_equal(hs_raw_request(r, good, "GET", "/healthz", NULL, 0, true), 0);
  assert_int_equal(hs_raw_read_until(r, stream_done, &good, PROMPTLY_MS), 0);
  assert_int_equal(hs_raw_stream(r, good)->status, 200);

  /* Past it: GOAWAY ENHANCE_YOUR_CALM and close. One at a time, reading in between, so the
   * GOAWAY is read before anything unread could turn the close into a reset. */
  for (int i = 0; i < 100 && !r->goaway && !r->closed; i++, sid += 2) {
    send_bad_request(r, sid);
    hs_raw_drain(r, 20);
  }
  if (hs_raw_wait_closed(r, PROMPTLY_MS) != 0) {
    fail_msg("the connection is still open after %llu resets (glitch limit 20)",
             (unsigned long long)r->rst_count);
  }
  assert_true(r->goaway);
  assert_int_equal(r->goaway_code, H2_ENHANCE_YOUR_CALM);
  close_attacker(f);
  const char *const reasons[] = {"glitch", NULL};
  double b[] = {before};
  if (wait_reason(f, reasons, b) == NULL) {
    fail_msg("reason=\"glitch\" did not grow");
  }
  assert_others_served(f);
}

/* ---- closed-stream retention off: memory per connection stays flat ---- */

static void test_closed_streams_not_retained(void **state) {
  fixture_t *f = *state;
  start(f, NULL);
  hs_h2_conn_t *c = NULL;
  assert_int_equal(hs_h2_connect(&c, f->server.port, NULL), 0);
  /* The first few thousand streams warm the allocators up (and fill ASan's small quarantine);
   * from there on, a server that kept anything per closed stream would grow steadily. */
  enum { ROUNDS = 200, PER_ROUND = 50, MID = 80 };
  long rss_mid = 0;
  for (int round = 0; round < ROUNDS; round++) {
    for (int k = 0; k < PER_ROUND; k++) {
      assert_true(hs_h2_submit(c, "GET", "/healthz", NULL, 0, NULL, 0) > 0);
    }
    assert_int_equal(hs_h2_wait(c, 0, PROMPTLY_MS), 0);
    if (round == MID) {
      rss_mid = hs_test_server_rss_kb(&f->server);
    }
  }
  long rss_end = hs_test_server_rss_kb(&f->server);
  hs_h2_close(c);
  int measured = (ROUNDS - MID - 1) * PER_ROUND;
  print_message("%d streams on one connection: RSS %ld -> %ld KiB over the last %d\n",
                ROUNDS * PER_ROUND, rss_mid, rss_end, measured);
  if (rss_end - rss_mid > 3 * 1024) {
    fail_msg("RSS grew by %ld KiB over %d closed streams on one connection", rss_end - rss_mid,
             measured);
  }
  assert_others_served(f);
}

/* Connections that come and go leave nothing behind either. */
static void test_connection_churn_rss_flat(void **state) {
  fixture_t *f = *state;
  start(f, NULL);
  enum { CONNS = 1500, MID = 500 };
  long rss_mid = 0;
  for (int i = 0; i < CONNS; i++) {
    int status = 0;
    assert_int_equal(
        hs_h2_get(f->server.port, false, "/healthz", NULL, 0, PROMPTLY_MS, &status, NULL), 0);
    assert_int_equal(status, 200);
    if (i == MID) {
      rss_mid = hs_test_server_rss_kb(&f->server);
    }
  }
  long rss_end = hs_test_server_rss_kb(&f->server);
  print_message("%d connections: RSS %ld -> %ld KiB over the last %d\n", CONNS, rss_mid, rss_end,
                CONNS - MID - 1);
  if (rss_end - rss_mid > 3 * 1024) {
    fail_msg("RSS grew by %ld KiB over %d connections", rss_end - rss_mid, CONNS - MID - 1);
  }
  assert_others_served(f);
}

/* ---- the per-connection output cap ---- */

/* 16 streams of 4 MiB each on r, all allowed by flow control. */
enum { CAP_STREAMS = 16 };
static const uint64_t CAP_EACH = 64u * 65536;

static void request_cap_streams(hs_raw_t *r) {
  for (int i = 0; i < CAP_STREAMS; i++) {
    assert_int_equal(hs_raw_request(r, 1 + 2 * i, "GET",
                                    "/debug/stream?chunks=64&size=65536&interval_ms=0", NULL, 0,
                                    true),
                     0);
  }
}

/* Reads r until every stream ended, and checks that each got every byte. */
static void read_cap_streams(hs_raw_t *r) {
  long long deadline = hs_test_now_ms() + 60000;
  for (;;) {
    int done = 0;
    for (int i = 0; i < CAP_STREAMS; i++) {
      const hs_raw_stream_t *s = hs_raw_stream(r, 1 + 2 * i);
      done += s != NULL && s->end_stream;
    }
    if (done == CAP_STREAMS || r->closed || hs_test_now_ms() > deadline) {
      break;
    }
    hs_raw_read_frame(r, NULL, 200);
  }
  for (int i = 0; i < CAP_STREAMS; i++) {
    const hs_raw_stream_t *s = hs_raw_stream(r, 1 + 2 * i);
    assert_non_null(s);
    if (!s->end_stream || s->data_bytes != CAP_EACH) {
      fail_msg("stream %d: %llu of %llu bytes, %s", 1 + 2 * i, (unsigned long long)s->data_bytes,
               (unsigned long long)CAP_EACH, s->end_stream ? "ended" : "not ended");
    }
  }
}

static void test_output_buffer_cap(void **state) {
  fixture_t *f = *state;
  start(f, (const char *const[]){"HANDSEL_CONN_OUTBUF=262144", NULL});
  /* The same streams read as they arrive, first: the buffers they use, and ASan's quarantine,
   * grow to their working size, so that what follows measures only what a reader that stops
   * makes the server keep. */
  request_cap_streams(attacker(f, true));
  read_cap_streams(&f->raw);
  close_attacker(f);
  f->rss0_kb = hs_test_server_rss_kb(&f->server);
  /* Now none is read for a while. */
  hs_raw_t *r = attacker(f, true);
  request_cap_streams(r);
  double peak = peak_rss_growth_mib(f, 10);
  /* The server may hold the connection's 256 KiB and each stream's own 256 KiB (its default
   * HANDSEL_STREAM_OUTBUF): about 4.3 MiB, far from the 64 MiB owed. */
  print_message("output cap: RSS grew by at most %.1f MiB with 64 MiB owed\n", peak);
  if (peak > 12) {
    fail_msg("the server buffered %.1f MiB for one connection with a 256 KiB output cap", peak);
  }
  /* Then read: the server resumes, and every byte of every stream arrives. */
  read_cap_streams(r);
  close_attacker(f);
  assert_others_served(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_rapid_reset, setup, teardown),
      cmocka_unit_test_setup_teardown(test_max_concurrent_streams, setup, teardown),
      cmocka_unit_test_setup_teardown(test_continuation_flood, setup, teardown),
      cmocka_unit_test_setup_teardown(test_header_list_bomb, setup, teardown),
      cmocka_unit_test_setup_teardown(test_too_many_header_fields, setup, teardown),
      cmocka_unit_test_setup_teardown(test_header_list_too_large, setup, teardown),
      cmocka_unit_test_setup_teardown(test_settings_flood, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ping_flood, setup, teardown),
      cmocka_unit_test_setup_teardown(test_control_frames_under_limit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_idle_timeout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_header_timeout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stalled_zero_window, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stalled_not_reading, setup, teardown),
      cmocka_unit_test_setup_teardown(test_glitch_limit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_closed_streams_not_retained, setup, teardown),
      cmocka_unit_test_setup_teardown(test_connection_churn_rss_flat, setup, teardown),
      cmocka_unit_test_setup_teardown(test_output_buffer_cap, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
