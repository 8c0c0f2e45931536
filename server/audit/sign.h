/* Ed25519 keys for the compliance log's checkpoints, through OpenSSL.
 *
 * The server signs with a private key read from the PEM file named by HANDSEL_SIGNING_KEY
 * (every node of a deployment uses the same one); without it, a development key is made on
 * first start. Verifiers only ever need the public key: GET /v1/audit/key serves it, and
 * `handsel verify --key` reads it back in any of the forms that route and `handsel key` print. */
#ifndef HS_AUDIT_SIGN_H
#define HS_AUDIT_SIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/error.h"

typedef struct hs_audit_key hs_audit_key_t;

/* Reads a PEM Ed25519 private key. With create set and no file at path, makes a new key and
 * writes it there (mode 0600, parent directory created), setting *created. On success *out is
 * the caller's: free it with hs_audit_key_free. */
int hs_audit_key_load(const char *path, bool create, hs_audit_key_t **out, bool *created,
                      hs_err_t *err);
void hs_audit_key_free(hs_audit_key_t *k);

/* The raw 32-byte public key, and its id: the first 16 hex digits of its SHA-256. Both are
 * owned by the key. */
const uint8_t *hs_audit_key_public(const hs_audit_key_t *k);
const char *hs_audit_key_id(const hs_audit_key_t *k);

/* Appends the public key as a PEM "PUBLIC KEY" block. */
int hs_audit_key_public_pem(const hs_audit_key_t *k, hs_buf_t *out);

/* Signs msg[0..n) into sig. HS_EIO if OpenSSL fails. */
int hs_audit_key_sign(const hs_audit_key_t *k, const void *msg, size_t n, uint8_t sig[64]);

/* Reads a public key from text: a PEM public (or private) key, 64 hex digits, or the base64
 * of the 32 raw bytes; leading and trailing white space is ignored. */
int hs_audit_public_parse(const char *text, size_t n, uint8_t pub[32], hs_err_t *err);

/* The key id of a raw public key (17 bytes with the NUL). */
void hs_audit_public_id(const uint8_t pub[32], char id[17]);

/* True when sig is pub's signature of msg[0..n). */
bool hs_audit_signature_ok(const uint8_t pub[32], const void *msg, size_t n, const uint8_t sig[64]);

#endif
