#include "hs_test_metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/error.h"
#include "hs_test_h2.h"
#include "hs_test_server.h"

int hs_test_metrics_fetch(int port, char **text) {
  *text = NULL;
  hs_buf_t body;
  hs_buf_init(&body, 0);
  int status = 0;
  int rc = hs_h2_get(port, false, "/metrics", NULL, 0, 5000, &status, &body);
  if (rc == HS_OK && status != 200) {
    rc = HS_EIO;
  }
  if (rc == HS_OK) {
    rc = hs_buf_append(&body, "", 1);
  }
  if (rc != HS_OK) {
    hs_buf_free(&body);
    return rc;
  }
  size_t len;
  *text = (char *)hs_buf_release(&body, &len);
  return HS_OK;
}

/* True when the label text (between the braces, len bytes) holds key="value" exactly. */
static bool has_label(const char *labels, size_t len, const char *kv) {
  const char *eq = strchr(kv, '=');
  if (eq == NULL) {
    return false;
  }
  size_t klen = (size_t)(eq - kv);
  const char *val = eq + 1;
  size_t vlen = strlen(val);
  const char *p = labels;
  const char *end = labels + len;
  while (p < end) {
    while (p < end && (*p == ',' || *p == ' ')) {
      p++;
    }
    const char *k = p;
    while (p < end && *p != '=') {
      p++;
    }
    if (p >= end) {
      return false;
    }
    size_t this_klen = (size_t)(p - k);
    p++; /* '=' */
    if (p >= end || *p != '"') {
      return false;
    }
    p++;
    const char *v = p;
    while (p < end && *p != '"') {
      if (*p == '\\' && p + 1 < end) {
        p++;
      }
      p++;
    }
    size_t this_vlen = (size_t)(p - v);
    p++; /* closing quote */
    if (this_klen == klen && memcmp(k, kv, klen) == 0 && this_vlen == vlen &&
        memcmp(v, val, vlen) == 0) {
      return true;
    }
  }
  return false;
}

int hs_test_metric_sum(const char *text, const char *name, const char *const *labels, double *sum) {
  *sum = 0;
  int matched = 0;
  size_t nlen = strlen(name);
  for (const char *line = text; line != NULL && *line != '\0';) {
    const char *eol = strchr(line, '\n');
    size_t llen = eol != NULL ? (size_t)(eol - line) : strlen(line);
    if (llen > nlen && line[0] != '#' && memcmp(line, name, nlen) == 0 &&
        (line[nlen] == '{' || line[nlen] == ' ')) {
      const char *lab = NULL;
      size_t lab_len = 0;
      const char *rest = line + nlen;
      if (*rest == '{') {
        lab = rest + 1;
        const char *close = memchr(lab, '}', llen - nlen - 1);
        if (close == NULL) {
          goto next;
        }
        lab_len = (size_t)(close - lab);
        rest = close + 1;
      }
      bool ok = true;
      for (size_t i = 0; labels != NULL && labels[i] != NULL; i++) {
        if (lab == NULL || !has_label(lab, lab_len, labels[i])) {
          ok = false;
          break;
        }
      }
      if (ok) {
        *sum += strtod(rest, NULL);
        matched++;
      }
    }
  next:
    line = eol != NULL ? eol + 1 : NULL;
  }
  return matched;
}

double hs_test_metric(int port, const char *name, const char *const *labels) {
  char *text = NULL;
  if (hs_test_metrics_fetch(port, &text) != HS_OK) {
    return -1;
  }
  double sum = 0;
  int n = hs_test_metric_sum(text, name, labels, &sum);
  free(text);
  return n > 0 ? sum : -1;
}

double hs_test_closed_count(int port, const char *reason) {
  char *text = NULL;
  if (hs_test_metrics_fetch(port, &text) != HS_OK) {
    return -1;
  }
  char kv[96];
  snprintf(kv, sizeof kv, "reason=%s", reason);
  const char *const labels[] = {kv, NULL};
  double sum = 0;
  int n = hs_test_metric_sum(text, "handsel_http_connections_closed_total", labels, &sum);
  /* A server may omit a reason it has not seen yet: that reads as 0 if the family exists. */
  if (n == 0 && strstr(text, "handsel_http_connections_closed_total") == NULL) {
    sum = -1;
  }
  free(text);
  return sum;
}

double hs_test_wait_closed_count(int port, const char *reason, double above, int timeout_ms) {
  long long deadline = hs_test_now_ms() + timeout_ms;
  double v = hs_test_closed_count(port, reason);
  while (v <= above && hs_test_now_ms() < deadline) {
    hs_test_sleep_ms(50);
    v = hs_test_closed_count(port, reason);
  }
  return v;
}
