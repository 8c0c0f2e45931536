/* Versioned schema migrations. The SQL lives in server/db/migrations/NNN_name.sql and is
 * embedded into the binary at build time. `handsel migrate` applies what is missing, each in
 * its own transaction, under an advisory lock so that several nodes starting together do not
 * race. `handsel serve` refuses readiness while the schema is behind. */
#ifndef HS_DB_MIGRATE_H
#define HS_DB_MIGRATE_H

#include <stddef.h>
#include <stdio.h>

#include "core/error.h"

typedef struct hs_migration {
  int version;
  const char *name;
  const char *sql;
} hs_migration_t;

/* The embedded migrations, in version order (generated). */
extern const hs_migration_t hs_migrations[];
extern const size_t hs_migrations_len;

/* The version the binary expects: the highest embedded one. */
int hs_migrate_latest(void);

/* Connects (blocking: only for the command line, never on a loop thread), applies every missing
 * migration and reports each on progress (may be NULL). *applied gets how many ran. */
int hs_migrate_run(const char *conninfo, FILE *progress, int *applied, hs_err_t *err);

/* The SQL that returns the schema version in one row, one column ("0" before any migration). */
extern const char hs_migrate_version_sql[];

#endif
