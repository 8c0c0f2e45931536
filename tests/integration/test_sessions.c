/* The contractor API and the process deploy routes against a real PostgreSQL (HANDSEL_DB):
 * every route's happy path and its errors, every retry and conflict case of a completion, the
 * evidence rule, the session stream seen from a second device, the compliance log as rows in
 * validation_records, and sessions staying on their process version.
 *
 * One server (two workers, development auth) serves every test; each test acts for a brand of
 * its own, so tests never see each other's rows. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "core/ids.h"
#include "hs_test_api.h"
#include "hs_test_h2.h"
#include "hs_test_pg.h"
#include "hs_test_server.h"

#define MAX_BLOB 65536

static hs_test_server_t g_srv;
static PGconn *g_db;

/* A form in three steps: a count with limits and an optional note, a photo, a confirmation.
 * The second step's title depends on the first answer, so an answer shows which data the
 * engine took. %s is the version's mark ("" or " v2"), so two versions differ. */
static const char FORM_FMT[] =
    "return process {\n"
    "  name = \"form\",\n"
    "  title = \"Form%s\",\n"
    "  run = function(visit)\n"
    "    local a = visit:step { id = \"count\", title = \"Count things%s\",\n"
    "      fields = { field.integer { name = \"n\", label = \"How many\", required = true,\n"
    "                                 min = 1, max = 10 },\n"
    "                 field.text { name = \"note\", label = \"Note\", max_length = 5 } } }\n"
    "    visit:step { id = \"photo\", title = \"Photo%s of \" .. a.n,\n"
    "      fields = { field.photo { name = \"pic\", label = \"Picture\", required = true } } }\n"
    "    visit:step { id = \"done\", title = \"Confirm\",\n"
    "      fields = { field.boolean { name = \"ok\", label = \"OK?\", required = true } } }\n"
    "    visit:outcome(\"finished\")\n"
    "  end,\n"
    "}\n";

static char g_form_v1[2048], g_form_v2[2048];

/* ---- helpers ---- */

static void check_status(const hs_api_resp_t *r, int want, const char *what) {
  if (r->status != want) {
    fail_msg("%s: expected %d, got %d: %s", what, want, r->status, hs_api_body_text(r));
  }
}

/* One request that must get an answer (any status). */
static void call(hs_api_t *c, const char *role, const char *method, const char *path,
                 const char *body, hs_api_resp_t *r) {
  int rc = hs_api_call(c, role, method, path, body, r);
  if (rc != 0) {
    hs_test_server_dump_stderr(&g_srv, 3000);
    fail_msg("%s %s: no answer (rc %d)", method, path, rc);
  }
}

/* An error answer: status, error.code, and a message that contains `needle` (may be NULL). */
static void check_error(const hs_api_resp_t *r, int status, const char *code, const char *needle,
                        const char *what) {
  check_status(r, status, what);
  const char *got = hs_api_str(r->v, "error.code");
  const char *msg = hs_api_str(r->v, "error.message");
  if (got == NULL || strcmp(got, code) != 0 || msg == NULL || msg[0] == '\0') {
    fail_msg("%s: expected error.code %s with a message, got %s", what, code, hs_api_body_text(r));
  }
  if (needle != NULL && strstr(msg, needle) == NULL) {
    fail_msg("%s: the message \"%s\" does not mention \"%s\"", what, msg, needle);
  }
}

static void new_client(hs_api_t *c, const char *brand, const char *subject) {
  hs_api_init(c, g_srv.port, brand, subject);
}

static void new_brand(char out[65]) {
  hs_api_unique_name(out, "s");
}

static void deploy_form(hs_api_t *c, char version[65]) {
  int st = hs_api_deploy(c, "form", g_form_v1, version);
  if (st != 201) {
    fail_msg("deploying the form process: %d", st);
  }
}

static void start(hs_api_t *c, const char *ref, char id[40]) {
  int64_t seq = 0;
  int st = hs_api_start(c, "form", ref, id, &seq);
  if ((st != 201 && st != 200) || seq != 1) {
    fail_msg("starting a form session: status %d, first seq %lld", st, (long long)seq);
  }
}

static void complete(hs_api_t *c, const char *id, int64_t seq, const char *body, hs_api_resp_t *r) {
  char path[160];
  hs_api_step_path(path, sizeof path, id, seq);
  call(c, "contractor", "POST", path, body, r);
}

static const char *field_msg(const hs_api_resp_t *r, const char *field) {
  char path[96];
  snprintf(path, sizeof path, "error.fields.%s", field);
  return hs_api_str(r->v, path);
}

static void put_blob(hs_api_t *c, const char *role, const void *p, size_t n, const char *hash,
                     hs_api_resp_t *r) {
  char path[128];
  snprintf(path, sizeof path, "/v1/blobs/%s", hash);
  int rc = hs_api_call_raw(c, role, "PUT", path, "image/jpeg", p, n, r);
  if (rc != 0) {
    fail_msg("PUT %s: no answer (rc %d)", path, rc);
  }
}

static long long db_count(const char *sql, const char *p1, const char *p2) {
  const char *params[] = {p1, p2};
  int n = p2 != NULL ? 2 : p1 != NULL ? 1 : 0;
  long long v = hs_test_db_scalar(g_db, sql, n, params);
  if (v < 0) {
    fail_msg("the query failed: %s", sql);
  }
  return v;
}

/* ---- set-up ---- */

static int group_setup(void **state) {
  const char *db = hs_test_db_must();
  snprintf(g_form_v1, sizeof g_form_v1, FORM_FMT, "", "", "");
  snprintf(g_form_v2, sizeof g_form_v2, FORM_FMT, " v2", " v2", " v2");
  char env_db[HS_TEST_PATH_MAX];
  snprintf(env_db, sizeof env_db, "HANDSEL_DB=%s", db);
  const char *env[] = {env_db,
                       "HANDSEL_DEV_AUTH=1",
                       "HANDSEL_WORKERS=2",
                       "HANDSEL_MAX_BLOB=65536",
                       "HANDSEL_LOG_LEVEL=warn",
                       NULL};
  hs_test_server_opts_t o = {.env = env};
  if (hs_test_server_start(&g_srv, &o) != 0 || hs_test_server_wait_ready(&g_srv, 15000) != 0) {
    hs_test_server_dump_stderr(&g_srv, 4000);
    fprintf(stderr, "the server did not come up, or /readyz did not answer 200 within 15 s\n");
    return -1;
  }
  g_db = hs_test_db_connect(db);
  return g_db != NULL ? 0 : -1;
}

static int group_teardown(void **state) {
  hs_test_server_stop(&g_srv);
  PQfinish(g_db);
  return 0;
}

/* ---- processes ---- */

