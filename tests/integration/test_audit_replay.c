/* `handsel audit replay` end to end: a real server (development auth) and the real PostgreSQL
 * (HANDSEL_DB) record a session with accepted and rejected attempts, then the real binary
 * re-runs the pinned script over that record. A faithful record passes attempt by attempt; a
 * record made not to follow from its inputs (a forged validation record, a copy of the session
 * pinned to a changed script) is caught and the attempt named; an unknown session is a usage
 * error. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hs_test_api.h"
#include "hs_test_auth.h"
#include "hs_test_pg.h"
#include "hs_test_server.h"

static hs_test_server_t g_srv;
static PGconn *g_db;

/* Three steps. The first step's validate draws from math.random and the second step's title
 * shows a draw, so the answer to the first step shows whether the rejected attempts before it
 * were fed to the script (their draws move the generator). %s is the rule of the first step's
 * validate, so a second version can differ from the first in one place. */
static const char PROCESS_FMT[] =
    "return process {\n"
    "  name = \"audited\",\n"
    "  title = \"Audited visit\",\n"
    "  run = function(visit)\n"
    "    local a = visit:step { id = \"count\", title = \"Count the panels\",\n"
    "      fields = { field.integer { name = \"n\", label = \"Panels\", required = true,\n"
    "                                 min = 1, max = 10 } },\n"
    "      validate = function(d)\n"
    "        local luck = math.random(1000)\n"
    "        if %s and luck > 0 then return { n = \"Seven panels need a site survey first\" } end\n"
    "      end }\n"
    "    visit:step { id = \"photo\", title = \"Photo \" .. a.n .. \" #\" .. "
    "math.random(1000000),\n"
    "      fields = { field.photo { name = \"pic\", label = \"Roof photo\", required = true } } }\n"
    "    visit:step { id = \"done\", title = \"Confirm (\" .. visit:now() .. \")\",\n"
    "      fields = { field.boolean { name = \"ok\", label = \"Done?\", required = true } } }\n"
    "    visit:outcome(\"finished\")\n"
    "  end,\n"
    "}\n";

static char g_v1[4096], g_v2[4096];
static char g_env_db[HS_TEST_PATH_MAX];

static int start_server(void) {
  const char *env[] = {g_env_db,
                       "HANDSEL_DEV_AUTH=1",
                       "HANDSEL_WORKERS=1",
                       "HANDSEL_SESSION_CACHE=1",
                       "HANDSEL_LOG_LEVEL=warn",
                       NULL};
  hs_test_server_opts_t o = {.env = env};
  if (hs_test_server_start(&g_srv, &o) != 0 || hs_test_server_wait_ready(&g_srv, 15000) != 0) {
    hs_test_server_dump_stderr(&g_srv, 4000);
    fprintf(stderr, "the server did not come up, or /readyz did not answer 200 within 15 s\n");
    return -1;
  }
  return 0;
}

static void post(hs_api_t *c, const char *id, int seq, const char *body, int want,
                 const char *what) {
  char path[160];
  hs_api_step_path(path, sizeof path, id, seq);
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  int rc = hs_api_call(c, "contractor", "POST", path, body, &r);
  if (rc != 0 || r.status != want) {
    hs_test_server_dump_stderr(&g_srv, 3000);
    fail_msg("%s: expected %d, got %d: %s", what, want, r.status, hs_api_body_text(&r));
  }
  hs_api_resp_free(&r);
}

/* Runs `handsel audit replay ARGS…` and returns its exit code; out gets its output. */
static int audit(char *out, size_t cap, const char *id, const char *brand) {
  const char *args[] = {"audit", "replay", id, brand != NULL ? "--brand" : NULL, brand, NULL};
  return hs_auth_cli(out, cap, args);
}

static size_t count_lines_with(const char *text, const char *needle) {
  size_t n = 0;
  for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle)) {
    n++;
  }
  return n;
}

static void expect_in(const char *out, const char *needle, const char *what) {
  if (strstr(out, needle) == NULL) {
    fail_msg("%s: the output does not say \"%s\":\n%s", what, needle, out);
  }
}

static void db_exec(const char *sql, int n, const char *const *params) {
  PGresult *r = hs_test_db_query(g_db, sql, n, params);
  if (r == NULL) {
    fail_msg("the statement failed: %s", sql);
  }
  PQclear(r);
}

/* A brand, the process deployed, and one session with seven attempts: rejected by a field
 * rule, by the validate function, accepted; rejected for a photo not uploaded, accepted after
 * the upload; rejected for a missing answer, accepted (the session ends). */
