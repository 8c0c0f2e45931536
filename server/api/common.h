/* Small helpers every API handler shares, so each error is written the same way. */
#ifndef HS_API_COMMON_H
#define HS_API_COMMON_H

#include <stdbool.h>

#include "http/request.h"

/* 503 with Retry-After: the database (or memory) is short; the client retries. */
void hs_api_unavailable(hs_req_t *req, const char *detail);

/* Answers for an hs_status_t returned by the store or the engine, with message as the text. */
void hs_api_fail(hs_req_t *req, int status, const char *message);

/* Refuses (400) a member of a map body that the message does not define, so that a typo is an
 * error and not a silent no-op. allowed ends with NULL. Returns false when it answered. */
bool hs_api_only_members(hs_req_t *req, const hs_value_t *body, const char *const *allowed);

/* True for a brand or process name: [a-z0-9][a-z0-9-]{0,63}. */
bool hs_api_valid_name(const char *s);

#endif
