#include "api/api.h"

/* Order matters only where patterns overlap: literal routes come before parameter routes. */
const hs_route_t hs_api_routes[] = {
    {"GET", "/healthz", hs_api_healthz, 0},
    {"GET", "/readyz", hs_api_readyz, 0},
    {"GET", "/metrics", hs_api_metrics, 0},

    {"POST", "/v1/sessions", hs_api_session_start, 0},
    {"GET", "/v1/sessions/{id}", hs_api_session_get, 0},
    {"GET", "/v1/sessions/{id}/stream", hs_api_session_stream, 0},
    {"POST", "/v1/sessions/{id}/steps/{seq}", hs_api_step_complete, 0},
    {"POST", "/v1/sessions/{id}/feedback", hs_api_session_feedback, 0},
    {"PUT", "/v1/blobs/{hash}", hs_api_blob_put, HS_ROUTE_LARGE_BODY},
    {"GET", "/v1/blobs/{hash}", hs_api_blob_get, 0},
    {"GET", "/v1/processes", hs_api_process_list, 0},
    {"PUT", "/v1/processes/{name}", hs_api_process_put, 0},
    {"GET", "/v1/processes/{name}", hs_api_process_get, 0},
    {"POST", "/v1/processes/{name}/activate", hs_api_process_activate, 0},
    {"GET", "/v1/audit", hs_api_audit_export, 0},
    {"GET", "/v1/audit/checkpoint", hs_api_audit_checkpoint, 0},
    {"GET", "/v1/audit/key", hs_api_audit_key, 0},
    {"GET", "/v1/content/stats", hs_api_content_stats, 0},
    {"POST", "/v1/tokens", hs_api_token_create, 0},
    {"DELETE", "/v1/tokens/{id}", hs_api_token_revoke, 0},

    {"POST", "/debug/echo", hs_api_debug_echo, HS_ROUTE_DEBUG},
    {"GET", "/debug/stream", hs_api_debug_stream, HS_ROUTE_DEBUG},
};
const size_t hs_api_routes_len = sizeof hs_api_routes / sizeof hs_api_routes[0];
