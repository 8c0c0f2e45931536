/* TLS for the listener: TLS 1.2 and up, ALPN "h2". */
#ifndef HS_HTTP_TLS_H
#define HS_HTTP_TLS_H

#include <openssl/ssl.h>

#include "core/error.h"

/* Creates a server context from PEM files; the caller owns it (SSL_CTX_free). */
int hs_tls_ctx_new(const char *cert_file, const char *key_file, SSL_CTX **out, hs_err_t *err);

#endif
