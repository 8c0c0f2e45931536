/* Learning which content works, end to end: two `handsel serve` nodes on one PostgreSQL run
 * visits of a process whose script calls visit:suggest. The picks and their propensities are
 * recorded in the sessions' events; goal outcomes, customer ratings on a step and customer
 * feedback are credited once per visit; the content stats route reports exactly what was sent;
 * the other node's suggestions follow what was learned within seconds; and a session rebuilt
 * after a restart shows the content it was shown before. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "core/error.h"
#include "hs_test_api.h"
#include "hs_test_auth.h"
#include "hs_test_pg.h"
#include "hs_test_server.h"

#define DEADLINE_MS 8000 /* "within seconds" */

/* Item "a" always sells, "b" never does; a visit may still succeed on a good rating. */
static const char PITCH_SOURCE[] =
    "return process {\n"
    "  name = \"pitch\",\n"
    "  title = \"Pitch\",\n"
    "  goals = { sale = \"Sold\" },\n"
    "  content = {\n"
    "    a = { kind = \"video\", title = \"A\", uri = \"https://cdn.example/a.mp4\" },\n"
    "    b = { kind = \"pdf\", title = \"B\", uri = \"https://cdn.example/b.pdf\" },\n"
    "  },\n"
    "  run = function(visit)\n"
    "    local who = visit:step { id = \"who\", title = \"Who\", fields = {\n"
    "      field.choice { name = \"segment\", options = { \"x\", \"y\" }, required = true } } }\n"
    "    local pick = visit:suggest { slot = \"offer\", from = { \"a\", \"b\" },\n"
    "                                 context = who.segment }\n"
    "    local d = visit:step { id = \"pitch\", title = \"Pitch\", show = pick, fields = {\n"
    "      field.boolean { name = \"sold\", required = true } } }\n"
    "    if d.sold then visit:outcome(\"sale\") else visit:outcome(\"lost\") end\n"
    "    visit:step { id = \"rate\", title = \"Rate us\", audience = \"customer\", fields = {\n"
    "      field.rating { name = \"stars\" } } }\n"
    "  end,\n"
    "}\n";

enum { OPEN = 6, TRAIN = 20 };

typedef struct fixture {
  hs_test_server_t a, b;
  hs_test_server_opts_t ob;
  char env_db[HS_TEST_PATH_MAX];
  const char *env_b[5];
  const char *db;
  PGconn *pg;
  char brand[65];
} fixture_t;

static int setup(void **state) {
  fixture_t *f = calloc(1, sizeof *f);
  if (f == NULL) {
    return -1;
  }
  *state = f;
  f->db = hs_test_db_must();
  snprintf(f->env_db, sizeof f->env_db, "HANDSEL_DB=%s", f->db);
  const char *env_a[] = {f->env_db, "HANDSEL_DEV_AUTH=1", "HANDSEL_WORKERS=2",
                         "HANDSEL_LOG_LEVEL=warn", NULL};
  f->env_b[0] = f->env_db;
  f->env_b[1] = "HANDSEL_DEV_AUTH=1";
  f->env_b[2] = "HANDSEL_WORKERS=1";
  f->env_b[3] = "HANDSEL_LOG_LEVEL=warn";
  f->env_b[4] = NULL;
  hs_test_server_opts_t oa = {.env = env_a};
  f->ob = (hs_test_server_opts_t){.env = f->env_b};
  if (hs_test_server_start(&f->a, &oa) != 0 || hs_test_server_start(&f->b, &f->ob) != 0 ||
      hs_test_server_wait_ready(&f->a, 15000) != 0 ||
      hs_test_server_wait_ready(&f->b, 15000) != 0) {
    hs_test_server_dump_stderr(&f->a, 3000);
    hs_test_server_dump_stderr(&f->b, 3000);
    return -1;
  }
  f->pg = hs_test_db_connect(f->db);
  hs_api_unique_name(f->brand, "content");
  return f->pg != NULL ? 0 : -1;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  hs_test_server_stop(&f->a);
  hs_test_server_stop(&f->b);
  PQfinish(f->pg);
  free(f);
  return 0;
}

