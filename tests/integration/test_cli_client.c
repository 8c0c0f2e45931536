/* The command line's HTTP/2 client (server/cli/client.c) against the real binary: streamed
 * bodies arrive whole and in order without being buffered, a callback can stop a transfer, a
 * server that dies mid-answer or stops answering is an error and never a short success, TLS
 * is verified against a CA file, and error answers are decoded. Every test starts its own
 * server. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/client.h"
#include "hs_test_pg.h"
#include "hs_test_server.h"

static const char *const DEBUG_ENV[] = {"HANDSEL_DEBUG_ROUTES=1", NULL};

static int setup(void **state) {
  hs_test_server_t *s = calloc(1, sizeof *s);
  *state = s;
  return s != NULL ? 0 : -1;
}

static int teardown(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_stop(s);
  free(s);
  return 0;
}

static hs_client_t *must_connect(const char *url, const char *ca) {
  hs_client_opts_t o = {.url = url, .ca_file = ca, .timeout_ms = 10000};
  hs_client_t *c = NULL;
  hs_err_t err;
  hs_err_clear(&err);
  int rc = hs_client_connect(&o, &c, &err);
  if (rc != HS_OK) {
    fail_msg("cannot connect to %s: %s", url, err.msg);
  }
  return c;
}

/* What a streaming callback saw. */
typedef struct sink {
  uint64_t bytes;
  uint64_t chunks;
  size_t largest;         /* the largest piece handed over at once */
  bool all_x;             /* every byte was the debug stream's 'x' */
  bool head_seen_first;   /* on_head ran before the first body byte */
  bool head_called;       /* on_head ran */
  uint64_t stop_after;    /* 0, or fail once this many bytes arrived */
  hs_test_server_t *kill; /* NULL, or kill this server once stop_after bytes arrived */
} sink_t;

static int sink_head(void *ctx, const hs_client_response_t *resp, hs_err_t *err) {
  sink_t *s = ctx;
  s->head_called = true;
  s->head_seen_first = s->bytes == 0;
  return HS_OK;
}

static int sink_body(void *ctx, const uint8_t *data, size_t len, hs_err_t *err) {
  sink_t *s = ctx;
  for (size_t i = 0; i < len; i++) {
    if (data[i] != 'x') {
      s->all_x = false;
    }
  }
  s->bytes += len;
  s->chunks++;
  if (len > s->largest) {
    s->largest = len;
  }
  if (s->stop_after > 0 && s->bytes >= s->stop_after) {
    if (s->kill != NULL) {
      hs_test_server_signal(s->kill, SIGKILL);
      s->stop_after = 0;
      return HS_OK;
    }
    return hs_err_set(err, HS_EIO, "the disk is full (test)");
  }
  return HS_OK;
}

static int get_stream(hs_client_t *c, const char *path, sink_t *sink, hs_err_t *err) {
  hs_client_request_t req = {
      .method = "GET", .path = path, .on_head = sink_head, .on_body = sink_body, .ctx = sink};
  hs_client_response_t resp;
  int rc = hs_client_request(c, &req, &resp, err);
  /* A streamed body goes to the callback only: the client keeps none of it. */
  assert_int_equal(resp.body.len, 0);
  assert_null(resp.body.data);
  assert_int_equal(resp.body_bytes, sink->bytes);
  hs_client_response_free(&resp);
  return rc;
}

/* 2000 chunks of 64 KiB: 131 MB pass through pieces no larger than one DATA frame. */
static void test_large_stream_arrives_whole_without_buffering(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_must_start(s, DEBUG_ENV, false);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d", s->port);
  hs_client_t *c = must_connect(url, NULL);
  sink_t sink = {.all_x = true};
  hs_err_t err;
  hs_err_clear(&err);
  int rc = get_stream(c, "/debug/stream?chunks=2000&size=65536&interval_ms=0", &sink, &err);
  assert_int_equal(rc, HS_OK);
  assert_true(sink.head_called);
  assert_true(sink.head_seen_first);
  assert_true(sink.all_x);
  assert_int_equal(sink.bytes, 2000ULL * 65536);
  assert_true(sink.largest <= 16384);
  assert_true(sink.chunks >= sink.bytes / 16384);
  /* The connection stays usable for the next request. */
  sink_t again = {.all_x = true};
  assert_int_equal(get_stream(c, "/debug/stream?chunks=3&size=10&interval_ms=0", &again, &err),
                   HS_OK);
  assert_int_equal(again.bytes, 30);
  hs_client_close(c);
}

