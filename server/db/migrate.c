#include "db/migrate.h"

#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

/* An arbitrary constant: the key of the advisory lock that serializes migrations. */
#define MIGRATE_LOCK_KEY "7234019826"

const char hs_migrate_version_sql[] =
    "SELECT coalesce((SELECT max(version) FROM schema_migrations), 0) "
    "WHERE to_regclass('schema_migrations') IS NOT NULL "
    "UNION ALL SELECT 0 WHERE to_regclass('schema_migrations') IS NULL";

int hs_migrate_latest(void) {
  int v = 0;
  for (size_t i = 0; i < hs_migrations_len; i++) {
    if (hs_migrations[i].version > v) {
      v = hs_migrations[i].version;
    }
  }
  return v;
}

static int exec_ok(PGconn *pg, const char *sql, hs_err_t *err, const char *what) {
  PGresult *r = PQexec(pg, sql);
  ExecStatusType st = PQresultStatus(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    hs_err_set(err, HS_EIO, "%s failed: %s", what, PQresultErrorMessage(r));
    PQclear(r);
    return HS_EIO;
  }
  PQclear(r);
  return HS_OK;
}

int hs_migrate_run(const char *conninfo, FILE *progress, int *applied, hs_err_t *err) {
  *applied = 0;
  PGconn *pg = PQconnectdb(conninfo);
  if (PQstatus(pg) != CONNECTION_OK) {
    hs_err_set(err, HS_EUNAVAIL, "cannot connect to the database (HANDSEL_DB): %s",
               PQerrorMessage(pg));
    PQfinish(pg);
    return HS_EUNAVAIL;
  }
  int rc = exec_ok(pg, "SET client_min_messages = warning", err, "setting up the session");
  if (rc == HS_OK) {
    rc = exec_ok(pg, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", err, "taking the lock");
  }
  if (rc == HS_OK) {
    rc = exec_ok(pg,
                 "CREATE TABLE IF NOT EXISTS schema_migrations ("
                 " version integer PRIMARY KEY, name text NOT NULL,"
                 " applied_at timestamptz NOT NULL DEFAULT now())",
                 err, "creating schema_migrations");
  }
  int current = 0;
  if (rc == HS_OK) {
    PGresult *r = PQexec(pg, hs_migrate_version_sql);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
      current = atoi(PQgetvalue(r, 0, 0));
    } else {
      rc =
          hs_err_set(err, HS_EIO, "reading the schema version failed: %s", PQresultErrorMessage(r));
    }
    PQclear(r);
  }
  if (rc == HS_OK && current > hs_migrate_latest()) {
    rc = hs_err_set(err, HS_ECONFLICT,
                    "the database schema is at version %d but this handsel knows only up to %d: "
                    "run a newer handsel",
                    current, hs_migrate_latest());
  }
  for (size_t i = 0; i < hs_migrations_len && rc == HS_OK; i++) {
    const hs_migration_t *m = &hs_migrations[i];
    if (m->version <= current) {
      continue;
    }
    if (progress != NULL) {
      fprintf(progress, "applying %s ... ", m->name);
      fflush(progress);
    }
    rc = exec_ok(pg, "BEGIN", err, "BEGIN");
    if (rc == HS_OK) {
      rc = exec_ok(pg, m->sql, err, m->name);
    }
    if (rc == HS_OK) {
      char sql[256];
      snprintf(sql, sizeof sql, "INSERT INTO schema_migrations (version, name) VALUES (%d, '%s')",
               m->version, m->name);
      rc = exec_ok(pg, sql, err, "recording the migration");
    }
    if (rc == HS_OK) {
      rc = exec_ok(pg, "COMMIT", err, "COMMIT");
    } else {
      PQclear(PQexec(pg, "ROLLBACK"));
    }
    if (progress != NULL) {
      fputs(rc == HS_OK ? "done\n" : "failed\n", progress);
    }
    if (rc == HS_OK) {
      (*applied)++;
    }
  }
  PQclear(PQexec(pg, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")"));
  PQfinish(pg);
  return rc;
}
