/* Small helpers every API handler shares, so each error is written the same way. */
#ifndef HS_API_COMMON_H
#define HS_API_COMMON_H

#include <stdbool.h>

#include "http/request.h"

/* 503 with Retry-After: the database (or memory) is short; the client retries. */
void hs_api_unavailable(hs_req_t *req, const char *detail);

/* Answers for an hs_status_t returned by the store or the engine, with message as the text. */
void hs_api_fail(hs_req_t *req, int status, const char *message);

/* Decodes a request body that must be one map with only the members in allowed (ending with
 * NULL): a member the message does not define is refused (400), so a typo is an error and not
 * a silent no-op. shape names the members for the message ("{data, at?}"). Returns the map, or
 * NULL when it has answered (400, 413, 415). */
hs_value_t *hs_api_decode_map(hs_req_t *req, const char *const *allowed, const char *shape);

/* True for a brand or process name: [a-z0-9][a-z0-9-]{0,63}. */
bool hs_api_valid_name(const char *s);

#endif
