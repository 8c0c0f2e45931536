/* Authorization against a real PostgreSQL (HANDSEL_DB) with bearer tokens made by the real
 * `handsel brand` and `handsel token` commands:
 *
 *   - every route × every role (and no, bad, revoked or development credentials) × own brand /
 *     foreign brand, printed as a table, each cell checked against the rules: 401 without a valid
 *     token, 403 for a role the route does not allow, 404 for another brand's thing exactly as
 *     for a thing that does not exist, and success otherwise;
 *   - a revocation reaching every node at once, also a node that had the token cached;
 *   - a token's secret printed once and stored only as a hash;
 *   - a contractor seeing only their own sessions and blobs, and scripts seeing the token's
 *     display name as visit.contractor.name.
 *
 * The servers run without development auth, so only bearer tokens count. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "hs_test_api.h"
#include "hs_test_auth.h"
#include "hs_test_pg.h"
#include "hs_test_server.h"

static hs_test_server_t g_srv;
static PGconn *g_db;
static char g_solar[16384]; /* processes/solar-consult.lua */

/* ---- helpers ---- */

static void env_db(char *out, size_t cap) {
  snprintf(out, cap, "HANDSEL_DB=%s", hs_test_db_must());
}

static int start_server(hs_test_server_t *s) {
  char db[HS_TEST_PATH_MAX];
  env_db(db, sizeof db);
  const char *env[] = {db,
                       "HANDSEL_DEV_AUTH=0",
                       "HANDSEL_WORKERS=2",
                       "HANDSEL_MAX_BLOB=65536",
                       "HANDSEL_LOG_LEVEL=warn",
                       NULL};
  hs_test_server_opts_t o = {.env = env};
  if (hs_test_server_start(s, &o) != 0 || hs_test_server_wait_ready(s, 15000) != 0) {
    hs_test_server_dump_stderr(s, 4000);
    fprintf(stderr, "the server did not come up, or /readyz did not answer 200 within 15 s\n");
    return -1;
  }
  return 0;
}

/* One request that must get an answer. */
static void call(hs_auth_client_t *c, const char *method, const char *path, const char *ct,
                 const char *body, size_t len, hs_auth_resp_t *r) {
  int rc = hs_auth_call(c, method, path, ct, body, len, r);
  if (rc != 0) {
    hs_test_server_dump_stderr(&g_srv, 3000);
    fail_msg("%s %s: no answer (rc %d)", method, path, rc);
  }
}

static void call_json(hs_auth_client_t *c, const char *method, const char *path, const char *body,
                      hs_auth_resp_t *r) {
  call(c, method, path, body != NULL ? "application/json" : NULL, body,
       body != NULL ? strlen(body) : 0, r);
}

static void check_status(const hs_auth_resp_t *r, int want, const char *what) {
  if (r->r.status != want) {
    fail_msg("%s: expected %d, got %d: %s", what, want, r->r.status, hs_api_body_text(&r->r));
  }
}

static const char *code_of(const hs_auth_resp_t *r) {
  const char *c = hs_api_str(r->r.v, "error.code");
  return c != NULL ? c : "";
}

static void check_error(const hs_auth_resp_t *r, int status, const char *code, const char *what) {
  check_status(r, status, what);
  if (strcmp(code_of(r), code) != 0) {
    fail_msg("%s: expected error.code %s, got %s", what, code, hs_api_body_text(&r->r));
  }
}

static void read_solar(void) {
  const char *dir = getenv("HANDSEL_SOURCE_DIR");
  char path[HS_TEST_PATH_MAX];
  snprintf(path, sizeof path, "%s/processes/solar-consult.lua", dir != NULL ? dir : ".");
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    fail_msg("cannot read %s (HANDSEL_SOURCE_DIR names the checkout)", path);
  }
  size_t n = fread(g_solar, 1, sizeof g_solar - 1, f);
  g_solar[n] = '\0';
  fclose(f);
  assert_true(n > 100 && n < sizeof g_solar - 1);
}

/* PUT solar-consult as the given author or admin; returns the version. */
static void deploy_solar(hs_auth_client_t *c, char version[65]) {
  hs_auth_resp_t r;
  hs_auth_resp_init(&r);
  call(c, "PUT", "/v1/processes/solar-consult", "text/x-lua", g_solar, strlen(g_solar), &r);
  check_status(&r, 201, "deploying solar-consult");
  const char *v = hs_api_str(r.r.v, "version");
  snprintf(version, 65, "%s", v != NULL ? v : "");
  assert_int_equal(strlen(version), 64);
  hs_auth_resp_free(&r);
}

/* Starts a solar-consult session for customer Bo; returns its id and the first step's say. */
static void start_solar(hs_auth_client_t *c, char id[40], char *say_out, size_t cap) {
  hs_auth_resp_t r;
  hs_auth_resp_init(&r);
  call_json(c, "POST", "/v1/sessions",
            "{\"process\": \"solar-consult\", \"customer\": {\"name\": \"Bo\"}}", &r);
  check_status(&r, 201, "starting a solar-consult session");
  const char *sid = hs_api_str(r.r.v, "session.id");
  const char *s = hs_api_str(r.r.v, "step.say");
  if (sid == NULL || s == NULL || hs_api_int(r.r.v, "step.seq", 0) != 1) {
    fail_msg("the new session has no id or no first step with a say: %s", hs_api_body_text(&r.r));
  }
  snprintf(id, 40, "%s", sid);
  snprintf(say_out, cap, "%s", s);
  hs_auth_resp_free(&r);
}

