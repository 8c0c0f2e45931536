#include "hs_test_auth.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "hs_test_body.h"
#include "hs_test_server.h"

#define DEFAULT_TIMEOUT_MS 10000
#define CLI_TIMEOUT_MS     60000
#define CLI_OUTPUT_MAX     8192

/* ---- the command line ---- */

int hs_auth_cli(char *out, size_t cap, const char *const *args) {
  const char *bin = getenv("HANDSEL_BIN");
  if (out != NULL && cap > 0) {
    out[0] = '\0';
  }
  if (bin == NULL || bin[0] == '\0') {
    fprintf(stderr, "HANDSEL_BIN is not set: run the tests through ctest or scripts/test\n");
    return -1;
  }
  size_t n_args = 0;
  while (args[n_args] != NULL) {
    n_args++;
  }
  char **argv = calloc(n_args + 2, sizeof *argv);
  if (argv == NULL) {
    return -1;
  }
  argv[0] = (char *)bin;
  for (size_t i = 0; i < n_args; i++) {
    argv[i + 1] = (char *)args[i];
  }
  int fds[2];
  if (pipe(fds) != 0) {
    free(argv);
    return -1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    free(argv);
    return -1;
  }
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    close(fds[0]);
    close(fds[1]);
    execv(bin, argv);
    _exit(127);
  }
  free(argv);
  close(fds[1]);
  size_t used = 0;
  long long deadline = hs_test_now_ms() + CLI_TIMEOUT_MS;
  bool timed_out = false;
  for (;;) {
    long long left = deadline - hs_test_now_ms();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    struct pollfd p = {.fd = fds[0], .events = POLLIN};
    int pr = poll(&p, 1, (int)left);
    if (pr < 0 && errno == EINTR) {
      continue;
    }
    if (pr <= 0) {
      timed_out = pr == 0;
      break;
    }
    char chunk[1024];
    ssize_t got = read(fds[0], chunk, sizeof chunk);
    if (got < 0 && errno == EINTR) {
      continue;
    }
    if (got <= 0) {
      break;
    }
    if (out != NULL && cap > 1 && used < cap - 1) {
      size_t take = (size_t)got < cap - 1 - used ? (size_t)got : cap - 1 - used;
      memcpy(out + used, chunk, take);
      used += take;
      out[used] = '\0';
    }
  }
  close(fds[0]);
  if (timed_out) {
    kill(pid, SIGKILL);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return !timed_out && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void hs_auth_must_brand(const char *name) {
  char out[CLI_OUTPUT_MAX];
  const char *args[] = {"brand", "create", name, NULL};
  int rc = hs_auth_cli(out, sizeof out, args);
  if (rc != 0) {
    fail_msg("handsel brand create %s exited %d: %s", name, rc, out);
  }
}

/* The last non-empty line of text, copied into line. */
static void last_line(const char *text, char *line, size_t cap) {
  const char *end = text + strlen(text);
  while (end > text && (end[-1] == '\n' || end[-1] == '\r')) {
    end--;
  }
  const char *start = end;
  while (start > text && start[-1] != '\n') {
    start--;
  }
  snprintf(line, cap, "%.*s", (int)(end - start), start);
}

static bool well_formed_secret(const char *s) {
  if (strncmp(s, "hst_", 4) != 0 || strlen(s) != 68) {
    return false;
  }
  for (const char *p = s + 4; *p != '\0'; p++) {
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) {
      return false;
    }
  }
  return true;
}

