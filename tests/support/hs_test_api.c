#include "hs_test_api.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec/codec.h"
#include "core/error.h"
#include "core/ids.h"
#include "hs_test_body.h"
#include "hs_test_server.h"

#define DEFAULT_TIMEOUT_MS 10000
#define REQUESTS_PER_CONN  400
#define CONNECT_TIMEOUT_MS 3000
#define MAX_HEADERS        8

void hs_api_init(hs_api_t *c, int port, const char *brand, const char *subject) {
  memset(c, 0, sizeof *c);
  c->port = port;
  snprintf(c->brand, sizeof c->brand, "%s", brand);
  snprintf(c->subject, sizeof c->subject, "%s", subject);
}

void hs_api_close(hs_api_t *c) {
  hs_h2_close(c->conn);
  c->conn = NULL;
  c->requests = 0;
}

void hs_api_set_port(hs_api_t *c, int port) {
  hs_api_close(c);
  c->port = port;
}

void hs_api_resp_init(hs_api_resp_t *r) {
  memset(r, 0, sizeof *r);
  hs_buf_init(&r->body, 0);
  hs_arena_init(&r->arena, 0);
}

void hs_api_resp_free(hs_api_resp_t *r) {
  hs_buf_free(&r->body);
  hs_arena_reset(&r->arena);
  hs_api_resp_init(r);
}

static int ensure_conn(hs_api_t *c) {
  if (c->conn != NULL && (hs_h2_closed(c->conn) || c->requests >= REQUESTS_PER_CONN)) {
    hs_api_close(c);
  }
  if (c->conn != NULL) {
    return HS_OK;
  }
  hs_h2_opts_t o = {.connect_timeout_ms = CONNECT_TIMEOUT_MS};
  int rc = hs_h2_connect(&c->conn, c->port, &o);
  if (rc != HS_OK) {
    c->conn = NULL;
  }
  return rc;
}

static size_t build_headers(const hs_api_t *c, const char *role, const char *content_type,
                            hs_h2_header_t *h) {
  size_t n = 0;
  h[n++] = (hs_h2_header_t){"x-handsel-dev-brand", c->brand};
  h[n++] = (hs_h2_header_t){"x-handsel-dev-role", role};
  h[n++] = (hs_h2_header_t){"x-handsel-dev-subject", c->subject};
  h[n++] = (hs_h2_header_t){"accept", c->json ? "application/json" : "application/msgpack"};
  if (content_type != NULL) {
    h[n++] = (hs_h2_header_t){"content-type", content_type};
  }
  return n;
}

/* Copies what arrived on one stream into out and decodes it. */
static void take_response(const hs_h2_response_t *r, hs_api_resp_t *out) {
  out->status = r->status;
  const char *ct = hs_h2_response_header(r, "content-type");
  snprintf(out->content_type, sizeof out->content_type, "%s", ct != NULL ? ct : "");
  const char *ra = hs_h2_response_header(r, "retry-after");
  snprintf(out->retry_after, sizeof out->retry_after, "%s", ra != NULL ? ra : "");
  if (r->body.len > 0) {
    hs_buf_append(&out->body, r->body.data, r->body.len);
  }
  bool decodable = strncmp(out->content_type, "application/json", 16) == 0 ||
                   strncmp(out->content_type, "application/msgpack", 19) == 0;
  if (decodable && r->body.len > 0) {
    hs_err_t err;
    hs_value_t *v = NULL;
    if (hs_test_decode_body(r, &out->arena, &v, &err) == HS_OK) {
      out->v = v;
    }
  }
}

