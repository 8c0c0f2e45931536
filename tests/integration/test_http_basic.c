/* The server core from outside: the real binary, a real HTTP/2 client, over h2c and TLS.
 * Routes, error shapes, body decoding and limits, HTTP/1.1 refusal, several workers, metrics
 * and the JSON log lines. Every test starts its own server. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "codec/codec.h"
#include "core/arena.h"
#include "core/buf.h"
#include "hs_test_body.h"
#include "hs_test_h2.h"
#include "hs_test_metrics.h"
#include "hs_test_raw.h"
#include "hs_test_server.h"

#define T 5000 /* ms: the deadline of one request */

static const hs_h2_header_t ACCEPT_JSON[] = {{"accept", "application/json"}};
static const hs_h2_header_t SEND_JSON[] = {{"content-type", "application/json"},
                                           {"accept", "application/json"}};

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

static hs_h2_conn_t *must_connect(const hs_test_server_t *s, bool tls) {
  hs_h2_opts_t o = {.tls = tls};
  hs_h2_conn_t *c = NULL;
  int rc = hs_h2_connect(&c, s->port, &o);
  if (rc != 0) {
    fail_msg("cannot connect to the server on port %d (rc %d)", s->port, rc);
  }
  return c;
}

static hs_h2_response_t *must_request(hs_h2_conn_t *c, const char *method, const char *path,
                                      const hs_h2_header_t *h, size_t nh, const void *body,
                                      size_t len) {
  hs_h2_response_t *r = NULL;
  int rc = hs_h2_request(c, method, path, h, nh, body, len, T, &r);
  if (rc != 0 || r == NULL) {
    fail_msg("%s %s: no complete response (rc %d, status %d)", method, path, rc,
             r != NULL ? r->status : 0);
  }
  return r;
}

/* Checks the error shape {error: {code, message}} of r and returns the message. */
static void check_error(const hs_h2_response_t *r, int status, const char *code, bool json,
                        char *message_out, size_t message_cap) {
  assert_int_equal(r->status, status);
  const char *ct = hs_h2_response_header(r, "content-type");
  assert_non_null(ct);
  assert_true(strncmp(ct, json ? "application/json" : "application/msgpack", json ? 16 : 19) == 0);
  hs_arena_t a;
  hs_arena_init(&a, 0);
  hs_value_t *v = NULL;
  hs_err_t err;
  int rc = hs_test_decode_body(r, &a, &v, &err);
  if (rc != 0) {
    fail_msg("the %d error body does not decode: %s", status, err.msg);
  }
  assert_int_equal(v->type, HS_V_MAP);
  const char *got = hs_test_str_at(v, "error.code");
  assert_non_null(got);
  if (strcmp(got, code) != 0) {
    fail_msg("error.code is \"%s\", expected \"%s\"", got, code);
  }
  const char *msg = hs_test_str_at(v, "error.message");
  assert_non_null(msg);
  assert_true(strlen(msg) > 0);
  if (message_out != NULL) {
    snprintf(message_out, message_cap, "%s", msg);
  }
  hs_arena_reset(&a);
}

/* ---- tests ---- */

static void test_healthz_msgpack(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_must_start(s, (const char *const[]){"HANDSEL_WORKERS=1", NULL}, false);
  hs_h2_conn_t *c = must_connect(s, false);
  hs_h2_response_t *r = must_request(c, "GET", "/healthz", NULL, 0, NULL, 0);
  assert_int_equal(r->status, 200);
  assert_true(r->end_stream);
  const char *ct = hs_h2_response_header(r, "content-type");
  assert_non_null(ct);
  assert_string_equal(ct, "application/msgpack");

  hs_arena_t a;
  hs_arena_init(&a, 0);
  hs_value_t *v = NULL;
  hs_err_t err;
  assert_int_equal(
      hs_msgpack_decode(r->body.data, r->body.len, &hs_codec_default_limits, &a, &v, &err), 0);
  assert_int_equal(v->type, HS_V_MAP);
  assert_non_null(hs_test_str_at(v, "status"));
  assert_string_equal(hs_test_str_at(v, "status"), "ok");
  hs_arena_reset(&a);

  /* The settings the server announces are its limits (HARDENING.md: the default is unlimited). */
  assert_int_equal(hs_h2_remote_setting(c, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS), 100);
  hs_h2_close(c);
}