void hs_auth_must_token(hs_auth_token_t *t, const char *brand, const char *role,
                        const char *subject, const char *name, char *output, size_t cap) {
  char out[CLI_OUTPUT_MAX];
  const char *args[] = {"token",     "create", "--brand", brand, "--role", role,
                        "--subject", subject,  "--name",  name,  NULL};
  if (name == NULL) {
    args[8] = NULL;
  }
  int rc = hs_auth_cli(out, sizeof out, args);
  if (output != NULL && cap > 0) {
    snprintf(output, cap, "%s", out);
  }
  if (rc != 0) {
    fail_msg("handsel token create --brand %s --role %s exited %d: %s", brand, role, rc, out);
  }
  memset(t, 0, sizeof *t);
  /* The first line reads "token <id>: role ...". */
  if (sscanf(out, "token %36[0-9a-f-]:", t->id) != 1 || strlen(t->id) != 36) {
    fail_msg("handsel token create printed no token id on its first line: %s", out);
  }
  last_line(out, t->secret, sizeof t->secret);
  if (!well_formed_secret(t->secret)) {
    fail_msg("the last line of handsel token create is not a token (hst_ and 64 hex): %s", out);
  }
  snprintf(t->role, sizeof t->role, "%s", role);
  snprintf(t->brand, sizeof t->brand, "%s", brand);
  snprintf(t->subject, sizeof t->subject, "%s", subject);
}

void hs_auth_must_revoke(const char *id) {
  char out[CLI_OUTPUT_MAX];
  const char *args[] = {"token", "revoke", id, NULL};
  int rc = hs_auth_cli(out, sizeof out, args);
  if (rc != 0) {
    fail_msg("handsel token revoke %s exited %d: %s", id, rc, out);
  }
}

/* ---- the client ---- */

void hs_auth_init(hs_auth_client_t *c, int port, hs_auth_mode_t mode, const char *token) {
  memset(c, 0, sizeof *c);
  c->port = port;
  c->mode = mode;
  snprintf(c->token, sizeof c->token, "%s", token != NULL ? token : "");
}

void hs_auth_close(hs_auth_client_t *c) {
  hs_h2_close(c->conn);
  c->conn = NULL;
}

void hs_auth_resp_init(hs_auth_resp_t *r) {
  hs_api_resp_init(&r->r);
  r->www_authenticate[0] = '\0';
}

void hs_auth_resp_free(hs_auth_resp_t *r) {
  hs_api_resp_free(&r->r);
  r->www_authenticate[0] = '\0';
}

/* The credential headers of c into h (room for 4); returns how many. dev holds the split
 * development identity. */
static size_t auth_headers(const hs_auth_client_t *c, hs_h2_header_t *h, char *bearer, size_t cap,
                           char dev[3][130]) {
  size_t n = 0;
  switch (c->mode) {
    case HS_AUTH_BEARER:
      snprintf(bearer, cap, "Bearer %s", c->token);
      h[n++] = (hs_h2_header_t){"authorization", bearer};
      break;
    case HS_AUTH_RAW:
      h[n++] = (hs_h2_header_t){"authorization", c->token};
      break;
    case HS_AUTH_DEV: {
      const char *p = c->token;
      for (int i = 0; i < 3; i++) {
        const char *slash = i < 2 ? strchr(p, '/') : NULL;
        size_t len = slash != NULL ? (size_t)(slash - p) : strlen(p);
        snprintf(dev[i], 130, "%.*s", (int)len, p);
        p = slash != NULL ? slash + 1 : p + len;
      }
      h[n++] = (hs_h2_header_t){"x-handsel-dev-brand", dev[0]};
      h[n++] = (hs_h2_header_t){"x-handsel-dev-role", dev[1]};
      h[n++] = (hs_h2_header_t){"x-handsel-dev-subject", dev[2]};
      break;
    }
    case HS_AUTH_NONE:
      break;
  }
  return n;
}

