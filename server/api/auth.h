/* Who is asking: every /v1 request is resolved to a principal (a brand, a role, a subject)
 * before its handler runs, and every handler checks the role it needs.
 *
 * A request proves who it is with `Authorization: Bearer <token>`. The token's SHA-256 is
 * looked up in PostgreSQL (cached per worker until a revocation is announced), giving its
 * brand, role, subject and display name. Missing, malformed, unknown or revoked: 401. A role
 * the route does not allow: 403.
 *
 * Development servers (HANDSEL_DEV_AUTH=1) also accept, instead of a token, the headers
 * x-handsel-dev-brand, x-handsel-dev-role and x-handsel-dev-subject; the brand is created on
 * first use. */
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
  char name[129]; /* display name; "" when none */
} hs_principal_t;

/* Called with the principal (borrowed, valid during the call) once resolved. When resolution
 * fails the request has been answered (401, 403, 503) and cb is not called. */
typedef void (*hs_auth_cb)(hs_req_t *req, const hs_principal_t *who);

/* Resolves the request's principal and checks that its role is one of `roles` (a mask). May
 * call cb before returning (cached brand) or later (database); sets req->on_cancel while it
 * waits, so the handler sets its own only inside cb. */
void hs_auth_resolve(hs_req_t *req, unsigned roles, hs_auth_cb cb);

/* Charges the caller of req (who, as hs_auth_resolve gave it) n more requests of its rate
 * limit, for work the request caused beyond an ordinary one (see hs_rate_charge). */
void hs_auth_charge(hs_req_t *req, const hs_principal_t *who, double n);

const char *hs_role_name(hs_role_t role);
/* Parses "admin", "author", "contractor" or "compliance". HS_OK or HS_EINVAL. */
int hs_role_parse(const char *s, hs_role_t *out);

/* Tokens: "hst_" followed by 64 lower-case hex digits (32 random bytes). */
enum { HS_TOKEN_LEN = 68 };
/* Makes a new secret into out (HS_TOKEN_LEN + 1 bytes) and its hash, hex, into hash_hex. */
int hs_token_new(char out[HS_TOKEN_LEN + 1], char hash_hex[65]);
/* The hex SHA-256 that identifies a presented token; HS_EINVAL if it is not a token. */
int hs_token_hash(const char *token, char hash_hex[65]);

#endif