/* PUT bytes as a blob; returns its hash. */
static void upload(hs_auth_client_t *c, const char *bytes, char hash[65], int want) {
  char path[128];
  hs_api_sha256_hex(bytes, strlen(bytes), hash);
  snprintf(path, sizeof path, "/v1/blobs/%s", hash);
  hs_auth_resp_t r;
  hs_auth_resp_init(&r);
  call(c, "PUT", path, "image/jpeg", bytes, strlen(bytes), &r);
  check_status(&r, want, "uploading a blob");
  hs_auth_resp_free(&r);
}

static void random_uuid(char out[37]) {
  /* Not a real v4 UUID generator, only an id no row has: the pid and the clock. */
  snprintf(out, 37, "%08x-1d2e-4f30-8a41-%012llx", (unsigned)getpid(),
           (unsigned long long)hs_test_now_ms());
}

/* ---- set-up ---- */

static int group_setup(void **state) {
  (void)state;
  if (start_server(&g_srv) != 0) {
    return -1;
  }
  g_db = hs_test_db_connect(hs_test_db_must());
  return g_db != NULL ? 0 : -1;
}

static int group_teardown(void **state) {
  (void)state;
  hs_test_server_stop(&g_srv);
  PQfinish(g_db);
  return 0;
}

/* ---- 1. the table: route × credentials × brand ---- */

enum { R_ADMIN = 1, R_AUTHOR = 2, R_CONTRACTOR = 4, R_COMPLIANCE = 8 };

/* Who asks: a column of the table. */
typedef struct col {
  const char *label;
  hs_auth_mode_t mode;
  unsigned role;  /* 0: not a valid credential */
  bool foreign;   /* a token of brand B asking for brand A's things */
  char cred[256]; /* the token (or header, or development identity) */
} col_t;

enum {
  K_OPEN,      /* health: no token needed */
  K_ABSENT,    /* not built: 501 whatever the token */
  K_ADDRESSED, /* names one of brand A's things (id, hash, process name) */
  K_STREAM,    /* the same, a long-lived GET */
  K_CREATE,    /* makes something new in the caller's brand */
  K_LIST,      /* lists the caller's brand's things */
  K_OWN,       /* reads the caller's own brand as a whole (its audit log, its key) */
  K_SEALED,    /* the caller's brand's latest checkpoint: 2xx, or 404 while none is sealed */
};

typedef struct route {
  const char *method;
  const char *pattern;
  unsigned roles;
  int kind;
} route_t;

static const route_t k_routes[] = {
    {"GET", "/healthz", 0, K_OPEN},
    {"GET", "/readyz", 0, K_OPEN},
    {"POST", "/v1/sessions", R_CONTRACTOR, K_ADDRESSED},
    {"GET", "/v1/sessions/{id}", R_CONTRACTOR | R_ADMIN | R_COMPLIANCE, K_ADDRESSED},
    {"GET", "/v1/sessions/{id}/stream", R_CONTRACTOR | R_ADMIN | R_COMPLIANCE, K_STREAM},
    {"POST", "/v1/sessions/{id}/steps/{seq}", R_CONTRACTOR, K_ADDRESSED},
    {"POST", "/v1/sessions/{id}/feedback", R_CONTRACTOR, K_ADDRESSED},
    {"PUT", "/v1/blobs/{hash}", R_CONTRACTOR | R_ADMIN, K_CREATE},
    {"GET", "/v1/blobs/{hash}", R_CONTRACTOR | R_ADMIN | R_COMPLIANCE, K_ADDRESSED},
    {"GET", "/v1/processes", R_AUTHOR | R_ADMIN, K_LIST},
    {"PUT", "/v1/processes/{name}", R_AUTHOR | R_ADMIN, K_CREATE},
    {"GET", "/v1/processes/{name}", R_AUTHOR | R_ADMIN, K_ADDRESSED},
    {"POST", "/v1/processes/{name}/activate", R_AUTHOR | R_ADMIN, K_ADDRESSED},
    {"GET", "/v1/audit", R_COMPLIANCE | R_ADMIN, K_OWN},
    {"GET", "/v1/audit/checkpoint", R_COMPLIANCE | R_ADMIN, K_SEALED},
    {"GET", "/v1/audit/key", R_COMPLIANCE | R_ADMIN, K_OWN},
    {"GET", "/v1/content/stats", R_AUTHOR | R_ADMIN, K_ADDRESSED},
    {"POST", "/v1/tokens", R_ADMIN, K_CREATE},
    {"DELETE", "/v1/tokens/{id}", R_ADMIN, K_ADDRESSED},
};
#define N_ROUTES (sizeof k_routes / sizeof k_routes[0])

enum { N_COLS = 15 };

/* Brand A's things the table addresses. */
typedef struct fixture {
  char brand_a[65], brand_b[65];
  char session[40];     /* the own-brand contractor's session */
  char blob[65];        /* uploaded by that contractor */
  char version[65];     /* solar-consult's version in brand A */
  char spare_token[37]; /* a token of brand A for DELETE */
} fixture_t;

/* The request of route `ri` from column `ci`; `absent` names a thing that does not exist
 * instead of brand A's. body is NULL when there is none. */
