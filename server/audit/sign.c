#include "audit/sign.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/ids.h"
#include "core/str.h"

struct hs_audit_key {
  EVP_PKEY *pkey; /* owned */
  uint8_t pub[32];
  char id[17];
};

void hs_audit_public_id(const uint8_t pub[32], char id[17]) {
  uint8_t d[32];
  hs_sha256(pub, 32, d);
  hs_hex(d, 8, id);
}

static int finish_key(EVP_PKEY *pkey, hs_audit_key_t **out, const char *path, hs_err_t *err) {
  size_t len = 32;
  if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_ED25519) {
    EVP_PKEY_free(pkey);
    return hs_err_set(err, HS_EINVAL,
                      "%s is not an Ed25519 private key (make one with `handsel key "
                      "generate FILE` or `openssl genpkey -algorithm ed25519`)",
                      path);
  }
  hs_audit_key_t *k = calloc(1, sizeof *k);
  if (k == NULL || EVP_PKEY_get_raw_public_key(pkey, k->pub, &len) != 1 || len != 32) {
    free(k);
    EVP_PKEY_free(pkey);
    return hs_err_set(err, HS_ENOMEM, "cannot read the public half of %s", path);
  }
  k->pkey = pkey;
  hs_audit_public_id(k->pub, k->id);
  *out = k;
  return HS_OK;
}

/* mkdir -p for the key's directory (development keys live under a fresh directory). */
static void make_parent(const char *path) {
  char dir[4096];
  hs_strlcpy(dir, path, sizeof dir);
  char *slash = strrchr(dir, '/');
  if (slash == NULL || slash == dir) {
    return;
  }
  *slash = '\0';
  for (char *p = dir + 1; *p != '\0'; p++) {
    if (*p == '/') {
      *p = '\0';
      (void)mkdir(dir, 0700);
      *p = '/';
    }
  }
  (void)mkdir(dir, 0700);
}

/* Writes the new key under a temporary name and links it into place: link() fails if the name
 * exists, so of several processes starting at once (nodes sharing a volume) exactly one key
 * wins and nobody ever reads a half-written file. HS_ECONFLICT: another process won. */
static int create_key(const char *path, hs_audit_key_t **out, hs_err_t *err) {
  EVP_PKEY *pkey = NULL;
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
  if (ctx == NULL || EVP_PKEY_keygen_init(ctx) != 1 || EVP_PKEY_keygen(ctx, &pkey) != 1) {
    EVP_PKEY_CTX_free(ctx);
    return hs_err_set(err, HS_EIO, "OpenSSL could not make an Ed25519 key");
  }
  EVP_PKEY_CTX_free(ctx);
  make_parent(path);
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) {
    EVP_PKEY_free(pkey);
    return hs_err_set(err, HS_EIO, "cannot create the signing key %s: %s", path, strerror(errno));
  }
  FILE *f = fdopen(fd, "w");
  int ok = f != NULL && PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) == 1;
  ok = f != NULL && fflush(f) == 0 && fsync(fd) == 0 && ok;
  if (f != NULL) {
    fclose(f);
  } else {
    close(fd);
  }
  int linked = ok ? link(tmp, path) : -1;
  int link_errno = errno;
  unlink(tmp);
  if (!ok || linked != 0) {
    EVP_PKEY_free(pkey);
    if (ok && link_errno == EEXIST) {
      return HS_ECONFLICT;
    }
    return hs_err_set(err, HS_EIO, "cannot write the signing key %s: %s", path,
                      strerror(ok ? link_errno : EIO));
  }
  return finish_key(pkey, out, path, err);
}

int hs_audit_key_load(const char *path, bool create, hs_audit_key_t **out, bool *created,
                      hs_err_t *err) {
  if (created != NULL) {
    *created = false;
  }
  FILE *f = fopen(path, "r");
  if (f == NULL && errno == ENOENT && create) {
    int rc = create_key(path, out, err);
    if (rc != HS_ECONFLICT) {
      if (rc == HS_OK && created != NULL) {
        *created = true;
      }
      return rc;
    }
    f = fopen(path, "r");
  }
  if (f == NULL) {
    return hs_err_set(err, HS_EIO, "cannot read the signing key %s: %s", path, strerror(errno));
  }
  EVP_PKEY *pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
  fclose(f);
  if (pkey == NULL) {
    return hs_err_set(err, HS_EINVAL, "%s holds no PEM private key", path);
  }
  return finish_key(pkey, out, path, err);
}

