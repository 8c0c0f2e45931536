#include "cli/commands.h"

#include <stdlib.h>
#include <string.h>

#include "db/migrate.h"

void hs_cmd_migrate_help(FILE *out) {
  fputs("usage: handsel migrate [--db CONNINFO] [--status]\n"
        "\n"
        "Applies the database schema migrations this handsel carries, in order, each in its own\n"
        "transaction. Safe to run on several nodes at once (they take turns) and to run again\n"
        "(it applies only what is missing). --status only prints the versions.\n"
        "\n"
        "  --db CONNINFO   libpq connection string (default: HANDSEL_DB)\n",
        out);
}

int hs_cmd_migrate_main(int argc, char **argv) {
  const char *db = getenv("HANDSEL_DB");
  int status_only = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      hs_cmd_migrate_help(stdout);
      return 0;
    } else if (strcmp(argv[i], "--db") == 0 && i + 1 < argc) {
      db = argv[++i];
    } else if (strcmp(argv[i], "--status") == 0) {
      status_only = 1;
    } else {
      fprintf(stderr, "handsel migrate: unknown argument '%s' (see handsel migrate --help)\n",
              argv[i]);
      return 2;
    }
  }
  if (db == NULL || *db == '\0') {
    fprintf(stderr, "handsel migrate: no database: set HANDSEL_DB or pass --db CONNINFO\n");
    return 2;
  }
  if (status_only) {
    printf("this handsel carries migrations up to version %d\n", hs_migrate_latest());
    for (size_t i = 0; i < hs_migrations_len; i++) {
      printf("  %s\n", hs_migrations[i].name);
    }
    return 0;
  }
  hs_err_t err;
  hs_err_clear(&err);
  int applied = 0;
  if (hs_migrate_run(db, stdout, &applied, &err) != HS_OK) {
    fprintf(stderr, "handsel migrate: %s\n", err.msg);
    return 1;
  }
  printf("schema is at version %d (%d migration%s applied)\n", hs_migrate_latest(), applied,
         applied == 1 ? "" : "s");
  return 0;
}
