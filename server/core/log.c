#include "core/log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static hs_log_level_t g_level = HS_LOG_INFO;

void hs_log_set_level(hs_log_level_t level) {
  g_level = level;
}

static const char *level_name(hs_log_level_t level) {
  switch (level) {
    case HS_LOG_DEBUG:
      return "debug";
    case HS_LOG_INFO:
      return "info";
    case HS_LOG_WARN:
      return "warn";
    default:
      return "error";
  }
}

void hs_log(hs_log_level_t level, const char *event, const char *fields_fmt, ...) {
  if (level < g_level) {
    return;
  }
  json_t *obj = NULL;
  if (fields_fmt != NULL) {
    va_list ap;
    va_start(ap, fields_fmt);
    json_error_t jerr;
    obj = json_vpack_ex(&jerr, 0, fields_fmt, ap);
    va_end(ap);
  }
  if (obj == NULL || !json_is_object(obj)) {
    json_decref(obj);
    obj = json_object();
    if (obj == NULL) {
      return;
    }
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char when[40];
  size_t n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(when + n, sizeof when - n, ".%03ldZ", ts.tv_nsec / 1000000);

  /* ts, level and event go first so the line reads well to a person too. */
  json_t *line = json_pack("{s:s, s:s, s:s}", "ts", when, "level", level_name(level), "event",
                           event != NULL ? event : "");
  if (line != NULL) {
    json_object_update_missing(line, obj);
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (text != NULL) {
      size_t len = strlen(text);
      text[len] = '\n'; /* replaces the NUL: the buffer is len+1 bytes */
      ssize_t w = write(STDERR_FILENO, text, len + 1);
      (void)w; /* nothing useful to do if stderr is gone */
      free(text);
    }
    json_decref(line);
  }
  json_decref(obj);
}