static void record_session(char brand[65], char id[40]) {
  hs_api_unique_name(brand, "audit");
  hs_api_t c;
  hs_api_init(&c, g_srv.port, brand, "sam");
  char version[65];
  int st = hs_api_deploy(&c, "audited", g_v1, version);
  if (st != 201) {
    fail_msg("deploying the process: %d", st);
  }
  int64_t seq = 0;
  st = hs_api_start(&c, "audited", NULL, id, &seq);
  if (st != 201 || seq != 1) {
    fail_msg("starting a session: status %d, first seq %lld", st, (long long)seq);
  }
  post(&c, id, 1, "{\"data\":{\"n\":0}}", 422, "a count under the minimum");
  post(&c, id, 1, "{\"data\":{\"n\":7},\"at\":\"2026-05-04T10:15:03.250Z\"}", 422,
       "a count the validate function refuses");
  post(&c, id, 1, "{\"data\":{\"n\":3},\"at\":\"2026-05-04T10:15:09.125+02:00\"}", 200,
       "a good count");
  static const char pic[] = "a roof, photographed for the audit test";
  char hash[65], body[160];
  hs_api_sha256_hex(pic, sizeof pic - 1, hash);
  snprintf(body, sizeof body, "{\"data\":{\"pic\":\"sha256:%s\"}}", hash);
  post(&c, id, 2, body, 422, "a photo not uploaded yet");
  char path[128];
  snprintf(path, sizeof path, "/v1/blobs/%s", hash);
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  if (hs_api_call_raw(&c, "contractor", "PUT", path, "image/jpeg", pic, sizeof pic - 1, &r) != 0 ||
      r.status != 201) {
    fail_msg("uploading the photo: %d %s", r.status, hs_api_body_text(&r));
  }
  hs_api_resp_free(&r);
  post(&c, id, 2, body, 200, "the photo after its upload");
  post(&c, id, 3, "{\"data\":{}}", 422, "no confirmation");
  post(&c, id, 3, "{\"data\":{\"ok\":true}}", 200, "the confirmation");
  hs_api_close(&c);
}

static int group_setup(void **state) {
  (void)state;
  const char *db = hs_test_db_must();
  snprintf(g_v1, sizeof g_v1, PROCESS_FMT, "d.n == 7");
  snprintf(g_v2, sizeof g_v2, PROCESS_FMT, "d.n == 8");
  snprintf(g_env_db, sizeof g_env_db, "HANDSEL_DB=%s", db);
  if (start_server() != 0) {
    return -1;
  }
  g_db = hs_test_db_connect(db);
  return g_db != NULL ? 0 : -1;
}

static int group_teardown(void **state) {
  (void)state;
  hs_test_server_stop(&g_srv);
  PQfinish(g_db);
  return 0;
}

/* A faithful record follows from its inputs, line by line; the server need not run. */
static void test_faithful_record_matches(void **state) {
  (void)state;
  char brand[65], id[40], out[16384];
  record_session(brand, id);
  hs_test_server_stop(&g_srv); /* the command reads the database alone */
  int rc = audit(out, sizeof out, id, brand);
  if (rc != 0) {
    fail_msg("expected exit 0, got %d:\n%s", rc, out);
  }
  expect_in(out, "start: matches", "the start");
  expect_in(out, "seq 1 count: rejected (n: ", "the field rule's rejection");
  expect_in(out, "seq 1 count: rejected (n: Seven panels need a site survey first), matches",
            "the validate function's rejection");
  expect_in(out, "seq 1 count: accepted, matches", "the accepted count");
  /* The blob is stored now, but was not when the attempt was made: the audit judges by then. */
  expect_in(out, "seq 2 photo: rejected (pic: Upload the photo first", "the missing evidence");
  expect_in(out, "seq 2 photo: accepted, matches", "the photo after its upload");
  expect_in(out, "seq 3 done: rejected (ok: ", "the missing confirmation");
  expect_in(out, "seq 3 done: accepted, matches", "the confirmation");
  if (count_lines_with(out, "matches\n") != 8) {
    fail_msg("expected eight matching lines (the start and seven attempts):\n%s", out);
  }
  expect_in(out, "7 attempts (3 accepted, 4 rejected): every one follows", "the summary");
  hs_test_say(
      "a session of 7 attempts (4 rejected: field rule, validate, evidence, required) audits "
      "clean, exit 0, with the server stopped");

  /* The same session named with another brand is not found. */
  char other[65];
  hs_api_unique_name(other, "other");
  rc = audit(out, sizeof out, id, other);
  if (rc != 2 || strstr(out, "there is no session") == NULL) {
    fail_msg("another brand's session: expected exit 2 and \"there is no session\", got %d:\n%s",
             rc, out);
  }
  hs_test_say("--brand of another brand: exit 2, \"there is no session\"");
  if (start_server() != 0) {
    fail_msg("the server did not start again");
  }
}

