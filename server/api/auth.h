/* Who is asking: every /v1 request is resolved to a principal (a brand, a role, a subject)
 * before its handler runs, and every handler checks the role it needs.
 *
 * This build resolves principals in development mode only (HANDSEL_DEV_AUTH=1): the brand,
 * role and subject come from the headers x-handsel-dev-brand, x-handsel-dev-role and
 * x-handsel-dev-subject, and the brand is created on first use. Without it every /v1 request
 * is refused with 401. Bearer tokens replace exactly hs_auth_resolve. */
#ifndef HS_API_AUTH_H
#define HS_API_AUTH_H

#include <stdint.h>

#include "http/request.h"

typedef enum hs_role {
  HS_ROLE_ADMIN = 1u << 0,
  HS_ROLE_AUTHOR = 1u << 1,
  HS_ROLE_CONTRACTOR = 1u << 2,
  HS_ROLE_COMPLIANCE = 1u << 3,
} hs_role_t;

typedef struct hs_principal {
  int64_t brand_id;
  char brand[65];
  hs_role_t role;
  char subject[129];
} hs_principal_t;

/* Called with the principal (borrowed, valid during the call) once resolved. When resolution
 * fails the request has been answered (401, 403, 503) and cb is not called. */
typedef void (*hs_auth_cb)(hs_req_t *req, const hs_principal_t *who);

/* Resolves the request's principal and checks that its role is one of `roles` (a mask). May
 * call cb before returning (cached brand) or later (database); sets req->on_cancel while it
 * waits, so the handler sets its own only inside cb. */
void hs_auth_resolve(hs_req_t *req, unsigned roles, hs_auth_cb cb);

const char *hs_role_name(hs_role_t role);

#endif
