#include "http/tls.h"

#include <openssl/err.h>
#include <string.h>

/* Picks h2 when the client offers it. When it does not, we acknowledge no protocol rather than
 * fail the handshake, so that an HTTP/1.1-over-TLS client reaches the sniffer and reads a clear
 * 505 instead of a bare handshake alert. */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg) {
  for (unsigned i = 0; i < inlen;) {
    unsigned len = in[i];
    if (i + 1 + len > inlen) {
      break;
    }
    if (len == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
      *out = in + i + 1;
      *outlen = 2;
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + len;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

int hs_tls_ctx_new(const char *cert_file, const char *key_file, SSL_CTX **out, hs_err_t *err) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == NULL) {
    return hs_err_set(err, HS_ENOMEM, "could not create a TLS context");
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  /* RFC 9113 §9.2.2: TLS 1.2 connections must use an AEAD suite with ephemeral keys. */
  SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20");
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
    unsigned long e = ERR_get_error();
    SSL_CTX_free(ctx);
    return hs_err_set(err, HS_EINVAL, "cannot use HANDSEL_TLS_CERT '%s': %s", cert_file,
                      ERR_reason_error_string(e) != NULL ? ERR_reason_error_string(e) : "?");
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    unsigned long e = ERR_get_error();
    SSL_CTX_free(ctx);
    return hs_err_set(err, HS_EINVAL, "cannot use HANDSEL_TLS_KEY '%s' with the certificate: %s",
                      key_file,
                      ERR_reason_error_string(e) != NULL ? ERR_reason_error_string(e) : "?");
  }
  SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
  *out = ctx;
  return HS_OK;
}

int hs_tls_init(hs_tls_t *t, const char *cert_file, const char *key_file, hs_err_t *err) {
  pthread_mutex_init(&t->lock, NULL);
  t->ctx = NULL;
  int rc = hs_tls_ctx_new(cert_file, key_file, &t->ctx, err);
  if (rc != HS_OK) {
    pthread_mutex_destroy(&t->lock);
  }
  return rc;
}

SSL *hs_tls_new_ssl(hs_tls_t *t) {
  pthread_mutex_lock(&t->lock);
  SSL *ssl = SSL_new(t->ctx); /* takes its own reference to the context */
  pthread_mutex_unlock(&t->lock);
  return ssl;
}

int hs_tls_reload(hs_tls_t *t, const char *cert_file, const char *key_file, hs_err_t *err) {
  SSL_CTX *fresh = NULL;
  int rc = hs_tls_ctx_new(cert_file, key_file, &fresh, err);
  if (rc != HS_OK) {
    return rc;
  }
  pthread_mutex_lock(&t->lock);
  SSL_CTX *old = t->ctx;
  t->ctx = fresh;
  pthread_mutex_unlock(&t->lock);
  SSL_CTX_free(old); /* open connections still hold their references */
  return HS_OK;
}

void hs_tls_free(hs_tls_t *t) {
  SSL_CTX_free(t->ctx);
  t->ctx = NULL;
  pthread_mutex_destroy(&t->lock);
}
