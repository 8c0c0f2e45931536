/* The route table of the product's HTTP API (SPEC §4) and its handlers. */
#ifndef HS_API_API_H
#define HS_API_API_H

#include <stddef.h>

#include "http/router.h"

/* The table, in match order. Static data: never freed. */
extern const hs_route_t hs_api_routes[];
extern const size_t hs_api_routes_len;

/* health.c */
void hs_api_healthz(hs_req_t *req);
void hs_api_readyz(hs_req_t *req);
void hs_api_metrics(hs_req_t *req);
/* debug.c: test routes, only with HANDSEL_DEBUG_ROUTES=1 */
void hs_api_debug_echo(hs_req_t *req);
void hs_api_debug_stream(hs_req_t *req);
/* sessions.c */
void hs_api_session_start(hs_req_t *req);
void hs_api_session_get(hs_req_t *req);
void hs_api_session_stream(hs_req_t *req);
void hs_api_step_complete(hs_req_t *req);
void hs_api_session_feedback(hs_req_t *req);
/* blobs.c */
void hs_api_blob_put(hs_req_t *req);
void hs_api_blob_get(hs_req_t *req);
/* processes.c */
void hs_api_process_put(hs_req_t *req);
void hs_api_process_activate(hs_req_t *req);
void hs_api_process_list(hs_req_t *req);
void hs_api_process_get(hs_req_t *req);
/* content.c */
void hs_api_content_stats(hs_req_t *req);
/* tokens.c */
void hs_api_audit_export(hs_req_t *req);
void hs_api_audit_checkpoint(hs_req_t *req);
void hs_api_audit_key(hs_req_t *req);

void hs_api_token_create(hs_req_t *req);
void hs_api_token_revoke(hs_req_t *req);
/* Routes whose capability is not in this build yet: 501 with a clear error. */
void hs_api_not_implemented(hs_req_t *req);

#endif
