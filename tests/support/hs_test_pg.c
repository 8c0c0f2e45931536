#include "hs_test_pg.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/error.h"

#define PG_BIN_DEFAULT "/usr/lib/postgresql/15/bin"
#define PG_PORT        "5432" /* only names the socket file: the cluster has its own directory */
#define CMD_TIMEOUT_MS 60000

/* ---- the shared database ---- */

const char *hs_test_db_must(void) {
  const char *db = getenv("HANDSEL_DB");
  if (db == NULL || db[0] == '\0') {
    fail_msg("HANDSEL_DB is not set: this test needs a migrated PostgreSQL database. Run it "
             "through scripts/test (which exports HANDSEL_DB), or start one with "
             "`scripts/pg start && scripts/pg fresh-db handsel_test`, then "
             "`eval \"$(scripts/pg env handsel_test)\"` and `handsel migrate`");
  }
  return db;
}

PGconn *hs_test_db_connect(const char *conninfo) {
  const char *keys[] = {"connect_timeout", "dbname", NULL};
  const char *values[] = {"5", conninfo, NULL};
  PGconn *db = PQconnectdbParams(keys, values, 1);
  if (db == NULL || PQstatus(db) != CONNECTION_OK) {
    fprintf(stderr, "cannot connect to PostgreSQL (%s): %s", conninfo,
            db != NULL ? PQerrorMessage(db) : "out of memory\n");
    PQfinish(db);
    return NULL;
  }
  return db;
}

PGconn *hs_test_db_must_connect(const char *conninfo) {
  PGconn *db = hs_test_db_connect(conninfo);
  if (db == NULL) {
    fail_msg("cannot connect to PostgreSQL with %s (the reason is above)", conninfo);
  }
  return db;
}

PGresult *hs_test_db_query(PGconn *db, const char *sql, int n, const char *const *params) {
  PGresult *r = PQexecParams(db, sql, n, NULL, params, NULL, NULL, 0);
  ExecStatusType st = PQresultStatus(r);
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    fprintf(stderr, "query failed: %s\n  %s", sql, PQerrorMessage(db));
    PQclear(r);
    return NULL;
  }
  return r;
}

long long hs_test_db_scalar(PGconn *db, const char *sql, int n, const char *const *params) {
  PGresult *r = hs_test_db_query(db, sql, n, params);
  if (r == NULL) {
    return -1;
  }
  long long v = -1;
  if (PQntuples(r) >= 1 && PQnfields(r) >= 1 && !PQgetisnull(r, 0, 0)) {
    v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
  }
  PQclear(r);
  return v;
}

/* ---- running commands ---- */

static void print_file_tail(const char *path, size_t max_bytes) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    return;
  }
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  long from = size > (long)max_bytes ? size - (long)max_bytes : 0;
  fseek(f, from, SEEK_SET);
  char buf[4096];
  size_t n;
  fprintf(stderr, "---- %s ----\n", path);
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
    fwrite(buf, 1, n, stderr);
  }
  fprintf(stderr, "---- end ----\n");
  fclose(f);
}

/* Runs argv (as `owner` through runuser when owner is not ""), with `env` ("NAME=value" or
 * NULL) added, stdout and stderr appended to out_path, from /. Waits at most timeout_ms, then
 * kills it. Returns 0 when it exited with status 0. */
static int run(const char *owner, const char *const *argv, const char *env, const char *out_path,
               int timeout_ms) {
  const char *full[32];
  size_t k = 0;
  if (owner[0] != '\0') {
    full[k++] = "runuser";
    full[k++] = "-u";
    full[k++] = owner;
    full[k++] = "--";
  }
  for (size_t i = 0; argv[i] != NULL && k < 31; i++) {
    full[k++] = argv[i];
  }
  full[k] = NULL;
  int out = open(out_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out < 0) {
    return HS_EIO;
  }
  pid_t pid = fork();
  if (pid < 0) {
    close(out);
    return HS_EIO;
  }
  if (pid == 0) {
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) {
      dup2(devnull, 0);
    }
    dup2(out, 1);
    dup2(out, 2);
    if (chdir("/") != 0) {
      _exit(126);
    }
    if (env != NULL) {
      putenv((char *)env);
    }
    execvp(full[0], (char *const *)full);
    _exit(127);
  }
  close(out);
  long long deadline = hs_test_now_ms() + timeout_ms;
  for (;;) {
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? HS_OK : HS_EIO;
    }
    if (r < 0 && errno != EINTR) {
      return HS_EIO;
    }
    if (hs_test_now_ms() > deadline) {
      fprintf(stderr, "%s did not finish within %d ms: killed\n", full[0], timeout_ms);
      kill(pid, SIGKILL);
      waitpid(pid, NULL, 0);
      return HS_EUNAVAIL;
    }
    hs_test_sleep_ms(20);
  }
}