static void test_healthz_json(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_must_start(s, (const char *const[]){"HANDSEL_WORKERS=1", NULL}, false);
  hs_h2_conn_t *c = must_connect(s, false);
  hs_h2_response_t *r = must_request(c, "GET", "/healthz", ACCEPT_JSON, 1, NULL, 0);
  assert_int_equal(r->status, 200);
  const char *ct = hs_h2_response_header(r, "content-type");
  assert_non_null(ct);
  assert_true(strncmp(ct, "application/json", 16) == 0);
  json_error_t je;
  json_t *j = json_loadb((const char *)r->body.data, r->body.len, 0, &je);
  if (j == NULL) {
    fail_msg("/healthz JSON does not parse: %s", je.text);
  }
  assert_true(json_is_object(j));
  assert_string_equal(json_string_value(json_object_get(j, "status")), "ok");
  json_decref(j);
  hs_h2_close(c);
}

static void test_tls_alpn_same_port(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_must_start(s, (const char *const[]){"HANDSEL_WORKERS=1", NULL}, true);
  /* TLS with ALPN h2. */
  hs_h2_conn_t *c = must_connect(s, true);
  assert_true(hs_h2_alpn_h2(c));
  for (int i = 0; i < 3; i++) {
    hs_h2_response_t *r = must_request(c, "GET", "/healthz", ACCEPT_JSON, 1, NULL, 0);
    assert_int_equal(r->status, 200);
    /* The body is bytes, not a C string: compare with its length. */
    static const char want[] = "{\"status\":\"ok\"}";
    assert_true(r->body.len >= sizeof want - 1);
    assert_memory_equal(r->body.data, want, sizeof want - 1);
  }
  hs_h2_close(c);
  /* h2c with prior knowledge on the same port: the server tells them apart by the first byte. */
  int status = 0;
  assert_int_equal(hs_h2_get(s->port, false, "/healthz", NULL, 0, T, &status, NULL), 0);
  assert_int_equal(status, 200);
}

static void test_error_shapes(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_must_start(s, (const char *const[]){"HANDSEL_WORKERS=1", NULL}, false);
  hs_h2_conn_t *c = must_connect(s, false);

  check_error(must_request(c, "GET", "/no/such/path", NULL, 0, NULL, 0), 404, "not_found", false,
              NULL, 0);
  check_error(must_request(c, "GET", "/no/such/path", ACCEPT_JSON, 1, NULL, 0), 404, "not_found",
              true, NULL, 0);
  check_error(must_request(c, "POST", "/healthz", NULL, 0, "", 0), 405, "method_not_allowed", false,
              NULL, 0);
  check_error(must_request(c, "DELETE", "/metrics", ACCEPT_JSON, 1, NULL, 0), 405,
              "method_not_allowed", true, NULL, 0);
  /* Debug routes are off unless HANDSEL_DEBUG_ROUTES=1. */
  check_error(must_request(c, "POST", "/debug/echo", NULL, 0, "\x80", 1), 404, "not_found", false,
              NULL, 0);

  const hs_h2_header_t auth[] = {{"authorization", "Bearer test-token"}};
  /* The routes that need the database say so, with Retry-After, when the server has none. */
  static const char *const stored[][2] = {
      {"POST", "/v1/sessions"},
      {"GET", "/v1/sessions/0b4e7c1a-0000-4000-8000-000000000000"},
      {"GET", "/v1/sessions/0b4e7c1a-0000-4000-8000-000000000000/stream"},
      {"POST", "/v1/sessions/0b4e7c1a-0000-4000-8000-000000000000/steps/1"},
      {"POST", "/v1/sessions/0b4e7c1a-0000-4000-8000-000000000000/feedback"},
      {"PUT", "/v1/blobs/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"GET", "/v1/blobs/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"PUT", "/v1/processes/solar-consult"},
      {"POST", "/v1/processes/solar-consult/activate"},
      {"GET", "/v1/processes"},
      {"GET", "/v1/processes/solar-consult"},
      {"POST", "/v1/tokens"},
      {"DELETE", "/v1/tokens/0b4e7c1a-0000-4000-8000-000000000000"},
  };
  for (size_t i = 0; i < sizeof stored / sizeof stored[0]; i++) {
    bool has_body = strcmp(stored[i][0], "POST") == 0 || strcmp(stored[i][0], "PUT") == 0;
    hs_h2_response_t *r = must_request(c, stored[i][0], stored[i][1], auth, 1,
                                       has_body ? "\x80" : NULL, has_body ? 1 : 0);
    if (r->status != 503) {
      fail_msg("%s %s: status %d, expected 503", stored[i][0], stored[i][1], r->status);
    }
    check_error(r, 503, "unavailable", false, NULL, 0);
    assert_non_null(hs_h2_response_header(r, "retry-after"));
  }
  /* A known /v1 path with a method it does not have. */
  check_error(must_request(c, "DELETE", "/v1/processes", auth, 1, NULL, 0), 405,
              "method_not_allowed", false, NULL, 0);
  hs_h2_close(c);
}