/* The command reads one session's attempts through the indexes, not the brand's whole log:
 * with sequential scans off for its connection, it scans the index of rejected attempts. */
static void test_attempts_are_read_by_index(void **state) {
  (void)state;
  char brand[65], id[40], out[16384];
  record_session(brand, id);
  static const char q[] = "SELECT idx_scan FROM pg_stat_user_indexes"
                          " WHERE indexrelname = 'validation_records_rejected'";
  long long before = hs_test_db_scalar(g_db, q, 0, NULL);
  assert_true(before >= 0);
  setenv("PGOPTIONS", "-c enable_seqscan=off", 1);
  int rc = audit(out, sizeof out, id, brand);
  unsetenv("PGOPTIONS");
  if (rc != 0) {
    fail_msg("expected exit 0, got %d:\n%s", rc, out);
  }
  /* A backend's counts reach the view when it exits. */
  long long after = before;
  for (int i = 0; i < 100 && after <= before; i++) {
    usleep(50 * 1000);
    after = hs_test_db_scalar(g_db, q, 0, NULL);
  }
  if (after <= before) {
    fail_msg("audit replay did not scan validation_records_rejected (idx_scan stayed %lld)",
             before);
  }
  hs_test_say("audit replay found the session's 4 rejected attempts through their index");
}

/* A validation record inserted afterwards, claiming the accepted confirmation was rejected,
 * does not follow from the script: it is named alone, and the attempts after it still match. */
static void test_forged_record_is_named(void **state) {
  (void)state;
  char brand[65], id[40], out[16384];
  record_session(brand, id);
  const char *params[] = {id};
  /* errors = {ok = "Confirm with the customer first"} as msgpack. */
  db_exec("INSERT INTO validation_records (brand_id, session_id, process, version, step_id, seq,"
          " contractor_id, server_time, device_time, result, errors, data_digest, data)"
          " SELECT brand_id, session_id, process, version, step_id, seq, contractor_id,"
          " server_time, device_time, 'rejected',"
          " decode('81a26f6bbf436f6e6669726d20776974682074686520637573746f6d6572206669727374',"
          " 'hex'), data_digest, data FROM validation_records"
          " WHERE session_id = $1 AND seq = 3 AND result = 'accepted'",
          1, params);
  int rc = audit(out, sizeof out, id, brand);
  if (rc != 1) {
    fail_msg("expected exit 1 for a forged record, got %d:\n%s", rc, out);
  }
  expect_in(out,
            "seq 3 done: the record says rejected (ok: Confirm with the customer first), the "
            "script says accepted",
            "the forged attempt");
  expect_in(out, "seq 3 done: accepted, matches", "the real attempt after the forged one");
  expect_in(out, "1 finding", "the summary");
  expect_in(out, "at seq 3 done", "the summary names the attempt");
  hs_test_say("a forged rejection of seq 3: exit 1, that attempt named, the others still match");
}

/* A copy of the session pinned to a script whose validate function differs: the attempt whose
 * outcome the change decides no longer follows. */