static int call(hs_api_t *c, const char *role, const char *method, const char *path,
                const char *content_type, const void *body, size_t len, hs_api_resp_t *out) {
  hs_api_resp_free(out);
  int rc = ensure_conn(c);
  if (rc != HS_OK) {
    return rc;
  }
  hs_h2_header_t h[MAX_HEADERS];
  size_t nh = build_headers(c, role, content_type, h);
  hs_h2_response_t *r = NULL;
  c->requests++;
  rc = hs_h2_request(c->conn, method, path, h, nh, body, len,
                     c->timeout_ms > 0 ? c->timeout_ms : DEFAULT_TIMEOUT_MS, &r);
  if (rc != HS_OK || r == NULL || r->status == 0 || !r->end_stream) {
    hs_api_close(c);
    return rc != HS_OK ? rc : HS_EIO;
  }
  take_response(r, out);
  return HS_OK;
}

int hs_api_call(hs_api_t *c, const char *role, const char *method, const char *path,
                const char *body_json, hs_api_resp_t *out) {
  return call(c, role, method, path, body_json != NULL ? "application/json" : NULL, body_json,
              body_json != NULL ? strlen(body_json) : 0, out);
}

int hs_api_callf(hs_api_t *c, const char *role, const char *method, const char *path,
                 hs_api_resp_t *out, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *body = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (body == NULL) {
    return HS_ENOMEM;
  }
  va_start(ap, fmt);
  vsnprintf(body, (size_t)n + 1, fmt, ap);
  va_end(ap);
  int rc = hs_api_call(c, role, method, path, body, out);
  free(body);
  return rc;
}

int hs_api_call_raw(hs_api_t *c, const char *role, const char *method, const char *path,
                    const char *content_type, const void *body, size_t len, hs_api_resp_t *out) {
  return call(c, role, method, path, content_type, body != NULL ? body : "", len, out);
}

int hs_api_batch(hs_api_t *c, const char *role, hs_api_batch_item_t *items, size_t n) {
  int rc = ensure_conn(c);
  if (rc != HS_OK) {
    return rc;
  }
  hs_h2_header_t h_body[MAX_HEADERS], h_none[MAX_HEADERS];
  size_t nb = build_headers(c, role, "application/json", h_body);
  size_t nn = build_headers(c, role, NULL, h_none);
  int32_t *ids = calloc(n, sizeof *ids);
  if (ids == NULL) {
    return HS_ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    hs_api_resp_free(&items[i].resp);
    const char *b = items[i].body_json;
    ids[i] = hs_h2_submit(c->conn, items[i].method, items[i].path, b != NULL ? h_body : h_none,
                          b != NULL ? nb : nn, b, b != NULL ? strlen(b) : 0);
    c->requests++;
  }
  long long deadline = hs_test_now_ms() + (c->timeout_ms > 0 ? c->timeout_ms : DEFAULT_TIMEOUT_MS);
  rc = HS_OK;
  bool broken = false;
  for (size_t i = 0; i < n; i++) {
    if (ids[i] < 0) {
      rc = HS_EIO;
      continue;
    }
    long long left = deadline - hs_test_now_ms();
    int w = hs_h2_wait(c->conn, ids[i], left > 0 ? (int)left : 0);
    hs_h2_response_t *r = hs_h2_response(c->conn, ids[i]);
    if (w == HS_OK && r != NULL && r->status != 0 && r->end_stream) {
      take_response(r, &items[i].resp);
    } else {
      rc = w != HS_OK ? w : HS_EIO;
      broken = true;
    }
  }
  free(ids);
  if (broken) {
    hs_api_close(c);
  }
  return rc;
}

const hs_value_t *hs_api_at(const hs_value_t *v, const char *path) {
  char key[128];
  const char *p = path;
  while (v != NULL && *p != '\0') {
    if (v->type != HS_V_MAP) {
      return NULL;
    }
    const char *dot = strchr(p, '.');
    size_t n = dot != NULL ? (size_t)(dot - p) : strlen(p);
    if (n >= sizeof key) {
      return NULL;
    }
    memcpy(key, p, n);
    key[n] = '\0';
    v = hs_map_get(v, key);
    p += n;
    if (*p == '.') {
      p++;
    }
  }
  return v;
}