/* A value with every type of the model, to see it come back unchanged. */
static hs_value_t *sample_value(hs_arena_t *a) {
  hs_value_t *m = hs_value_new_map(a, 8);
  hs_map_add_str(a, m, "name", "Ada Lovelace \xc3\xa9");
  hs_map_add_int(a, m, "age", 36);
  hs_map_add_int(a, m, "neg", -1234567890123LL);
  hs_map_add_bool(a, m, "ok", true);
  hs_value_t nil = {.type = HS_V_NIL};
  hs_map_add(a, m, "none", &nil);
  hs_value_t f = {.type = HS_V_FLOAT, .as.f = 2.5};
  hs_map_add(a, m, "ratio", &f);
  hs_value_t *arr = hs_map_add_array(a, m, "list");
  hs_array_push(a, arr, hs_value_new_int(a, 1));
  hs_array_push(a, arr, hs_value_new_cstr(a, "two"));
  hs_value_t *inner = hs_map_add_map(a, m, "inner");
  hs_map_add_str(a, inner, "k", "v");
  return m;
}

static void test_echo_round_trip(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_must_start(
      s, (const char *const[]){"HANDSEL_WORKERS=1", "HANDSEL_DEBUG_ROUTES=1", NULL}, false);
  hs_h2_conn_t *c = must_connect(s, false);
  hs_arena_t a;
  hs_arena_init(&a, 0);
  hs_value_t *sent = sample_value(&a);
  hs_buf_t mp, js;
  hs_buf_init(&mp, 0);
  hs_buf_init(&js, 0);
  assert_int_equal(hs_msgpack_encode(sent, &mp), 0);
  assert_int_equal(hs_json_encode(sent, &js), 0);

  struct {
    const char *what;
    hs_buf_t *body;
    const hs_h2_header_t *h;
    size_t nh;
    const char *want_ct;
  } cases[] = {
      {"msgpack in, msgpack out", &mp, NULL, 0, "application/msgpack"},
      {"JSON in, JSON out", &js, SEND_JSON, 2, "application/json"},
      {"msgpack in, JSON out", &mp, ACCEPT_JSON, 1, "application/json"},
      /* Without a preference the answer follows the request's format. */
      {"JSON in, no Accept: JSON out", &js,
       (const hs_h2_header_t[]){{"content-type", "application/json"}}, 1, "application/json"},
      {"JSON in, msgpack asked for", &js,
       (const hs_h2_header_t[]){{"content-type", "application/json"},
                                {"accept", "application/msgpack"}},
       2, "application/msgpack"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    hs_h2_response_t *r = must_request(c, "POST", "/debug/echo", cases[i].h, cases[i].nh,
                                       cases[i].body->data, cases[i].body->len);
    if (r->status != 200) {
      fail_msg("%s: status %d", cases[i].what, r->status);
    }
    const char *ct = hs_h2_response_header(r, "content-type");
    assert_non_null(ct);
    assert_true(strncmp(ct, cases[i].want_ct, strlen(cases[i].want_ct)) == 0);
    hs_value_t *got = NULL;
    hs_err_t err;
    if (hs_test_decode_body(r, &a, &got, &err) != 0) {
      fail_msg("%s: the echo does not decode: %s", cases[i].what, err.msg);
    }
    if (!hs_value_equal(sent, got)) {
      fail_msg("%s: the echo differs from what was sent", cases[i].what);
    }
  }
  hs_buf_free(&mp);
  hs_buf_free(&js);
  hs_arena_reset(&a);
  hs_h2_close(c);
}

static void test_malformed_bodies(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_must_start(
      s, (const char *const[]){"HANDSEL_WORKERS=1", "HANDSEL_DEBUG_ROUTES=1", NULL}, false);
  hs_h2_conn_t *c = must_connect(s, false);
  char msg[512];

  /* 0xc1 is the one byte msgpack never uses. */
  check_error(must_request(c, "POST", "/debug/echo", NULL, 0, "\xc1", 1), 400, "malformed", false,
              msg, sizeof msg);
  if (strstr(msg, "byte") == NULL) {
    fail_msg("the message should say at which byte the msgpack is wrong: \"%s\"", msg);
  }
  /* A map of two members that ends after one key. */
  check_error(must_request(c, "POST", "/debug/echo", ACCEPT_JSON, 1,
                           "\x82\xa1"
                           "a",
                           3),
              400, "malformed", true, msg, sizeof msg);
  assert_non_null(strstr(msg, "byte"));
  /* Trailing bytes after one complete value. */
  check_error(must_request(c, "POST", "/debug/echo", NULL, 0, "\x80\x80", 2), 400, "malformed",
              false, msg, sizeof msg);
  /* An empty body is not a message. */
  check_error(must_request(c, "POST", "/debug/echo", NULL, 0, "", 0), 400, "malformed", false, NULL,
              0);

  /* Malformed JSON, announced as JSON. */
  const char *bad_json = "{\n  \"a\": 1,\n  \"b\": \n}";
  check_error(must_request(c, "POST", "/debug/echo", SEND_JSON, 2, bad_json, strlen(bad_json)), 400,
              "malformed", true, msg, sizeof msg);
  if (strstr(msg, "line") == NULL) {
    fail_msg("the message should say at which line the JSON is wrong: \"%s\"", msg);
  }
  const char *not_utf8 = "{\"a\": \"\xff\xfe\"}";
  check_error(must_request(c, "POST", "/debug/echo", SEND_JSON, 2, not_utf8, strlen(not_utf8)), 400,
              "malformed", true, NULL, 0);

  /* The connection is still fine afterwards. */
  hs_h2_response_t *r = must_request(c, "POST", "/debug/echo", NULL, 0, "\x81\xa1k\x01", 4);
  assert_int_equal(r->status, 200);
  hs_h2_close(c);
}

static void test_body_too_large(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_must_start(
      s, (const char *const[]){"HANDSEL_WORKERS=1", "HANDSEL_DEBUG_ROUTES=1", NULL}, false);
  hs_h2_conn_t *c = must_connect(s, false);
  /* A well-formed msgpack bin32 of 1 MiB: only its size is wrong (the default limit is 1 MiB
   * for the whole body, and this is 1 MiB + 5 bytes). */
  size_t n = (1u << 20) + 5;
  uint8_t *big = malloc(n);
  assert_non_null(big);
  big[0] = 0xc6;
  big[1] = 0x00;
  big[2] = 0x10;
  big[3] = 0x00;
  big[4] = 0x00;
  memset(big + 5, 'b', n - 5);
  hs_h2_response_t *r = NULL;
  int rc = hs_h2_request(c, "POST", "/debug/echo", NULL, 0, big, n, 10000, &r);
  assert_non_null(r);
  if (r->status != 413) {
    fail_msg("a 1 MiB + 5 byte body got status %d (rc %d), expected 413", r->status, rc);
  }
  check_error(r, 413, "too_large", false, NULL, 0);
  free(big);
  /* The stream was refused, not the connection. */
  r = must_request(c, "GET", "/healthz", NULL, 0, NULL, 0);
  assert_int_equal(r->status, 200);
  hs_h2_close(c);
  hs_test_server_stop(s);

  /* With a small configured limit: just under passes, just over is refused. */
  hs_test_server_must_start(s,
                            (const char *const[]){"HANDSEL_WORKERS=1", "HANDSEL_DEBUG_ROUTES=1",
                                                  "HANDSEL_MAX_BODY=4096", NULL},
                            false);
  c = must_connect(s, false);
  uint8_t small[5000];
  small[0] = 0xda; /* str16 */
  small[1] = (uint8_t)((4000 - 3) >> 8);
  small[2] = (uint8_t)(4000 - 3);
  memset(small + 3, 's', sizeof small - 3);
  r = must_request(c, "POST", "/debug/echo", NULL, 0, small, 4000);
  assert_int_equal(r->status, 200);
  assert_int_equal(r->body.len, 4000);
  small[1] = (uint8_t)((5000 - 3) >> 8);
  small[2] = (uint8_t)(5000 - 3);
  r = must_request(c, "POST", "/debug/echo", ACCEPT_JSON, 1, small, 5000);
  check_error(r, 413, "too_large", true, NULL, 0);
  hs_h2_close(c);
}

static void test_http1_gets_505(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_must_start(s, (const char *const[]){"HANDSEL_WORKERS=1", NULL}, false);
  hs_raw_t r;
  assert_int_equal(hs_raw_connect(&r, s->port), 0);
  const char *req = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n";
  assert_int_equal(hs_raw_write(&r, req, strlen(req), T), 0);
  /* Read raw bytes until the server closes: it must not hang. */
  char buf[4096];
  size_t got = 0;
  long long deadline = hs_test_now_ms() + T;
  bool closed = false;
  while (hs_test_now_ms() < deadline && got < sizeof buf - 1) {
    ssize_t n = recv(r.fd, buf + got, sizeof buf - 1 - got, MSG_DONTWAIT);
    if (n > 0) {
      got += (size_t)n;
    } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
      closed = true;
      break;
    } else {
      hs_test_sleep_ms(10);
    }
  }
  buf[got] = '\0';
  hs_raw_close(&r);
  if (strncmp(buf, "HTTP/1.1 505", 12) != 0) {
    fail_msg("expected an HTTP/1.1 505 status line, got \"%.80s\"", buf);
  }
  const char *body = strstr(buf, "\r\n\r\n");
  assert_non_null(body);
  assert_non_null(strstr(body, "HTTP/2"));
  assert_true(closed);
}