static void build(const fixture_t *fx, size_t ri, size_t ci, bool absent, char *path, size_t cap,
                  char *body, size_t bcap, const char **ct) {
  const route_t *rt = &k_routes[ri];
  char nothing[37];
  random_uuid(nothing);
  const char *sid = absent ? nothing : fx->session;
  const char *proc = absent ? "no-such-process" : "solar-consult";
  body[0] = '\0';
  *ct = "application/json";
  snprintf(path, cap, "%s", rt->pattern);
  if (strcmp(rt->pattern, "/v1/sessions") == 0) {
    snprintf(body, bcap, "{\"process\": \"%s\", \"customer\": {\"name\": \"Bo\"}}", proc);
  } else if (strcmp(rt->pattern, "/v1/sessions/{id}") == 0) {
    snprintf(path, cap, "/v1/sessions/%s", sid);
  } else if (strcmp(rt->pattern, "/v1/sessions/{id}/stream") == 0) {
    snprintf(path, cap, "/v1/sessions/%s/stream", sid);
  } else if (strcmp(rt->pattern, "/v1/sessions/{id}/steps/{seq}") == 0) {
    snprintf(path, cap, "/v1/sessions/%s/steps/1", sid);
    snprintf(body, bcap, "{\"data\": {\"badge_shown\": true}}");
  } else if (strcmp(rt->pattern, "/v1/sessions/{id}/feedback") == 0) {
    snprintf(path, cap, "/v1/sessions/%s/feedback", sid);
    snprintf(body, bcap, "{\"rating\": 4, \"from\": \"customer\"}");
  } else if (strcmp(rt->pattern, "/v1/blobs/{hash}") == 0 && strcmp(rt->method, "PUT") == 0) {
    /* New bytes for every cell, so each upload makes a new blob. */
    char hash[65];
    snprintf(body, bcap, "cell %zu of %s", ci, fx->brand_a);
    hs_api_sha256_hex(body, strlen(body), hash);
    snprintf(path, cap, "/v1/blobs/%s", hash);
    *ct = "image/jpeg";
  } else if (strcmp(rt->pattern, "/v1/blobs/{hash}") == 0) {
    char hash[65];
    hs_api_sha256_hex(nothing, strlen(nothing), hash);
    snprintf(path, cap, "/v1/blobs/%s", absent ? hash : fx->blob);
  } else if (strcmp(rt->pattern, "/v1/processes/{name}") == 0 && strcmp(rt->method, "PUT") == 0) {
    /* A process of its own for every cell, so no cell deploys what another reads. */
    char name[32];
    snprintf(name, sizeof name, "cell-%zu", ci);
    snprintf(path, cap, "/v1/processes/%s", name);
    snprintf(body, bcap,
             "return process { name = \"%s\", title = \"Cell\", run = function(visit)\n"
             "  visit:step { id = \"a\", title = \"A\",\n"
             "    fields = { field.boolean { name = \"ok\", label = \"OK\" } } }\n"
             "end }\n",
             name);
    *ct = "text/x-lua";
  } else if (strcmp(rt->pattern, "/v1/processes/{name}") == 0) {
    snprintf(path, cap, "/v1/processes/%s", proc);
  } else if (strcmp(rt->pattern, "/v1/processes/{name}/activate") == 0) {
    snprintf(path, cap, "/v1/processes/%s/activate", proc);
    snprintf(body, bcap, "{\"version\": \"%s\"}", fx->version);
  } else if (strcmp(rt->pattern, "/v1/content/stats") == 0) {
    snprintf(path, cap, "/v1/content/stats?process=%s", proc);
  } else if (strcmp(rt->pattern, "/v1/tokens") == 0) {
    snprintf(body, bcap, "{\"role\": \"compliance\", \"name\": \"made in cell %zu\"}", ci);
  } else if (strcmp(rt->pattern, "/v1/tokens/{id}") == 0) {
    snprintf(path, cap, "/v1/tokens/%s", absent ? nothing : fx->spare_token);
  }
  if (body[0] == '\0') {
    *ct = NULL;
  }
}

/* What the rules say route ri answers column c: an exact status, or 2 for "any 2xx". */
static int expected(size_t ri, const col_t *c) {
  const route_t *rt = &k_routes[ri];
  if (rt->kind == K_OPEN) {
    return 200;
  }
  if (rt->kind == K_ABSENT) {
    return 501;
  }
  if (c->role == 0) {
    return 401;
  }
  if ((c->role & rt->roles) == 0) {
    return 403;
  }
  if (c->foreign && (rt->kind == K_ADDRESSED || rt->kind == K_STREAM)) {
    return 404;
  }
  return rt->kind == K_SEALED ? 3 : 2;
}

/* want 2: any 2xx; 3: any 2xx or 404. */
static bool matches(int want, int got) {
  if (want == 3) {
    return (got >= 200 && got < 300) || got == 404;
  }
  return want == 2 ? got >= 200 && got < 300 : want == got;
}

/* One cell: sends the request, fills r and returns the status (0 when none came). */
static int run_cell(const fixture_t *fx, size_t ri, size_t ci, col_t *c, bool absent,
                    hs_auth_resp_t *r) {
  char path[256], body[1024];
  const char *ct = NULL;
  build(fx, ri, ci, absent, path, sizeof path, body, sizeof body, &ct);
  hs_auth_client_t cl;
  hs_auth_init(&cl, g_srv.port, c->mode, c->cred);
  int status;
  if (k_routes[ri].kind == K_STREAM) {
    hs_auth_resp_free(r);
    status = hs_auth_open_status(&cl, path, 5000, r);
    r->r.status = status;
  } else {
    call(&cl, k_routes[ri].method, path, ct, ct != NULL ? body : NULL,
         ct != NULL ? strlen(body) : 0, r);
    status = r->r.status;
  }
  hs_auth_close(&cl);
  return status;
}

