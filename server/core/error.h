/* Error convention, kept everywhere in handsel:
 *
 * - A function that can fail returns int: 0 (HS_OK) on success, a negative HS_E* code on
 *   failure. Nothing else is returned through the return value of a fallible function.
 * - Where a person will read the failure (a client, a brand author, an operator), the function
 *   also takes an `hs_err_t *err` (may be NULL) and fills it with the code and one sentence that
 *   says what was wrong and, where possible, how to fix it.
 * - If a function that takes a callback fails, the callback is never called (as in libuv).
 */
#ifndef HS_CORE_ERROR_H
#define HS_CORE_ERROR_H

#include <stdarg.h>
#include <stddef.h>

typedef enum hs_status {
  HS_OK = 0,
  HS_ENOMEM = -1,       /* an allocation failed or a memory cap was reached */
  HS_EINVAL = -2,       /* malformed input: the caller sent something that cannot be parsed */
  HS_ELIMIT = -3,       /* well-formed input over a configured limit (size, depth, count) */
  HS_EIO = -4,          /* an operating-system call failed */
  HS_ENOTFOUND = -5,    /* no such thing (or another brand's) */
  HS_EUNSUPPORTED = -6, /* understood but not supported (a msgpack ext type, a method) */
  HS_ECONFLICT = -7,    /* state does not allow it */
  HS_ESCRIPT = -8,      /* a brand's script failed */
  HS_EUNAVAIL = -9,     /* a dependency (the database) is unavailable; retry later */
  HS_ECANCELED = -10,   /* the operation was cancelled (stream reset, shutdown) */
  HS_EVALIDATION = -11, /* input was well formed but failed validation */
} hs_status_t;

#define HS_ERR_MSG_MAX 512

/* A failure a person will read. Fixed-size so it can live on the stack or inside another
 * struct without ownership questions. */
typedef struct hs_err {
  int code;                 /* an hs_status_t */
  char msg[HS_ERR_MSG_MAX]; /* one NUL-terminated sentence; empty when code is HS_OK */
} hs_err_t;

/* Fills *err (if not NULL) with code and a printf-formatted message; returns code so callers
 * can write `return hs_err_set(err, HS_EINVAL, "...")`. */
int hs_err_set(hs_err_t *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int hs_err_vset(hs_err_t *err, int code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Clears *err to HS_OK (err may be NULL). */
void hs_err_clear(hs_err_t *err);

/* A stable lower-case name for a status ("invalid", "limit", ...), used as the `code` of error
 * responses. The returned string is static. */
const char *hs_status_name(int code);

#endif
