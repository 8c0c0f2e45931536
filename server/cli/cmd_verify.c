/* handsel verify FILE --key PUB, and handsel key generate|public: the compliance side of the
 * command line. Both work offline: verification needs only the export and the public key. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "audit/sign.h"
#include "audit/verify.h"
#include "cli/commands.h"
#include "codec/codec.h"
#include "core/str.h"

void hs_cmd_verify_help(FILE *out) {
  fputs("usage: handsel verify FILE --key PUB\n"
        "\n"
        "Checks an NDJSON export of the compliance log (GET /v1/audit, handsel export) against\n"
        "the public key that signs the brand's checkpoints: every record's hash, the hash chain\n"
        "from the export's start, and each checkpoint's head and Ed25519 signature. It needs no\n"
        "server and no database. FILE - reads standard input.\n"
        "\n"
        "PUB is a file holding the public key, or the key itself: a PEM block, 64 hex digits or\n"
        "the base64 of its 32 bytes (GET /v1/audit/key and `handsel key public` print it).\n"
        "\n"
        "On success it prints what the export proves and exits 0. Otherwise it names the first\n"
        "record that was changed, removed, inserted or reordered (its position in the chain,\n"
        "the line of the file and the record id) and exits 1. Usage errors exit 2.\n"
        "\n"
        "Records whose pii fields were redacted are proven through their data digest only. To\n"
        "rule out an export cut short at an earlier checkpoint, compare its end with the\n"
        "latest checkpoint (GET /v1/audit/checkpoint).\n",
        out);
}

/* The key from a file, or the argument itself when no such file exists. */
static int read_key(const char *arg, uint8_t pub[32], hs_err_t *err) {
  FILE *f = fopen(arg, "r");
  if (f == NULL) {
    if (errno != ENOENT) {
      return hs_err_set(err, HS_EIO, "cannot read %s: %s", arg, strerror(errno));
    }
    return hs_audit_public_parse(arg, strlen(arg), pub, err);
  }
  char text[8192];
  size_t n = fread(text, 1, sizeof text, f);
  bool big = !feof(f);
  fclose(f);
  if (big) {
    return hs_err_set(err, HS_ELIMIT, "%s is too large to be a public key", arg);
  }
  int rc = hs_audit_public_parse(text, n, pub, err);
  if (rc != HS_OK) {
    char msg[sizeof err->msg];
    hs_strlcpy(msg, err->msg, sizeof msg);
    return hs_err_set(err, rc, "%s: %s", arg, msg);
  }
  return HS_OK;
}

int hs_cmd_verify_main(int argc, char **argv) {
  const char *file = NULL, *key = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      hs_cmd_verify_help(stdout);
      return 0;
    }
    if (strcmp(argv[i], "--key") == 0 && i + 1 < argc) {
      key = argv[++i];
    } else if (file == NULL && (argv[i][0] != '-' || strcmp(argv[i], "-") == 0)) {
      file = argv[i];
    } else {
      fprintf(stderr, "handsel verify: unexpected argument '%s'\n\n", argv[i]);
      hs_cmd_verify_help(stderr);
      return 2;
    }
  }
  if (file == NULL || key == NULL) {
    fprintf(stderr, "handsel verify: needs an export FILE and --key PUB\n\n");
    hs_cmd_verify_help(stderr);
    return 2;
  }
  hs_err_t err;
  hs_err_clear(&err);
  uint8_t pub[32];
  if (read_key(key, pub, &err) != HS_OK) {
    fprintf(stderr, "handsel verify: %s\n", err.msg);
    return 2;
  }
  FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
  if (f == NULL) {
    fprintf(stderr, "handsel verify: cannot open %s: %s\n", file, strerror(errno));
    return 2;
  }
  hs_audit_verify_report_t rep;
  int rc = hs_audit_verify(f, pub, &rep, &err);
  if (f != stdin) {
    fclose(f);
  }
  if (rc != HS_OK) {
    fprintf(stderr, "handsel verify: %s\n", err.msg);
    return 2;
  }
  if (!rep.ok) {
    printf("FAILED: %s\n", rep.message);
    if (rep.position > 0) {
      printf("  first record %s: position %" PRId64 " (line %" PRId64, rep.kind, rep.position,
             rep.line);
      if (rep.id > 0) {
        printf(", record id %" PRId64, rep.id);
      }
      printf(")\n");
    }
    return 1;
  }
  if (rep.end_size == rep.start_size) {
    printf("ok: the export of brand %s holds no sealed records\n", rep.brand);
    return 0;
  }
  printf("ok: brand %s, positions %" PRId64 " to %" PRId64 " of the chain: %" PRId64
         " records shown, %" PRId64 " elided by the filters",
         rep.brand, rep.start_size + 1, rep.end_size, rep.records, rep.elided);
  if (rep.redacted > 0) {
    printf(", %" PRId64 " with pii redacted (proven by digest)", rep.redacted);
  }
  printf("\n  %" PRId64 " checkpoint%s verified; the last at size %" PRId64
         ", signed %s by key %s\n",
         rep.checkpoints, rep.checkpoints == 1 ? "" : "s", rep.end_size, rep.signed_at, rep.key_id);
  return 0;
}

void hs_cmd_key_help(FILE *out) {
  fputs("usage: handsel key generate FILE\n"
        "       handsel key public FILE\n"
        "\n"
        "generate  makes an Ed25519 private key for signing the compliance log's checkpoints\n"
        "          and writes it to FILE (PEM, mode 0600; an existing FILE is never\n"
        "          overwritten). Give it to every node as HANDSEL_SIGNING_KEY.\n"
        "public    prints the public key of the private key in FILE: its id, the base64 of its\n"
        "          32 bytes, and a PEM block. Any of them works as `handsel verify --key`.\n",
        out);
}

int hs_cmd_key_main(int argc, char **argv) {
  if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    hs_cmd_key_help(stdout);
    return 0;
  }
  if (argc != 3 || (strcmp(argv[1], "generate") != 0 && strcmp(argv[1], "public") != 0)) {
    hs_cmd_key_help(stderr);
    return 2;
  }
  bool generate = strcmp(argv[1], "generate") == 0;
  const char *path = argv[2];
  if (generate) {
    FILE *exists = fopen(path, "r");
    if (exists != NULL) {
      fclose(exists);
      fprintf(stderr, "handsel key: %s already exists; it is not overwritten\n", path);
      return 1;
    }
  }
  hs_err_t err;
  hs_err_clear(&err);
  hs_audit_key_t *k = NULL;
  if (hs_audit_key_load(path, generate, &k, NULL, &err) != HS_OK) {
    fprintf(stderr, "handsel key: %s\n", err.msg);
    return 1;
  }
  hs_buf_t pem;
  hs_buf_init(&pem, 0);
  int rc = hs_audit_key_public_pem(k, &pem);
  hs_buf_t b64;
  hs_buf_init(&b64, 0);
  if (rc == HS_OK) {
    rc = hs_base64_encode(hs_audit_key_public(k), 32, &b64);
  }
  if (rc == HS_OK) {
    if (generate) {
      printf("wrote %s\n", path);
    }
    printf("key id: %s\npublic key: %.*s\n%.*s", hs_audit_key_id(k), (int)b64.len,
           (const char *)b64.data, (int)pem.len, (const char *)pem.data);
  }
  hs_buf_free(&b64);
  hs_buf_free(&pem);
  hs_audit_key_free(k);
  return rc == HS_OK ? 0 : 1;
}