/* Checks an answer beyond its status: why (cap bytes) gets "" or what is wrong. */
static void check_details(size_t ri, const col_t *c, const hs_auth_resp_t *r, char *why,
                          size_t cap) {
  why[0] = '\0';
  int st = r->r.status;
  const char *code = code_of(r);
  if (st == 401 &&
      (strncmp(r->www_authenticate, "Bearer", 6) != 0 || strcmp(code, "unauthorized") != 0)) {
    snprintf(why, cap, "401 without WWW-Authenticate: Bearer (\"%s\") or code unauthorized (%s)",
             r->www_authenticate, code);
  } else if (st == 403 && strcmp(code, "forbidden") != 0) {
    snprintf(why, cap, "403 with code %s, not forbidden", code);
  } else if (st == 404 && strcmp(code, "not_found") != 0) {
    snprintf(why, cap, "404 with code %s, not not_found", code);
  } else if (k_routes[ri].kind == K_LIST && st == 200) {
    bool has = strstr(hs_api_body_text(&r->r), "solar-consult") != NULL;
    if (has == c->foreign) {
      snprintf(why, cap, "the list %s brand A's solar-consult: %s",
               c->foreign ? "shows another brand's" : "lacks its own", hs_api_body_text(&r->r));
    }
  }
}

static void test_route_table(void **state) {
  (void)state;
  fixture_t fx;
  memset(&fx, 0, sizeof fx);
  hs_api_unique_name(fx.brand_a, "auth-a");
  hs_api_unique_name(fx.brand_b, "auth-b");
  hs_auth_must_brand(fx.brand_a);
  hs_auth_must_brand(fx.brand_b);

  static const char *const roles[] = {"admin", "author", "contractor", "compliance"};
  static const unsigned masks[] = {R_ADMIN, R_AUTHOR, R_CONTRACTOR, R_COMPLIANCE};
  static const char *const labels[] = {"adm/A", "adm/B", "aut/A", "aut/B",
                                       "con/A", "con/B", "cmp/A", "cmp/B"};
  col_t cols[N_COLS];
  memset(cols, 0, sizeof cols);
  hs_auth_token_t tok[8];
  for (size_t i = 0; i < 8; i++) {
    const char *brand = i % 2 == 0 ? fx.brand_a : fx.brand_b;
    char subject[32];
    snprintf(subject, sizeof subject, "%s-%s", roles[i / 2], i % 2 == 0 ? "a" : "b");
    hs_auth_must_token(&tok[i], brand, roles[i / 2], subject, "Ada Lovelace", NULL, 0);
    cols[i] = (col_t){
        .label = labels[i], .mode = HS_AUTH_BEARER, .role = masks[i / 2], .foreign = i % 2 == 1};
    snprintf(cols[i].cred, sizeof cols[i].cred, "%s", tok[i].secret);
  }
  /* Credentials that are not valid tokens. */
  char unknown[69] = "hst_";
  for (int i = 0; i < 64; i++) {
    unknown[4 + i] = "0123456789abcdef"[(tok[0].secret[4 + i] - '0' + i) & 15];
  }
  unknown[68] = '\0';
  hs_auth_token_t rev_a, rev_b, spare;
  hs_auth_must_token(&rev_a, fx.brand_a, "admin", "gone-a", NULL, NULL, 0);
  hs_auth_must_token(&rev_b, fx.brand_b, "admin", "gone-b", NULL, NULL, 0);
  hs_auth_must_token(&spare, fx.brand_a, "compliance", "spare", NULL, NULL, 0);
  hs_auth_must_revoke(rev_a.id);
  hs_auth_must_revoke(rev_b.id);
  snprintf(fx.spare_token, sizeof fx.spare_token, "%s", spare.id);
  cols[8] = (col_t){.label = "none", .mode = HS_AUTH_NONE};
  cols[9] = (col_t){.label = "malf", .mode = HS_AUTH_BEARER};
  snprintf(cols[9].cred, sizeof cols[9].cred, "hst_%.60s", tok[0].secret + 4);
  cols[10] = (col_t){.label = "unkn", .mode = HS_AUTH_BEARER};
  snprintf(cols[10].cred, sizeof cols[10].cred, "%s", unknown);
  cols[11] = (col_t){.label = "basic", .mode = HS_AUTH_RAW};
  snprintf(cols[11].cred, sizeof cols[11].cred, "Basic %s", tok[0].secret);
  cols[12] = (col_t){.label = "rev/A", .mode = HS_AUTH_BEARER};
  snprintf(cols[12].cred, sizeof cols[12].cred, "%s", rev_a.secret);
  cols[13] = (col_t){.label = "rev/B", .mode = HS_AUTH_BEARER};
  snprintf(cols[13].cred, sizeof cols[13].cred, "%s", rev_b.secret);
  /* The development headers of brand A's admin: this server does not take them. */
  cols[14] = (col_t){.label = "dev", .mode = HS_AUTH_DEV};
  snprintf(cols[14].cred, sizeof cols[14].cred, "%s/admin/admin-a", fx.brand_a);

  /* Brand A's things: a deployed process, a session of its contractor, an uploaded blob. */
  read_solar();
  hs_auth_client_t author_a, contractor_a;
  hs_auth_init(&author_a, g_srv.port, HS_AUTH_BEARER, tok[2].secret);
  hs_auth_init(&contractor_a, g_srv.port, HS_AUTH_BEARER, tok[4].secret);
  deploy_solar(&author_a, fx.version);
  char said[512];
  start_solar(&contractor_a, fx.session, said, sizeof said);
  char blob_bytes[128];
  snprintf(blob_bytes, sizeof blob_bytes, "the roof of %s", fx.brand_a);
  upload(&contractor_a, blob_bytes, fx.blob, 201);
  hs_auth_close(&author_a);
  hs_auth_close(&contractor_a);

  int got[N_ROUTES][N_COLS];
  char first_fail[1024] = "";
  int failures = 0;
  hs_auth_resp_t r, twin;
  hs_auth_resp_init(&r);
  hs_auth_resp_init(&twin);
  for (size_t ri = 0; ri < N_ROUTES; ri++) {
    for (size_t ci = 0; ci < N_COLS; ci++) {
      col_t *c = &cols[ci];
      int want = expected(ri, c);
      got[ri][ci] = run_cell(&fx, ri, ci, c, false, &r);
      char why[768];
      check_details(ri, c, &r, why, sizeof why);
      /* Another brand's thing must be answered exactly as a thing that does not exist. */
      if (why[0] == '\0' && c->foreign && k_routes[ri].kind != K_CREATE &&
          k_routes[ri].kind != K_LIST && k_routes[ri].kind != K_OPEN &&
          k_routes[ri].kind != K_OWN && k_routes[ri].kind != K_SEALED) {
        int twin_status = run_cell(&fx, ri, ci, c, true, &twin);
        if (twin_status != got[ri][ci] || strcmp(code_of(&twin), code_of(&r)) != 0) {
          snprintf(why, sizeof why,
                   "brand A's thing answered %d %s but a thing that does not exist %d %s",
                   got[ri][ci], code_of(&r), twin_status, code_of(&twin));
        }
      }
      if (!matches(want, got[ri][ci]) || why[0] != '\0') {
        got[ri][ci] = -got[ri][ci] - 1; /* marked for the table */
        if (failures++ == 0) {
          char w[8];
          snprintf(w, sizeof w, want == 2 ? "2xx" : "%d", want);
          snprintf(first_fail, sizeof first_fail, "%s %s as %s: expected %s, got %d: %s %s",
                   k_routes[ri].method, k_routes[ri].pattern, c->label, w, -got[ri][ci] - 1, why,
                   hs_api_body_text(&r.r));
        }
      }
    }
  }
  hs_auth_resp_free(&r);
  hs_auth_resp_free(&twin);

  printf("    status by route (rows) and credentials (columns): A is the brand that owns the\n"
         "    session, blob, process and token addressed; B is another brand; none, malf\n"
         "    (malformed), unkn (unknown), basic (not Bearer), rev (revoked), dev (development\n"
         "    headers) are not valid credentials. '!' marks a cell that breaks the rules.\n");
  printf("    %-38s", "");
  for (size_t ci = 0; ci < N_COLS; ci++) {
    printf(" %5s", cols[ci].label);
  }
  printf("\n");
  for (size_t ri = 0; ri < N_ROUTES; ri++) {
    char name[64];
    snprintf(name, sizeof name, "%s %s", k_routes[ri].method, k_routes[ri].pattern);
    printf("    %-38s", name);
    for (size_t ci = 0; ci < N_COLS; ci++) {
      int g = got[ri][ci];
      printf(g < 0 ? " %4d!" : " %5d", g < 0 ? -g - 1 : g);
    }
    printf("\n");
  }
  fflush(stdout);
  if (failures > 0) {
    fail_msg("%d cells break the rules; the first: %s", failures, first_fail);
  }
  hs_test_say(
      "%zu routes x %d credentials: 401 for every invalid credential (WWW-Authenticate: Bearer), "
      "403 for a wrong role, 404 for brand B exactly as for nothing, 2xx otherwise",
      N_ROUTES, N_COLS);

  /* Creating the same things in brand B shows nothing of brand A: its first upload of A's bytes
   * and its first deploy of A's process are new (201), not "already there" (200). */
  hs_auth_client_t contractor_b, author_b;
  hs_auth_init(&contractor_b, g_srv.port, HS_AUTH_BEARER, tok[5].secret);
  hs_auth_init(&author_b, g_srv.port, HS_AUTH_BEARER, tok[3].secret);
  char hash_b[65];
  upload(&contractor_b, blob_bytes, hash_b, 201);
  char version_b[65];
  deploy_solar(&author_b, version_b);
  assert_string_equal(version_b, fx.version);
  hs_auth_close(&contractor_b);
  hs_auth_close(&author_b);
  hs_test_say("brand B uploading A's bytes and deploying A's source gets 201 (new), not 200");
}

