/* `handsel brand create` and `handsel token create|list|revoke`: bootstrapping tenants and
 * their first tokens straight against the database (blocking libpq: a command, not the
 * server). A new token's secret is printed once, alone on the last line, so a script can take
 * it with `| tail -n 1`. */
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "api/auth.h"
#include "api/common.h"
#include "cli/commands.h"
#include "core/ids.h"

static PGconn *connect_db(const char *cmd, const char *db) {
  if (db == NULL || *db == '\0') {
    fprintf(stderr, "handsel %s: no database: set HANDSEL_DB or pass --db CONNINFO\n", cmd);
    return NULL;
  }
  PGconn *pg = PQconnectdb(db);
  if (PQstatus(pg) != CONNECTION_OK) {
    fprintf(stderr, "handsel %s: cannot connect to the database: %s", cmd, PQerrorMessage(pg));
    PQfinish(pg);
    return NULL;
  }
  return pg;
}

/* Runs one statement; on failure prints the database's message and returns NULL. */
static PGresult *run(const char *cmd, PGconn *pg, const char *sql, int n, const char *const *v) {
  PGresult *r = PQexecParams(pg, sql, n, NULL, v, NULL, NULL, 0);
  ExecStatusType st = PQresultStatus(r);
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    fprintf(stderr, "handsel %s: %s", cmd, PQresultErrorMessage(r));
    PQclear(r);
    return NULL;
  }
  return r;
}

void hs_cmd_brand_help(FILE *out) {
  fputs("usage: handsel brand create NAME [--db CONNINFO]\n"
        "\n"
        "Creates a brand (a tenant). NAME is lower-case letters, digits and dashes, at most 64.\n"
        "Everything of a brand is invisible to every other brand. Then make its first admin\n"
        "token with `handsel token create --brand NAME --role admin --subject YOU`.\n",
        out);
}

int hs_cmd_brand_main(int argc, char **argv) {
  const char *db = getenv("HANDSEL_DB");
  const char *name = NULL;
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    hs_cmd_brand_help(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (strcmp(argv[1], "create") != 0) {
    fprintf(stderr, "handsel brand: unknown action '%s' (see handsel brand --help)\n", argv[1]);
    return 2;
  }
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--db") == 0 && i + 1 < argc) {
      db = argv[++i];
    } else if (name == NULL && argv[i][0] != '-') {
      name = argv[i];
    } else {
      fprintf(stderr, "handsel brand: unexpected argument '%s'\n", argv[i]);
      return 2;
    }
  }
  if (name == NULL || !hs_api_valid_name(name)) {
    fprintf(stderr, "handsel brand create: the name must be lower-case letters, digits and "
                    "dashes, at most 64, starting with a letter or digit\n");
    return 2;
  }
  PGconn *pg = connect_db("brand", db);
  if (pg == NULL) {
    return 1;
  }
  const char *v[] = {name};
  PGresult *r = run("brand", pg,
                    "INSERT INTO brands (name) VALUES ($1) ON CONFLICT (name) DO NOTHING "
                    "RETURNING id",
                    1, v);
  int rc = 1;
  if (r != NULL) {
    if (PQntuples(r) == 1) {
      printf("created brand %s\n", name);
      rc = 0;
    } else {
      fprintf(stderr, "handsel brand create: the brand %s exists already\n", name);
    }
    PQclear(r);
  }
  PQfinish(pg);
  return rc;
}

void hs_cmd_token_help(FILE *out) {
  fputs("usage: handsel token create --brand B --role R --subject S [--name TEXT] [--db CONNINFO]\n"
        "       handsel token list [--brand B] [--db CONNINFO]\n"
        "       handsel token revoke ID [--db CONNINFO]\n"
        "\n"
        "create  makes a token for the brand B with role R (admin, author, contractor or\n"
        "        compliance) held by S (a contractor's id, or a person's login); --name is the\n"
        "        name scripts show (visit.contractor.name). The secret is printed once, alone\n"
        "        on the last line; only its hash is stored.\n"
        "list    shows the tokens (never their secrets), revoked ones marked.\n"
        "revoke  ends a token at once, on every server.\n",
        out);
}