static void test_processes(void **state) {
  char brand[65], v1[65], v2[65], expect_v1[65];
  new_brand(brand);
  hs_api_t c;
  new_client(&c, brand, "pat");
  hs_api_resp_t r;
  hs_api_resp_init(&r);

  /* The first version is active at once; its version is the SHA-256 of the source. */
  call(&c, "author", "GET", "/v1/processes/form", NULL, &r);
  check_error(&r, 404, "not_found", "form", "GET an undeployed process");
  hs_api_call_raw(&c, "author", "PUT", "/v1/processes/form", "text/x-lua", g_form_v1,
                  strlen(g_form_v1), &r);
  check_status(&r, 201, "PUT the first version");
  hs_api_sha256_hex(g_form_v1, strlen(g_form_v1), expect_v1);
  snprintf(v1, sizeof v1, "%s", hs_api_str(r.v, "version") ? hs_api_str(r.v, "version") : "");
  assert_string_equal(v1, expect_v1);
  HS_API_EXPECT_STR(r.v, "name", "form");
  const hs_value_t *active = hs_api_at(r.v, "active");
  assert_true(active != NULL && active->type == HS_V_BOOL && active->as.b);
  hs_test_say("PUT a first version: 201, version = sha256(source), active");

  /* The same source again is the same version, still active. */
  hs_api_call_raw(&c, "author", "PUT", "/v1/processes/form", "text/plain", g_form_v1,
                  strlen(g_form_v1), &r);
  check_status(&r, 200, "PUT the same source again");
  HS_API_EXPECT_STR(r.v, "version", v1);
  active = hs_api_at(r.v, "active");
  assert_true(active != NULL && active->type == HS_V_BOOL && active->as.b);

  /* A second version waits for activate. */
  hs_api_call_raw(&c, "author", "PUT", "/v1/processes/form", "text/x-lua", g_form_v2,
                  strlen(g_form_v2), &r);
  check_status(&r, 201, "PUT a second version");
  snprintf(v2, sizeof v2, "%s", hs_api_str(r.v, "version") ? hs_api_str(r.v, "version") : "");
  assert_int_equal(strlen(v2), 64);
  assert_string_not_equal(v1, v2);
  active = hs_api_at(r.v, "active");
  assert_true(active != NULL && active->type == HS_V_BOOL && !active->as.b);
  hs_test_say("PUT the same source again: 200; a second version: 201, not active");

  call(&c, "admin", "GET", "/v1/processes", NULL, &r);
  check_status(&r, 200, "GET /v1/processes");
  const hs_value_t *list = hs_api_at(r.v, "processes");
  assert_true(list != NULL && list->type == HS_V_ARRAY);
  assert_int_equal(list->as.arr.len, 1);
  const hs_value_t *item = &list->as.arr.items[0];
  HS_API_EXPECT_STR(item, "name", "form");
  HS_API_EXPECT_STR(item, "title", "Form");
  HS_API_EXPECT_STR(item, "active", v1);
  assert_int_equal(hs_api_int(item, "versions", -1), 2);
  hs_test_say("GET /v1/processes: one process, title, active version, 2 versions");

  call(&c, "author", "GET", "/v1/processes/form", NULL, &r);
  check_status(&r, 200, "GET /v1/processes/form");
  HS_API_EXPECT_STR(r.v, "active", v1);
  const hs_value_t *versions = hs_api_at(r.v, "versions");
  assert_true(versions != NULL && versions->type == HS_V_ARRAY);
  assert_int_equal(versions->as.arr.len, 2);
  HS_API_EXPECT_STR(&versions->as.arr.items[0], "version", v2); /* newest first */
  HS_API_EXPECT_STR(&versions->as.arr.items[1], "version", v1);
  assert_non_null(hs_api_str(&versions->as.arr.items[0], "created_at"));
  hs_test_say("GET /v1/processes/form: both versions, newest first");

  /* Activate, roll back, and the errors of activate. */
  char body[160];
  snprintf(body, sizeof body, "{\"version\": \"%s\"}", v2);
  call(&c, "author", "POST", "/v1/processes/form/activate", body, &r);
  check_status(&r, 200, "activate v2");
  HS_API_EXPECT_STR(r.v, "version", v2);
  active = hs_api_at(r.v, "active");
  assert_true(active != NULL && active->type == HS_V_BOOL && active->as.b);
  call(&c, "author", "GET", "/v1/processes/form", NULL, &r);
  HS_API_EXPECT_STR(r.v, "active", v2);
  snprintf(body, sizeof body, "{\"version\": \"%s\"}", v1);
  call(&c, "author", "POST", "/v1/processes/form/activate", body, &r);
  check_status(&r, 200, "roll back to v1");
  call(&c, "author", "GET", "/v1/processes", NULL, &r);
  HS_API_EXPECT_STR(&hs_api_at(r.v, "processes")->as.arr.items[0], "active", v1);
  snprintf(body, sizeof body, "{\"version\": \"%064d\"}", 0);
  call(&c, "author", "POST", "/v1/processes/form/activate", body, &r);
  check_error(&r, 409, "conflict", NULL, "activate an unknown version");
  call(&c, "author", "POST", "/v1/processes/form/activate", "{\"version\": \"v1\"}", &r);
  check_error(&r, 400, "malformed", NULL, "activate a malformed version");
  snprintf(body, sizeof body, "{\"version\": \"%s\"}", v1);
  call(&c, "author", "POST", "/v1/processes/other/activate", body, &r);
  /* A process with no version is not there at all, as for anything that does not exist. */
  check_error(&r, 404, "not_found", NULL, "activate a version under a process that does not exist");
  hs_test_say(
      "activate: 200 and GET follows, roll back, 409 unknown version, 404 unknown process, 400 "
      "malformed");

  /* A broken script: 422 naming the line, fields keyed by line number. */
  static const char broken[] = "return process {\n"
                               "  name = \"broken\",\n"
                               "  run = function(visit)\n"
                               "    local x = = 1\n"
                               "  end,\n"
                               "}\n";
  hs_api_call_raw(&c, "author", "PUT", "/v1/processes/broken", "text/x-lua", broken, strlen(broken),
                  &r);
  check_error(&r, 422, "validation_failed", ":4:", "PUT a script with a syntax error");
  const char *line_msg = hs_api_str(r.v, "error.fields.4");
  if (line_msg == NULL || line_msg[0] == '\0') {
    fail_msg("the 422 for a broken script has no fields[\"4\"]: %s", hs_api_body_text(&r));
  }
  hs_api_call_raw(&c, "author", "PUT", "/v1/processes/not-form", "text/x-lua", g_form_v1,
                  strlen(g_form_v1), &r);
  check_error(&r, 422, "validation_failed", "form", "PUT under another name than the script's");
  hs_api_call_raw(&c, "author", "PUT", "/v1/processes/form", "text/x-lua", "", 0, &r);
  check_error(&r, 400, "malformed", NULL, "PUT an empty body");
  hs_api_call_raw(&c, "author", "PUT", "/v1/processes/Bad_Name", "text/x-lua", g_form_v1,
                  strlen(g_form_v1), &r);
  check_error(&r, 400, "malformed", NULL, "PUT a bad process name");
  hs_api_call_raw(&c, "contractor", "PUT", "/v1/processes/form", "text/x-lua", g_form_v1,
                  strlen(g_form_v1), &r);
  check_error(&r, 403, "forbidden", NULL, "PUT as a contractor");
  call(&c, "author", "GET", "/v1/processes/broken", NULL, &r);
  check_error(&r, 404, "not_found", NULL, "the broken script was not stored");
  assert_int_equal(db_count("SELECT count(*) FROM process_versions pv JOIN brands b ON"
                            " b.id = pv.brand_id WHERE b.name = $1",
                            brand, NULL),
                   2);
  hs_test_say(
      "422 with line 4 in message and fields for a syntax error; 422 name mismatch; 400 empty "
      "body and bad name; 403 contractor; nothing stored but the 2 good versions");

  hs_api_resp_free(&r);
  hs_api_close(&c);
}

/* ---- start ---- */

typedef struct racer {
  int port;
  const char *brand;
  const char *ref;
  pthread_barrier_t *barrier;
  hs_api_batch_item_t items[4];
  int rc;
} racer_t;