/* ---- 2. revocation across nodes ---- */

#define N_CONNS 3

/* Sends GET of a session that does not exist on each client: a valid token gets 404. */
static void warm(hs_auth_client_t *cl, size_t n, const char *what) {
  char path[80], id[37];
  random_uuid(id);
  snprintf(path, sizeof path, "/v1/sessions/%s", id);
  hs_auth_resp_t r;
  hs_auth_resp_init(&r);
  for (size_t i = 0; i < n; i++) {
    call(&cl[i], "GET", path, NULL, NULL, 0, &r);
    char msg[160];
    snprintf(msg, sizeof msg, "%s: a live token on connection %zu", what, i);
    check_error(&r, 404, "not_found", msg);
  }
  hs_auth_resp_free(&r);
}

/* Polls every client until it gets 401, at most bound_ms after t0. Returns the slowest time to
 * 401 in ms; fails the test when one does not get there. *first_401 says whether every client's
 * first request after t0 was already 401. */
static long long await_revoked(hs_auth_client_t *cl, size_t n, long long t0, int bound_ms,
                               const char *what, bool *first_401) {
  char path[80], id[37];
  random_uuid(id);
  snprintf(path, sizeof path, "/v1/sessions/%s", id);
  hs_auth_resp_t r;
  hs_auth_resp_init(&r);
  long long slowest = 0;
  *first_401 = true;
  for (size_t i = 0; i < n; i++) {
    bool first = true;
    for (;;) {
      call(&cl[i], "GET", path, NULL, NULL, 0, &r);
      if (r.r.status == 401) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s: the revoked token on connection %zu", what, i);
        check_error(&r, 401, "unauthorized", msg);
        break;
      }
      if (r.r.status != 404) {
        fail_msg("%s: connection %zu got %d: %s", what, i, r.r.status, hs_api_body_text(&r.r));
      }
      *first_401 = *first_401 && !first;
      first = false;
      if (hs_test_now_ms() - t0 > bound_ms) {
        fail_msg("%s: connection %zu still accepts the revoked token %lld ms after the "
                 "revocation",
                 what, i, hs_test_now_ms() - t0);
      }
      hs_test_sleep_ms(10);
    }
    long long took = hs_test_now_ms() - t0;
    slowest = took > slowest ? took : slowest;
  }
  hs_auth_resp_free(&r);
  return slowest;
}