int hs_test_db_migrate(const char *conninfo) {
  const char *bin = getenv("HANDSEL_BIN");
  if (bin == NULL || bin[0] == '\0') {
    fprintf(stderr, "HANDSEL_BIN is not set: run the integration tests through ctest\n");
    return HS_EINVAL;
  }
  char out[HS_TEST_PATH_MAX];
  snprintf(out, sizeof out, "%s/migrate-%d.log", hs_test_tmpdir(), (int)getpid());
  /* The environment entry must outlive the child's putenv: it is copied at exec. */
  size_t n = strlen(conninfo) + 16;
  char *env = malloc(n);
  if (env == NULL) {
    return HS_ENOMEM;
  }
  snprintf(env, n, "HANDSEL_DB=%s", conninfo);
  const char *argv[] = {bin, "migrate", NULL};
  int rc = run("", argv, env, out, CMD_TIMEOUT_MS);
  free(env);
  if (rc != HS_OK) {
    print_file_tail(out, 4000);
  }
  return rc;
}

/* ---- a private cluster ---- */

static const char *pg_bin(void) {
  const char *b = getenv("HANDSEL_PG_BIN");
  return b != NULL && b[0] != '\0' ? b : PG_BIN_DEFAULT;
}

static int pg_ctl(hs_test_pg_t *pg, const char *action, const char *mode) {
  char exe[HS_TEST_PATH_MAX];
  snprintf(exe, sizeof exe, "%s/pg_ctl", pg_bin());
  const char *argv[16];
  size_t k = 0;
  argv[k++] = exe;
  argv[k++] = "-D";
  argv[k++] = pg->data;
  argv[k++] = "-l";
  argv[k++] = pg->log;
  argv[k++] = "-w";
  argv[k++] = "-t";
  argv[k++] = "60";
  if (mode != NULL) {
    argv[k++] = "-m";
    argv[k++] = mode;
  }
  argv[k++] = action;
  argv[k] = NULL;
  return run(pg->owner, argv, NULL, pg->cmd_log, CMD_TIMEOUT_MS + 5000);
}

static int choose_owner(hs_test_pg_t *pg) {
  pg->owner[0] = '\0';
  if (geteuid() != 0) {
    return HS_OK;
  }
  static const char *const users[] = {"postgres", "handsel"};
  for (size_t i = 0; i < 2; i++) {
    if (getpwnam(users[i]) != NULL) {
      snprintf(pg->owner, sizeof pg->owner, "%s", users[i]);
      return HS_OK;
    }
  }
  fprintf(stderr, "running as root, and neither the user postgres nor handsel exists to run a "
                  "private PostgreSQL: run scripts/pg start once (it creates handsel)\n");
  return HS_EINVAL;
}

static int make_owned_dir(const hs_test_pg_t *pg, const char *path, mode_t mode) {
  if (mkdir(path, mode) != 0 && errno != EEXIST) {
    return HS_EIO;
  }
  if (pg->owner[0] != '\0') {
    struct passwd *pw = getpwnam(pg->owner);
    if (pw == NULL || chown(path, pw->pw_uid, pw->pw_gid) != 0) {
      return HS_EIO;
    }
  }
  return chmod(path, mode) == 0 ? HS_OK : HS_EIO;
}

static void remove_tree(const hs_test_pg_t *pg, const char *path) {
  char log[HS_TEST_PATH_MAX];
  snprintf(log, sizeof log, "%s/rm.log", hs_test_tmpdir());
  const char *argv[] = {"rm", "-rf", path, NULL};
  run("", argv, NULL, log, CMD_TIMEOUT_MS);
}

/* A cluster left by a test that was killed (its postmaster survives it) is stopped and removed
 * before the directory is used again. */
static void clear_leftover(hs_test_pg_t *pg) {
  char pid_file[HS_TEST_PATH_MAX + 32];
  snprintf(pid_file, sizeof pid_file, "%s/postmaster.pid", pg->data);
  if (access(pid_file, F_OK) == 0) {
    pg_ctl(pg, "stop", "immediate");
  }
  remove_tree(pg, pg->dir);
}

static void set_paths(hs_test_pg_t *pg, const char *root) {
  snprintf(pg->dir, sizeof pg->dir, "%s", root);
  snprintf(pg->data, sizeof pg->data, "%.400s/data", root);
  snprintf(pg->sock, sizeof pg->sock, "%.400s/sock", root);
  snprintf(pg->log, sizeof pg->log, "%.400s/log", root);
  snprintf(pg->cmd_log, sizeof pg->cmd_log, "%.400s/commands.log", root);
}

/* Can the owner create files in dir (and so reach it)? */
static bool owner_can_use(const hs_test_pg_t *pg, const char *dir) {
  if (pg->owner[0] == '\0') {
    return access(dir, W_OK | X_OK) == 0;
  }
  char log[HS_TEST_PATH_MAX];
  snprintf(log, sizeof log, "%s/probe.log", hs_test_tmpdir());
  const char *argv[] = {"test", "-w", dir, "-a", "-x", dir, NULL};
  return run(pg->owner, argv, NULL, log, 10000) == HS_OK;
}