typedef struct load_arg {
  int port;
  int ok;
  int bad;
} load_arg_t;

static void *load_main(void *p) {
  load_arg_t *a = p;
  hs_h2_conn_t *c = NULL;
  if (hs_h2_connect(&c, a->port, NULL) != 0) {
    a->bad++;
    return NULL;
  }
  for (int round = 0; round < 10; round++) {
    int32_t ids[5];
    for (int k = 0; k < 5; k++) {
      ids[k] = hs_h2_submit(c, "GET", "/healthz", NULL, 0, NULL, 0);
    }
    if (hs_h2_wait(c, 0, T) != 0) {
      a->bad++;
      break;
    }
    for (int k = 0; k < 5; k++) {
      hs_h2_response_t *r = hs_h2_response(c, ids[k]);
      if (r != NULL && r->status == 200) {
        a->ok++;
      } else {
        a->bad++;
      }
    }
  }
  hs_h2_close(c);
  return NULL;
}

static void test_workers_concurrent(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_must_start(s, (const char *const[]){"HANDSEL_WORKERS=2", NULL}, false);
  /* Two worker threads at least (plus whatever else the process runs). */
  assert_true(hs_test_server_threads(s) >= 2);
  enum { N = 8 };
  pthread_t th[N];
  load_arg_t args[N];
  for (int i = 0; i < N; i++) {
    args[i] = (load_arg_t){.port = s->port};
    assert_int_equal(pthread_create(&th[i], NULL, load_main, &args[i]), 0);
  }
  int ok = 0, bad = 0;
  for (int i = 0; i < N; i++) {
    pthread_join(th[i], NULL);
    ok += args[i].ok;
    bad += args[i].bad;
  }
  assert_int_equal(bad, 0);
  assert_int_equal(ok, N * 10 * 5);
  double n = hs_test_metric(s->port, "handsel_http_connections_accepted_total", NULL);
  assert_true(n >= N);
}

