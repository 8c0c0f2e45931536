/* The request as a handler sees it, and the ways to answer it.
 *
 * Lifetime and ownership: the connection owns every hs_req_t. A handler is called once the
 * request is complete (headers and body), and from then on may answer at once or later from a
 * callback of its own (a database reply, a timer). It answers exactly once, with one of
 * hs_req_respond*, or by starting a stream and ending it.
 *
 * Answering never frees the request on the spot: the bytes go out at the end of the current
 * loop iteration, so req stays valid until the callback that answered it returns (and not a
 * moment longer: keep no pointer to it after that).
 *
 * Cancellation: the client can reset its stream, or the connection can die, at any moment. The
 * handler that keeps work in flight sets req->on_cancel before returning; the connection calls
 * it exactly once when the stream goes away before the handler is done, and frees the request
 * right after. After on_cancel the handler must never touch req again. A handler that answered
 * synchronously needs no on_cancel. */
#ifndef HS_HTTP_REQUEST_H
#define HS_HTTP_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/codec.h"
#include "core/arena.h"
#include "core/buf.h"
#include "http/config.h"
#include "http/router.h"

typedef struct hs_worker hs_worker_t;

/* A request header as received (lower-case name), in the request's arena. */
typedef struct hs_header {
  struct hs_header *next;
  const char *name;
  const char *value;
} hs_header_t;
typedef void (*hs_req_cb)(hs_req_t *req);

struct hs_req {
  /* Read-only for handlers. Strings are NUL-terminated and owned by the request's arena. */
  const char *method;
  const char *path;          /* without the query string, percent-encoding left as sent */
  const char *query;         /* after '?', "" when absent */
  const char *content_type;  /* "" when absent */
  const char *authorization; /* "" when absent */
  hs_format_t in_format;     /* from Content-Type (msgpack unless JSON) */
  hs_format_t out_format;    /* from Accept (msgpack unless it asks for JSON) */
  hs_buf_t body;             /* the request body, at most config.max_body bytes */
  hs_route_match_t match;    /* the route and its parameters */
  struct hs_header *headers; /* every request header, in the arena (at most max_headers) */
  const hs_config_t *config; /* borrowed: the server's configuration */
  hs_worker_t *worker;       /* the worker thread this request runs on */
  hs_arena_t arena;          /* per request: decoded bodies, response trees; freed with it */

  /* For handlers. */
  void *data;          /* the handler's own state */
  hs_req_cb on_cancel; /* see above; NULL when nothing is in flight */
  hs_req_cb on_drain;  /* streaming: called when buffered output fell below half the cap */
};

/* The value of the first header named `name` (lower case), or NULL. */
const char *hs_req_header(const hs_req_t *req, const char *name);

/* Decodes the request body in req->in_format into req->arena, with the default codec limits.
 * On failure answers 400 (malformed) or 413 (too large) itself and returns the error code: the
 * handler just returns. */
int hs_req_decode_body(hs_req_t *req, hs_value_t **out);

/* Looks up a query parameter; copies its (percent-decoded) value into dst. Returns HS_OK,
 * HS_ENOTFOUND, or HS_ELIMIT when it does not fit in cap (including the NUL). */
int hs_req_query(const hs_req_t *req, const char *name, char *dst, size_t cap);

/* Answers with body encoded in req->out_format (body NULL: no body). */
void hs_req_respond(hs_req_t *req, int status, const hs_value_t *body);

/* Answers {error: {code, message}} with the given status. code is a stable machine-readable
 * word ("not_found"); the message is for a person and says what to do. */
void hs_req_respond_error(hs_req_t *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Like hs_req_respond_error with extra response headers (e.g. Retry-After): name/value pairs,
 * n_headers pairs. Names must be string constants (they are sent without a copy); values are
 * copied. */
void hs_req_respond_error_h(hs_req_t *req, int status, const char *const *headers, size_t n_headers,
                            const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Answers with raw bytes (copied) and a content type. */
void hs_req_respond_raw(hs_req_t *req, int status, const char *content_type, const void *body,
                        size_t len);

/* Starts a streaming response: headers go out now, the body follows with hs_req_stream_write
 * and ends with hs_req_stream_end. */
int hs_req_stream_start(hs_req_t *req, int status, const char *content_type);
/* The same with extra response headers: name/value pairs, n_headers pairs (at most 4); names
 * are string constants, as for hs_req_respond_error_h. */
int hs_req_stream_start_h(hs_req_t *req, int status, const char *content_type,
                          const char *const *headers, size_t n_headers);

/* Queues bytes (copied) on a started stream. Returns HS_ELIMIT without queuing when the stream
 * already buffers config.stream_outbuf bytes: the producer waits for on_drain. */
int hs_req_stream_write(hs_req_t *req, const void *p, size_t n);

/* The same for a whole buffer, without copying it when nothing else is queued: the stream
 * takes b's bytes (b is left empty, possibly holding another allocation to reuse). For
 * producers of large bodies, whose every byte would otherwise be copied once more. */
int hs_req_stream_write_buf(hs_req_t *req, hs_buf_t *b);
/* Bytes queued on the stream and not yet handed to HTTP/2. */
size_t hs_req_stream_buffered(const hs_req_t *req);

/* Ends a started stream once everything queued has been sent. The handler is done after this
 * (as after a respond): the request is freed when the stream closes. */
void hs_req_stream_end(hs_req_t *req);

#endif
