/* TLS for the listener: TLS 1.2 and up, ALPN "h2". */
#ifndef HS_HTTP_TLS_H
#define HS_HTTP_TLS_H

#include <openssl/ssl.h>

#include "core/error.h"

#include <pthread.h>

/* Creates a server context from PEM files; the caller owns it (SSL_CTX_free). */
int hs_tls_ctx_new(const char *cert_file, const char *key_file, SSL_CTX **out, hs_err_t *err);

/* The listener's TLS context, shared by every worker and replaceable while they run (SIGHUP
 * reloads the certificate). A connection takes its own reference when it starts, so one that
 * is open keeps the context it began with and nothing is dropped by a reload. */
typedef struct hs_tls {
  pthread_mutex_t lock;
  SSL_CTX *ctx; /* owned: one reference */
} hs_tls_t;

/* Loads the first context. */
int hs_tls_init(hs_tls_t *t, const char *cert_file, const char *key_file, hs_err_t *err);
/* A new connection object on the current context (NULL when out of memory). */
SSL *hs_tls_new_ssl(hs_tls_t *t);
/* Loads the files again; on success new connections use the new certificate. On failure the
 * old one stays in use and err says why. */
int hs_tls_reload(hs_tls_t *t, const char *cert_file, const char *key_file, hs_err_t *err);
void hs_tls_free(hs_tls_t *t);

#endif