/* GET /metrics on an open connection (no new one to count); the text stays owned by c. */
static const char *metrics_on(hs_h2_conn_t *c) {
  hs_h2_response_t *r = must_request(c, "GET", "/metrics", NULL, 0, NULL, 0);
  assert_int_equal(r->status, 200);
  assert_int_equal(hs_buf_append(&r->body, "", 1), 0);
  return (const char *)r->body.data;
}

/* The main thread hands each new connection to the worker with the fewest. Connections are
 * opened one after another, and none closes meanwhile, so the split is exact: the kernel's
 * hashing of a socket per worker (SO_REUSEPORT) would be even only one time in ten. */
static void test_workers_share_connections(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_must_start(s, (const char *const[]){"HANDSEL_WORKERS=2", NULL}, false);
  enum { N = 64 };
  hs_h2_conn_t *c[N];
  c[0] = must_connect(s, false);
  /* Wait until the start-up probe's connection is gone: then only c[0] is open. */
  double open = 0;
  long long deadline = hs_test_now_ms() + T;
  for (;;) {
    assert_int_equal(
        hs_test_metric_sum(metrics_on(c[0]), "handsel_http_connections_open", NULL, &open), 1);
    if (open == 1 || hs_test_now_ms() > deadline) {
      break;
    }
    hs_test_sleep_ms(20);
  }
  assert_true(open == 1);
  for (int i = 1; i < N; i++) {
    c[i] = must_connect(s, false);
    assert_int_equal(must_request(c[i], "GET", "/healthz", NULL, 0, NULL, 0)->status, 200);
  }
  const char *text = metrics_on(c[0]);
  double w0 = 0, w1 = 0;
  assert_int_equal(hs_test_metric_sum(text, "handsel_worker_connections_open",
                                      (const char *const[]){"worker=0", NULL}, &w0),
                   1);
  assert_int_equal(hs_test_metric_sum(text, "handsel_worker_connections_open",
                                      (const char *const[]){"worker=1", NULL}, &w1),
                   1);
  assert_true(w0 == N / 2 && w1 == N / 2);
  for (int i = 0; i < N; i++) {
    hs_h2_close(c[i]);
  }
}