static void test_revocation_across_nodes(void **state) {
  (void)state;
  hs_test_server_t b;
  memset(&b, 0, sizeof b);
  assert_int_equal(start_server(&b), 0);
  char brand[65];
  hs_api_unique_name(brand, "auth-r");
  hs_auth_must_brand(brand);
  hs_auth_token_t admin, c1, c2, keep;
  hs_auth_must_token(&admin, brand, "admin", "boss", NULL, NULL, 0);
  hs_auth_must_token(&c1, brand, "contractor", "sam", "Sam", NULL, 0);
  hs_auth_must_token(&c2, brand, "contractor", "kim", "Kim", NULL, 0);
  hs_auth_must_token(&keep, brand, "contractor", "lee", "Lee", NULL, 0);

  /* Several connections per node, so that each worker of each node likely holds the token. */
  hs_auth_client_t on_a[N_CONNS], on_b[N_CONNS], keep_cl[2 * N_CONNS];
  for (size_t i = 0; i < N_CONNS; i++) {
    hs_auth_init(&on_a[i], g_srv.port, HS_AUTH_BEARER, c1.secret);
    hs_auth_init(&on_b[i], b.port, HS_AUTH_BEARER, c1.secret);
    hs_auth_init(&keep_cl[i], g_srv.port, HS_AUTH_BEARER, keep.secret);
    hs_auth_init(&keep_cl[N_CONNS + i], b.port, HS_AUTH_BEARER, keep.secret);
  }
  warm(on_a, N_CONNS, "node A before the revocation");
  warm(on_b, N_CONNS, "node B before the revocation");
  warm(keep_cl, 2 * N_CONNS, "another token");

  /* DELETE on node A. */
  hs_auth_client_t adm;
  hs_auth_init(&adm, g_srv.port, HS_AUTH_BEARER, admin.secret);
  hs_auth_resp_t r;
  hs_auth_resp_init(&r);
  char path[80];
  snprintf(path, sizeof path, "/v1/tokens/%s", c1.id);
  call(&adm, "DELETE", path, NULL, NULL, 0, &r);
  long long t0 = hs_test_now_ms();
  check_status(&r, 204, "DELETE the contractor's token on node A");
  bool first_b = false, first_a = false;
  long long ms_b = await_revoked(on_b, N_CONNS, t0, 1000, "node B after DELETE on A", &first_b);
  long long ms_a = await_revoked(on_a, N_CONNS, t0, 1000, "node A after DELETE on A", &first_a);
  hs_test_say(
      "DELETE on node A: every connection got 401 on node B within %lld ms (the first request "
      "already: %s) and on node A within %lld ms (first: %s)",
      ms_b, first_b ? "yes" : "no", ms_a, first_a ? "yes" : "no");
  call(&adm, "DELETE", path, NULL, NULL, 0, &r);
  check_status(&r, 204, "DELETE the same token again");

  /* The command line, which no server runs. */
  for (size_t i = 0; i < N_CONNS; i++) {
    hs_auth_close(&on_a[i]);
    hs_auth_close(&on_b[i]);
    hs_auth_init(&on_a[i], g_srv.port, HS_AUTH_BEARER, c2.secret);
    hs_auth_init(&on_b[i], b.port, HS_AUTH_BEARER, c2.secret);
  }
  warm(on_a, N_CONNS, "node A before the CLI revocation");
  warm(on_b, N_CONNS, "node B before the CLI revocation");
  hs_auth_must_revoke(c2.id);
  t0 = hs_test_now_ms();
  ms_a = await_revoked(on_a, N_CONNS, t0, 1000, "node A after handsel token revoke", &first_a);
  ms_b = await_revoked(on_b, N_CONNS, t0, 1000, "node B after handsel token revoke", &first_b);
  hs_test_say(
      "handsel token revoke: 401 on node A within %lld ms (first: %s), on node B within %lld ms "
      "(first: %s)",
      ms_a, first_a ? "yes" : "no", ms_b, first_b ? "yes" : "no");

  /* The other token still works everywhere. */
  warm(keep_cl, 2 * N_CONNS, "another token after both revocations");
  hs_test_say("a token not revoked still works on both nodes");

  hs_auth_resp_free(&r);
  hs_auth_close(&adm);
  for (size_t i = 0; i < N_CONNS; i++) {
    hs_auth_close(&on_a[i]);
    hs_auth_close(&on_b[i]);
    hs_auth_close(&keep_cl[i]);
    hs_auth_close(&keep_cl[N_CONNS + i]);
  }
  hs_test_server_stop(&b);
}

