/* Deploying a directory of process files at start-up (`HANDSEL_PROCESSES`), so that a
 * development server or a demo comes up with its processes ready. Each file is checked by the
 * engine exactly as PUT /v1/processes does, stored as a version of the brand
 * `HANDSEL_PROCESSES_BRAND` (default "demo", created if missing) and made active. */
#ifndef HS_STORE_SEED_H
#define HS_STORE_SEED_H

#include <stdio.h>

#include "core/error.h"

/* Blocking libpq: call it before any event loop runs. Reports each file on log (may be NULL).
 * Fails on the first file that does not check, naming it and the line. */
int hs_seed_processes(const char *conninfo, const char *dir, const char *brand, FILE *log,
                      hs_err_t *err);

#endif