static void take_response(const hs_h2_response_t *r, hs_auth_resp_t *out) {
  out->r.status = r->status;
  const char *ct = hs_h2_response_header(r, "content-type");
  snprintf(out->r.content_type, sizeof out->r.content_type, "%s", ct != NULL ? ct : "");
  const char *ra = hs_h2_response_header(r, "retry-after");
  snprintf(out->r.retry_after, sizeof out->r.retry_after, "%s", ra != NULL ? ra : "");
  const char *wa = hs_h2_response_header(r, "www-authenticate");
  snprintf(out->www_authenticate, sizeof out->www_authenticate, "%s", wa != NULL ? wa : "");
  if (r->body.len > 0) {
    hs_buf_append(&out->r.body, r->body.data, r->body.len);
  }
  bool decodable = strncmp(out->r.content_type, "application/json", 16) == 0 ||
                   strncmp(out->r.content_type, "application/msgpack", 19) == 0;
  if (decodable && r->body.len > 0) {
    hs_err_t err;
    hs_value_t *v = NULL;
    if (hs_test_decode_body(r, &out->r.arena, &v, &err) == HS_OK) {
      out->r.v = v;
    }
  }
}

int hs_auth_call(hs_auth_client_t *c, const char *method, const char *path,
                 const char *content_type, const void *body, size_t len, hs_auth_resp_t *out) {
  hs_auth_resp_free(out);
  if (c->conn != NULL && hs_h2_closed(c->conn)) {
    hs_auth_close(c);
  }
  if (c->conn == NULL) {
    hs_h2_opts_t o = {.connect_timeout_ms = 3000};
    int rc = hs_h2_connect(&c->conn, c->port, &o);
    if (rc != HS_OK) {
      c->conn = NULL;
      return rc;
    }
  }
  hs_h2_header_t h[8];
  char bearer[300], dev[3][130];
  size_t n = auth_headers(c, h, bearer, sizeof bearer, dev);
  h[n++] = (hs_h2_header_t){"accept", "application/json"};
  if (content_type != NULL) {
    h[n++] = (hs_h2_header_t){"content-type", content_type};
  }
  hs_h2_response_t *r = NULL;
  int rc = hs_h2_request(c->conn, method, path, h, n, body, body != NULL ? len : 0,
                         c->timeout_ms > 0 ? c->timeout_ms : DEFAULT_TIMEOUT_MS, &r);
  if (rc != HS_OK || r == NULL || r->status == 0 || !r->end_stream) {
    hs_auth_close(c);
    return rc != HS_OK ? rc : HS_EIO;
  }
  take_response(r, out);
  return HS_OK;
}

int hs_auth_call_json(hs_auth_client_t *c, const char *method, const char *path,
                      const char *body_json, hs_auth_resp_t *out) {
  return hs_auth_call(c, method, path, body_json != NULL ? "application/json" : NULL, body_json,
                      body_json != NULL ? strlen(body_json) : 0, out);
}

int hs_auth_open_status(const hs_auth_client_t *c, const char *path, int timeout_ms,
                        hs_auth_resp_t *out) {
  hs_h2_conn_t *conn = NULL;
  hs_h2_opts_t o = {.connect_timeout_ms = 3000};
  if (hs_h2_connect(&conn, c->port, &o) != HS_OK) {
    return 0;
  }
  hs_h2_header_t h[8];
  char bearer[300], dev[3][130];
  size_t n = auth_headers(c, h, bearer, sizeof bearer, dev);
  h[n++] = (hs_h2_header_t){"accept", "application/json"};
  int32_t sid = hs_h2_submit(conn, "GET", path, h, n, NULL, 0);
  int status = 0;
  long long deadline = hs_test_now_ms() + timeout_ms;
  while (sid > 0) {
    hs_h2_response_t *r = hs_h2_response(conn, sid);
    if (r != NULL && r->status != 0 && (r->status == 200 || r->closed)) {
      status = r->status;
      if (out != NULL) {
        hs_auth_resp_free(out);
        take_response(r, out);
      }
      break;
    }
    long long left = deadline - hs_test_now_ms();
    if (left <= 0 || hs_h2_pump(conn, left < 50 ? (int)left : 50) != HS_OK) {
      r = hs_h2_response(conn, sid);
      status = r != NULL ? r->status : 0;
      break;
    }
  }
  hs_h2_close(conn);
  return status;
}
