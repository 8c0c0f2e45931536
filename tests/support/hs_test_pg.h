/* PostgreSQL for integration tests: the database a test run provides (HANDSEL_DB), a private
 * cluster that a test may stop and start at will, and small synchronous queries with libpq
 * (the test process is not an event loop, so blocking calls are fine here).
 *
 * Return values follow server/core/error.h: 0 or a negative HS_E* code. */
#ifndef HS_TEST_PG_H
#define HS_TEST_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "hs_test_server.h"

/* The conninfo of the shared, migrated test database (HANDSEL_DB, which scripts/test exports).
 * Fails the current cmocka test, with a message that says how to get one, when it is not set:
 * database tests never skip silently. The string belongs to the environment. */
const char *hs_test_db_must(void);

/* Runs `HANDSEL_BIN migrate` against conninfo and waits for it (at most 60 s). Its output goes
 * to a file under hs_test_tmpdir(), printed on failure. */
int hs_test_db_migrate(const char *conninfo);

/* Connects with libpq (connect_timeout 5 s). Returns the connection (the caller PQfinish'es it)
 * or NULL; the reason is printed to stderr. */
PGconn *hs_test_db_connect(const char *conninfo);

/* Connects or fails the current cmocka test. */
PGconn *hs_test_db_must_connect(const char *conninfo);

/* Runs a query with text parameters (params may be NULL when n is 0) and returns the first
 * column of the first row as a number, or -1 when the query fails or returns no row (the error
 * is printed). Meant for SELECT count(*) ... */
long long hs_test_db_scalar(PGconn *db, const char *sql, int n, const char *const *params);

/* Runs a query and returns its result (the caller PQclear's it), or NULL on failure (printed). */
PGresult *hs_test_db_query(PGconn *db, const char *sql, int n, const char *const *params);

/* A private PostgreSQL cluster that belongs to one test: initdb'd under hs_test_tmpdir() (or
 * under /tmp when the cluster's OS user cannot reach that directory), listening only on a
 * unix socket in its own directory, with fsync and synchronous_commit on like production.
 * PostgreSQL refuses to run as root: run by root, every server command runs through
 * `runuser -u USER --` with USER postgres, else handsel (the user scripts/pg creates). */
typedef struct hs_test_pg {
  char dir[HS_TEST_PATH_MAX];      /* the cluster's root: data/, sock/, log */
  char data[HS_TEST_PATH_MAX];     /* the data directory */
  char sock[HS_TEST_PATH_MAX];     /* the socket directory */
  char log[HS_TEST_PATH_MAX];      /* the server log (written by the owner) */
  char cmd_log[HS_TEST_PATH_MAX];  /* the output of initdb, pg_ctl and the like */
  char conninfo[HS_TEST_PATH_MAX]; /* libpq conninfo of database handsel as role postgres */
  char owner[64];                  /* the OS user that runs it, "" when it is us */
  bool created;
  bool running;
} hs_test_pg_t;

/* Creates the cluster (initdb), starts it, creates database handsel and migrates it. On
 * failure the log is printed and everything made so far is removed. */
int hs_test_pg_create(hs_test_pg_t *pg, const char *name);

/* pg_ctl stop -m fast, waiting at most 60 s. */
int hs_test_pg_stop(hs_test_pg_t *pg);

/* pg_ctl start, waiting at most 60 s until it accepts connections. */
int hs_test_pg_start(hs_test_pg_t *pg);

/* Stops the cluster if it runs (immediate mode) and removes its directory. Safe to call twice
 * and on a zeroed struct. */
void hs_test_pg_destroy(hs_test_pg_t *pg);

/* Prints the tails of the cluster's logs to stderr, to explain a failure. */
void hs_test_pg_dump_log(const hs_test_pg_t *pg, size_t max_bytes);

#endif
