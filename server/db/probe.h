/* Database readiness, for /readyz: a background check on the main thread's loop that keeps one
 * libpq connection and reads the schema version every second, all non-blocking (uv_poll on the
 * connection's socket). Workers only read the result, an atomic flag, so /readyz never waits
 * on the database. */
#ifndef HS_DB_PROBE_H
#define HS_DB_PROBE_H

#include <stdbool.h>
#include <uv.h>

typedef struct hs_db_probe hs_db_probe_t;

/* Starts probing conninfo on loop. conninfo is copied. Returns NULL when out of memory. The
 * probe is owned by the caller and freed by hs_db_probe_stop (its handles close on loop). */
hs_db_probe_t *hs_db_probe_start(uv_loop_t *loop, const char *conninfo);
void hs_db_probe_stop(hs_db_probe_t *p);

/* True when the last check succeeded within the last few seconds. Any thread. */
bool hs_db_probe_ready(void);
/* A short description of the last failure for /readyz ("connection refused ..."); any thread.
 * Copies at most cap bytes including the NUL. */
void hs_db_probe_last_error(char *dst, size_t cap);

#endif
