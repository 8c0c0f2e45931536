/* A client of handsel's session API for integration tests: one HTTP/2 connection to one server,
 * acting for one brand and subject through the development-auth headers
 * (x-handsel-dev-brand/-role/-subject, served with HANDSEL_DEV_AUTH=1), with request bodies
 * written as JSON text and responses decoded into the value model.
 *
 * A client belongs to one thread. It reconnects by itself after the connection failed (a
 * server restart) and every few hundred requests (the underlying connection keeps each
 * response until it closes).
 *
 * Return values follow server/core/error.h: 0 or a negative HS_E* code. */
#ifndef HS_TEST_API_H
#define HS_TEST_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/value.h"
#include "core/arena.h"
#include "core/buf.h"
#include "hs_test_h2.h"

typedef struct hs_api {
  int port;
  char brand[65];     /* x-handsel-dev-brand */
  char subject[129];  /* x-handsel-dev-subject */
  bool json;          /* ask for JSON answers (Accept: application/json); msgpack otherwise */
  int timeout_ms;     /* per request; 0 = 10000 */
  hs_h2_conn_t *conn; /* owned; NULL until the first request */
  unsigned requests;  /* on this connection */
} hs_api_t;

/* One answer. Everything in it is owned by it: hs_api_resp_free. */
typedef struct hs_api_resp {
  int status;             /* 0 when no answer arrived */
  char content_type[128]; /* "" when absent */
  char retry_after[32];   /* "" when absent */
  hs_buf_t body;          /* the raw body bytes */
  hs_arena_t arena;       /* holds v */
  hs_value_t *v;          /* the decoded body, NULL when empty or not msgpack/JSON */
} hs_api_resp_t;

/* Sets up a client; no connection is made yet. brand and subject are copied. */
void hs_api_init(hs_api_t *c, int port, const char *brand, const char *subject);
/* Closes the connection. */
void hs_api_close(hs_api_t *c);
/* Points the client at another server (closing the current connection). */
void hs_api_set_port(hs_api_t *c, int port);

void hs_api_resp_init(hs_api_resp_t *r);
void hs_api_resp_free(hs_api_resp_t *r);

/* Sends one request as `role` and waits for the answer. body_json (may be NULL) is sent with
 * Content-Type application/json. Returns 0 with out->status set when an answer arrived, else
 * a negative code (out->status 0; the connection is dropped and the next call reconnects).
 * out is freed and initialized first. */
int hs_api_call(hs_api_t *c, const char *role, const char *method, const char *path,
                const char *body_json, hs_api_resp_t *out);