/* A name that resolves to several addresses (localhost: ::1 and 127.0.0.1) reaches the one
 * that listens. */
static void test_host_name_is_resolved(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_must_start(s, DEBUG_ENV, false);
  char url[64];
  snprintf(url, sizeof url, "http://localhost:%d/", s->port);
  hs_client_t *c = must_connect(url, NULL);
  sink_t sink = {.all_x = true};
  hs_err_t err;
  assert_int_equal(get_stream(c, "/debug/stream?chunks=2&size=5&interval_ms=0", &sink, &err),
                   HS_OK);
  assert_int_equal(sink.bytes, 10);
  hs_client_close(c);
}

static void test_callback_failure_stops_the_transfer(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_must_start(s, DEBUG_ENV, false);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d", s->port);
  hs_client_t *c = must_connect(url, NULL);
  sink_t sink = {.all_x = true, .stop_after = 1 << 20};
  hs_err_t err;
  hs_err_clear(&err);
  int rc = get_stream(c, "/debug/stream?chunks=1000&size=65536&interval_ms=0", &sink, &err);
  assert_int_equal(rc, HS_EIO);
  assert_string_equal(err.msg, "the disk is full (test)");
  assert_true(sink.bytes < 1000ULL * 65536);
  hs_client_close(c);
  assert_true(hs_test_server_running(s));
}

/* The server dies in the middle of the answer: an error, not a short success. */
static void test_server_dying_mid_answer_is_an_error(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_must_start(s, DEBUG_ENV, false);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d", s->port);
  hs_client_t *c = must_connect(url, NULL);
  sink_t sink = {.all_x = true, .stop_after = 4096, .kill = s};
  hs_err_t err;
  hs_err_clear(&err);
  int rc = get_stream(c, "/debug/stream?chunks=1000&size=1024&interval_ms=10", &sink, &err);
  assert_int_equal(rc, HS_EIO);
  assert_non_null(strstr(err.msg, "before it was complete"));
  assert_true(sink.bytes < 1000ULL * 1024);
  hs_client_close(c);
}

/* Waits until every thread of the server is stopped: kill() only queues the signal. */
static void wait_stopped(const hs_test_server_t *s) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)s->pid);
  for (int i = 0; i < 1000; i++) {
    FILE *f = fopen(path, "r");
    char state = '?';
    if (f != NULL) {
      /* "pid (comm) S ...": the state follows the last ')'. */
      char line[512] = "";
      if (fgets(line, sizeof line, f) != NULL) {
        char *p = strrchr(line, ')');
        state = p != NULL && p[1] == ' ' ? p[2] : '?';
      }
      fclose(f);
    }
    if (state == 'T') {
      return;
    }
    usleep(10000);
  }
  fail_msg("the server did not stop");
}

/* A server that stops answering (SIGSTOP) ends in a timeout, not a hang. */
static void test_silent_server_times_out(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_must_start(s, DEBUG_ENV, false);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d", s->port);
  hs_client_opts_t o = {.url = url, .timeout_ms = 1000};
  hs_client_t *c = NULL;
  hs_err_t err;
  hs_err_clear(&err);
  assert_int_equal(hs_client_connect(&o, &c, &err), HS_OK);
  assert_int_equal(hs_test_server_signal(s, SIGSTOP), 0);
  wait_stopped(s);
  sink_t sink = {.all_x = true};
  int rc = get_stream(c, "/debug/stream?chunks=2&size=5&interval_ms=0", &sink, &err);
  hs_test_server_signal(s, SIGCONT);
  assert_int_equal(rc, HS_EUNAVAIL);
  assert_non_null(strstr(err.msg, "sent nothing for 1 s"));
  hs_client_close(c);
}