static bool got_status(const hs_raw_t *r, const void *arg) {
  const hs_raw_stream_t *st = hs_raw_stream(r, *(const int32_t *)arg);
  return st != NULL && st->status != 0;
}

/* Out of file descriptors, the server stops accepting for a moment instead of spinning on a
 * listening socket that stays readable, and drops nobody: a connection that arrives meanwhile
 * waits in the kernel's backlog and is served once descriptors free up. */
static void test_out_of_descriptors(void **state) {
  hs_test_server_t *s = *state;
  struct rlimit old, low;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
  low = old;
  low.rlim_cur = 64; /* the server inherits this; ours is put back at once */
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
  hs_test_server_must_start(s, (const char *const[]){"HANDSEL_WORKERS=1", NULL}, false);
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);

  enum { N = 80 };
  hs_raw_t *idle = calloc(N, sizeof *idle);
  assert_non_null(idle);
  for (int i = 0; i < N; i++) {
    assert_int_equal(hs_raw_connect(&idle[i], s->port), 0);
  }
  char *log = NULL;
  long long deadline = hs_test_now_ms() + T;
  while ((log = hs_test_server_stderr(s)) != NULL && strstr(log, "accept_failed") == NULL &&
         hs_test_now_ms() < deadline) {
    free(log);
    hs_test_sleep_ms(20);
  }
  assert_non_null(log);
  assert_non_null(strstr(log, "Too many open files"));
  free(log);

  /* A request sent now waits in the backlog... */
  hs_raw_t late;
  assert_int_equal(hs_raw_connect(&late, s->port), 0);
  assert_int_equal(hs_raw_preface(&late, NULL, 0), 0);
  assert_int_equal(hs_raw_request(&late, 1, "GET", "/healthz", NULL, 0, true), 0);
  hs_test_sleep_ms(500);
  /* ...and is answered once connections close. */
  for (int i = 0; i < N / 2; i++) {
    hs_raw_close(&idle[i]);
  }
  int32_t id = 1;
  assert_int_equal(hs_raw_read_until(&late, got_status, &id, T), 0);
  assert_int_equal(hs_raw_stream(&late, 1)->status, 200);
  hs_raw_close(&late);
  for (int i = N / 2; i < N; i++) {
    hs_raw_close(&idle[i]);
  }
  free(idle);

  /* It paused between attempts: a spinning loop would have logged thousands. */
  log = hs_test_server_stderr(s);
  assert_non_null(log);
  int failures = 0;
  for (const char *p = log; (p = strstr(p, "accept_failed")) != NULL; p++) {
    failures++;
  }
  free(log);
  hs_test_say("out of descriptors: %d accept failures logged, the waiting request answered 200",
              failures);
  assert_true(failures >= 1 && failures < 100);
  assert_true(hs_test_server_running(s));
}

/* The exposition format keeps each family's samples together, right after its one TYPE line
 * (a histogram's samples add _bucket, _sum and _count to the family's name). */
static void assert_families_grouped(const char *text) {
  char family[128] = "";
  char seen[128][128];
  int n_seen = 0;
  for (const char *line = text; *line != '\0';) {
    const char *end = strchr(line, '\n');
    size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
    if (len > 7 && strncmp(line, "# TYPE ", 7) == 0) {
      size_t n = strcspn(line + 7, " \n");
      assert_true(n < sizeof family);
      memcpy(family, line + 7, n);
      family[n] = '\0';
      for (int i = 0; i < n_seen; i++) {
        if (strcmp(seen[i], family) == 0) {
          fail_msg("family %s has a second TYPE line", family);
        }
      }
      assert_true(n_seen < 128);
      snprintf(seen[n_seen++], sizeof seen[0], "%s", family);
    } else if (len > 0 && line[0] != '#') {
      size_t n = strcspn(line, "{ ");
      size_t f = strlen(family);
      const char *rest = line + f;
      size_t rest_len = n - f;
      bool ok = f > 0 && n >= f && strncmp(line, family, f) == 0 &&
                (rest_len == 0 || (rest_len == 7 && strncmp(rest, "_bucket", 7) == 0) ||
                 (rest_len == 4 && strncmp(rest, "_sum", 4) == 0) ||
                 (rest_len == 6 && strncmp(rest, "_count", 6) == 0));
      if (!ok) {
        fail_msg("the sample '%.*s' is not under its family's TYPE line (the last was %s)",
                 (int)len, line, family);
      }
    }
    line += len + (end != NULL);
  }
  assert_true(n_seen >= 10);
}

