#include "core/error.h"

#include <stdio.h>

int hs_err_vset(hs_err_t *err, int code, const char *fmt, va_list ap) {
  if (err != NULL) {
    err->code = code;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  }
  return code;
}

int hs_err_set(hs_err_t *err, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  hs_err_vset(err, code, fmt, ap);
  va_end(ap);
  return code;
}

void hs_err_clear(hs_err_t *err) {
  if (err != NULL) {
    err->code = HS_OK;
    err->msg[0] = '\0';
  }
}

const char *hs_status_name(int code) {
  switch (code) {
    case HS_OK:
      return "ok";
    case HS_ENOMEM:
      return "out_of_memory";
    case HS_EINVAL:
      return "malformed";
    case HS_ELIMIT:
      return "too_large";
    case HS_EIO:
      return "io_error";
    case HS_ENOTFOUND:
      return "not_found";
    case HS_EUNSUPPORTED:
      return "unsupported";
    case HS_ECONFLICT:
      return "conflict";
    case HS_ESCRIPT:
      return "script_error";
    case HS_EUNAVAIL:
      return "unavailable";
    case HS_ECANCELED:
      return "canceled";
    case HS_EVALIDATION:
      return "validation_failed";
    default:
      return "internal";
  }
}