const char *hs_api_str(const hs_value_t *v, const char *path) {
  const hs_value_t *x = hs_api_at(v, path);
  return x != NULL && x->type == HS_V_STR ? x->as.str.ptr : NULL;
}

int64_t hs_api_int(const hs_value_t *v, const char *path, int64_t dflt) {
  const hs_value_t *x = hs_api_at(v, path);
  return x != NULL && x->type == HS_V_INT ? x->as.i : dflt;
}

void hs_api_expect_str(const hs_value_t *v, const char *path, const char *want, const char *file,
                       int line) {
  const char *got = hs_api_str(v, path);
  if (got == NULL || strcmp(got, want) != 0) {
    hs_buf_t b;
    hs_buf_init(&b, 0);
    const hs_value_t *x = hs_api_at(v, path);
    if (x != NULL && x->type != HS_V_STR) {
      hs_json_encode(x, &b);
    }
    hs_buf_append(&b, "", 1);
    print_error("ERROR: %s is %s%s%s, expected \"%s\"\n", path, got != NULL ? "\"" : "",
                got != NULL ? got
                : b.len > 1 ? (char *)b.data
                            : "nil",
                got != NULL ? "\"" : "", want);
    hs_buf_free(&b);
    _fail(file, line);
  }
}

const char *hs_api_body_text(const hs_api_resp_t *r) {
  /* A few buffers in turn, so one message can show two answers. */
  static _Thread_local char texts[4][601];
  static _Thread_local unsigned turn;
  char *text = texts[turn++ % 4];
  if (r->v != NULL) {
    /* JSON reads best in a message, whatever the answer's format. */
    hs_buf_t b;
    hs_buf_init(&b, 0);
    if (hs_json_encode(r->v, &b) == HS_OK) {
      snprintf(text, 601, "%.*s", (int)(b.len < 600 ? b.len : 600), (const char *)b.data);
      hs_buf_free(&b);
      return text;
    }
    hs_buf_free(&b);
  }
  size_t n = r->body.len < 600 ? r->body.len : 600;
  for (size_t i = 0; i < n; i++) {
    char ch = (char)r->body.data[i];
    text[i] = ch >= 32 && ch < 127 ? ch : '.';
  }
  text[n] = '\0';
  return text;
}

void hs_api_sha256_hex(const void *p, size_t n, char out[65]) {
  uint8_t d[32];
  hs_sha256(p, n, d);
  hs_hex(d, 32, out);
  out[64] = '\0';
}

/* ---- sessions ---- */

void hs_api_unique_name(char out[65], const char *prefix) {
  static atomic_uint serial;
  unsigned n = atomic_fetch_add(&serial, 1) + 1;
  snprintf(out, 65, "%.24s-%d-%u-%lld", prefix, (int)getpid(), n,
           (long long)(hs_time_now_ms() % 100000000));
}

int hs_api_deploy(hs_api_t *c, const char *name, const char *source, char version_out[65]) {
  char path[128];
  snprintf(path, sizeof path, "/v1/processes/%s", name);
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  int rc = hs_api_call_raw(c, "author", "PUT", path, "text/x-lua", source, strlen(source), &r);
  int status = rc == HS_OK ? r.status : 0;
  if (status == 201 && version_out != NULL) {
    const char *v = hs_api_str(r.v, "version");
    snprintf(version_out, 65, "%s", v != NULL ? v : "");
  }
  if (status != 201 && status != 200) {
    fprintf(stderr, "deploy %s: %d %s\n", name, status, hs_api_body_text(&r));
  }
  hs_api_resp_free(&r);
  return status;
}