static void must_call(hs_api_t *c, const char *role, const char *method, const char *path,
                      const char *body, hs_api_resp_t *r, int want) {
  if (hs_api_call(c, role, method, path, body, r) != 0) {
    fail_msg("%s %s on port %d: no answer", method, path, c->port);
  }
  if (r->status != want) {
    fail_msg("%s %s on port %d: expected %d, got %d: %s", method, path, c->port, want, r->status,
             hs_api_body_text(r));
  }
}

/* The id of the first item a step shows, copied to out. */
static void shown_id(const hs_value_t *step, char out[16]) {
  const hs_value_t *show = hs_api_at(step, "show");
  if (show == NULL || show->type != HS_V_ARRAY || show->as.arr.len != 1) {
    fail_msg("the step does not show exactly one item");
  }
  const char *id = hs_api_str(&show->as.arr.items[0], "id");
  if (id == NULL) {
    fail_msg("the shown item has no id");
  }
  snprintf(out, 16, "%s", id);
}

/* The suggest event recorded with completion seq of session id (decoded into a). */
static const hs_value_t *suggest_event(fixture_t *f, const char *id, int seq, hs_arena_t *a) {
  char seq_s[16];
  snprintf(seq_s, sizeof seq_s, "%d", seq);
  const char *params[] = {id, seq_s};
  PGresult *r = PQexecParams(f->pg,
                             "SELECT events FROM step_completions WHERE session_id = $1"
                             " AND seq = $2",
                             2, NULL, params, NULL, NULL, 1);
  if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
    PQclear(r);
    fail_msg("no completion %d of session %s", seq, id);
  }
  hs_value_t *events = NULL;
  hs_err_t err;
  int rc = hs_msgpack_decode((const uint8_t *)PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0),
                             NULL, a, &events, &err);
  PQclear(r);
  assert_int_equal(rc, HS_OK);
  for (size_t i = 0; events != NULL && i < events->as.arr.len; i++) {
    const char *type = hs_api_str(&events->as.arr.items[i], "type");
    if (type != NULL && strcmp(type, "suggest") == 0) {
      return &events->as.arr.items[i];
    }
  }
  fail_msg("completion %d of session %s recorded no suggestion", seq, id);
  return NULL;
}

/* The pick, its propensity and context of a suggest event. */
static double pick_of(const hs_value_t *e, char pick[16], const char **context) {
  const hs_value_t *picks = hs_api_at(e, "picks");
  const hs_value_t *props = hs_api_at(e, "propensities");
  assert_non_null(picks);
  assert_non_null(props);
  assert_int_equal(picks->as.arr.len, 1);
  assert_int_equal(props->as.arr.len, 1);
  assert_int_equal(picks->as.arr.items[0].type, HS_V_STR);
  assert_int_equal(props->as.arr.items[0].type, HS_V_FLOAT);
  snprintf(pick, 16, "%s", picks->as.arr.items[0].as.str.ptr);
  *context = hs_api_str(e, "context");
  return props->as.arr.items[0].as.f;
}

typedef struct tally {
  long shown, successes;
} tally_t;

static int item_index(const char *item) {
  return strcmp(item, "a") == 0 ? 0 : 1;
}

