/* Structured logs: one JSON object per line on stderr, so an operator's collector can parse
 * them without guessing. Fields are given as a jansson pack format and its arguments, e.g.
 *
 *   hs_log(HS_LOG_INFO, "listening", "{s:s, s:i}", "addr", addr, "workers", n);
 *
 * The line always carries "ts" (RFC 3339, UTC), "level" and "event". Thread-safe: a line is
 * written with one write(2) so lines from several workers never interleave. */
#ifndef HS_CORE_LOG_H
#define HS_CORE_LOG_H

typedef enum hs_log_level {
  HS_LOG_DEBUG = 0,
  HS_LOG_INFO = 1,
  HS_LOG_WARN = 2,
  HS_LOG_ERROR = 3,
} hs_log_level_t;

/* Lines below this level are dropped. Set once at start-up, before threads start. */
void hs_log_set_level(hs_log_level_t level);

/* fields_fmt may be NULL for no extra fields; otherwise a jansson json_pack format that
 * produces an object. */
void hs_log(hs_log_level_t level, const char *event, const char *fields_fmt, ...);

#endif