/* ---- 3. a secret printed once, stored as a hash ---- */

static int count_of(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle)) {
    n++;
  }
  return n;
}

/* No column of any row of tokens shows the secret, whole or its hex part; the row of id holds
 * the SHA-256 of the secret. */
static void check_stored_as_hash(const char *id, const char *secret) {
  PGresult *res = hs_test_db_query(g_db, "SELECT t::text FROM tokens t", 0, NULL);
  assert_non_null(res);
  for (int i = 0; i < PQntuples(res); i++) {
    const char *row = PQgetvalue(res, i, 0);
    if (strstr(row, secret + 4) != NULL) {
      PQclear(res);
      fail_msg("the tokens table holds the secret of token %s", id);
    }
  }
  PQclear(res);
  char want[65];
  hs_api_sha256_hex(secret, strlen(secret), want);
  const char *params[] = {id};
  res = hs_test_db_query(g_db, "SELECT encode(hash, 'hex') FROM tokens WHERE id = $1", 1, params);
  assert_non_null(res);
  assert_int_equal(PQntuples(res), 1);
  assert_string_equal(PQgetvalue(res, 0, 0), want);
  PQclear(res);
}

static void test_secret_stored_as_hash(void **state) {
  (void)state;
  char brand[65];
  hs_api_unique_name(brand, "auth-h");
  hs_auth_must_brand(brand);
  char out1[4096], out2[4096];
  hs_auth_token_t t1, t2;
  hs_auth_must_token(&t1, brand, "admin", "root", "Root", out1, sizeof out1);
  hs_auth_must_token(&t2, brand, "admin", "root", "Root", out2, sizeof out2);
  /* Printed once: the secret occurs once in the output, as its whole last line. */
  assert_int_equal(count_of(out1, t1.secret + 4), 1);
  assert_int_equal(count_of(out2, t2.secret + 4), 1);
  const char *last = strstr(out1, t1.secret);
  assert_true(last != NULL && (last == out1 || last[-1] == '\n') && strcmp(last + 68, "\n") == 0);
  assert_string_not_equal(t1.secret, t2.secret);
  assert_string_not_equal(t1.id, t2.id);
  check_stored_as_hash(t1.id, t1.secret);
  check_stored_as_hash(t2.id, t2.secret);
  hs_test_say(
      "handsel token create prints the secret once, alone on the last line; two tokens differ; "
      "the table holds its SHA-256, never the secret");

  /* POST /v1/tokens: the answer is the only place the secret appears. */
  hs_auth_client_t adm;
  hs_auth_init(&adm, g_srv.port, HS_AUTH_BEARER, t1.secret);
  hs_auth_resp_t r;
  hs_auth_resp_init(&r);
  call_json(&adm, "POST", "/v1/tokens", "{\"role\": \"author\", \"name\": \"Pat\"}", &r);
  check_status(&r, 201, "POST /v1/tokens");
  HS_API_EXPECT_STR(r.r.v, "role", "author");
  HS_API_EXPECT_STR(r.r.v, "name", "Pat");
  char id[40], secret[80];
  snprintf(id, sizeof id, "%s", hs_api_str(r.r.v, "id") ? hs_api_str(r.r.v, "id") : "");
  snprintf(secret, sizeof secret, "%s",
           hs_api_str(r.r.v, "token") ? hs_api_str(r.r.v, "token") : "");
  assert_int_equal(strlen(secret), 68);
  assert_memory_equal(secret, "hst_", 4);
  check_stored_as_hash(id, secret);
  /* The new token works, with its role. */
  hs_auth_client_t author;
  hs_auth_init(&author, g_srv.port, HS_AUTH_BEARER, secret);
  call(&author, "GET", "/v1/processes", NULL, NULL, 0, &r);
  check_status(&r, 200, "GET /v1/processes with the token POST /v1/tokens made");
  call(&author, "POST", "/v1/tokens", "application/json", "{\"role\": \"admin\"}", 17, &r);
  check_error(&r, 403, "forbidden", "an author making a token");
  /* Neither the token list nor the server's log shows a secret. */
  char list[16384];
  const char *args[] = {"token", "list", "--brand", brand, NULL};
  assert_int_equal(hs_auth_cli(list, sizeof list, args), 0);
  assert_non_null(strstr(list, t1.id));
  assert_null(strstr(list, t1.secret + 4));
  assert_null(strstr(list, secret + 4));
  char *log = hs_test_server_stderr(&g_srv);
  bool logged = log != NULL && (strstr(log, secret + 4) != NULL || strstr(log, t1.secret + 4));
  free(log);
  assert_false(logged);
  hs_test_say(
      "POST /v1/tokens answers the secret once; stored as its hash; token list and the server "
      "log never show a secret");
  hs_auth_resp_free(&r);
  hs_auth_close(&adm);
  hs_auth_close(&author);
}

/* ---- 4. a contractor sees only their own ---- */