/* The same with a printf-style JSON body. */
int hs_api_callf(hs_api_t *c, const char *role, const char *method, const char *path,
                 hs_api_resp_t *out, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Sends raw bytes (a blob) with the given content type. */
int hs_api_call_raw(hs_api_t *c, const char *role, const char *method, const char *path,
                    const char *content_type, const void *body, size_t len, hs_api_resp_t *out);

/* Several requests at once on the client's connection, all submitted before any is awaited,
 * so the server receives them together. */
typedef struct hs_api_batch_item {
  const char *method;
  const char *path;
  const char *body_json; /* may be NULL */
  hs_api_resp_t resp;    /* filled by hs_api_batch (initialize with hs_api_resp_init) */
} hs_api_batch_item_t;
int hs_api_batch(hs_api_t *c, const char *role, hs_api_batch_item_t *items, size_t n);

/* Helpers over decoded values (NULL-safe): the string, integer or value at a dotted path of
 * map keys, or NULL / `dflt` when a key is missing or the type differs. */
const char *hs_api_str(const hs_value_t *v, const char *path);
int64_t hs_api_int(const hs_value_t *v, const char *path, int64_t dflt);
const hs_value_t *hs_api_at(const hs_value_t *v, const char *path);

/* Fails the current cmocka test unless the string at `path` of v equals want, naming file and
 * line and what was there instead (nil when absent), rather than crashing on a NULL. */
void hs_api_expect_str(const hs_value_t *v, const char *path, const char *want, const char *file,
                       int line);
#define HS_API_EXPECT_STR(v, path, want) hs_api_expect_str((v), (path), (want), __FILE__, __LINE__)

/* The answer's body as text for messages: at most 600 bytes, NUL-terminated, in one of four
 * static per-thread buffers used in turn (so one message may show up to four answers). */
const char *hs_api_body_text(const hs_api_resp_t *r);

/* SHA-256 of bytes as 64 lower-case hex digits (out has room for 65). */
void hs_api_sha256_hex(const void *p, size_t n, char out[65]);

/* A brand name no other test or run uses: "<prefix>-<pid>-<n>-<ms>" (lower case, at most 64). */
void hs_api_unique_name(char out[65], const char *prefix);

/* PUT /v1/processes/{name} as author with the Lua source. Returns the HTTP status (0 when no
 * answer came); on 201 version_out (may be NULL) gets the version. */
int hs_api_deploy(hs_api_t *c, const char *name, const char *source, char version_out[65]);

/* POST /v1/sessions as contractor for `process` with customer {name = "Ada"} and `ref` (NULL for
 * none). Returns the HTTP status; on 200/201 id_out gets the session id and *seq the first
 * step's seq (0 when the session has no step). */
int hs_api_start(hs_api_t *c, const char *process, const char *ref, char id_out[40], int64_t *seq);

/* The path of a completion: /v1/sessions/{id}/steps/{seq}. */
void hs_api_step_path(char *out, size_t cap, const char *id, int64_t seq);

/* A process named "loop" whose step "s" repeats up to 999 times: each takes an integer n
 * (0..1000000, required) and the next step's title is "sum S luck L", S the sum of every n so
 * far and L a number the script drew with math.random when the session started. Every title
 * thus depends on the session's whole history and on its random seed, which a replay on another
 * worker or node must reproduce exactly. */
extern const char hs_api_loop_source[];

/* Parses a loop step's title ("sum S luck L") out of a step value. */
bool hs_api_loop_title(const hs_value_t *step, long long *sum, long long *luck);

/* A loop session as a test follows it. */
typedef struct hs_api_loop {
  char id[40];
  int64_t seq;    /* the current step's seq */
  long long sum;  /* the sum of the accepted n so far */
  long long luck; /* what the script drew at the start */
} hs_api_loop_t;

/* Starts a loop session (c's brand must have "loop" deployed) and reads its first step into s.
 * Returns the HTTP status (201 expected). */
int hs_api_loop_start(hs_api_t *c, hs_api_loop_t *s);

/* Is `step` the loop's current step as s expects it (seq, and title "sum S luck L")? When not,
 * why (cap bytes) says what differs. */
bool hs_api_loop_check(const hs_api_loop_t *s, const hs_value_t *step, char *why, size_t cap);

/* A session stream (GET /v1/sessions/{id}/stream) on a connection of its own. Events are
 * decoded one at a time from what arrived so far: msgpack maps back to back, or NDJSON lines
 * when json is set. */
typedef struct hs_api_stream {
  hs_h2_conn_t *conn; /* owned */
  int32_t stream_id;
  bool json;
  size_t used;      /* body bytes already decoded into events */
  hs_arena_t arena; /* holds the events returned so far */
} hs_api_stream_t;

/* Opens the stream as `role` of c's brand and subject and waits for the response headers.
 * Returns 0 when the answer is 200, HS_EIO otherwise (*status says what came, 0 for nothing). */
int hs_api_stream_open(hs_api_stream_t *s, const hs_api_t *c, const char *role, const char *id,
                       bool json, int *status);
/* Waits at most timeout_ms for the next event. Returns 0 with *event (owned by s), HS_EUNAVAIL
 * at the deadline, HS_ENOTFOUND when the stream ended without another event, HS_EINVAL when the
 * bytes do not decode. */
int hs_api_stream_next(hs_api_stream_t *s, int timeout_ms, const hs_value_t **event);
/* True once the server ended the stream (END_STREAM) and every event was read. */
bool hs_api_stream_ended(hs_api_stream_t *s);
void hs_api_stream_close(hs_api_stream_t *s);

#endif