static void test_changed_script_is_named(void **state) {
  (void)state;
  char brand[65], id[40], copy[40], out[16384];
  record_session(brand, id);
  hs_api_t c;
  hs_api_init(&c, g_srv.port, brand, "sam");
  char v2[65];
  int st = hs_api_deploy(&c, "audited", g_v2, v2);
  hs_api_close(&c);
  if (st != 201) {
    fail_msg("deploying the changed script: %d", st);
  }
  snprintf(copy, sizeof copy, "%.8s-0000-4000-8000-000000000000", id);
  const char *params[] = {id, copy, v2};
  db_exec("INSERT INTO sessions (id, brand_id, process, version, contractor_id, customer,"
          " contractor, seed, events, created_at) SELECT $2, brand_id, process, $3,"
          " contractor_id, customer, contractor, seed, events, created_at FROM sessions"
          " WHERE id = $1",
          3, params);
  db_exec("INSERT INTO validation_records (brand_id, session_id, process, version, step_id, seq,"
          " contractor_id, server_time, device_time, result, errors, data_digest, data, digest,"
          " events, ended) SELECT brand_id, $2, process, $3, step_id, seq, contractor_id,"
          " server_time, device_time, result, errors, data_digest, data, digest, events, ended"
          " FROM validation_records WHERE session_id = $1 ORDER BY id",
          3, params);
  int rc = audit(out, sizeof out, copy, brand);
  if (rc != 1) {
    fail_msg("expected exit 1 for a changed script, got %d:\n%s", rc, out);
  }
  expect_in(out,
            "seq 1 count: the record says rejected (n: Seven panels need a site survey first), "
            "the script says accepted",
            "the attempt the change decides");
  /* The copy's id differs from the one its start event names; the first member that differs is
   * named. */
  expect_in(out, "start: the recorded start events differ from the script's: events[0].session",
            "the start names the first member that differs");
  expect_in(out, "seq 3 done: rejected (ok: ", "a later attempt");
  hs_test_say("the same record under a changed validate: exit 1, seq 1's rejection named");
}

/* A server that rebuilt a session from its record forgot the draws the rejected attempts before
 * made from math.random; the audit finds the copy the server held. With a cache of one session,
 * starting a second session evicts the first, so its next completion runs on a rebuilt copy. */
static void test_rebuilt_session_follows(void **state) {
  (void)state;
  char brand[65], id[40], other[40], out[16384];
  hs_api_unique_name(brand, "audit");
  hs_api_t c;
  hs_api_init(&c, g_srv.port, brand, "sam");
  int st = hs_api_deploy(&c, "audited", g_v1, NULL);
  int64_t seq = 0;
  if (st != 201 || hs_api_start(&c, "audited", NULL, id, &seq) != 201) {
    fail_msg("deploying and starting: %d", st);
  }
  post(&c, id, 1, "{\"data\":{\"n\":7}}", 422, "a count the validate function refuses");
  if (hs_api_start(&c, "audited", NULL, other, &seq) != 201) {
    fail_msg("starting a second session");
  }
  post(&c, id, 1, "{\"data\":{\"n\":2}}", 200, "a good count, on a rebuilt copy");
  hs_api_close(&c);
  int rc = audit(out, sizeof out, id, brand);
  if (rc != 0) {
    fail_msg("expected exit 0, got %d:\n%s", rc, out);
  }
  expect_in(out, "seq 1 count: accepted, matches (by a copy rebuilt from the record",
            "the attempt made on a rebuilt copy");
  hs_test_say("an attempt made on a copy the server rebuilt after an eviction follows: exit 0");
}

static void test_unknown_session(void **state) {
  (void)state;
  char out[4096];
  int rc = audit(out, sizeof out, "3f1c9b52-8d4e-4b7a-9c61-2f0e5d7a8b90", NULL);
  if (rc != 2 || strstr(out, "there is no session 3f1c9b52-8d4e-4b7a-9c61-2f0e5d7a8b90") == NULL) {
    fail_msg("an unknown session: expected exit 2 and a message naming it, got %d:\n%s", rc, out);
  }
  rc = audit(out, sizeof out, "not-a-session", NULL);
  if (rc != 2 || strstr(out, "UUID") == NULL) {
    fail_msg("a malformed id: expected exit 2 and a message about UUIDs, got %d:\n%s", rc, out);
  }
  const char *args[] = {"audit", "rewind", NULL};
  rc = hs_auth_cli(out, sizeof out, args);
  if (rc != 2 || strstr(out, "unknown action") == NULL) {
    fail_msg("an unknown action: expected exit 2, got %d:\n%s", rc, out);
  }
  const char *help[] = {"help", "audit", NULL};
  rc = hs_auth_cli(out, sizeof out, help);
  if (rc != 0 || strstr(out, "handsel audit replay SESSION") == NULL) {
    fail_msg("handsel help audit: expected exit 0 and the usage, got %d:\n%s", rc, out);
  }
  hs_test_say(
      "unknown session, malformed id, unknown action: exit 2 with a message; help audit: 0");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_faithful_record_matches),
      cmocka_unit_test(test_attempts_are_read_by_index),
      cmocka_unit_test(test_forged_record_is_named),
      cmocka_unit_test(test_changed_script_is_named),
      cmocka_unit_test(test_rebuilt_session_follows),
      cmocka_unit_test(test_unknown_session),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