static void test_metrics(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_must_start(
      s, (const char *const[]){"HANDSEL_WORKERS=1", "HANDSEL_DEBUG_ROUTES=1", NULL}, false);
  const char *const ok200[] = {"route=/healthz", "status=200", NULL};
  const char *const nf404[] = {"status=404", NULL};
  double before = hs_test_metric(s->port, "handsel_http_requests_total", ok200);
  double before404 = hs_test_metric(s->port, "handsel_http_requests_total", nf404);
  assert_true(before >= 1); /* the start-up probe was one */

  hs_h2_conn_t *c = must_connect(s, false);
  assert_int_equal(must_request(c, "GET", "/healthz", NULL, 0, NULL, 0)->status, 200);
  assert_int_equal(must_request(c, "GET", "/healthz", NULL, 0, NULL, 0)->status, 200);
  assert_int_equal(must_request(c, "GET", "/nope", NULL, 0, NULL, 0)->status, 404);

  char *text = NULL;
  assert_int_equal(hs_test_metrics_fetch(s->port, &text), 0);
  double after = 0, after404 = 0, v = 0;
  assert_true(hs_test_metric_sum(text, "handsel_http_requests_total", ok200, &after) == 1);
  assert_true(after - before == 2);
  assert_true(hs_test_metric_sum(text, "handsel_http_requests_total", nf404, &after404) >= 1);
  assert_true(after404 - (before404 < 0 ? 0 : before404) == 1);

  /* The latency histogram of /healthz: buckets, +Inf equal to the count, a sum. */
  const char *hz[] = {"route=/healthz", NULL};
  const char *inf[] = {"route=/healthz", "le=+Inf", NULL};
  double count = 0, inf_v = 0;
  assert_int_equal(
      hs_test_metric_sum(text, "handsel_http_request_duration_seconds_count", hz, &count), 1);
  assert_true(count >= 3);
  assert_int_equal(
      hs_test_metric_sum(text, "handsel_http_request_duration_seconds_bucket", inf, &inf_v), 1);
  assert_true(inf_v == count);
  assert_true(hs_test_metric_sum(text, "handsel_http_request_duration_seconds_bucket", hz, &v) >=
              5);
  assert_int_equal(hs_test_metric_sum(text, "handsel_http_request_duration_seconds_sum", hz, &v),
                   1);
  assert_true(v >= 0);
  assert_non_null(strstr(text, "# TYPE handsel_http_request_duration_seconds histogram"));
  assert_families_grouped(text);

  /* Gauges: this connection is open; so is the one /metrics came on. */
  double conns = 0;
  assert_int_equal(hs_test_metric_sum(text, "handsel_http_connections_open", NULL, &conns), 1);
  assert_true(conns >= 2);
  assert_int_equal(hs_test_metric_sum(text, "handsel_http_streams_open", NULL, &v), 1);
  free(text);

  /* A slow stream is counted as open while it runs, and no longer afterwards. */
  int32_t slow =
      hs_h2_submit(c, "GET", "/debug/stream?chunks=20&size=10&interval_ms=100", NULL, 0, NULL, 0);
  assert_true(slow > 0);
  while (hs_h2_response(c, slow)->body_total == 0) {
    assert_int_equal(hs_h2_pump(c, 100), 0);
  }
  double during = hs_test_metric(s->port, "handsel_http_streams_open", NULL);
  double conns_during = hs_test_metric(s->port, "handsel_http_connections_open", NULL);
  assert_int_equal(hs_h2_wait(c, slow, T), 0);
  assert_int_equal(hs_h2_response(c, slow)->body_total, 200);
  double after_stream = hs_test_metric(s->port, "handsel_http_streams_open", NULL);
  assert_true(during >= after_stream + 1);
  hs_h2_close(c);

  /* Closing the client connection shows in the gauge soon after. */
  double conns_after = conns_during;
  long long deadline = hs_test_now_ms() + T;
  while (conns_after > conns_during - 1 && hs_test_now_ms() < deadline) {
    hs_test_sleep_ms(50);
    conns_after = hs_test_metric(s->port, "handsel_http_connections_open", NULL);
  }
  assert_true(conns_after <= conns_during - 1);
  assert_true(hs_test_closed_count(s->port, "normal") >= 1);
}