int hs_api_start(hs_api_t *c, const char *process, const char *ref, char id_out[40], int64_t *seq) {
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  char ref_member[200] = "";
  if (ref != NULL) {
    snprintf(ref_member, sizeof ref_member, ", \"ref\": \"%s\"", ref);
  }
  int rc = hs_api_callf(c, "contractor", "POST", "/v1/sessions", &r,
                        "{\"process\": \"%s\", \"customer\": {\"name\": \"Ada\"}%s}", process,
                        ref_member);
  int status = rc == HS_OK ? r.status : 0;
  if (status == 200 || status == 201) {
    const char *id = hs_api_str(r.v, "session.id");
    snprintf(id_out, 40, "%s", id != NULL ? id : "");
    if (seq != NULL) {
      *seq = hs_api_int(r.v, "step.seq", 0);
    }
  } else {
    fprintf(stderr, "start %s: %d %s\n", process, status, hs_api_body_text(&r));
  }
  hs_api_resp_free(&r);
  return status;
}

void hs_api_step_path(char *out, size_t cap, const char *id, int64_t seq) {
  snprintf(out, cap, "/v1/sessions/%s/steps/%lld", id, (long long)seq);
}

const char hs_api_loop_source[] =
    "return process {\n"
    "  name = \"loop\",\n"
    "  title = \"Loop\",\n"
    "  run = function(visit)\n"
    "    local sum = 0\n"
    "    local luck = math.random(1, 1000000)\n"
    "    for i = 1, 999 do\n"
    "      local d = visit:step { id = \"s\", title = \"sum \" .. sum .. \" luck \" .. luck,\n"
    "        fields = { field.integer { name = \"n\", label = \"n\", required = true,\n"
    "                                   min = 0, max = 1000000 } } }\n"
    "      sum = sum + d.n\n"
    "    end\n"
    "  end,\n"
    "}\n";

bool hs_api_loop_title(const hs_value_t *step, long long *sum, long long *luck) {
  const char *t = hs_api_str(step, "title");
  return t != NULL && sscanf(t, "sum %lld luck %lld", sum, luck) == 2;
}

int hs_api_loop_start(hs_api_t *c, hs_api_loop_t *s) {
  memset(s, 0, sizeof *s);
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  int rc = hs_api_call(c, "contractor", "POST", "/v1/sessions",
                       "{\"process\": \"loop\", \"customer\": {\"name\": \"Ada\"}}", &r);
  int status = rc == HS_OK ? r.status : 0;
  const char *id = hs_api_str(r.v, "session.id");
  long long sum = -1;
  if (status == 201 && id != NULL && hs_api_loop_title(hs_api_at(r.v, "step"), &sum, &s->luck) &&
      sum == 0) {
    snprintf(s->id, sizeof s->id, "%s", id);
    s->seq = hs_api_int(r.v, "step.seq", 0);
  } else {
    fprintf(stderr, "starting a loop session: %d %s\n", status, hs_api_body_text(&r));
    status = status == 201 ? 500 : status;
  }
  hs_api_resp_free(&r);
  return status;
}

bool hs_api_loop_check(const hs_api_loop_t *s, const hs_value_t *step, char *why, size_t cap) {
  long long sum = 0, luck = 0;
  int64_t seq = hs_api_int(step, "seq", -1);
  const char *sid = hs_api_str(step, "session");
  if (step == NULL || step->type != HS_V_MAP) {
    snprintf(why, cap, "there is no step");
    return false;
  }
  if (!hs_api_loop_title(step, &sum, &luck)) {
    snprintf(why, cap, "the title is not \"sum S luck L\"");
    return false;
  }
  if (seq != s->seq || sum != s->sum || luck != s->luck || sid == NULL || strcmp(sid, s->id) != 0) {
    snprintf(why, cap, "expected seq %lld sum %lld luck %lld, got seq %lld sum %lld luck %lld",
             (long long)s->seq, s->sum, s->luck, (long long)seq, sum, luck);
    return false;
  }
  return true;
}

/* ---- streams ---- */

