/* handsel: one binary, many commands. Each command lives in server/cli/ and has a help text;
 * this file only dispatches. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

#ifdef HANDSEL_MIMALLOC
#include <mimalloc.h>
#endif

typedef struct command {
  const char *name;
  const char *summary;
  int (*main)(int argc, char **argv);
  void (*help)(FILE *out);
} command_t;

static const command_t k_commands[] = {
    {"serve", "serve the HTTP/2 API", hs_cmd_serve_main, hs_cmd_serve_help},
    {"migrate", "apply the database schema migrations", hs_cmd_migrate_main, hs_cmd_migrate_help},
    {"brand", "create a brand (a tenant)", hs_cmd_brand_main, hs_cmd_brand_help},
    {"token", "create, list and revoke API tokens", hs_cmd_token_main, hs_cmd_token_help},
    {"check", "check process scripts without running them", hs_cmd_check_main, hs_cmd_check_help},
    {"test", "run the test scenarios of process scripts, offline", hs_cmd_test_main,
     hs_cmd_test_help},
    {"verify", "check an export of the compliance log against the public key", hs_cmd_verify_main,
     hs_cmd_verify_help},
    {"key", "make the key that signs the compliance log, or print its public half", hs_cmd_key_main,
     hs_cmd_key_help},
    {"audit", "check that a session's compliance log follows from its inputs", hs_cmd_audit_main,
     hs_cmd_audit_help},
    {"deploy", "upload process scripts to a running server", hs_cmd_deploy_main,
     hs_cmd_deploy_help},
    {"export", "export validation records from a running server", hs_cmd_export_main,
     hs_cmd_export_help},
    {"report", "show which suggested content works, as a table and a chart", hs_cmd_report_main,
     hs_cmd_report_help},
};
enum { N_COMMANDS = sizeof k_commands / sizeof k_commands[0] };

static void usage(FILE *out) {
  fputs("usage: handsel COMMAND [ARGS]\n\ncommands:\n", out);
  for (size_t i = 0; i < N_COMMANDS; i++) {
    fprintf(out, "  %-10s %s\n", k_commands[i].name, k_commands[i].summary);
  }
  fputs("  help       show this text, or `handsel help COMMAND` for one command\n"
        "  version    print the version\n",
        out);
}

static const command_t *find(const char *name) {
  for (size_t i = 0; i < N_COMMANDS; i++) {
    if (strcmp(k_commands[i].name, name) == 0) {
      return &k_commands[i];
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *name = argv[1];
  if (strcmp(name, "help") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
    if (argc > 2) {
      const command_t *c = find(argv[2]);
      if (c == NULL) {
        fprintf(stderr, "handsel: no command '%s'\n\n", argv[2]);
        usage(stderr);
        return 2;
      }
      c->help(stdout);
      return 0;
    }
    usage(stdout);
    return 0;
  }
  if (strcmp(name, "version") == 0 || strcmp(name, "--version") == 0) {
    printf("handsel %s\n", HANDSEL_VERSION);
#ifdef HANDSEL_MIMALLOC
    /* Also keeps the link to mimalloc, whose malloc replaces the C library's for every
     * library in the process (the engine, nghttp2 and libpq allocate on every request). */
    int v = mi_version();
    printf("allocator mimalloc %d.%d.%d\n", v / 100, v / 10 % 10, v % 10);
#endif
    return 0;
  }
  const command_t *c = find(name);
  if (c == NULL) {
    fprintf(stderr, "handsel: no command '%s'\n\n", name);
    usage(stderr);
    return 2;
  }
  return c->main(argc - 1, argv + 1);
}