static void test_contractor_own(void **state) {
  (void)state;
  char brand[65];
  hs_api_unique_name(brand, "auth-c");
  hs_auth_must_brand(brand);
  hs_auth_token_t author, admin, sam, kim;
  hs_auth_must_token(&author, brand, "author", "pat", NULL, NULL, 0);
  hs_auth_must_token(&admin, brand, "admin", "boss", NULL, NULL, 0);
  hs_auth_must_token(&sam, brand, "contractor", "sam", "Ada Lovelace", NULL, 0);
  hs_auth_must_token(&kim, brand, "contractor", "kim", "Kim Park", NULL, 0);
  read_solar();
  hs_auth_client_t au, ad, cs, ck;
  hs_auth_init(&au, g_srv.port, HS_AUTH_BEARER, author.secret);
  hs_auth_init(&ad, g_srv.port, HS_AUTH_BEARER, admin.secret);
  hs_auth_init(&cs, g_srv.port, HS_AUTH_BEARER, sam.secret);
  hs_auth_init(&ck, g_srv.port, HS_AUTH_BEARER, kim.secret);
  char version[65];
  deploy_solar(&au, version);

  /* visit.contractor.name is the token's --name. */
  char id_sam[40], id_kim[40], said[512];
  start_solar(&cs, id_sam, said, sizeof said);
  assert_string_equal(said, "Hi Bo, I'm Ada Lovelace with SunCo.");
  start_solar(&ck, id_kim, said, sizeof said);
  assert_string_equal(said, "Hi Bo, I'm Kim Park with SunCo.");
  /* ... and the name given to POST /v1/tokens. */
  hs_auth_resp_t r, twin;
  hs_auth_resp_init(&r);
  hs_auth_resp_init(&twin);
  call_json(&ad, "POST", "/v1/tokens",
            "{\"role\": \"contractor\", \"subject\": \"lee\", \"name\": \"Lee Chen\"}", &r);
  check_status(&r, 201, "an admin making a contractor token");
  hs_auth_client_t cl;
  hs_auth_init(&cl, g_srv.port, HS_AUTH_BEARER, hs_api_str(r.r.v, "token"));
  char id_lee[40];
  start_solar(&cl, id_lee, said, sizeof said);
  assert_string_equal(said, "Hi Bo, I'm Lee Chen with SunCo.");
  hs_auth_close(&cl);
  hs_test_say(
      "greet says \"I'm <name>\" with the name of the token (CLI --name and POST /v1/tokens)");

  /* Kim cannot reach Sam's session in any way, exactly as if it did not exist. */
  char nothing[37];
  random_uuid(nothing);
  static const struct {
    const char *method, *suffix, *body; /* path: /v1/sessions/{id}<suffix> */
  } reach[] = {
      {"GET", "", NULL},
      {"POST", "/steps/1", "{\"data\": {\"badge_shown\": true}}"},
      {"POST", "/feedback", "{\"rating\": 1, \"from\": \"contractor\"}"},
  };
  for (size_t i = 0; i < sizeof reach / sizeof reach[0]; i++) {
    char path[160], what[200];
    snprintf(path, sizeof path, "/v1/sessions/%s%s", id_sam, reach[i].suffix);
    snprintf(what, sizeof what, "kim: %s /v1/sessions/{id}%s", reach[i].method, reach[i].suffix);
    call_json(&ck, reach[i].method, path, reach[i].body, &r);
    check_error(&r, 404, "not_found", what);
    snprintf(path, sizeof path, "/v1/sessions/%s%s", nothing, reach[i].suffix);
    call_json(&ck, reach[i].method, path, reach[i].body, &twin);
    assert_int_equal(twin.r.status, r.r.status);
    assert_string_equal(code_of(&twin), code_of(&r));
  }
  char path[160];
  snprintf(path, sizeof path, "/v1/sessions/%s/stream", id_sam);
  assert_int_equal(hs_auth_open_status(&ck, path, 5000, &r), 404);
  assert_int_equal(hs_auth_open_status(&cs, path, 5000, NULL), 200);
  /* Nothing of Kim's reached Sam's session: still at step 1, no feedback. */
  snprintf(path, sizeof path, "/v1/sessions/%s", id_sam);
  call(&cs, "GET", path, NULL, NULL, 0, &r);
  check_status(&r, 200, "sam reading his session");
  assert_int_equal(hs_api_int(r.r.v, "step.seq", 0), 1);
  const char *params[] = {id_sam};
  assert_int_equal(
      hs_test_db_scalar(g_db, "SELECT count(*) FROM feedback WHERE session_id = $1", 1, params), 0);
  hs_test_say(
      "kim gets 404 for sam's session (GET, stream, complete, feedback), as for none; sam's "
      "session is untouched");

  /* Blobs: only the uploader among contractors; the admin reads every one of the brand. */
  char bytes[128], hash[65];
  snprintf(bytes, sizeof bytes, "sam's photo in %s", brand);
  upload(&cs, bytes, hash, 201);
  snprintf(path, sizeof path, "/v1/blobs/%s", hash);
  call(&cs, "GET", path, NULL, NULL, 0, &r);
  check_status(&r, 200, "sam reading his blob");
  assert_int_equal(r.r.body.len, strlen(bytes));
  assert_memory_equal(r.r.body.data, bytes, strlen(bytes));
  call(&ck, "GET", path, NULL, NULL, 0, &r);
  check_error(&r, 404, "not_found", "kim reading sam's blob");
  call(&ad, "GET", path, NULL, NULL, 0, &r);
  check_status(&r, 200, "the admin reading sam's blob");
  hs_test_say("kim gets 404 for sam's blob; sam and the admin read it");

  hs_auth_resp_free(&r);
  hs_auth_resp_free(&twin);
  hs_auth_close(&au);
  hs_auth_close(&ad);
  hs_auth_close(&cs);
  hs_auth_close(&ck);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_route_table),
      cmocka_unit_test(test_revocation_across_nodes),
      cmocka_unit_test(test_secret_stored_as_hash),
      cmocka_unit_test(test_contractor_own),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