static int write_config(const hs_test_pg_t *pg) {
  char path[HS_TEST_PATH_MAX + 32];
  snprintf(path, sizeof path, "%s/postgresql.conf", pg->data);
  FILE *f = fopen(path, "a");
  if (f == NULL) {
    return HS_EIO;
  }
  fprintf(f,
          "\n# Added by the integration tests' private cluster.\n"
          "listen_addresses = ''\n"
          "port = " PG_PORT "\n"
          "unix_socket_directories = '%s'\n"
          "fsync = on\n"
          "synchronous_commit = on\n"
          "shared_buffers = 32MB\n"
          "max_connections = 100\n",
          pg->sock);
  return fclose(f) == 0 ? HS_OK : HS_EIO;
}

static int create_database(hs_test_pg_t *pg) {
  char admin[HS_TEST_PATH_MAX + 64];
  snprintf(admin, sizeof admin, "host=%s port=" PG_PORT " dbname=postgres user=postgres", pg->sock);
  PGconn *db = hs_test_db_connect(admin);
  if (db == NULL) {
    return HS_EUNAVAIL;
  }
  PGresult *r = hs_test_db_query(db, "CREATE DATABASE handsel", 0, NULL);
  PQclear(r);
  PQfinish(db);
  return r != NULL ? HS_OK : HS_EIO;
}

int hs_test_pg_create(hs_test_pg_t *pg, const char *name) {
  memset(pg, 0, sizeof *pg);
  int rc = choose_owner(pg);
  if (rc != HS_OK) {
    return rc;
  }
  char root[HS_TEST_PATH_MAX];
  snprintf(root, sizeof root, "%.300s/pg-%.60s", hs_test_tmpdir(), name);
  /* The socket path must fit in sockaddr_un (107 bytes) with "/.s.PGSQL.5432" after it, and the
   * owner must reach the directory; otherwise the cluster lives under /tmp. */
  if (strlen(root) + strlen("/sock/.s.PGSQL." PG_PORT) > 100 ||
      !owner_can_use(pg, hs_test_tmpdir())) {
    snprintf(root, sizeof root, "/tmp/handsel-test-pg-%.60s-%d", name, (int)getuid());
  }
  set_paths(pg, root);
  clear_leftover(pg);
  if (make_owned_dir(pg, pg->dir, 0700) != HS_OK || make_owned_dir(pg, pg->sock, 0700) != HS_OK) {
    fprintf(stderr, "cannot create %s for the private PostgreSQL\n", pg->dir);
    remove_tree(pg, pg->dir);
    return HS_EIO;
  }
  pg->created = true;
  if (!owner_can_use(pg, pg->dir)) {
    fprintf(stderr, "user %s cannot use %s for the private PostgreSQL\n", pg->owner, pg->dir);
    hs_test_pg_destroy(pg);
    return HS_EIO;
  }
  char exe[HS_TEST_PATH_MAX];
  snprintf(exe, sizeof exe, "%s/initdb", pg_bin());
  const char *argv[] = {exe,         "-D",          pg->data, "-U",   "postgres", "--auth=trust",
                        "--no-sync", "--no-locale", "-E",     "UTF8", NULL};
  if (run(pg->owner, argv, NULL, pg->cmd_log, CMD_TIMEOUT_MS) != HS_OK) {
    fprintf(stderr, "initdb failed for the private PostgreSQL in %s\n", pg->data);
    hs_test_pg_dump_log(pg, 4000);
    hs_test_pg_destroy(pg);
    return HS_EIO;
  }
  snprintf(pg->conninfo, sizeof pg->conninfo,
           "host=%.400s port=" PG_PORT " dbname=handsel user=postgres", pg->sock);
  if (write_config(pg) != HS_OK || hs_test_pg_start(pg) != HS_OK || create_database(pg) != HS_OK ||
      hs_test_db_migrate(pg->conninfo) != HS_OK) {
    fprintf(stderr, "the private PostgreSQL in %s could not be set up\n", pg->dir);
    hs_test_pg_dump_log(pg, 4000);
    hs_test_pg_destroy(pg);
    return HS_EIO;
  }
  return HS_OK;
}

int hs_test_pg_start(hs_test_pg_t *pg) {
  int rc = pg_ctl(pg, "start", NULL);
  if (rc != HS_OK) {
    hs_test_pg_dump_log(pg, 3000);
    return rc;
  }
  pg->running = true;
  return HS_OK;
}

int hs_test_pg_stop(hs_test_pg_t *pg) {
  int rc = pg_ctl(pg, "stop", "fast");
  if (rc == HS_OK) {
    pg->running = false;
  }
  return rc;
}

void hs_test_pg_destroy(hs_test_pg_t *pg) {
  if (!pg->created) {
    return;
  }
  if (pg->running) {
    pg_ctl(pg, "stop", "immediate");
    pg->running = false;
  }
  remove_tree(pg, pg->dir);
  pg->created = false;
}

void hs_test_pg_dump_log(const hs_test_pg_t *pg, size_t max_bytes) {
  print_file_tail(pg->cmd_log, max_bytes);
  print_file_tail(pg->log, max_bytes);
}
