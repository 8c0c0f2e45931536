/* Streaming responses with backpressure (deferred data sources): a slow reader with a small
 * window gets every byte, and a reader that stops does not make the server buffer the rest. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "hs_test_h2.h"
#include "hs_test_raw.h"
#include "hs_test_server.h"

typedef struct fixture {
  hs_test_server_t server;
  hs_raw_t raw;
  bool raw_open;
} fixture_t;

static int setup(void **state) {
  fixture_t *f = calloc(1, sizeof *f);
  *state = f;
  return f != NULL ? 0 : -1;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  if (f->raw_open) {
    hs_raw_close(&f->raw);
  }
  hs_test_server_stop(&f->server);
  free(f);
  return 0;
}

static void start(fixture_t *f) {
  hs_test_server_must_start(
      &f->server, (const char *const[]){"HANDSEL_WORKERS=1", "HANDSEL_DEBUG_ROUTES=1", NULL},
      false);
}

static void assert_all_x(const hs_h2_response_t *r, size_t want) {
  if (r->body_total != want || r->body.len != want) {
    fail_msg("stream %d: %zu bytes (%zu kept), expected %zu", r->stream_id, r->body_total,
             r->body.len, want);
  }
  for (size_t i = 0; i < r->body.len; i++) {
    if (r->body.data[i] != 'x') {
      fail_msg("stream %d: byte %zu is 0x%02x, not 'x'", r->stream_id, i, r->body.data[i]);
    }
  }
}

static void test_slow_reader_gets_every_byte(void **state) {
  fixture_t *f = *state;
  start(f);
  /* A 16 KiB stream window, and a reader that takes a pause between reads. */
  hs_h2_opts_t o = {.window = 16384};
  hs_h2_conn_t *c = NULL;
  assert_int_equal(hs_h2_connect(&c, f->server.port, &o), 0);
  int32_t id =
      hs_h2_submit(c, "GET", "/debug/stream?chunks=128&size=16384&interval_ms=0", NULL, 0, NULL, 0);
  assert_true(id > 0);
  long rss0 = hs_test_server_rss_kb(&f->server);
  long rss_peak = rss0;
  long long deadline = hs_test_now_ms() + 60000;
  int pumps = 0;
  while (!hs_h2_response(c, id)->closed) {
    assert_true(hs_test_now_ms() < deadline);
    if (hs_h2_pump(c, 50) != 0) {
      break;
    }
    hs_test_sleep_ms(5);
    if (++pumps % 20 == 0) {
      long rss = hs_test_server_rss_kb(&f->server);
      rss_peak = rss > rss_peak ? rss : rss_peak;
    }
  }
  hs_h2_response_t *r = hs_h2_response(c, id);
  assert_int_equal(r->status, 200);
  assert_true(r->end_stream);
  assert_all_x(r, 128u * 16384);
  print_message("slow reader: 2 MiB in %d reads; server RSS peak +%ld KiB\n", pumps,
                rss_peak - rss0);
  assert_true(rss_peak - rss0 < 16 * 1024);
  hs_h2_close(c);
}

static void test_concurrent_slow_streams(void **state) {
  fixture_t *f = *state;
  start(f);
  hs_h2_opts_t o = {.window = 8192};
  hs_h2_conn_t *c = NULL;
  assert_int_equal(hs_h2_connect(&c, f->server.port, &o), 0);
  enum { N = 8 };
  int32_t ids[N];
  for (int i = 0; i < N; i++) {
    /* Different sizes and paces, interleaved on one connection. */
    char path[128];
    snprintf(path, sizeof path, "/debug/stream?chunks=%d&size=%d&interval_ms=%d", 16 + i,
             4096 + 1000 * i, i % 3);
    ids[i] = hs_h2_submit(c, "GET", path, NULL, 0, NULL, 0);
    assert_true(ids[i] > 0);
  }
  long long deadline = hs_test_now_ms() + 60000;
  while (hs_h2_wait(c, 0, 20) == HS_EUNAVAIL) {
    assert_true(hs_test_now_ms() < deadline);
    hs_test_sleep_ms(2);
  }
  for (int i = 0; i < N; i++) {
    hs_h2_response_t *r = hs_h2_response(c, ids[i]);
    assert_int_equal(r->status, 200);
    assert_true(r->end_stream);
    assert_all_x(r, (size_t)(16 + i) * (size_t)(4096 + 1000 * i));
  }
  hs_h2_close(c);
}

static void test_stopped_reader_bounds_memory(void **state) {
  fixture_t *f = *state;
  start(f);
  for (int i = 0; i < 10; i++) {
    int status = 0;
    hs_h2_get(f->server.port, false, "/healthz", NULL, 0, 5000, &status, NULL);
  }
  long rss0 = hs_test_server_rss_kb(&f->server);
  hs_raw_t *r = &f->raw;
  assert_int_equal(hs_raw_connect(r, f->server.port), 0);
  f->raw_open = true;
  /* Flow control would allow 2 GiB: only TCP and the server's own output cap hold it back. */
  assert_int_equal(hs_raw_preface_big_window(r), 0);
  assert_int_equal(hs_raw_handshake(r, 5000), 0);
  const uint64_t total = 2048u * 65536; /* 128 MiB */
  assert_int_equal(hs_raw_request(r, 1, "GET", "/debug/stream?chunks=2048&size=65536&interval_ms=0",
                                  NULL, 0, true),
                   0);
  long peak = rss0;
  for (int i = 0; i < 20; i++) {
    hs_test_sleep_ms(100);
    long rss = hs_test_server_rss_kb(&f->server);
    peak = rss > peak ? rss : peak;
  }
  double grew = (double)(peak - rss0) / 1024.0;
  print_message("stopped reader: server RSS grew by %.1f MiB with 128 MiB owed\n", grew);
  if (grew > 24) {
    fail_msg("the server buffered %.1f MiB for a reader that stopped", grew);
  }
  /* The reader resumes, and nothing was lost while it paused. */
  long long deadline = hs_test_now_ms() + 120000;
  const hs_raw_stream_t *s = NULL;
  while (hs_test_now_ms() < deadline) {
    s = hs_raw_stream(r, 1);
    if ((s != NULL && (s->end_stream || s->reset)) || r->closed) {
      break;
    }
    hs_raw_read_frame(r, NULL, 200);
  }
  s = hs_raw_stream(r, 1);
  assert_non_null(s);
  if (!s->end_stream || s->data_bytes != total) {
    fail_msg("after resuming: %llu of %llu bytes, %s", (unsigned long long)s->data_bytes,
             (unsigned long long)total, s->end_stream ? "ended" : "not ended");
  }
  assert_int_equal(s->status, 200);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_slow_reader_gets_every_byte, setup, teardown),
      cmocka_unit_test_setup_teardown(test_concurrent_slow_streams, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stopped_reader_bounds_memory, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