void hs_audit_key_free(hs_audit_key_t *k) {
  if (k != NULL) {
    EVP_PKEY_free(k->pkey);
    free(k);
  }
}

const uint8_t *hs_audit_key_public(const hs_audit_key_t *k) {
  return k->pub;
}

const char *hs_audit_key_id(const hs_audit_key_t *k) {
  return k->id;
}

int hs_audit_key_public_pem(const hs_audit_key_t *k, hs_buf_t *out) {
  BIO *bio = BIO_new(BIO_s_mem());
  if (bio == NULL || PEM_write_bio_PUBKEY(bio, k->pkey) != 1) {
    BIO_free(bio);
    return HS_ENOMEM;
  }
  char *p = NULL;
  long n = BIO_get_mem_data(bio, &p);
  int rc = n > 0 ? hs_buf_append(out, p, (size_t)n) : HS_ENOMEM;
  BIO_free(bio);
  return rc;
}

int hs_audit_key_sign(const hs_audit_key_t *k, const void *msg, size_t n, uint8_t sig[64]) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  size_t len = 64;
  int ok = md != NULL && EVP_DigestSignInit(md, NULL, NULL, NULL, k->pkey) == 1 &&
           EVP_DigestSign(md, sig, &len, msg, n) == 1 && len == 64;
  EVP_MD_CTX_free(md);
  return ok ? HS_OK : HS_EIO;
}

bool hs_audit_signature_ok(const uint8_t pub[32], const void *msg, size_t n,
                           const uint8_t sig[64]) {
  EVP_PKEY *pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, 32);
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  bool ok = pkey != NULL && md != NULL && EVP_DigestVerifyInit(md, NULL, NULL, NULL, pkey) == 1 &&
            EVP_DigestVerify(md, sig, 64, msg, n) == 1;
  EVP_MD_CTX_free(md);
  EVP_PKEY_free(pkey);
  return ok;
}

static bool from_pem(const char *text, size_t n, uint8_t pub[32]) {
  BIO *bio = BIO_new_mem_buf(text, (int)n);
  if (bio == NULL) {
    return false;
  }
  EVP_PKEY *pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
  if (pkey == NULL) {
    /* A private key file works too: its public half is what verifies. */
    (void)BIO_reset(bio);
    pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
  }
  BIO_free(bio);
  size_t len = 32;
  bool ok = pkey != NULL && EVP_PKEY_get_base_id(pkey) == EVP_PKEY_ED25519 &&
            EVP_PKEY_get_raw_public_key(pkey, pub, &len) == 1 && len == 32;
  EVP_PKEY_free(pkey);
  return ok;
}

int hs_audit_public_parse(const char *text, size_t n, uint8_t pub[32], hs_err_t *err) {
  while (n > 0 && isspace((unsigned char)text[0])) {
    text++;
    n--;
  }
  while (n > 0 && isspace((unsigned char)text[n - 1])) {
    n--;
  }
  if (n > 64 * 1024) {
    return hs_err_set(err, HS_ELIMIT, "a public key is not %zu bytes long", n);
  }
  if (n >= 10 && memcmp(text, "-----BEGIN", 10) == 0) {
    if (from_pem(text, n, pub)) {
      return HS_OK;
    }
    return hs_err_set(err, HS_EINVAL, "the PEM block is not an Ed25519 key");
  }
  if (n == 64) {
    char hex[65];
    memcpy(hex, text, 64);
    hex[64] = '\0';
    for (int i = 0; i < 64; i++) {
      hex[i] = (char)tolower((unsigned char)hex[i]);
    }
    if (hs_is_hex(hex, 64)) {
      for (int i = 0; i < 32; i++) {
        unsigned v = 0;
        sscanf(hex + 2 * i, "%2x", &v);
        pub[i] = (uint8_t)v;
      }
      return HS_OK;
    }
  }
  if (n == 44) {
    uint8_t raw[33];
    int len = EVP_DecodeBlock(raw, (const unsigned char *)text, 44);
    /* EVP_DecodeBlock counts the padding's zero bytes: 32 bytes of key decode to 33. */
    if (len == 33 && text[43] == '=' && text[42] != '=') {
      memcpy(pub, raw, 32);
      return HS_OK;
    }
  }
  return hs_err_set(err, HS_EINVAL,
                    "not a public key: expected a PEM block, 64 hex digits or the base64 of 32 "
                    "bytes (as GET /v1/audit/key and `handsel key public` print)");
}