int hs_api_stream_open(hs_api_stream_t *s, const hs_api_t *c, const char *role, const char *id,
                       bool json, int *status) {
  memset(s, 0, sizeof *s);
  hs_arena_init(&s->arena, 0);
  s->json = json;
  *status = 0;
  hs_h2_opts_t o = {.connect_timeout_ms = CONNECT_TIMEOUT_MS};
  if (hs_h2_connect(&s->conn, c->port, &o) != HS_OK) {
    s->conn = NULL;
    return HS_EIO;
  }
  hs_h2_header_t h[MAX_HEADERS];
  hs_api_t tmp = *c;
  tmp.json = json;
  size_t nh = build_headers(&tmp, role, NULL, h);
  char path[160];
  snprintf(path, sizeof path, "/v1/sessions/%s/stream", id);
  s->stream_id = hs_h2_submit(s->conn, "GET", path, h, nh, NULL, 0);
  if (s->stream_id < 0) {
    return HS_EIO;
  }
  long long deadline = hs_test_now_ms() + DEFAULT_TIMEOUT_MS;
  hs_h2_response_t *r = hs_h2_response(s->conn, s->stream_id);
  while (r->status == 0 && !r->closed && hs_test_now_ms() < deadline) {
    if (hs_h2_pump(s->conn, 100) != HS_OK) {
      break;
    }
  }
  *status = r->status;
  return r->status == 200 ? HS_OK : HS_EIO;
}

/* Decodes one event from the unread bytes, if a whole one is there. */
static int decode_one(hs_api_stream_t *s, const hs_value_t **event) {
  hs_h2_response_t *r = hs_h2_response(s->conn, s->stream_id);
  const uint8_t *p = r->body.data + s->used;
  size_t left = r->body.len - s->used;
  *event = NULL;
  if (left == 0) {
    return HS_OK;
  }
  hs_err_t err;
  hs_value_t *v = NULL;
  if (s->json) {
    const uint8_t *nl = memchr(p, '\n', left);
    if (nl == NULL) {
      return HS_OK;
    }
    if (hs_json_decode((const char *)p, (size_t)(nl - p), NULL, &s->arena, &v, &err) != HS_OK) {
      fprintf(stderr, "stream: an NDJSON line does not decode: %s\n", err.msg);
      return HS_EINVAL;
    }
    s->used += (size_t)(nl - p) + 1;
  } else {
    size_t used = 0;
    if (hs_msgpack_decode_next(p, left, NULL, &s->arena, &v, &used, &err) != HS_OK) {
      fprintf(stderr, "stream: msgpack event does not decode: %s\n", err.msg);
      return HS_EINVAL;
    }
    if (v == NULL) {
      return HS_OK;
    }
    s->used += used;
  }
  *event = v;
  return HS_OK;
}

int hs_api_stream_next(hs_api_stream_t *s, int timeout_ms, const hs_value_t **event) {
  *event = NULL;
  if (s->conn == NULL) {
    return HS_EIO;
  }
  long long deadline = hs_test_now_ms() + timeout_ms;
  for (;;) {
    int rc = decode_one(s, event);
    if (rc != HS_OK || *event != NULL) {
      return rc;
    }
    hs_h2_response_t *r = hs_h2_response(s->conn, s->stream_id);
    if (r->closed) {
      return HS_ENOTFOUND;
    }
    long long left = deadline - hs_test_now_ms();
    if (left <= 0) {
      return HS_EUNAVAIL;
    }
    if (hs_h2_pump(s->conn, (int)(left > 100 ? 100 : left)) != HS_OK) {
      r->closed = true;
    }
  }
}

bool hs_api_stream_ended(hs_api_stream_t *s) {
  if (s->conn == NULL) {
    return true;
  }
  hs_h2_response_t *r = hs_h2_response(s->conn, s->stream_id);
  return r->end_stream && s->used == r->body.len;
}

void hs_api_stream_close(hs_api_stream_t *s) {
  hs_h2_close(s->conn);
  s->conn = NULL;
  hs_arena_reset(&s->arena);
}
