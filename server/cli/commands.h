/* The `handsel` subcommands. Each *_main takes the subcommand's own argv (argv[0] is the
 * subcommand name, e.g. "check") and returns the process exit status; each *_help writes its
 * usage to out. main.c dispatches on argv[1]. */
#ifndef HS_CLI_COMMANDS_H
#define HS_CLI_COMMANDS_H

#include <stdio.h>

/* handsel check FILE…: loads each process file in the sandbox and reports its name and
 * version, or the file:line of what to fix. Exit 0 when all load, 1 otherwise, 2 on usage. */
int hs_cmd_check_main(int argc, char **argv);
void hs_cmd_check_help(FILE *out);

/* handsel test FILE…: runs each file's `tests` scenarios offline. Exit 0 when every scenario
 * of every file passes, 1 otherwise, 2 on usage. */
int hs_cmd_test_main(int argc, char **argv);
void hs_cmd_test_help(FILE *out);

/* For commands that take FILE…: handles --help and a leading "--", and returns the index of
 * the first file; or 0 when help was shown (exit 0) and -2 on a usage error (exit 2: the
 * usage went to stderr). */
int hs_cli_first_file(int argc, char **argv, void (*help)(FILE *out));

/* handsel deploy FILE…: checks each process file locally, then uploads it to a running
 * server (deploy.c). Exit 0 when every file was deployed, 1 otherwise, 2 on usage. */
int hs_cmd_deploy_main(int argc, char **argv);
void hs_cmd_deploy_help(FILE *out);

/* handsel export: streams validation records from a running server into a file or stdout
 * (export.c). Exit 0 when the export is complete, 1 otherwise, 2 on usage. */
int hs_cmd_export_main(int argc, char **argv);
void hs_cmd_export_help(FILE *out);

/* How the commands that talk to a server find it (remote.c). Strings are borrowed from argv
 * or the environment. */
typedef struct hs_cli_remote {
  const char *server; /* --server, else HANDSEL_SERVER */
  const char *token;  /* --token, else HANDSEL_TOKEN; never printed */
  const char *ca;     /* --ca, else HANDSEL_CA; NULL for the system's trust store */
  int timeout_ms;     /* --timeout SECONDS; 0 for the client's default */
} hs_cli_remote_t;

/* Fills r from the HANDSEL_SERVER, HANDSEL_TOKEN and HANDSEL_CA environment variables. */
void hs_cli_remote_init(hs_cli_remote_t *r);

/* Takes the option at argv[*i] if it is one of --server, --token, --ca or --timeout (as
 * `--opt VALUE` or `--opt=VALUE`), advancing *i past its value. Returns 1 when taken, 0 when
 * argv[*i] is not one of them, -2 on a usage error (printed to stderr, naming cmd). */
int hs_cli_remote_option(hs_cli_remote_t *r, const char *cmd, int argc, char **argv, int *i);

/* For options of the commands themselves: when argv[*i] is `--name VALUE` or `--name=VALUE`,
 * sets *value (borrowed from argv), advances *i and returns 1; returns 0 when argv[*i] is not
 * --name, -2 when its value is missing (printed to stderr). */
int hs_cli_option_value(const char *cmd, const char *name, int argc, char **argv, int *i,
                        const char **value);

/* Checks that a server and a token were given and that the token can travel in a header.
 * Returns 0, or -2 after printing to stderr what to pass. */
int hs_cli_remote_check(const hs_cli_remote_t *r, const char *cmd);

/* handsel serve: runs the HTTP/2 server until SIGTERM or SIGINT (serve.c). */
int hs_cmd_serve_main(int argc, char **argv);
void hs_cmd_serve_help(FILE *out);

/* handsel migrate: applies the embedded schema migrations (migrate.c). */
int hs_cmd_migrate_main(int argc, char **argv);
void hs_cmd_migrate_help(FILE *out);

/* handsel brand create NAME; handsel token create|list|revoke (tokens.c). */
int hs_cmd_brand_main(int argc, char **argv);
void hs_cmd_brand_help(FILE *out);
int hs_cmd_token_main(int argc, char **argv);
void hs_cmd_token_help(FILE *out);

/* handsel verify FILE --key PUB; handsel key generate|public FILE (cmd_verify.c). */
int hs_cmd_verify_main(int argc, char **argv);
void hs_cmd_verify_help(FILE *out);
int hs_cmd_key_main(int argc, char **argv);
void hs_cmd_key_help(FILE *out);
/* handsel audit replay SESSION: re-runs a session's pinned version over its recorded inputs and
 * says which attempts of its compliance log do not follow from them (cmd_audit.c). Exit 0 when
 * all do, 1 when one does not, 2 when the audit cannot be made. */
int hs_cmd_audit_main(int argc, char **argv);
void hs_cmd_audit_help(FILE *out);
/* handsel report --process NAME [--brand B] [--svg FILE]: the content stats as a table and a
 * chart, read from the database (report.c). Exit 0, 1 on failure, 2 on usage. */
int hs_cmd_report_main(int argc, char **argv);
void hs_cmd_report_help(FILE *out);

#endif
