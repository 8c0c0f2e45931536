#include "store/seed.h"

#include <dirent.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

enum { MAX_SOURCE = 1024 * 1024 };

static char *read_file(const char *path, size_t *len, hs_err_t *err) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    hs_err_set(err, HS_EIO, "cannot read %s", path);
    return NULL;
  }
  char *buf = malloc(MAX_SOURCE + 1);
  size_t n = buf != NULL ? fread(buf, 1, MAX_SOURCE + 1, f) : 0;
  fclose(f);
  if (buf == NULL || n > MAX_SOURCE) {
    free(buf);
    hs_err_set(err, HS_ELIMIT, "%s is larger than %d bytes", path, MAX_SOURCE);
    return NULL;
  }
  buf[n] = '\0';
  *len = n;
  return buf;
}

static int exec_params(PGconn *pg, const char *sql, int n, const char *const *values,
                       hs_err_t *err) {
  PGresult *r = PQexecParams(pg, sql, n, NULL, values, NULL, NULL, 0);
  ExecStatusType st = PQresultStatus(r);
  int rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK
               ? HS_OK
               : hs_err_set(err, HS_EIO, "deploying processes failed: %s", PQresultErrorMessage(r));
  PQclear(r);
  return rc;
}

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

int hs_seed_processes(const char *conninfo, const char *dir, const char *brand, FILE *log,
                      hs_err_t *err) {
  DIR *d = opendir(dir);
  if (d == NULL) {
    return hs_err_set(err, HS_EIO, "HANDSEL_PROCESSES: cannot open the directory %s", dir);
  }
  char *names[256];
  size_t n_names = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL && n_names < 256) {
    size_t len = strlen(e->d_name);
    /* handsel.lua holds editor annotations, not a process. */
    if (len > 4 && strcmp(e->d_name + len - 4, ".lua") == 0 &&
        strcmp(e->d_name, "handsel.lua") != 0) {
      names[n_names++] = strdup(e->d_name);
    }
  }
  closedir(d);
  qsort(names, n_names, sizeof names[0], by_name);

  PGconn *pg = PQconnectdb(conninfo);
  int rc = HS_OK;
  if (PQstatus(pg) != CONNECTION_OK) {
    rc = hs_err_set(err, HS_EUNAVAIL, "cannot connect to the database: %s", PQerrorMessage(pg));
  }
  if (rc == HS_OK) {
    const char *p[] = {brand};
    rc = exec_params(pg, "INSERT INTO brands (name) VALUES ($1) ON CONFLICT DO NOTHING", 1, p, err);
  }
  for (size_t i = 0; i < n_names && rc == HS_OK; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    size_t len = 0;
    char *src = read_file(path, &len, err);
    if (src == NULL) {
      rc = err->code;
      break;
    }
    hs_vm_t *vm = NULL;
    hs_process_t *proc = NULL;
    rc = hs_vm_new("seed", NULL, &vm, err);
    if (rc == HS_OK) {
      rc = hs_process_load(vm, names[i], src, len, &proc, err);
    }
    if (rc == HS_OK) {
      const char *p[] = {brand, hs_process_name(proc), hs_process_version(proc),
                         hs_process_title(proc), src};
      rc = exec_params(pg,
                       "INSERT INTO process_versions (brand_id, name, version, title, source,"
                       " created_by) SELECT id, $2, $3, $4, $5, 'HANDSEL_PROCESSES' FROM brands"
                       " WHERE name = $1 ON CONFLICT DO NOTHING",
                       5, p, err);
      if (rc == HS_OK) {
        rc = exec_params(pg,
                         "INSERT INTO processes (brand_id, name, active_version)"
                         " SELECT id, $2, $3 FROM brands WHERE name = $1"
                         " ON CONFLICT (brand_id, name) DO UPDATE SET active_version ="
                         " EXCLUDED.active_version, updated_at = now()",
                         3, p, err);
      }
      if (rc == HS_OK && log != NULL) {
        fprintf(log, "deployed %s: %s version %.12s (brand %s)\n", names[i], hs_process_name(proc),
                hs_process_version(proc), brand);
      }
    }
    hs_vm_free(vm);
    free(src);
  }
  PQfinish(pg);
  for (size_t i = 0; i < n_names; i++) {
    free(names[i]);
  }
  return rc;
}
