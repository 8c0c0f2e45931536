/* A small blocking HTTP/2 client for the commands that talk to a running server (`handsel
 * deploy`, `handsel export`). The commands are not on an event loop, so the socket is simply
 * waited on with poll(); every wait has a timeout, so a server that stops answering ends in a
 * clear error instead of a hang.
 *
 * `http://host:port` is h2c with prior knowledge; `https://host:port` is TLS with ALPN h2,
 * the server certificate verified against the system's trust store or a CA file. Requests run
 * one at a time on one connection. A response body goes to a callback chunk by chunk, so an
 * export of gigabytes passes through in constant memory; HTTP/2 flow control holds the server
 * back while the callback writes.
 *
 * Errors follow server/core/error.h, and every failure fills err with one sentence a person
 * can act on: HS_EIO for a connection that failed (refused, reset, closed early, TLS),
 * HS_EUNAVAIL for a timeout, HS_ELIMIT for an answer over the client's limits, HS_ECANCELED
 * when the cancel flag was raised. An HTTP error answer (status >= 400) is decoded from the
 * server's `{error: {code, message}}` body into "<status> <code>: <message>" and returned as
 * the HS_E* code closest to the status (see hs_client_status_code). */
#ifndef HS_CLI_CLIENT_H
#define HS_CLI_CLIENT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/error.h"

/* What the client accepts from a server before it gives up on the answer. */
enum {
  HS_CLIENT_MAX_HEADER_LIST = 65536, /* name + value + 32 per field (RFC 9113 §6.5.2) */
  HS_CLIENT_MAX_HEADERS = 64,        /* header fields of one response */
  HS_CLIENT_MAX_BODY = 1 << 20,      /* a response body that is kept in memory */
  HS_CLIENT_MAX_ERROR_BODY = 65536,  /* the body of an error answer */
  HS_CLIENT_DEFAULT_TIMEOUT_MS = 30000,
};

typedef struct hs_client hs_client_t;

typedef struct hs_client_opts {
  const char *url;     /* borrowed: http://HOST[:PORT][/PREFIX] or https://…; IPv6 as [::1] */
  const char *ca_file; /* borrowed, may be NULL: PEM certificates to trust instead of the
                          system store (https only) */
  int timeout_ms;      /* longest wait for the connection, the handshake or the next bytes of
                          an answer; 0 = HS_CLIENT_DEFAULT_TIMEOUT_MS */
  volatile sig_atomic_t *cancel; /* borrowed, may be NULL: when a signal handler sets it, the
                                    request in progress ends with HS_ECANCELED */
} hs_client_opts_t;

typedef struct hs_client_header {
  const char *name; /* lower-case */
  const char *value;
} hs_client_header_t;

/* The answer to one request. Filled by hs_client_request; release with
 * hs_client_response_free. */
typedef struct hs_client_response {
  int status;          /* :status of the final answer; 0 when none arrived */
  hs_buf_t body;       /* the body, when the request had no on_body callback or the status was
                          not 2xx (limited to HS_CLIENT_MAX_BODY or HS_CLIENT_MAX_ERROR_BODY) */
  uint64_t body_bytes; /* DATA bytes received, also those handed to on_body */
  /* Header fields as received (names lower-case), NUL-terminated strings inside hbuf. */
  size_t n_headers;
  size_t name_off[HS_CLIENT_MAX_HEADERS];
  size_t value_off[HS_CLIENT_MAX_HEADERS];
  size_t header_list; /* bytes counted against HS_CLIENT_MAX_HEADER_LIST */
  hs_buf_t hbuf;
} hs_client_response_t;

/* Called once, when the final response headers of a 2xx answer have arrived and before any
 * body. Returning a negative HS_E* code (with err filled) abandons the request. */
typedef int (*hs_client_head_cb)(void *ctx, const hs_client_response_t *resp, hs_err_t *err);

/* Called for each piece of a 2xx answer's body, in order. data is borrowed for the call.
 * Returning a negative HS_E* code (with err filled) abandons the request. */
typedef int (*hs_client_body_cb)(void *ctx, const uint8_t *data, size_t len, hs_err_t *err);

typedef struct hs_client_request {
  const char *method;       /* borrowed, e.g. "PUT" */
  const char *path;         /* borrowed: path and query, e.g. "/v1/processes/x"; the URL's prefix
                               is put in front */
  const char *token;        /* borrowed, may be NULL: sent as `Authorization: Bearer <token>` */
  const char *content_type; /* borrowed, may be NULL; only with a body */
  const void *body;         /* borrowed, may be NULL */
  size_t body_len;          /* bytes of body */
  const hs_client_header_t *headers; /* borrowed, may be NULL: extra header fields */
  size_t n_headers;                  /* of headers */
  hs_client_head_cb on_head;         /* may be NULL */
  hs_client_body_cb on_body;         /* may be NULL: the body is kept in the response */
  void *ctx;                         /* handed to the callbacks */
} hs_client_request_t;

/* Checks the URL, resolves the host (IPv4 and IPv6, every address in turn), connects, does
 * the TLS handshake for https (certificate and host name verified, ALPN h2 required) and the
 * HTTP/2 preface. On success *out is owned by the caller: hs_client_close frees it. On failure
 * nothing is left open and err says what went wrong (HS_EINVAL for a bad URL). */
int hs_client_connect(const hs_client_opts_t *opts, hs_client_t **out, hs_err_t *err);

/* Ends the connection politely (GOAWAY) and frees it. NULL is fine. */
void hs_client_close(hs_client_t *c);

/* Sends one request and runs the connection until its answer is complete. Always sends
 * `Accept: application/json`, so errors come as JSON. resp (caller-owned, may hold garbage) is
 * initialised here and must be released with hs_client_response_free, whatever the result.
 * Returns HS_OK for a complete 2xx answer. A stream that ends before the end of its body is
 * an error (HS_EIO), never a short success. */
int hs_client_request(hs_client_t *c, const hs_client_request_t *req, hs_client_response_t *resp,
                      hs_err_t *err);

/* Frees what the response holds; it may then be reused. */
void hs_client_response_free(hs_client_response_t *resp);

/* The value of the first header field called name (lower-case), or NULL. Borrowed from resp. */
const char *hs_client_header(const hs_client_response_t *resp, const char *name);

/* The HS_E* code that fits an HTTP error status: 404 HS_ENOTFOUND, 409 HS_ECONFLICT, 413
 * HS_ELIMIT, 422 HS_EVALIDATION, 429 and 503 HS_EUNAVAIL, 501 HS_EUNSUPPORTED, other 4xx
 * HS_EINVAL, other 5xx HS_EIO. */
int hs_client_status_code(int status);

/* Fills err from an error answer: "<status> <code>: <message>" taken from its
 * `{error: {code, message}}` JSON body, or the status and what the body starts with when it
 * is not one. Control characters from the server are replaced, so a hostile server cannot
 * drive the terminal. Returns the code of hs_client_status_code. */
int hs_client_error_from(const hs_client_response_t *resp, hs_err_t *err);

#endif