static int token_create(PGconn *pg, const char *brand, const char *role, const char *subject,
                        const char *name) {
  hs_role_t r;
  if (brand == NULL || role == NULL || subject == NULL || hs_role_parse(role, &r) != HS_OK ||
      *subject == '\0' || strlen(subject) > 128 || (name != NULL && strlen(name) > 128)) {
    fprintf(stderr, "handsel token create: needs --brand, --role (admin, author, contractor or "
                    "compliance) and --subject (1 to 128 bytes)\n");
    return 2;
  }
  char id[37], token[HS_TOKEN_LEN + 1], hash[65];
  if (hs_uuid_v4(id) != HS_OK || hs_token_new(token, hash) != HS_OK) {
    fprintf(stderr, "handsel token create: the system has no randomness to give\n");
    return 1;
  }
  const char *v[] = {id, brand, role, subject, name != NULL ? name : "", hash};
  PGresult *res = run("token", pg,
                      "INSERT INTO tokens (id, brand_id, role, subject, name, hash, created_by)"
                      " SELECT $1, id, $3, $4, $5, decode($6, 'hex'), 'handsel token create'"
                      " FROM brands WHERE name = $2 RETURNING id",
                      6, v);
  if (res == NULL) {
    return 1;
  }
  int ok = PQntuples(res) == 1;
  PQclear(res);
  if (!ok) {
    fprintf(stderr, "handsel token create: there is no brand %s (handsel brand create %s)\n", brand,
            brand);
    return 1;
  }
  printf("token %s: role %s for %s of brand %s\n", id, role, subject, brand);
  printf("%s\n", token);
  return 0;
}

static int token_list(PGconn *pg, const char *brand) {
  const char *v[] = {brand};
  PGresult *res = run("token", pg,
                      "SELECT t.id, b.name, t.role, t.subject, t.name,"
                      " to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'),"
                      " t.revoked_at IS NOT NULL FROM tokens t JOIN brands b ON b.id = t.brand_id"
                      " WHERE $1::text IS NULL OR b.name = $1 ORDER BY b.name, t.created_at",
                      1, v);
  if (res == NULL) {
    return 1;
  }
  printf("%-36s  %-16s  %-10s  %-20s  %-16s  %s\n", "ID", "BRAND", "ROLE", "SUBJECT", "CREATED",
         "STATE");
  for (int i = 0; i < PQntuples(res); i++) {
    printf("%-36s  %-16s  %-10s  %-20s  %-16s  %s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
           PQgetvalue(res, i, 2), PQgetvalue(res, i, 3), PQgetvalue(res, i, 5),
           strcmp(PQgetvalue(res, i, 6), "t") == 0 ? "revoked" : "active");
  }
  PQclear(res);
  return 0;
}

static int token_revoke(PGconn *pg, const char *id) {
  if (id == NULL || !hs_uuid_valid(id)) {
    fprintf(stderr, "handsel token revoke: give the token's id (from handsel token list)\n");
    return 2;
  }
  const char *v[] = {id};
  /* The notification commits with the revocation: every server drops the token at once. */
  PGresult *res = run("token", pg,
                      "WITH t AS (UPDATE tokens SET revoked_at = coalesce(revoked_at, now())"
                      " WHERE id = $1 RETURNING encode(hash, 'hex') AS h)"
                      " SELECT pg_notify('handsel_token', h) FROM t",
                      1, v);
  if (res == NULL) {
    return 1;
  }
  int ok = PQntuples(res) == 1;
  PQclear(res);
  if (!ok) {
    fprintf(stderr, "handsel token revoke: there is no token %s\n", id);
    return 1;
  }
  printf("revoked token %s\n", id);
  return 0;
}

int hs_cmd_token_main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    hs_cmd_token_help(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const char *action = argv[1];
  const char *db = getenv("HANDSEL_DB");
  const char *brand = NULL, *role = NULL, *subject = NULL, *name = NULL, *id = NULL;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    const char *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--db") == 0 && val != NULL) {
      db = val;
    } else if (strcmp(a, "--brand") == 0 && val != NULL) {
      brand = val;
    } else if (strcmp(a, "--role") == 0 && val != NULL) {
      role = val;
    } else if (strcmp(a, "--subject") == 0 && val != NULL) {
      subject = val;
    } else if (strcmp(a, "--name") == 0 && val != NULL) {
      name = val;
    } else if (id == NULL && a[0] != '-') {
      id = a;
      continue;
    } else {
      fprintf(stderr, "handsel token: unexpected argument '%s' (see handsel token --help)\n", a);
      return 2;
    }
    i++;
  }
  if (strcmp(action, "create") != 0 && strcmp(action, "list") != 0 &&
      strcmp(action, "revoke") != 0) {
    fprintf(stderr, "handsel token: unknown action '%s' (create, list or revoke)\n", action);
    return 2;
  }
  PGconn *pg = connect_db("token", db);
  if (pg == NULL) {
    return 1;
  }
  int rc = strcmp(action, "create") == 0 ? token_create(pg, brand, role, subject, name)
           : strcmp(action, "list") == 0 ? token_list(pg, brand)
                                         : token_revoke(pg, id);
  PQfinish(pg);
  return rc;
}
