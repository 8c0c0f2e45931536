/* Bearer tokens for integration tests: making brands and tokens with the real `handsel brand`
 * and `handsel token` commands (HANDSEL_BIN against HANDSEL_DB), and an HTTP/2 client that
 * sends `Authorization: Bearer <token>` (or any Authorization header, or none) instead of the
 * development-auth headers hs_api_t sends.
 *
 * A client belongs to one thread. It reconnects by itself after the connection failed.
 *
 * Return values follow server/core/error.h: 0 or a negative HS_E* code. */
#ifndef HS_TEST_AUTH_H
#define HS_TEST_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "hs_test_api.h"
#include "hs_test_h2.h"

/* Runs `HANDSEL_BIN args...` (args is NULL-terminated, without the program name) with the
 * inherited environment and waits at most 60 s. Its stdout and stderr together go into out
 * (NUL-terminated, cut at cap - 1 bytes; out may be NULL). Returns the exit code, or -1 when it
 * could not run or was killed. */
int hs_auth_cli(char *out, size_t cap, const char *const *args);

/* `handsel brand create NAME`; fails the current cmocka test unless it exits 0. */
void hs_auth_must_brand(const char *name);

/* A token made with `handsel token create`. */
typedef struct hs_auth_token {
  char id[37];     /* the token's id (from the first line of the output) */
  char secret[69]; /* "hst_" and 64 hex digits: the last line of the output */
  char role[16];
  char brand[65];
  char subject[129];
} hs_auth_token_t;

/* `handsel token create --brand B --role R --subject S [--name N]` (name may be NULL); fails the
 * current cmocka test unless it exits 0 with an id on its first line and a well-formed secret
 * alone on its last line. output (may be NULL) receives the whole output. */
void hs_auth_must_token(hs_auth_token_t *t, const char *brand, const char *role,
                        const char *subject, const char *name, char *output, size_t cap);

/* `handsel token revoke ID`; fails the current cmocka test unless it exits 0. */
void hs_auth_must_revoke(const char *id);

/* What a client sends as credentials. */
typedef enum hs_auth_mode {
  HS_AUTH_BEARER, /* Authorization: Bearer <token> */
  HS_AUTH_NONE,   /* no Authorization header */
  HS_AUTH_RAW,    /* Authorization: <token>, verbatim (another scheme, say) */
  HS_AUTH_DEV,    /* no Authorization, but the development headers with token as
                   * "brand/role/subject" */
} hs_auth_mode_t;

typedef struct hs_auth_client {
  int port;
  hs_auth_mode_t mode;
  char token[256];    /* see hs_auth_mode_t */
  int timeout_ms;     /* per request; 0 = 10000 */
  hs_h2_conn_t *conn; /* owned; NULL until the first request */
} hs_auth_client_t;

/* Sets up a client (no connection yet); token is copied (may be NULL for HS_AUTH_NONE). */
void hs_auth_init(hs_auth_client_t *c, int port, hs_auth_mode_t mode, const char *token);
void hs_auth_close(hs_auth_client_t *c);

/* One answer: the decoded answer as hs_api_t gives it, and WWW-Authenticate. */
typedef struct hs_auth_resp {
  hs_api_resp_t r;
  char www_authenticate[128]; /* "" when absent */
} hs_auth_resp_t;

void hs_auth_resp_init(hs_auth_resp_t *r);
void hs_auth_resp_free(hs_auth_resp_t *r);

/* Sends one request and waits for the whole answer. body (may be NULL) is sent with
 * content_type (may be NULL). Returns 0 with out->r.status set, or a negative code (the
 * connection is dropped; the next call reconnects). out is freed and initialized first. */
int hs_auth_call(hs_auth_client_t *c, const char *method, const char *path,
                 const char *content_type, const void *body, size_t len, hs_auth_resp_t *out);

/* The same with a JSON text body (may be NULL). */
int hs_auth_call_json(hs_auth_client_t *c, const char *method, const char *path,
                      const char *body_json, hs_auth_resp_t *out);

/* Opens a long-lived GET (a session stream) on a connection of its own, waits at most
 * timeout_ms for the response headers, then closes that connection. Returns the status, or 0
 * when none came. When the status is not 200 and the answer ended, *out (may be NULL) gets the
 * decoded error body and WWW-Authenticate. */
int hs_auth_open_status(const hs_auth_client_t *c, const char *path, int timeout_ms,
                        hs_auth_resp_t *out);

#endif