/* Does the stats answer say exactly what was sent? When not, why says what differs. */
static bool stats_match(const hs_value_t *v, const tally_t want[2], long fb_count, long fb_positive,
                        char *why, size_t cap) {
  const hs_value_t *slots = hs_api_at(v, "slots");
  if (slots == NULL || slots->type != HS_V_ARRAY || slots->as.arr.len != 1) {
    snprintf(why, cap, "expected one slot");
    return false;
  }
  const hs_value_t *slot = &slots->as.arr.items[0];
  const hs_value_t *items = hs_api_at(slot, "items");
  if (hs_api_str(slot, "slot") == NULL || strcmp(hs_api_str(slot, "slot"), "offer") != 0 ||
      items == NULL || items->type != HS_V_ARRAY) {
    snprintf(why, cap, "expected the slot offer with items");
    return false;
  }
  size_t expect_items = (want[0].shown > 0) + (want[1].shown > 0);
  if (items->as.arr.len != expect_items) {
    snprintf(why, cap, "expected %zu items, got %zu", expect_items, items->as.arr.len);
    return false;
  }
  double p_sum = 0;
  for (size_t i = 0; i < items->as.arr.len; i++) {
    const hs_value_t *it = &items->as.arr.items[i];
    const char *id = hs_api_str(it, "id");
    const tally_t *t = id != NULL ? &want[item_index(id)] : NULL;
    long shown = (long)hs_api_int(it, "shown", -1);
    long wins = (long)hs_api_int(it, "successes", -1);
    if (t == NULL || shown != t->shown || wins != t->successes) {
      snprintf(why, cap, "item %s: shown %ld successes %ld, expected %ld and %ld",
               id != NULL ? id : "?", shown, wins, t != NULL ? t->shown : -1,
               t != NULL ? t->successes : -1);
      return false;
    }
    const hs_value_t *rate = hs_api_at(it, "rate");
    const hs_value_t *iv = hs_api_at(it, "interval");
    const hs_value_t *pb = hs_api_at(it, "p_best");
    if (rate == NULL || rate->type != HS_V_FLOAT || iv == NULL || iv->type != HS_V_ARRAY ||
        iv->as.arr.len != 2 || pb == NULL || pb->type != HS_V_FLOAT) {
      snprintf(why, cap, "item %s lacks rate, interval or p_best", id);
      return false;
    }
    double r = rate->as.f, lo = iv->as.arr.items[0].as.f, hi = iv->as.arr.items[1].as.f;
    if (fabs(r - (double)wins / (double)shown) > 1e-9 || !(lo <= r && r <= hi) || lo < 0 ||
        hi > 1 || !(hi - lo > 0.05)) {
      snprintf(why, cap, "item %s: rate %f interval [%f, %f]", id, r, lo, hi);
      return false;
    }
    p_sum += pb->as.f;
  }
  if (fabs(p_sum - 1.0) > 1e-6) {
    snprintf(why, cap, "p_best sums to %f", p_sum);
    return false;
  }
  if (hs_api_int(v, "feedback.count", -1) != fb_count ||
      hs_api_int(v, "feedback.positive", -1) != fb_positive) {
    snprintf(why, cap, "feedback count %lld positive %lld, expected %ld and %ld",
             (long long)hs_api_int(v, "feedback.count", -1),
             (long long)hs_api_int(v, "feedback.positive", -1), fb_count, fb_positive);
    return false;
  }
  return true;
}

