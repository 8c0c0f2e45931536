/* A blocking HTTP/2 client for integration tests, built on nghttp2's client API, over plain
 * TCP (h2c with prior knowledge) or TLS with ALPN "h2". It only ever connects to 127.0.0.1.
 *
 * Several requests can be in flight on one connection: submit them, then run the connection
 * until they are done. Every wait has a deadline, so a server that hangs fails the test
 * instead of hanging it.
 *
 * Return values follow server/core/error.h: 0 or a negative HS_E* code; HS_EUNAVAIL means a
 * deadline passed, HS_EIO that the connection failed or was closed. */
#ifndef HS_TEST_H2_H
#define HS_TEST_H2_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

typedef struct hs_h2_conn hs_h2_conn_t;

typedef struct hs_h2_header {
  const char *name;
  const char *value;
} hs_h2_header_t;

#define HS_H2_MAX_RESP_HEADERS 64

/* One stream's response, owned by its connection (freed with it). */
typedef struct hs_h2_response {
  int32_t stream_id;
  int status;                           /* :status, 0 until the response HEADERS arrived */
  char *names[HS_H2_MAX_RESP_HEADERS];  /* owned; lower-case, as received */
  char *values[HS_H2_MAX_RESP_HEADERS]; /* owned */
  size_t n_headers;
  hs_buf_t body;       /* the DATA received; limited by hs_h2_opts_t.max_body */
  size_t body_total;   /* every DATA byte received, also those past max_body */
  bool closed;         /* the stream is closed (END_STREAM, reset, or the connection died) */
  bool end_stream;     /* the server finished the response normally */
  uint32_t close_code; /* the error code the stream closed with (0 = NO_ERROR) */
  bool reset_by_peer;  /* the server sent RST_STREAM */
} hs_h2_response_t;

typedef struct hs_h2_opts {
  bool tls;               /* TLS with ALPN h2 instead of h2c */
  uint32_t window;        /* SETTINGS_INITIAL_WINDOW_SIZE to send; 0 = nghttp2's 65535 */
  uint32_t conn_window;   /* connection window to announce; 0 = leave at 65535 */
  size_t max_body;        /* keep at most this many body bytes per response; 0 = 64 MiB */
  int connect_timeout_ms; /* 0 = 5000: TCP connect, TLS handshake and the server's SETTINGS */
} hs_h2_opts_t;

/* Connects to 127.0.0.1:port, sends the preface and our SETTINGS, and waits until the
 * server's SETTINGS arrived (so hs_h2_remote_setting answers). *out is owned by the caller and
 * freed with hs_h2_close. opts may be NULL. */
int hs_h2_connect(hs_h2_conn_t **out, int port, const hs_h2_opts_t *opts);

/* Closes the socket and frees the connection and all its responses. NULL is fine. */
void hs_h2_close(hs_h2_conn_t *c);

/* Queues a request; headers (may be NULL) and body (may be NULL for none) are copied. Returns
 * the stream id (> 0) or a negative HS_E* code. Nothing is written until the connection runs. */
int32_t hs_h2_submit(hs_h2_conn_t *c, const char *method, const char *path,
                     const hs_h2_header_t *headers, size_t n_headers, const void *body,
                     size_t body_len);

/* Runs the connection (writes pending frames, reads and processes what arrives) until stream
 * `stream_id` is closed, or for every submitted stream when stream_id is 0. Returns 0, or
 * HS_EUNAVAIL when timeout_ms passed first, or HS_EIO when the connection closed first. */
int hs_h2_wait(hs_h2_conn_t *c, int32_t stream_id, int timeout_ms);

/* Runs the connection once: waits up to timeout_ms for the socket, then processes whatever
 * can be read and written without waiting. Returns 0, or HS_EIO when the connection closed. */
int hs_h2_pump(hs_h2_conn_t *c, int timeout_ms);

/* submit + wait; *resp (owned by the connection) is set even when the wait failed, so a test
 * can look at what arrived. */
int hs_h2_request(hs_h2_conn_t *c, const char *method, const char *path,
                  const hs_h2_header_t *headers, size_t n_headers, const void *body,
                  size_t body_len, int timeout_ms, hs_h2_response_t **resp);

/* The response of a submitted stream, or NULL. */
hs_h2_response_t *hs_h2_response(hs_h2_conn_t *c, int32_t stream_id);

/* The first value of a response header (name in lower case), or NULL. */
const char *hs_h2_response_header(const hs_h2_response_t *r, const char *name);

/* A SETTINGS value the server sent (nghttp2_settings_id), or nghttp2's default for it. */
uint32_t hs_h2_remote_setting(hs_h2_conn_t *c, int32_t id);

/* True once a GOAWAY arrived; *code and *last_stream_id (may be NULL) say what it held. */
bool hs_h2_goaway(const hs_h2_conn_t *c, uint32_t *code, int32_t *last_stream_id);

/* True once the connection is finished: the socket reached EOF or failed, or nghttp2 wants
 * neither to read nor to write. */
bool hs_h2_closed(const hs_h2_conn_t *c);

/* True when the TLS handshake negotiated ALPN "h2" (always false for h2c). */
bool hs_h2_alpn_h2(const hs_h2_conn_t *c);

/* One-shot: connect, request, copy the status and body out, close. *status is 0 if no
 * response arrived. body (may be NULL) receives the body; the caller frees it. */
int hs_h2_get(int port, bool tls, const char *path, const hs_h2_header_t *headers, size_t n_headers,
              int timeout_ms, int *status, hs_buf_t *body);

/* A well-behaved client on its own thread: it connects anew and GETs /healthz every
 * interval_ms until stopped, and counts how it went. Flood tests run one beside the attack to
 * show the server still serves others meanwhile. */
typedef struct hs_test_canary {
  pthread_t thread;
  int port;
  bool tls;
  int interval_ms;
  atomic_bool stop;
  atomic_int ok;        /* requests answered 200 */
  atomic_int failed;    /* requests that failed or got another status */
  atomic_llong max_ms;  /* the slowest request, connect to end of response */
  char last_error[256]; /* the latest failure, for the assertion message */
} hs_test_canary_t;

/* Starts the thread; returns 0 or HS_EIO. */
int hs_test_canary_start(hs_test_canary_t *k, int port, bool tls, int interval_ms);

/* Stops and joins the thread. */
void hs_test_canary_stop(hs_test_canary_t *k);

#endif
