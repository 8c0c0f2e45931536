/* Reading the server's Prometheus text (GET /metrics) in tests: fetch it, then sum the series
 * of one metric whose labels match. */
#ifndef HS_TEST_METRICS_H
#define HS_TEST_METRICS_H

#include <stdbool.h>

/* Fetches /metrics over h2c. Returns 0 with *text (malloc'd, NUL-terminated, the caller frees
 * it) when the server answered 200, else a negative HS_E* code and *text NULL. */
int hs_test_metrics_fetch(int port, char **text);

/* Sums the values of the series of metric `name` (exact) whose labels include every
 * `key="value"` pair of `labels` (a NULL-terminated list of "key=value" strings, may be NULL;
 * values compare exactly). Returns how many series matched (0: none, and *sum is 0). */
int hs_test_metric_sum(const char *text, const char *name, const char *const *labels, double *sum);

/* Fetch + sum in one call; returns -1 when the fetch failed or nothing matched. */
double hs_test_metric(int port, const char *name, const char *const *labels);

/* handsel_http_connections_closed_total{reason=...}, or -1 if the series is absent (0 when the
 * metrics answer but this reason never happened and the server omits zero series). */
double hs_test_closed_count(int port, const char *reason);

/* Polls until handsel_http_connections_closed_total{reason} exceeds `above`, for at most
 * timeout_ms. Returns the last value seen. */
double hs_test_wait_closed_count(int port, const char *reason, double above, int timeout_ms);

#endif
