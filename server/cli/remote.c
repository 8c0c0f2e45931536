/* The options shared by the commands that talk to a running server: where it is (--server,
 * HANDSEL_SERVER), who we are (--token, HANDSEL_TOKEN), whom to trust (--ca, HANDSEL_CA) and
 * how long to wait (--timeout). */
#include <stdlib.h>
#include <string.h>

#include "cli/client.h"
#include "cli/commands.h"

static const char *env_or_null(const char *name) {
  const char *v = getenv(name);
  return v != NULL && *v != '\0' ? v : NULL;
}

void hs_cli_remote_init(hs_cli_remote_t *r) {
  r->server = env_or_null("HANDSEL_SERVER");
  r->token = env_or_null("HANDSEL_TOKEN");
  r->ca = env_or_null("HANDSEL_CA");
  r->timeout_ms = 0;
}

int hs_cli_option_value(const char *cmd, const char *name, int argc, char **argv, int *i,
                        const char **value) {
  const char *arg = argv[*i];
  size_t n = strlen(name);
  if (strncmp(arg, name, n) != 0) {
    return 0;
  }
  if (arg[n] == '=') {
    *value = arg + n + 1;
    return 1;
  }
  if (arg[n] != '\0') {
    return 0;
  }
  if (*i + 1 >= argc) {
    fprintf(stderr, "handsel %s: %s needs a value\n", cmd, name);
    return -2;
  }
  *value = argv[++*i];
  return 1;
}

int hs_cli_remote_option(hs_cli_remote_t *r, const char *cmd, int argc, char **argv, int *i) {
  const char *v = NULL;
  int rc;
  if ((rc = hs_cli_option_value(cmd, "--server", argc, argv, i, &v)) != 0) {
    r->server = v;
    return rc;
  }
  if ((rc = hs_cli_option_value(cmd, "--token", argc, argv, i, &v)) != 0) {
    r->token = v;
    return rc;
  }
  if ((rc = hs_cli_option_value(cmd, "--ca", argc, argv, i, &v)) != 0) {
    r->ca = v;
    return rc;
  }
  if ((rc = hs_cli_option_value(cmd, "--timeout", argc, argv, i, &v)) != 0) {
    if (rc < 0) {
      return rc;
    }
    char *end = NULL;
    long s = strtol(v, &end, 10);
    if (end == v || *end != '\0' || s < 1 || s > 86400) {
      fprintf(stderr, "handsel %s: --timeout takes whole seconds, from 1 to 86400\n", cmd);
      return -2;
    }
    r->timeout_ms = (int)s * 1000;
    return 1;
  }
  return 0;
}

int hs_cli_remote_check(const hs_cli_remote_t *r, const char *cmd) {
  if (r->server == NULL || *r->server == '\0') {
    fprintf(stderr,
            "handsel %s: which server? pass --server URL or set HANDSEL_SERVER, e.g. "
            "https://handsel.example.com\n",
            cmd);
    return -2;
  }
  if (r->token == NULL || *r->token == '\0') {
    fprintf(stderr, "handsel %s: no token: set HANDSEL_TOKEN (or pass --token T)\n", cmd);
    return -2;
  }
  /* A header value holds visible ASCII only; anything else is a mistake in pasting the token
   * (a newline, a space), better named here than refused by the server. The token itself is
   * never printed. */
  for (const char *p = r->token; *p != '\0'; p++) {
    if (*p <= ' ' || *p >= 0x7f) {
      fprintf(stderr,
              "handsel %s: the token holds a space, a line break or another character a token "
              "cannot have: check how it was copied\n",
              cmd);
      return -2;
    }
  }
  return 0;
}