static void *race_start(void *arg) {
  racer_t *r = arg;
  hs_api_t c;
  hs_api_init(&c, r->port, r->brand, "sam");
  char body[256];
  snprintf(body, sizeof body,
           "{\"process\": \"form\", \"customer\": {\"name\": \"Ada\"}, \"ref\": \"%s\"}", r->ref);
  for (size_t i = 0; i < 4; i++) {
    hs_api_resp_init(&r->items[i].resp);
    r->items[i].method = "POST";
    r->items[i].path = "/v1/sessions";
    r->items[i].body_json = body;
  }
  /* Connect before the barrier, so the requests leave together. */
  hs_api_resp_t warm;
  hs_api_resp_init(&warm);
  hs_api_call(&c, "contractor", "GET", "/v1/processes", NULL, &warm);
  hs_api_resp_free(&warm);
  pthread_barrier_wait(r->barrier);
  r->rc = hs_api_batch(&c, "contractor", r->items, 4);
  hs_api_close(&c);
  return NULL;
}

static void test_start(void **state) {
  char brand[65], version[65], id[40], id2[40];
  new_brand(brand);
  hs_api_t c;
  new_client(&c, brand, "sam");
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  deploy_form(&c, version);

  call(&c, "contractor", "POST", "/v1/sessions", "{\"process\": \"nope\"}", &r);
  check_error(&r, 404, "not_found", "nope", "start an unknown process");
  static const struct {
    const char *body, *needle;
  } bad[] = {
      {"[1, 2]", NULL},
      {"{\"process\": ", NULL},
      {"{\"customer\": {}}", "process"},
      {"{\"process\": \"Form!\"}", "process"},
      {"{\"process\": 7}", "process"},
      {"{\"process\": \"form\", \"customer\": \"Ada\"}", "customer"},
      {"{\"process\": \"form\", \"ref\": \"\"}", "ref"},
      {"{\"process\": \"form\", \"ref\": 12}", "ref"},
      {"{\"process\": \"form\", \"colour\": \"red\"}", "colour"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    call(&c, "contractor", "POST", "/v1/sessions", bad[i].body, &r);
    char what[160];
    snprintf(what, sizeof what, "start with %s", bad[i].body);
    check_error(&r, 400, "malformed", bad[i].needle, what);
  }
  char long_ref[200];
  memset(long_ref, 'r', 129);
  long_ref[129] = '\0';
  hs_api_callf(&c, "contractor", "POST", "/v1/sessions", &r,
               "{\"process\": \"form\", \"ref\": \"%s\"}", long_ref);
  check_error(&r, 400, "malformed", "ref", "start with a 129-byte ref");
  call(&c, "author", "POST", "/v1/sessions", "{\"process\": \"form\"}", &r);
  check_error(&r, 403, "forbidden", NULL, "start as an author");
  assert_int_equal(db_count("SELECT count(*) FROM sessions s JOIN brands b ON b.id = s.brand_id"
                            " WHERE b.name = $1",
                            brand, NULL),
                   0);
  hs_test_say(
      "404 unknown process; 400 for 10 malformed bodies (unknown member named); 403 author; "
      "no session stored");

  /* Without ref: a new session with its first step in the same answer. */
  call(&c, "contractor", "POST", "/v1/sessions",
       "{\"process\": \"form\", \"customer\": {\"name\": \"Ada\", \"id\": \"c-1\"}}", &r);
  check_status(&r, 201, "start without ref");
  const char *sid = hs_api_str(r.v, "session.id");
  assert_true(sid != NULL && hs_uuid_valid(sid));
  HS_API_EXPECT_STR(r.v, "session.process", "form");
  HS_API_EXPECT_STR(r.v, "session.version", version);
  HS_API_EXPECT_STR(r.v, "session.status", "active");
  assert_non_null(hs_api_str(r.v, "session.started_at"));
  assert_int_equal(hs_api_int(r.v, "step.seq", 0), 1);
  HS_API_EXPECT_STR(r.v, "step.id", "count");
  HS_API_EXPECT_STR(r.v, "step.session", sid);
  const hs_value_t *fields = hs_api_at(r.v, "step.fields");
  assert_true(fields != NULL && fields->type == HS_V_ARRAY && fields->as.arr.len == 2);
  HS_API_EXPECT_STR(&fields->as.arr.items[0], "name", "n");
  HS_API_EXPECT_STR(&fields->as.arr.items[0], "type", "integer");
  hs_test_say("start without ref: 201, uuid, process, version, status active, first step seq 1");

  /* With ref: 201, then 200 with the same session. Another contractor's ref is theirs. */
  start(&c, "visit-1", id);
  call(&c, "contractor", "POST", "/v1/sessions",
       "{\"process\": \"form\", \"customer\": {\"name\": \"Ada\"}, \"ref\": \"visit-1\"}", &r);
  check_status(&r, 200, "the same ref again");
  HS_API_EXPECT_STR(r.v, "session.id", id);
  HS_API_EXPECT_STR(r.v, "session.ref", "visit-1");
  assert_int_equal(hs_api_int(r.v, "step.seq", 0), 1);
  hs_api_t other;
  new_client(&other, brand, "kim");
  int64_t seq = 0;
  assert_int_equal(hs_api_start(&other, "form", "visit-1", id2, &seq), 201);
  assert_string_not_equal(id, id2);
  hs_test_say(
      "ref: 201 then 200 with the same session; another contractor's same ref is a new one");

  /* Eight starts with one new ref, from two connections at once: one session. */
  pthread_barrier_t barrier;
  pthread_barrier_init(&barrier, NULL, 2);
  racer_t racers[2];
  pthread_t th[2];
  for (int i = 0; i < 2; i++) {
    memset(&racers[i], 0, sizeof racers[i]);
    racers[i].port = g_srv.port;
    racers[i].brand = brand;
    racers[i].ref = "visit-race";
    racers[i].barrier = &barrier;
    pthread_create(&th[i], NULL, race_start, &racers[i]);
  }
  for (int i = 0; i < 2; i++) {
    pthread_join(th[i], NULL);
  }
  pthread_barrier_destroy(&barrier);
  int created = 0;
  char race_id[40] = "";
  for (int i = 0; i < 2; i++) {
    assert_int_equal(racers[i].rc, 0);
    for (int k = 0; k < 4; k++) {
      hs_api_resp_t *x = &racers[i].items[k].resp;
      if (x->status != 200 && x->status != 201) {
        fail_msg("a racing start got %d: %s", x->status, hs_api_body_text(x));
      }
      created += x->status == 201;
      const char *xid = hs_api_str(x->v, "session.id");
      assert_non_null(xid);
      if (race_id[0] == '\0') {
        snprintf(race_id, sizeof race_id, "%s", xid);
      }
      assert_string_equal(xid, race_id);
      hs_api_resp_free(x);
    }
  }
  assert_int_equal(created, 1);
  assert_int_equal(
      db_count("SELECT count(*) FROM sessions WHERE ref = $1 AND id = $2", "visit-race", race_id),
      1);
  assert_int_equal(db_count("SELECT count(*) FROM sessions s JOIN brands b ON b.id = s.brand_id"
                            " WHERE b.name = $1 AND s.ref = $2",
                            brand, "visit-race"),
                   1);
  hs_test_say(
      "8 concurrent starts with one ref on 2 connections: one 201, seven 200, one session row");

  hs_api_resp_free(&r);
  hs_api_close(&c);
  hs_api_close(&other);
}

/* ---- get ---- */

static void test_get(void **state) {
  char brand[65], brand2[65], version[65], id[40], path[128];
  new_brand(brand);
  new_brand(brand2);
  hs_api_t c, kim, stranger;
  new_client(&c, brand, "sam");
  new_client(&kim, brand, "kim");
  new_client(&stranger, brand2, "sam");
  hs_api_resp_t r, first;
  hs_api_resp_init(&r);
  hs_api_resp_init(&first);
  deploy_form(&c, version);
  call(&c, "contractor", "POST", "/v1/sessions",
       "{\"process\": \"form\", \"customer\": {\"name\": \"Ada\"}, \"ref\": \"g-1\"}", &first);
  check_status(&first, 201, "start");
  snprintf(id, sizeof id, "%s", hs_api_str(first.v, "session.id"));
  snprintf(path, sizeof path, "/v1/sessions/%s", id);

  call(&c, "contractor", "GET", path, NULL, &r);
  check_status(&r, 200, "GET own session");
  if (!hs_value_equal(r.v, first.v)) {
    fail_msg("GET differs from the start's answer:\n  start %s\n  get   %s",
             hs_api_body_text(&first), hs_api_body_text(&r));
  }
  hs_test_say("GET own session: 200, the same {session, step} as the start answered");

  call(&c, "admin", "GET", path, NULL, &r);
  check_status(&r, 200, "GET as admin");
  call(&c, "compliance", "GET", path, NULL, &r);
  check_status(&r, 200, "GET as compliance");
  call(&c, "author", "GET", path, NULL, &r);
  check_error(&r, 403, "forbidden", NULL, "GET as author");
  hs_test_say("admin and compliance of the brand: 200; author: 403");

  char unknown[37];
  hs_uuid_v4(unknown);
  snprintf(path, sizeof path, "/v1/sessions/%s", unknown);
  call(&c, "contractor", "GET", path, NULL, &r);
  check_error(&r, 404, "not_found", unknown, "GET an unknown session");
  call(&c, "contractor", "GET", "/v1/sessions/not-a-uuid", NULL, &r);
  check_error(&r, 400, "malformed", NULL, "GET a malformed id");
  snprintf(path, sizeof path, "/v1/sessions/%s", id);
  call(&kim, "contractor", "GET", path, NULL, &r);
  check_error(&r, 404, "not_found", NULL, "GET another contractor's session");
  call(&stranger, "contractor", "GET", path, NULL, &r);
  check_error(&r, 404, "not_found", NULL, "GET another brand's session");
  call(&stranger, "admin", "GET", path, NULL, &r);
  check_error(&r, 404, "not_found", NULL, "GET another brand's session as its admin");
  hs_test_say(
      "404: unknown id, another contractor's, another brand's (contractor, admin); 400: malformed "
      "id");

  hs_api_resp_free(&r);
  hs_api_resp_free(&first);
  hs_api_close(&c);
  hs_api_close(&kim);
  hs_api_close(&stranger);
}

/* ---- complete ---- */

static void test_complete(void **state) {
  char brand[65], brand2[65], version[65], id[40], path[160];
  new_brand(brand);
  new_brand(brand2);
  hs_api_t c, jc, kim, stranger;
  new_client(&c, brand, "sam");
  new_client(&jc, brand, "sam");
  jc.json = true;
  new_client(&kim, brand, "kim");
  new_client(&stranger, brand2, "sam");
  hs_api_resp_t r, ok1, again;
  hs_api_resp_init(&r);
  hs_api_resp_init(&ok1);
  hs_api_resp_init(&again);
  deploy_form(&c, version);
  start(&c, NULL, id);

  /* Malformed requests: 400, nothing recorded. */
  snprintf(path, sizeof path, "/v1/sessions/%s/steps/abc", id);
  call(&c, "contractor", "POST", path, "{\"data\": {\"n\": 3}}", &r);
  check_error(&r, 400, "malformed", "seq", "seq abc");
  snprintf(path, sizeof path, "/v1/sessions/%s/steps/0", id);
  call(&c, "contractor", "POST", path, "{\"data\": {\"n\": 3}}", &r);
  check_error(&r, 400, "malformed", "seq", "seq 0");
  complete(&c, id, 1, "{\"data\": 5}", &r);
  check_error(&r, 400, "malformed", "data", "data not a map");
  complete(&c, id, 1, "{\"data\": {\"n\": 3}, \"extra\": true}", &r);
  check_error(&r, 400, "malformed", "extra", "an unknown member of the body");
  complete(&c, id, 1, "{\"data\": {\"n\": 3}, \"at\": \"yesterday\"}", &r);
  check_error(&r, 400, "malformed", "at", "a malformed at");
  complete(&c, id, 1, "not json", &r);
  check_error(&r, 400, "malformed", NULL, "a body that is not JSON");
  complete(&kim, id, 1, "{\"data\": {\"n\": 3}}", &r);
  check_error(&r, 404, "not_found", NULL, "another contractor completes");
  complete(&stranger, id, 1, "{\"data\": {\"n\": 3}}", &r);
  check_error(&r, 404, "not_found", NULL, "another brand completes");
  hs_api_step_path(path, sizeof path, id, 1);
  call(&c, "admin", "POST", path, "{\"data\": {\"n\": 3}}", &r);
  check_error(&r, 403, "forbidden", NULL, "an admin completes");
  hs_test_say("400: seq abc, seq 0, data not a map, unknown member, bad at, bad JSON; 404 other "
              "contractor and brand; 403 admin");

  /* A seq ahead of the current one: 409 naming the current step. */
  complete(&c, id, 2, "{\"data\": {\"pic\": \"x\"}}", &r);
  check_error(&r, 409, "conflict", "step 1", "seq 2 while the session is at 1");
  complete(&c, id, 7, "{\"data\": {\"n\": 3}}", &r);
  check_error(&r, 409, "conflict", "step 1", "seq 7 while the session is at 1");
  hs_test_say("seq ahead: 409 and the message names step 1");

  /* Validation: 422 with one message per field. */
  complete(&c, id, 1, "{\"data\": {\"n\": 0}}", &r);
  check_error(&r, 422, "validation_failed", NULL, "n below min");
  assert_non_null(field_msg(&r, "n"));
  complete(&c, id, 1, "{\"data\": {}}", &r);
  check_error(&r, 422, "validation_failed", NULL, "n missing");
  assert_non_null(field_msg(&r, "n"));
  complete(&c, id, 1, "{\"data\": {\"n\": 11, \"note\": \"far too long\"}}", &r);
  check_error(&r, 422, "validation_failed", NULL, "n above max and note too long");
  assert_non_null(field_msg(&r, "n"));
  assert_non_null(field_msg(&r, "note"));
  complete(&c, id, 1, "{\"data\": {\"n\": 2, \"colour\": \"red\"}}", &r);
  check_error(&r, 422, "validation_failed", NULL, "an unknown field");
  const char *m = field_msg(&r, "colour");
  if (m == NULL || strstr(m, "colour") == NULL) {
    fail_msg("an unknown field is not named in fields.colour: %s", hs_api_body_text(&r));
  }
  complete(&c, id, 1, "{\"data\": {\"n\": \"three\"}}", &r);
  check_error(&r, 422, "validation_failed", NULL, "n of the wrong type");
  assert_non_null(field_msg(&r, "n"));
  hs_test_say("422 validation_failed with fields.<name> messages: min, missing, max + max_length, "
              "unknown field (named), wrong type");

  /* Accepted; the retry gets the same bytes; a different body is 409. */
  const char *body1 = "{\"data\": {\"n\": 3, \"note\": \"ok\"}, \"at\": \"2026-05-04T10:15:03Z\"}";
  complete(&c, id, 1, body1, &ok1);
  check_status(&ok1, 200, "a valid completion");
  HS_API_EXPECT_STR(ok1.v, "status", "accepted");
  assert_int_equal(hs_api_int(ok1.v, "next.seq", 0), 2);
  HS_API_EXPECT_STR(ok1.v, "next.id", "photo");
  HS_API_EXPECT_STR(ok1.v, "next.title", "Photo of 3");
  complete(&c, id, 1, body1, &again);
  check_status(&again, 200, "the same completion again");
  assert_int_equal(again.body.len, ok1.body.len);
  assert_memory_equal(again.body.data, ok1.body.data, ok1.body.len);
  complete(&jc, id, 1, body1, &r);
  check_status(&r, 200, "the same completion again, answered in JSON");
  assert_true(strncmp(r.content_type, "application/json", 16) == 0);
  assert_true(hs_value_equal(r.v, ok1.v));
  complete(&c, id, 1, "{\"data\": {\"n\": 4, \"note\": \"ok\"}, \"at\": \"2026-05-04T10:15:03Z\"}",
           &r);
  check_error(&r, 409, "conflict", NULL, "different data for the accepted seq 1");
  complete(&c, id, 1, "{\"data\": {\"n\": 3, \"note\": \"ok\"}, \"at\": \"2026-05-04T10:16:00Z\"}",
           &r);
  check_error(&r, 409, "conflict", NULL, "the same data with another device time");
  complete(&c, id, 3, "{\"data\": {\"ok\": true}}", &r);
  check_error(&r, 409, "conflict", "step 2", "seq 3 while the session is at 2");
  hs_test_say(
      "200 accepted with next (seq 2, title from the data); retry: same 200 bytes "
      "(%zu), same value in JSON; 409 for other data or other at; 409 seq ahead names step 2",
      ok1.body.len);

  /* Evidence: a photo must name a blob this brand uploaded. */
  static const char pic[] = "\xff\xd8\xff\xe0 a tiny jpeg, honestly \x00\x01\x02";
  char hash[65];
  hs_api_sha256_hex(pic, sizeof pic - 1, hash);
  complete(&c, id, 2, "{\"data\": {\"pic\": \"sha256:xyz\"}}", &r);
  check_error(&r, 422, "validation_failed", NULL, "a malformed blob name");
  assert_non_null(field_msg(&r, "pic"));
  char body2[200];
  snprintf(body2, sizeof body2, "{\"data\": {\"pic\": \"sha256:%s\"}}", hash);
  complete(&c, id, 2, body2, &r);
  check_error(&r, 422, "validation_failed", NULL, "a photo that was not uploaded");
  m = field_msg(&r, "pic");
  if (m == NULL || strstr(m, hash) == NULL) {
    fail_msg("the missing blob is not named in fields.pic: %s", hs_api_body_text(&r));
  }
  put_blob(&stranger, "contractor", pic, sizeof pic - 1, hash, &r);
  check_status(&r, 201, "another brand uploads the photo");
  complete(&c, id, 2, body2, &r);
  check_error(&r, 422, "validation_failed", NULL, "a photo only another brand uploaded");
  assert_non_null(field_msg(&r, "pic"));
  put_blob(&c, "contractor", pic, sizeof pic - 1, hash, &r);
  check_status(&r, 201, "upload the photo");
  complete(&c, id, 2, body2, &r);
  check_status(&r, 200, "the photo after the upload");
  assert_int_equal(hs_api_int(r.v, "next.seq", 0), 3);
  HS_API_EXPECT_STR(r.v, "next.id", "done");
  hs_test_say(
      "evidence: 422 malformed name, 422 not uploaded (hash named), 422 uploaded by another "
      "brand only, 200 after the upload");

  /* The last step: next is nil, in exactly the bytes of proto/README.md. */
  complete(&c, id, 3, "{\"data\": {\"ok\": true}}", &r);
  check_status(&r, 200, "the last step");
  static const uint8_t last[] = {0x82, 0xa6, 's', 't', 'a', 't',  'u', 's', 0xa8, 'a', 'c', 'c',
                                 'e',  'p',  't', 'e', 'd', 0xa4, 'n', 'e', 'x',  't', 0xc0};
  assert_int_equal(r.body.len, sizeof last);
  assert_memory_equal(r.body.data, last, sizeof last);
  complete(&c, id, 3, "{\"data\": {\"ok\": true}}", &again);
  check_status(&again, 200, "the last step again");
  assert_memory_equal(again.body.data, last, sizeof last);
  complete(&c, id, 1, body1, &again);
  check_status(&again, 200, "the first step again after the end");
  assert_int_equal(again.body.len, ok1.body.len);
  assert_memory_equal(again.body.data, ok1.body.data, ok1.body.len);
  complete(&c, id, 3, "{\"data\": {\"ok\": false}}", &r);
  check_error(&r, 409, "conflict", NULL, "different data for the last step");
  complete(&c, id, 4, "{\"data\": {\"ok\": true}}", &r);
  check_error(&r, 409, "conflict", NULL, "a step after the end");
  snprintf(path, sizeof path, "/v1/sessions/%s", id);
  call(&c, "contractor", "GET", path, NULL, &r);
  check_status(&r, 200, "GET the ended session");
  HS_API_EXPECT_STR(r.v, "session.status", "ended");
  HS_API_EXPECT_STR(r.v, "session.outcome", "finished");
  const hs_value_t *step = hs_api_at(r.v, "step");
  assert_true(step != NULL && step->type == HS_V_NIL);
  hs_test_say(
      "last step: 200 {status accepted, next nil} in the documented 23 bytes; retries after "
      "the end answer as before; 409 other data and seq 4; GET: ended, outcome, step nil");

  assert_int_equal(
      db_count("SELECT count(*) FROM step_completions WHERE session_id = $1", id, NULL), 3);
  hs_api_resp_free(&r);
  hs_api_resp_free(&ok1);
  hs_api_resp_free(&again);
  hs_api_close(&c);
  hs_api_close(&jc);
  hs_api_close(&kim);
  hs_api_close(&stranger);
}

/* ---- the compliance log ---- */

static void test_compliance_log(void **state) {
  char brand[65], version[65], id[40];
  new_brand(brand);
  hs_api_t c;
  new_client(&c, brand, "sam");
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  deploy_form(&c, version);
  start(&c, NULL, id);

  /* Attempts, in order: rejected, rejected, accepted (with a device time), then a retry and a
   * conflict (neither is a new attempt), then a rejected photo. */
  complete(&c, id, 1, "{\"data\": {\"n\": 0}}", &r);
  check_status(&r, 422, "attempt 1");
  complete(&c, id, 1, "{\"data\": {\"n\": 5, \"bogus\": 1}, \"at\": \"2026-05-04T10:00:00Z\"}", &r);
  check_status(&r, 422, "attempt 2");
  complete(&c, id, 1, "{\"data\": {\"n\": 5}, \"at\": \"2026-05-04T10:15:03Z\"}", &r);
  check_status(&r, 200, "attempt 3");
  complete(&c, id, 1, "{\"data\": {\"n\": 5}, \"at\": \"2026-05-04T10:15:03Z\"}", &r);
  check_status(&r, 200, "a retry of attempt 3");
  complete(&c, id, 1, "{\"data\": {\"n\": 6}}", &r);
  check_status(&r, 409, "a conflicting completion");
  complete(&c, id, 2,
           "{\"data\": {\"pic\": \"sha256:" /* not uploaded */
           "1111111111111111111111111111111111111111111111111111111111111111\"}}",
           &r);
  check_status(&r, 422, "attempt 4: a photo not uploaded");

  PGresult *res = hs_test_db_query(
      g_db,
      "SELECT result, seq, step_id, process, version, contractor_id,"
      " coalesce(to_char(device_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''),"
      " errors IS NULL, data_digest = sha256(data), server_time <= now()"
      " FROM validation_records WHERE session_id = $1 ORDER BY id",
      1, (const char *[]){id});
  assert_non_null(res);
  static const struct {
    const char *result;
    const char *seq;
    const char *step;
    const char *device_time;
  } want[] = {
      {"rejected", "1", "count", ""},
      {"rejected", "1", "count", "2026-05-04T10:00:00Z"},
      {"accepted", "1", "count", "2026-05-04T10:15:03Z"},
      {"rejected", "2", "photo", ""},
  };
  if (PQntuples(res) != 4) {
    fail_msg("validation_records holds %d rows for the session, expected 4 (3 attempts at seq "
             "1, 1 at seq 2; retries and conflicts are not attempts)",
             PQntuples(res));
  }
  for (int i = 0; i < 4; i++) {
    assert_string_equal(PQgetvalue(res, i, 0), want[i].result);
    assert_string_equal(PQgetvalue(res, i, 1), want[i].seq);
    assert_string_equal(PQgetvalue(res, i, 2), want[i].step);
    assert_string_equal(PQgetvalue(res, i, 3), "form");
    assert_string_equal(PQgetvalue(res, i, 4), version);
    assert_string_equal(PQgetvalue(res, i, 5), "sam");
    assert_string_equal(PQgetvalue(res, i, 6), want[i].device_time);
    /* Rejections keep their errors; accepted records have none. */
    assert_string_equal(PQgetvalue(res, i, 7), strcmp(want[i].result, "accepted") == 0 ? "t" : "f");
    assert_string_equal(PQgetvalue(res, i, 8), "t");
    assert_string_equal(PQgetvalue(res, i, 9), "t");
  }
  PQclear(res);
  hs_test_say(
      "validation_records: 4 rows in order (rejected, rejected, accepted, rejected) with seq, "
      "step, process, version, contractor, device time, errors only on rejections, "
      "data_digest = sha256(data); retries and 409s add none");

  /* The log is append-only, even for the server's own role. */
  PGresult *upd = PQexecParams(g_db,
                               "UPDATE validation_records SET result = 'accepted'"
                               " WHERE session_id = $1",
                               1, NULL, (const char *[]){id}, NULL, NULL, 0);
  assert_int_not_equal(PQresultStatus(upd), PGRES_COMMAND_OK);
  PQclear(upd);
  hs_test_say("UPDATE of validation_records is refused");
  hs_api_resp_free(&r);
  hs_api_close(&c);
}

/* ---- feedback ---- */

static void test_feedback(void **state) {
  char brand[65], version[65], id[40], path[160];
  new_brand(brand);
  hs_api_t c, kim;
  new_client(&c, brand, "sam");
  new_client(&kim, brand, "kim");
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  deploy_form(&c, version);
  start(&c, NULL, id);
  snprintf(path, sizeof path, "/v1/sessions/%s/feedback", id);

  call(&c, "contractor", "POST", path,
       "{\"rating\": 5, \"comment\": \"Very clear, thank you!\", \"tags\": [\"friendly\", "
       "\"on-time\"], \"from\": \"customer\"}",
       &r);
  check_status(&r, 201, "feedback from the customer");
  HS_API_EXPECT_STR(r.v, "status", "recorded");
  call(&c, "contractor", "POST", path,
       "{\"comment\": \"ladder was short\", \"from\": \"contractor\"}", &r);
  check_status(&r, 201, "feedback from the contractor");
  PGresult *res = hs_test_db_query(g_db,
                                   "SELECT source, coalesce(rating::text, ''), comment, tags::text"
                                   " FROM feedback WHERE session_id = $1 ORDER BY id",
                                   1, (const char *[]){id});
  assert_non_null(res);
  assert_int_equal(PQntuples(res), 2);
  assert_string_equal(PQgetvalue(res, 0, 0), "customer");
  assert_string_equal(PQgetvalue(res, 0, 1), "5");
  assert_string_equal(PQgetvalue(res, 0, 2), "Very clear, thank you!");
  assert_string_equal(PQgetvalue(res, 0, 3), "{friendly,on-time}");
  assert_string_equal(PQgetvalue(res, 1, 0), "contractor");
  assert_string_equal(PQgetvalue(res, 1, 1), "");
  PQclear(res);
  hs_test_say(
      "201 {status recorded} for customer and contractor feedback; both rows stored as sent");

  char unknown[37], upath[160];
  hs_uuid_v4(unknown);
  snprintf(upath, sizeof upath, "/v1/sessions/%s/feedback", unknown);
  call(&c, "contractor", "POST", upath, "{\"rating\": 4, \"from\": \"customer\"}", &r);
  check_error(&r, 404, "not_found", NULL, "feedback on an unknown session");
  call(&kim, "contractor", "POST", path, "{\"rating\": 4, \"from\": \"customer\"}", &r);
  check_error(&r, 404, "not_found", NULL, "feedback on another contractor's session");
  static const char *const bad[] = {
      "{\"from\": \"customer\"}",
      "{\"from\": \"customer\", \"tags\": []}",
      "{\"rating\": 5}",
      "{\"rating\": 5, \"from\": \"neighbour\"}",
      "{\"rating\": 6, \"from\": \"customer\"}",
      "{\"rating\": 0, \"from\": \"customer\"}",
      "{\"rating\": \"5\", \"from\": \"customer\"}",
      "{\"tags\": [\"\"], \"from\": \"customer\"}",
      "{\"rating\": 5, \"from\": \"customer\", \"mood\": \"happy\"}",
      "[]",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    call(&c, "contractor", "POST", path, bad[i], &r);
    char what[160];
    snprintf(what, sizeof what, "feedback %s", bad[i]);
    check_error(&r, 400, "malformed", NULL, what);
  }
  assert_int_equal(db_count("SELECT count(*) FROM feedback WHERE session_id = $1", id, NULL), 2);
  hs_test_say("404 unknown session and another contractor's; 400 for no content, bad from, ratings "
              "0/6/\"5\", empty tag, unknown member, not a map; still 2 rows");
  hs_api_resp_free(&r);
  hs_api_close(&c);
  hs_api_close(&kim);
}

/* ---- blobs ---- */

static void test_blobs(void **state) {
  char brand[65], brand2[65], hash[65], path[128];
  new_brand(brand);
  new_brand(brand2);
  hs_api_t c, kim, stranger;
  new_client(&c, brand, "sam");
  new_client(&kim, brand, "kim");
  new_client(&stranger, brand2, "sam");
  hs_api_resp_t r;
  hs_api_resp_init(&r);

  enum { N = 3000 };
  uint8_t *bytes = malloc(MAX_BLOB + 16);
  assert_non_null(bytes);
  uint32_t x = 12345;
  for (size_t i = 0; i < MAX_BLOB + 16; i++) {
    x = x * 1103515245u + 12345u;
    bytes[i] = (uint8_t)(x >> 16);
  }
  bytes[10] = 0; /* binary, with NUL bytes */
  hs_api_sha256_hex(bytes, N, hash);
  snprintf(path, sizeof path, "/v1/blobs/%s", hash);

  put_blob(&c, "contractor", bytes, N, hash, &r);
  check_status(&r, 201, "upload a blob");
  char name[80];
  snprintf(name, sizeof name, "sha256:%s", hash);
  HS_API_EXPECT_STR(r.v, "blob", name);
  assert_int_equal(hs_api_int(r.v, "size", -1), N);
  put_blob(&c, "contractor", bytes, N, hash, &r);
  check_status(&r, 200, "upload it again");
  HS_API_EXPECT_STR(r.v, "blob", name);
  assert_int_equal(hs_api_int(r.v, "size", -1), N);
  hs_test_say("PUT: 201 {blob sha256:<hex>, size}, the retry 200 with the same answer");

  call(&c, "contractor", "GET", path, NULL, &r);
  check_status(&r, 200, "GET the blob");
  assert_string_equal(r.content_type, "image/jpeg");
  assert_int_equal(r.body.len, N);
  assert_memory_equal(r.body.data, bytes, N);
  call(&c, "admin", "GET", path, NULL, &r);
  check_status(&r, 200, "GET the blob as admin");
  assert_int_equal(r.body.len, N);
  call(&c, "compliance", "GET", path, NULL, &r);
  check_status(&r, 200, "GET the blob as compliance");
  call(&kim, "contractor", "GET", path, NULL, &r);
  check_status(&r, 404, "GET another contractor's blob");
  call(&stranger, "admin", "GET", path, NULL, &r);
  check_status(&r, 404, "GET another brand's blob");
  char unknown[65];
  hs_api_sha256_hex("nothing", 7, unknown);
  char upath[128];
  snprintf(upath, sizeof upath, "/v1/blobs/%s", unknown);
  call(&c, "contractor", "GET", upath, NULL, &r);
  check_status(&r, 404, "GET an unknown blob");
  hs_test_say("GET: the %d bytes with their content type (uploader, admin, compliance); 404 for "
              "another contractor, another brand, an unknown hash",
              N);

  /* The hash is checked, and the size capped. */
  put_blob(&c, "contractor", bytes, N - 1, hash, &r);
  check_error(&r, 422, "validation_failed", hash, "a body that does not match its hash");
  char big_hash[65];
  hs_api_sha256_hex(bytes, MAX_BLOB + 1, big_hash);
  put_blob(&c, "contractor", bytes, MAX_BLOB + 1, big_hash, &r);
  check_status(&r, 413, "a blob over HANDSEL_MAX_BLOB");
  char at_hash[65];
  hs_api_sha256_hex(bytes, MAX_BLOB, at_hash);
  put_blob(&c, "contractor", bytes, MAX_BLOB, at_hash, &r);
  check_status(&r, 201, "a blob of exactly HANDSEL_MAX_BLOB");
  hs_api_call_raw(&c, "contractor", "PUT", "/v1/blobs/ABCDEF", "image/jpeg", bytes, 10, &r);
  check_error(&r, 400, "malformed", NULL, "a malformed hash");
  put_blob(&c, "author", bytes, N, hash, &r);
  check_status(&r, 403, "an author uploads");
  assert_int_equal(db_count("SELECT count(*) FROM blobs b JOIN brands x ON x.id = b.brand_id"
                            " WHERE x.name = $1",
                            brand, NULL),
                   2);
  hs_test_say(
      "422 hash mismatch, 413 at %d+1 bytes, 201 at exactly %d, 400 malformed hash, 403 author; "
      "2 rows stored",
      MAX_BLOB, MAX_BLOB);
  free(bytes);
  hs_api_resp_free(&r);
  hs_api_close(&c);
  hs_api_close(&kim);
  hs_api_close(&stranger);
}

/* ---- the stream ---- */

static const hs_value_t *next_event(hs_api_stream_t *s, const char *what) {
  const hs_value_t *ev = NULL;
  int rc = hs_api_stream_next(s, 5000, &ev);
  if (rc != 0) {
    fail_msg("%s: no event within 5 s (rc %d)", what, rc);
  }
  return ev;
}

static void expect_step_event(hs_api_stream_t *s, int64_t seq, const char *step_id,
                              const char *what) {
  const hs_value_t *ev = next_event(s, what);
  const char *type = hs_api_str(ev, "type");
  if (type == NULL || strcmp(type, "step") != 0 || hs_api_int(ev, "step.seq", 0) != seq ||
      hs_api_str(ev, "step.id") == NULL || strcmp(hs_api_str(ev, "step.id"), step_id) != 0) {
    fail_msg("%s: expected a step event for seq %lld (%s), got type %s seq %lld", what,
             (long long)seq, step_id, type != NULL ? type : "?",
             (long long)hs_api_int(ev, "step.seq", 0));
  }
}

static void expect_end_event(hs_api_stream_t *s, const char *id, const char *what) {
  const hs_value_t *ev = next_event(s, what);
  const char *type = hs_api_str(ev, "type");
  if (type == NULL || strcmp(type, "ended") != 0) {
    fail_msg("%s: expected an ended event, got %s", what, type != NULL ? type : "?");
  }
  HS_API_EXPECT_STR(ev, "session", id);
  HS_API_EXPECT_STR(ev, "status", "ended");
  HS_API_EXPECT_STR(ev, "outcome", "finished");
  /* Then the server ends the stream. */
  const hs_value_t *more = NULL;
  int rc = hs_api_stream_next(s, 5000, &more);
  if (rc != HS_ENOTFOUND || !hs_api_stream_ended(s)) {
    fail_msg("%s: the stream did not end after the ended event (rc %d)", what, rc);
  }
}

static void test_stream(void **state) {
  char brand[65], version[65], id[40];
  new_brand(brand);
  hs_api_t c;
  new_client(&c, brand, "sam");
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  deploy_form(&c, version);
  start(&c, NULL, id);

  /* Two more devices watch: one in NDJSON, one in msgpack, one as compliance. */
  hs_api_stream_t sj, sm, sc;
  int status = 0;
  assert_int_equal(hs_api_stream_open(&sj, &c, "contractor", id, true, &status), 0);
  assert_int_equal(hs_api_stream_open(&sm, &c, "contractor", id, false, &status), 0);
  assert_int_equal(hs_api_stream_open(&sc, &c, "compliance", id, false, &status), 0);
  hs_h2_response_t *hr = hs_h2_response(sj.conn, sj.stream_id);
  assert_string_equal(hs_h2_response_header(hr, "content-type"), "application/x-ndjson");
  hr = hs_h2_response(sm.conn, sm.stream_id);
  assert_string_equal(hs_h2_response_header(hr, "content-type"), "application/msgpack");
  expect_step_event(&sj, 1, "count", "NDJSON stream, first event");
  expect_step_event(&sm, 1, "count", "msgpack stream, first event");
  expect_step_event(&sc, 1, "count", "compliance stream, first event");
  hs_test_say("3 streams open (NDJSON, msgpack, compliance): each starts with the current step");

  complete(&c, id, 1, "{\"data\": {\"n\": 2}}", &r);
  check_status(&r, 200, "complete step 1");
  expect_step_event(&sj, 2, "photo", "NDJSON stream after step 1");
  expect_step_event(&sm, 2, "photo", "msgpack stream after step 1");
  expect_step_event(&sc, 2, "photo", "compliance stream after step 1");
  /* A rejected attempt moves nothing: no event. */
  complete(&c, id, 2, "{\"data\": {}}", &r);
  check_status(&r, 422, "an incomplete step 2");
  static const char pic[] = "stream photo";
  char hash[65], body[200];
  hs_api_sha256_hex(pic, sizeof pic - 1, hash);
  put_blob(&c, "contractor", pic, sizeof pic - 1, hash, &r);
  check_status(&r, 201, "upload the photo");
  snprintf(body, sizeof body, "{\"data\": {\"pic\": \"sha256:%s\"}}", hash);
  complete(&c, id, 2, body, &r);
  check_status(&r, 200, "complete step 2");
  expect_step_event(&sj, 3, "done", "NDJSON stream after step 2");
  expect_step_event(&sm, 3, "done", "msgpack stream after step 2");
  expect_step_event(&sc, 3, "done", "compliance stream after step 2");
  complete(&c, id, 3, "{\"data\": {\"ok\": true}}", &r);
  check_status(&r, 200, "complete step 3");
  expect_end_event(&sj, id, "NDJSON stream at the end");
  expect_end_event(&sm, id, "msgpack stream at the end");
  expect_end_event(&sc, id, "compliance stream at the end");
  hs_test_say(
      "each stream saw step 2, step 3 (not the rejected attempt), then {ended, finished}, then "
      "the end of the response");

  /* A stream opened after the end gets the end at once. */
  hs_api_stream_t late;
  assert_int_equal(hs_api_stream_open(&late, &c, "contractor", id, false, &status), 0);
  expect_end_event(&late, id, "a stream opened after the end");
  hs_api_stream_close(&late);
  hs_api_stream_close(&sj);
  hs_api_stream_close(&sm);
  hs_api_stream_close(&sc);

  /* Errors: unknown session, another contractor. */
  char unknown[37];
  hs_uuid_v4(unknown);
  hs_api_stream_t bad;
  assert_int_not_equal(hs_api_stream_open(&bad, &c, "contractor", unknown, false, &status), 0);
  assert_int_equal(status, 404);
  hs_api_stream_close(&bad);
  hs_api_t kim;
  new_client(&kim, brand, "kim");
  assert_int_not_equal(hs_api_stream_open(&bad, &kim, "contractor", id, false, &status), 0);
  assert_int_equal(status, 404);
  hs_api_stream_close(&bad);
  hs_test_say(
      "a late stream gets {ended} and ends; 404 for an unknown session and another contractor");
  hs_api_resp_free(&r);
  hs_api_close(&c);
}

/* ---- versions ---- */

static void test_versions_pinned(void **state) {
  char brand[65], v1[65], v2[65], s1[40], s2[40], path[160];
  new_brand(brand);
  hs_api_t c;
  new_client(&c, brand, "sam");
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  deploy_form(&c, v1);
  start(&c, NULL, s1);
  assert_int_equal(hs_api_deploy(&c, "form", g_form_v2, v2), 201);
  char body[160];
  snprintf(body, sizeof body, "{\"version\": \"%s\"}", v2);
  call(&c, "author", "POST", "/v1/processes/form/activate", body, &r);
  check_status(&r, 200, "activate v2");

  /* The session in flight keeps v1: its next step has v1's title. */
  complete(&c, s1, 1, "{\"data\": {\"n\": 4}}", &r);
  check_status(&r, 200, "complete s1 after v2 was activated");
  HS_API_EXPECT_STR(r.v, "next.title", "Photo of 4");
  snprintf(path, sizeof path, "/v1/sessions/%s", s1);
  call(&c, "contractor", "GET", path, NULL, &r);
  HS_API_EXPECT_STR(r.v, "session.version", v1);

  /* A new session runs v2. */
  call(&c, "contractor", "POST", "/v1/sessions", "{\"process\": \"form\"}", &r);
  check_status(&r, 201, "start after v2 was activated");
  snprintf(s2, sizeof s2, "%s", hs_api_str(r.v, "session.id"));
  HS_API_EXPECT_STR(r.v, "session.version", v2);
  HS_API_EXPECT_STR(r.v, "step.title", "Count things v2");
  complete(&c, s2, 1, "{\"data\": {\"n\": 4}}", &r);
  check_status(&r, 200, "complete s2");
  HS_API_EXPECT_STR(r.v, "next.title", "Photo v2 of 4");
  assert_int_equal(db_count("SELECT count(*) FROM sessions WHERE id = $1 AND version = $2", s1, v1),
                   1);
  assert_int_equal(db_count("SELECT count(*) FROM sessions WHERE id = $1 AND version = $2", s2, v2),
                   1);
  hs_test_say("after activating v2, the session in flight continues on v1 (title \"Photo of 4\", "
              "version v1); a new session runs v2 (\"Photo v2 of 4\")");
  hs_api_resp_free(&r);
  hs_api_close(&c);
}

/* ---- without the database ---- */

static void test_no_database(void **state) {
  hs_test_server_t s;
  char dir[HS_TEST_PATH_MAX];
  snprintf(dir, sizeof dir, "HANDSEL_DB=host=%s/no-such-db port=1 dbname=x connect_timeout=1",
           hs_test_tmpdir());
  const char *env[] = {dir, "HANDSEL_DEV_AUTH=1", "HANDSEL_WORKERS=1", NULL};
  hs_test_server_must_start(&s, env, false);
  hs_api_t c;
  hs_api_init(&c, s.port, "acme", "sam");
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  static const struct {
    const char *role, *method, *path, *body;
  } reqs[] = {
      {"contractor", "POST", "/v1/sessions", "{\"process\": \"form\"}"},
      {"contractor", "GET", "/v1/sessions/3f1c9b52-8d4e-4b7a-9c61-2f0e5d7a8b90", NULL},
      {"contractor", "POST", "/v1/sessions/3f1c9b52-8d4e-4b7a-9c61-2f0e5d7a8b90/steps/1",
       "{\"data\": {\"n\": 1}}"},
      {"author", "GET", "/v1/processes", NULL},
  };
  for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
    if (hs_api_call(&c, reqs[i].role, reqs[i].method, reqs[i].path, reqs[i].body, &r) != 0) {
      hs_test_server_dump_stderr(&s, 3000);
      fail_msg("%s %s without a database: no answer", reqs[i].method, reqs[i].path);
    }
    char what[200];
    snprintf(what, sizeof what, "%s %s without a database", reqs[i].method, reqs[i].path);
    check_error(&r, 503, "unavailable", NULL, what);
    if (r.retry_after[0] == '\0') {
      fail_msg("%s: the 503 has no Retry-After", what);
    }
  }
  call(&c, "contractor", "GET", "/readyz", NULL, &r);
  check_status(&r, 503, "/readyz without a database");
  assert_true(hs_test_server_running(&s));
  hs_test_say(
      "without a database: 503 unavailable with Retry-After on start, get, complete and list; "
      "/readyz 503; the server keeps running");
  hs_api_resp_free(&r);
  hs_api_close(&c);
  hs_test_server_stop(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_processes),
      cmocka_unit_test(test_start),
      cmocka_unit_test(test_get),
      cmocka_unit_test(test_complete),
      cmocka_unit_test(test_compliance_log),
      cmocka_unit_test(test_feedback),
      cmocka_unit_test(test_blobs),
      cmocka_unit_test(test_stream),
      cmocka_unit_test(test_versions_pinned),
      cmocka_unit_test(test_no_database),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