static void test_learns_reports_and_replays(void **state) {
  fixture_t *f = *state;
  hs_api_t a, b;
  hs_api_init(&a, f->a.port, f->brand, "sam");
  hs_api_init(&b, f->b.port, f->brand, "sam");
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  hs_arena_t arena;
  hs_arena_init(&arena, 0);
  int st = hs_api_deploy(&a, "pitch", PITCH_SOURCE, NULL);
  assert_true(st == 201 || st == 200);
  char path[200];
  tally_t want[2] = {{0, 0}, {0, 0}};
  long fb_count = 0, fb_positive = 0;

  /* Visits left at the pitch, picked before anything was learned: priors only, so each item
   * had about even chances, and that is what their events say. */
  char open_id[OPEN][40], open_pick[OPEN][16];
  for (int i = 0; i < OPEN; i++) {
    int64_t seq = 0;
    assert_int_equal(hs_api_start(&a, "pitch", NULL, open_id[i], &seq), 201);
    hs_api_step_path(path, sizeof path, open_id[i], 1);
    must_call(&a, "contractor", "POST", path, "{\"data\": {\"segment\": \"x\"}}", &r, 200);
    shown_id(hs_api_at(r.v, "next"), open_pick[i]);
    char pick[16];
    const char *context = NULL;
    double p = pick_of(suggest_event(f, open_id[i], 1, &arena), pick, &context);
    assert_string_equal(pick, open_pick[i]);
    assert_non_null(context);
    assert_string_equal(context, "x");
    if (!(p > 0.4 && p < 0.6)) {
      fail_msg("with priors only, a pick of two had propensity %f, not about 0.5", p);
    }
    want[item_index(pick)].shown++;
  }

  /* Training: every visit is completed; a success is a sale (item a), a customer's rating of
   * 4 or more on the rating step, or customer feedback of 4 or more; it counts once. */
  for (int i = 0; i < TRAIN; i++) {
    char id[40], pick[16];
    int64_t seq = 0;
    assert_int_equal(hs_api_start(&a, "pitch", NULL, id, &seq), 201);
    hs_api_step_path(path, sizeof path, id, 1);
    must_call(&a, "contractor", "POST", path, "{\"data\": {\"segment\": \"x\"}}", &r, 200);
    shown_id(hs_api_at(r.v, "next"), pick);
    bool sold = strcmp(pick, "a") == 0;
    hs_api_step_path(path, sizeof path, id, 2);
    must_call(&a, "contractor", "POST", path,
              sold ? "{\"data\": {\"sold\": true}}" : "{\"data\": {\"sold\": false}}", &r, 200);
    int stars = i % 5 == 0 ? 5 : i % 3 == 0 ? 2 : 0;
    char body[80];
    snprintf(body, sizeof body, stars > 0 ? "{\"data\": {\"stars\": %d}}" : "{\"data\": {}}",
             stars);
    hs_api_step_path(path, sizeof path, id, 3);
    must_call(&a, "contractor", "POST", path, body, &r, 200);
    /* The same completion again changes nothing: its rating is stored once. */
    must_call(&a, "contractor", "POST", path, body, &r, 200);
    fb_count += stars > 0;
    fb_positive += stars >= 4;
    bool success = sold || stars >= 4;
    snprintf(path, sizeof path, "/v1/sessions/%s/feedback", id);
    if (i % 7 == 1) {
      must_call(&b, "contractor", "POST", path, "{\"rating\": 4, \"from\": \"customer\"}", &r, 201);
      fb_count++;
      fb_positive++;
      success = true;
    }
    if (i % 6 == 2) {
      /* A contractor's own rating is stored, but it is not the customer's verdict. */
      must_call(&b, "contractor", "POST", path, "{\"rating\": 5, \"from\": \"contractor\"}", &r,
                201);
      fb_count++;
    }
    want[item_index(pick)].shown++;
    want[item_index(pick)].successes += success;
  }

  /* The stats route of the other node reports exactly that, in msgpack and in JSON. */
  char why[300] = "";
  bool ok = false;
  long long deadline = hs_test_now_ms() + DEADLINE_MS;
  while (!ok && hs_test_now_ms() < deadline) {
    must_call(&b, "author", "GET", "/v1/content/stats?process=pitch", NULL, &r, 200);
    ok = stats_match(r.v, want, fb_count, fb_positive, why, sizeof why);
    if (!ok) {
      hs_test_sleep_ms(100);
    }
  }
  if (!ok) {
    fail_msg("content stats: %s: %s", why, hs_api_body_text(&r));
  }
  HS_API_EXPECT_STR(r.v, "process", "pitch");
  hs_test_say("stats on the other node: a shown %ld, %ld successes; b shown %ld, %ld successes; "
              "feedback %ld, %ld positive",
              want[0].shown, want[0].successes, want[1].shown, want[1].successes, fb_count,
              fb_positive);
  b.json = true;
  must_call(&b, "admin", "GET", "/v1/content/stats?process=pitch", NULL, &r, 200);
  assert_true(strstr(r.content_type, "json") != NULL);
  if (!stats_match(r.v, want, fb_count, fb_positive, why, sizeof why)) {
    fail_msg("content stats in JSON: %s", why);
  }
  b.json = false;
  /* Item a sold every time a visit got past it: it is the likelier best. */
  const hs_value_t *items = hs_api_at(&hs_api_at(r.v, "slots")->as.arr.items[0], "items");
  if (items->as.arr.len == 2) {
    int ia = strcmp(hs_api_str(&items->as.arr.items[0], "id"), "a") == 0 ? 0 : 1;
    assert_true(hs_api_at(&items->as.arr.items[ia], "p_best")->as.f >
                hs_api_at(&items->as.arr.items[1 - ia], "p_best")->as.f);
  }
  /* `handsel report` prints the same numbers from the database, and draws them. */
  char svg[HS_TEST_PATH_MAX];
  snprintf(svg, sizeof svg, "%s/%s.svg", hs_test_tmpdir(), f->brand);
  const char *args[] = {"report", "--process", "pitch", "--brand", f->brand, "--svg", svg, NULL};
  static char out[8192];
  if (hs_auth_cli(out, sizeof out, args) != 0) {
    fail_msg("handsel report failed: %s", out);
  }
  for (int i = 0; i < 2; i++) {
    char row[128];
    snprintf(row, sizeof row, "%-24s  %7ld  %9ld", i == 0 ? "a" : "b", want[i].shown,
             want[i].successes);
    if (want[i].shown > 0 && strstr(out, row) == NULL) {
      fail_msg("handsel report lacks \"%s\":\n%s", row, out);
    }
  }
  assert_non_null(strstr(out, "<- best"));
  FILE *chart = fopen(svg, "r");
  assert_non_null(chart);
  static char text[16384];
  size_t len = fread(text, 1, sizeof text - 1, chart);
  text[len] = '\0';
  fclose(chart);
  assert_true(strncmp(text, "<svg", 4) == 0);
  assert_non_null(strstr(text, "</svg>"));
  assert_non_null(strstr(text, ">a</text>"));
  assert_non_null(strstr(text, "best"));
  remove(svg);

  must_call(&b, "author", "GET", "/v1/content/stats", NULL, &r, 400);
  must_call(&b, "author", "GET", "/v1/content/stats?process=no-such", NULL, &r, 404);
  must_call(&b, "contractor", "GET", "/v1/content/stats?process=pitch", NULL, &r, 403);
  hs_api_t other;
  char other_brand[65];
  hs_api_unique_name(other_brand, "content-other");
  hs_api_init(&other, f->b.port, other_brand, "eve");
  must_call(&other, "author", "GET", "/v1/content/stats?process=pitch", NULL, &r, 404);
  hs_api_close(&other);

  /* The other node's suggestions follow what was learned: in segment x, item a is now the
   * likely pick; segment y learned nothing and still picks at even odds. */
  bool learned = false;
  deadline = hs_test_now_ms() + DEADLINE_MS;
  double last = 0;
  int probes = 0;
  while (!learned && hs_test_now_ms() < deadline) {
    probes++;
    char id[40], pick[16];
    int64_t seq = 0;
    const char *context = NULL;
    assert_int_equal(hs_api_start(&b, "pitch", NULL, id, &seq), 201);
    hs_api_step_path(path, sizeof path, id, 1);
    must_call(&b, "contractor", "POST", path, "{\"data\": {\"segment\": \"x\"}}", &r, 200);
    last = pick_of(suggest_event(f, id, 1, &arena), pick, &context);
    double p_a = strcmp(pick, "a") == 0 ? last : 1.0 - last;
    learned = p_a > 0.8;
    if (!learned) {
      hs_test_sleep_ms(200);
    }
  }
  if (!learned) {
    fail_msg("node B still picks as if nothing was learned (last propensity %f)", last);
  }
  hs_test_say("node B favours a after %d visit(s): the pick had propensity %.3f", probes, last);
  {
    char id[40], pick[16];
    int64_t seq = 0;
    const char *context = NULL;
    assert_int_equal(hs_api_start(&b, "pitch", NULL, id, &seq), 201);
    hs_api_step_path(path, sizeof path, id, 1);
    must_call(&b, "contractor", "POST", path, "{\"data\": {\"segment\": \"y\"}}", &r, 200);
    double p = pick_of(suggest_event(f, id, 1, &arena), pick, &context);
    assert_string_equal(context, "y");
    if (!(p > 0.4 && p < 0.6)) {
      fail_msg("segment y learned nothing, yet its pick had propensity %f", p);
    }
  }

  /* Replay: node B restarts with nothing in memory; the open visits are rebuilt from their
   * events and show what they showed before, though the posteriors have moved since. */
  hs_test_server_stop(&f->b);
  if (hs_test_server_start(&f->b, &f->ob) != 0 || hs_test_server_wait_ready(&f->b, 15000) != 0) {
    hs_test_server_dump_stderr(&f->b, 3000);
    fail_msg("node B did not come back");
  }
  hs_api_set_port(&b, f->b.port);
  for (int i = 0; i < OPEN; i++) {
    char pick[16];
    snprintf(path, sizeof path, "/v1/sessions/%s", open_id[i]);
    must_call(&b, "contractor", "GET", path, NULL, &r, 200);
    shown_id(hs_api_at(r.v, "step"), pick);
    assert_string_equal(pick, open_pick[i]);
    hs_api_step_path(path, sizeof path, open_id[i], 2);
    must_call(&b, "contractor", "POST", path, "{\"data\": {\"sold\": false}}", &r, 200);
    HS_API_EXPECT_STR(r.v, "next.id", "rate");
  }
  hs_test_say("%d sessions rebuilt after a restart show the content they showed before", OPEN);
  hs_api_resp_free(&r);
  hs_api_close(&a);
  hs_api_close(&b);
  hs_arena_reset(&arena);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_learns_reports_and_replays, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