static void test_readyz_without_database(void **state) {
  hs_test_server_t *s = *state;
  /* Port 1 on loopback refuses at once: the database is configured but unreachable. */
  hs_test_server_must_start(
      s,
      (const char *const[]){"HANDSEL_WORKERS=1",
                            "HANDSEL_DB=host=127.0.0.1 port=1 dbname=handsel connect_timeout=2",
                            NULL},
      false);
  hs_h2_conn_t *c = must_connect(s, false);
  hs_h2_response_t *r = NULL;
  hs_h2_request(c, "GET", "/readyz", NULL, 0, NULL, 0, 10000, &r);
  assert_non_null(r);
  assert_int_equal(r->status, 503);
  assert_non_null(hs_h2_response_header(r, "retry-after"));
  /* Liveness does not depend on the database. */
  assert_int_equal(must_request(c, "GET", "/healthz", NULL, 0, NULL, 0)->status, 200);
  hs_h2_close(c);
}

/* The test database (scripts/test exports HANDSEL_DB); servers only get it when a test asks,
 * so the others run without a database as they expect. */
static char g_db[1024];

static void test_readyz_with_database(void **state) {
  const char *db = g_db;
  if (db == NULL || db[0] == '\0') {
    skip(); /* scripts/test sets HANDSEL_DB to its private, migrated PostgreSQL */
  }
  hs_test_server_t *s = *state;
  char env_db[1100];
  snprintf(env_db, sizeof env_db, "HANDSEL_DB=%s", db);
  hs_test_server_must_start(s, (const char *const[]){"HANDSEL_WORKERS=1", env_db, NULL}, false);
  /* The readiness probe runs in the background: give its first check a few seconds. */
  int status = 0;
  for (int i = 0; i < 100 && status != 200; i++) {
    hs_h2_get(s->port, false, "/readyz", NULL, 0, 10000, &status, NULL);
    if (status != 200) {
      usleep(100 * 1000);
    }
  }
  assert_int_equal(status, 200);
}

static void test_logs_are_json_lines(void **state) {
  hs_test_server_t *s = *state;
  hs_test_server_must_start(
      s, (const char *const[]){"HANDSEL_WORKERS=1", "HANDSEL_DEBUG_ROUTES=1", NULL}, false);
  hs_h2_conn_t *c = must_connect(s, false);
  must_request(c, "POST", "/debug/echo", NULL, 0, "\xc1", 1);
  hs_h2_close(c);
  /* An HTTP/1.1 client and a garbage client leave their traces too. */
  hs_raw_t r;
  assert_int_equal(hs_raw_connect(&r, s->port), 0);
  hs_raw_write(&r, "GET / HTTP/1.1\r\n\r\n", 18, T);
  hs_raw_wait_closed(&r, T);
  hs_raw_close(&r);

  assert_int_equal(hs_test_server_signal(s, SIGTERM), 0);
  int status = 0;
  assert_int_equal(hs_test_server_wait(s, 15000, &status), 0);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);

  char *text = hs_test_server_stderr(s);
  assert_non_null(text);
  int lines = 0;
  for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
    json_error_t je;
    json_t *j = json_loads(line, 0, &je);
    if (j == NULL || !json_is_object(j)) {
      fail_msg("stderr line %d is not a JSON object: %.200s", lines + 1, line);
    }
    if (!json_is_string(json_object_get(j, "ts")) || !json_is_string(json_object_get(j, "level")) ||
        !json_is_string(json_object_get(j, "event"))) {
      fail_msg("stderr line %d lacks ts, level or event: %.200s", lines + 1, line);
    }
    json_decref(j);
    lines++;
  }
  free(text);
  assert_true(lines >= 1);
}

int main(void) {
  const char *db = getenv("HANDSEL_DB");
  if (db != NULL) {
    snprintf(g_db, sizeof g_db, "%s", db);
    unsetenv("HANDSEL_DB");
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_healthz_msgpack, setup, teardown),
      cmocka_unit_test_setup_teardown(test_healthz_json, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tls_alpn_same_port, setup, teardown),
      cmocka_unit_test_setup_teardown(test_error_shapes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_echo_round_trip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_malformed_bodies, setup, teardown),
      cmocka_unit_test_setup_teardown(test_body_too_large, setup, teardown),
      cmocka_unit_test_setup_teardown(test_http1_gets_505, setup, teardown),
      cmocka_unit_test_setup_teardown(test_workers_concurrent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_workers_share_connections, setup, teardown),
      cmocka_unit_test_setup_teardown(test_out_of_descriptors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
      cmocka_unit_test_setup_teardown(test_readyz_without_database, setup, teardown),
      cmocka_unit_test_setup_teardown(test_readyz_with_database, setup, teardown),
      cmocka_unit_test_setup_teardown(test_logs_are_json_lines, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
