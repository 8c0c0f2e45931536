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

/* handsel report --process NAME [--brand B] [--svg FILE]: the content stats as a table and a
 * chart, read from the database (report.c). Exit 0, 1 on failure, 2 on usage. */
int hs_cmd_report_main(int argc, char **argv);
void hs_cmd_report_help(FILE *out);

#endif