static void test_error_answers_are_decoded(void **state) {
  hs_test_server_t *s = *state;
  hs_test_db_must();
  hs_test_server_must_start(s, DEBUG_ENV, false);
  assert_int_equal(hs_test_server_wait_ready(s, 15000), 0);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d", s->port);
  hs_client_t *c = must_connect(url, NULL);
  hs_client_request_t req = {.method = "GET", .path = "/v1/processes", .token = "hst_nope"};
  hs_client_response_t resp;
  hs_err_t err;
  hs_err_clear(&err);
  int rc = hs_client_request(c, &req, &resp, &err);
  if (rc != HS_EINVAL) {
    fail_msg("expected a 401, got %d: %s", rc, err.msg);
  }
  assert_int_equal(resp.status, 401);
  assert_string_equal(hs_client_header(&resp, "www-authenticate"), "Bearer");
  hs_client_response_free(&resp);
  assert_int_equal(strncmp(err.msg, "401 unauthorized: ", 18), 0);
  assert_true(strlen(err.msg) > 20);

  /* The same connection carries the next request: a body, and an error with its status. */
  hs_client_request_t bad = {.method = "PUT",
                             .path = "/v1/processes/Not_A_Name",
                             .token = "hst_nope",
                             .content_type = "text/x-lua",
                             .body = "return 1",
                             .body_len = 8};
  rc = hs_client_request(c, &bad, &resp, &err);
  assert_true(rc < 0);
  assert_true(resp.status == 400 || resp.status == 401);
  hs_client_response_free(&resp);

  /* A kept body is returned whole when it is not streamed. */
  hs_client_request_t ok = {.method = "GET", .path = "/healthz"};
  assert_int_equal(hs_client_request(c, &ok, &resp, &err), HS_OK);
  assert_int_equal(resp.status, 200);
  assert_string_equal(hs_client_header(&resp, "content-type"), "application/json");
  assert_memory_equal(resp.body.data, "{\"status\":\"ok\"}", 15);
  hs_client_response_free(&resp);
  hs_client_close(c);
}

static void test_tls_is_verified(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_must_start(s, DEBUG_ENV, true);
  const char *cert = NULL, *key = NULL;
  assert_int_equal(hs_test_tls_files(&cert, &key), 0);
  char url[64];
  hs_err_t err;
  hs_err_clear(&err);

  /* With the certificate as the CA file, by address and by name. */
  const char *hosts[] = {"127.0.0.1", "localhost"};
  for (size_t i = 0; i < 2; i++) {
    snprintf(url, sizeof url, "https://%s:%d", hosts[i], s->port);
    hs_client_t *c = must_connect(url, cert);
    sink_t sink = {.all_x = true};
    assert_int_equal(get_stream(c, "/debug/stream?chunks=50&size=4000&interval_ms=0", &sink, &err),
                     HS_OK);
    assert_int_equal(sink.bytes, 200000);
    hs_client_close(c);
  }

  /* Without it, the self-signed certificate is not trusted. */
  snprintf(url, sizeof url, "https://127.0.0.1:%d", s->port);
  hs_client_opts_t o = {.url = url, .timeout_ms = 5000};
  hs_client_t *c = NULL;
  assert_int_equal(hs_client_connect(&o, &c, &err), HS_EIO);
  assert_null(c);
  assert_non_null(strstr(err.msg, "not trusted"));

  /* A CA file with an http:// URL is a mistake worth naming rather than ignoring. */
  o.ca_file = cert;
  snprintf(url, sizeof url, "http://127.0.0.1:%d", s->port);
  assert_int_equal(hs_client_connect(&o, &c, &err), HS_EINVAL);
}

static void test_connection_refused_and_bad_urls(void **state) {
  hs_err_t err;
  hs_client_t *c = NULL;
  /* Port 1 on loopback: nobody listens there. */
  hs_client_opts_t o = {.url = "http://127.0.0.1:1", .timeout_ms = 5000};
  assert_int_equal(hs_client_connect(&o, &c, &err), HS_EIO);
  assert_non_null(strstr(err.msg, "Connection refused"));
  o.url = "http://[::1]:1";
  assert_int_equal(hs_client_connect(&o, &c, &err), HS_EIO);

  const char *bad[] = {"ftp://x",          "http://",
                       "http://h:0",       "http://h:99999",
                       "http://u:p@h:80",  "http://h:80?q=1",
                       "https://[::1:443", "http://h:80/a b",
                       "http://h!:80",     "",
                       "http://h:80#frag", "http://h:8x"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    o.url = bad[i];
    hs_err_clear(&err);
    if (hs_client_connect(&o, &c, &err) != HS_EINVAL) {
      fail_msg("the URL '%s' was not refused as malformed", bad[i]);
    }
    assert_null(c);
    assert_true(err.msg[0] != '\0');
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_large_stream_arrives_whole_without_buffering, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_host_name_is_resolved, setup, teardown),
      cmocka_unit_test_setup_teardown(test_callback_failure_stops_the_transfer, setup, teardown),
      cmocka_unit_test_setup_teardown(test_server_dying_mid_answer_is_an_error, setup, teardown),
      cmocka_unit_test_setup_teardown(test_silent_server_times_out, setup, teardown),
      cmocka_unit_test_setup_teardown(test_error_answers_are_decoded, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tls_is_verified, setup, teardown),
      cmocka_unit_test(test_connection_refused_and_bad_urls),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
