/* Every field type and option of SPEC §3, checked through the public session API: a
 * completion goes in as values (as the HTTP layer decodes them), per-field messages or the
 * converted data (echoed back by the script through an outcome) come out. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "engine/engine.h"

static const char ALL[] =
    "return process { name = 'fields', title = 'Every field',\n"
    "  content = { notice = { kind = 'document', title = 'Notice', uri = 'https://x/n.pdf', "
    "version = 'v2' },\n"
    "              clip = { kind = 'video', title = 'Clip', uri = 'https://x/c.mp4' } },\n"
    "  run = function(visit)\n"
    "    while true do\n"
    "      local d = visit:step { id = 'all', title = 'All', show = { 'clip' }, fields = {\n"
    "        field.text { name = 't', label = 'Notes', max_length = 5 },\n"
    "        field.text { name = 'code', pattern = '%u%d%d', hint = 'a capital letter and two "
    "digits' },\n"
    "        field.integer { max = 120, name = 'roof_age', min = 0, label = 'Roof age' },\n"
    "        field.number { name = 'temp', label = 'Temperature', min = 34.5, max = 43 },\n"
    "        field.boolean { name = 'ok', label = 'OK?' },\n"
    "        field.choice { name = 'c', label = 'Color', options = { 'red', 'blue' } },\n"
    "        field.multi { name = 'm', label = 'Extras', options = { 'a', 'b', 'c' }, min = 1, max "
    "= 2 },\n"
    "        field.date { name = 'd', label = 'Day', min = '2024-01-01', max = '2024-12-31' },\n"
    "        field.photo { name = 'p', label = 'Photo' },\n"
    "        field.signature { name = 's', label = 'Signature' },\n"
    "        field.ack { name = 'k', label = 'Notice read', document = 'notice' },\n"
    "        field.location { name = 'loc', label = 'Place', max = 50 },\n"
    "        field.rating { name = 'r', label = 'Rating' },\n"
    "        field.text { name = 'pii_field', pii = true },\n"
    "      } }\n"
    "      visit:outcome('got', d)\n"
    "    end\n"
    "  end }\n";

static const char REQUIRED[] =
    "return process { name = 'required', title = 'Required',\n"
    "  content = { notice = { kind = 'document', title = 'Notice', uri = 'https://x/n.pdf', "
    "version = 'v2' } },\n"
    "  run = function(visit)\n"
    "    while true do\n"
    "      visit:step { id = 'req', fields = {\n"
    "        field.text { name = 't', required = true },\n"
    "        field.integer { name = 'i', required = true },\n"
    "        field.boolean { name = 'b', required = true, label = 'Badge shown?' },\n"
    "        field.photo { name = 'p', required = true, label = 'Roof photo' },\n"
    "        field.signature { name = 's', required = true },\n"
    "        field.ack { name = 'k', required = true, document = 'notice' },\n"
    "        field.choice { name = 'c', required = true, options = { 'x' } },\n"
    "        field.multi { name = 'm', required = true, options = { 'x' } },\n"
    "        field.location { name = 'l', required = true },\n"
    "      },\n"
    "      validate = function(d, v)\n"
    "        if d.t == 'bad' then return { t = 'Custom message' } end\n"
    "        if d.t == 'whole' then return 'Whole step message' end\n"
    "        if d.t == 'boom' then error('validate exploded') end\n"
    "        if d.t == 'weird' then return 42 end\n"
    "      end }\n"
    "    end\n"
    "  end }\n";

typedef struct fixture {
  hs_vm_t *vm;
  hs_process_t *all, *req;
  hs_session_t *s_all, *s_req;
  hs_arena_t a;
} fixture_t;

static fixture_t fx;

static int setup(void **state) {
  hs_err_t err;
  hs_step_result_t res;
  hs_arena_init(&fx.a, 0);
  hs_session_start_t st = {.session_id = "s1", .seed = 1, .at_ms = 1000};
  if (hs_vm_new("b", NULL, &fx.vm, &err) != HS_OK ||
      hs_process_load(fx.vm, "all.lua", ALL, sizeof ALL - 1, &fx.all, &err) != HS_OK ||
      hs_process_load(fx.vm, "req.lua", REQUIRED, sizeof REQUIRED - 1, &fx.req, &err) != HS_OK ||
      hs_session_start(fx.all, &st, &fx.a, &fx.s_all, &res, &err) != HS_OK ||
      hs_session_start(fx.req, &st, &fx.a, &fx.s_req, &res, &err) != HS_OK) {
    fprintf(stderr, "setup: %s\n", err.msg);
    return -1;
  }
  return 0;
}

static int teardown(void **state) {
  hs_session_free(fx.s_all);
  hs_session_free(fx.s_req);
  hs_vm_free(fx.vm);
  hs_arena_reset(&fx.a);
  return 0;
}

/* ---- value builders ---- */
static hs_value_t *S(const char *s) {
  return hs_value_new_cstr(&fx.a, s);
}
static hs_value_t *I(int64_t i) {
  return hs_value_new_int(&fx.a, i);
}
static hs_value_t *F(double f) {
  return hs_value_new_float(&fx.a, f);
}
static hs_value_t *B(bool b) {
  return hs_value_new_bool(&fx.a, b);
}
static hs_value_t *A(int n, ...) {
  hs_value_t *arr = hs_value_new_array(&fx.a, 4);
  va_list ap;
  va_start(ap, n);
  for (int i = 0; i < n; i++) {
    hs_array_push(&fx.a, arr, va_arg(ap, hs_value_t *));
  }
  va_end(ap);
  return arr;
}
/* M(n, "k1", v1, "k2", v2, ...) */
static hs_value_t *M(int n, ...) {
  hs_value_t *m = hs_value_new_map(&fx.a, 4);
  va_list ap;
  va_start(ap, n);
  for (int i = 0; i < n; i++) {
    const char *k = va_arg(ap, const char *);
    hs_map_add(&fx.a, m, k, va_arg(ap, hs_value_t *));
  }
  va_end(ap);
  return m;
}
static hs_value_t *EVID(char c) {
  char buf[80] = "sha256:";
  memset(buf + 7, c, 64);
  buf[71] = '\0';
  return S(buf);
}

/* Completes the looping step with {field = v}; returns the error for field (NULL when
 * accepted) and, when accepted, the value the script got back through the outcome. */
static const char *attempt(hs_session_t *s, const char *field, hs_value_t *v,
                           const hs_value_t **echo) {
  hs_value_t *data = field != NULL ? M(1, field, v) : v;
  hs_step_result_t res;
  hs_err_t err;
  int rc = hs_session_complete(s, hs_session_seq(s), data, 5000, 0, &fx.a, &res, &err);
  if (rc != HS_OK) {
    fail_msg("complete failed: %s", err.msg);
  }
  if (res.status == HS_STEP_REJECTED) {
    const hs_value_t *m = hs_map_get(res.errors, field != NULL ? field : "");
    if (m == NULL && res.errors->as.map.len > 0) {
      m = &res.errors->as.map.items[0].val;
    }
    assert_non_null(m);
    return m->as.str.ptr;
  }
  assert_int_equal(res.status, HS_STEP_WAITING);
  if (echo != NULL) {
    *echo = NULL;
    for (size_t i = 0; i < res.events->as.arr.len; i++) {
      const hs_value_t *e = &res.events->as.arr.items[i];
      if (strcmp(hs_map_get(e, "type")->as.str.ptr, "outcome") == 0) {
        *echo = hs_map_get(hs_map_get(e, "value"), field);
      }
    }
  }
  return NULL;
}

static void ok(const char *field, hs_value_t *v) {
  const char *msg = attempt(fx.s_all, field, v, NULL);
  if (msg != NULL) {
    fail_msg("%s: expected to be accepted, got \"%s\"", field, msg);
  }
}

static void bad(const char *field, hs_value_t *v, const char *want) {
  const char *msg = attempt(fx.s_all, field, v, NULL);
  if (msg == NULL) {
    fail_msg("%s: expected \"%s\", but it was accepted", field, want);
  }
  if (strcmp(msg, want) != 0) {
    fail_msg("%s: expected \"%s\", got \"%s\"", field, want, msg);
  }
}

static void test_text(void **state) {
  ok("t", S("abc"));
  ok("t", S("h\xc3\xa9llo")); /* 5 characters in 6 bytes: max_length counts characters */
  bad("t", S("abcdef"), "Notes must be at most 5 characters long (it has 6)");
  bad("t", I(5), "Notes must be text");
  bad("t", hs_value_new_bin(&fx.a, "\xff\xfe", 2), "Notes must be text");
  ok("code", S("A12"));
  bad("code", S("a12"), "Code is not in the expected format (a capital letter and two digits)");
  bad("code", S("A123"), "Code is not in the expected format (a capital letter and two digits)");
}

static void test_integer(void **state) {
  const hs_value_t *echo = NULL;
  assert_null(attempt(fx.s_all, "roof_age", F(10.0), &echo));
  assert_non_null(echo);
  assert_int_equal(echo->type, HS_V_INT); /* 10.0 from JSON reaches the script as 10 */
  assert_int_equal(echo->as.i, 10);
  ok("roof_age", I(0));
  ok("roof_age", I(120));
  bad("roof_age", I(121), "Roof age must be at most 120");
  bad("roof_age", I(-1), "Roof age must be at least 0");
  bad("roof_age", F(1.5), "Roof age must be a whole number");
  bad("roof_age", S("10"), "Roof age must be a whole number");
}

static void test_number(void **state) {
  ok("temp", F(36.6));
  ok("temp", I(40));
  bad("temp", I(34), "Temperature must be at least 34.5");
  bad("temp", F(43.1), "Temperature must be at most 43");
  bad("temp", F(NAN), "Temperature must be a number");
  bad("temp", B(true), "Temperature must be a number");
}

static void test_boolean_choice_multi(void **state) {
  ok("ok", B(false));
  bad("ok", S("yes"), "OK? must be answered yes or no");
  ok("c", S("blue"));
  bad("c", S("green"), "Color must be one of: red, blue");
  const hs_value_t *echo = NULL;
  assert_null(attempt(fx.s_all, "m", A(2, S("a"), S("c")), &echo));
  assert_int_equal(echo->type, HS_V_ARRAY);
  assert_int_equal(echo->as.arr.len, 2);
  bad("m", A(2, S("a"), S("a")), "Extras lists 'a' twice");
  bad("m", A(2, S("a"), S("z")), "Extras: every choice must be one of: a, b, c");
  bad("m", A(3, S("a"), S("b"), S("c")), "Choose at most 2 for Extras");
  bad("m", S("a"), "Extras must be a list of choices from: a, b, c");
}

static void test_date(void **state) {
  ok("d", S("2024-02-29"));
  ok("d", S("2024-01-01"));
  bad("d", S("2023-02-29"), "Day must be a date written like 2024-05-31");
  bad("d", S("2024-1-1"), "Day must be a date written like 2024-05-31");
  bad("d", S("2024-13-01"), "Day must be a date written like 2024-05-31");
  bad("d", S("2023-12-31"), "Day must be on or after 2024-01-01");
  bad("d", S("2025-01-01"), "Day must be on or before 2024-12-31");
}

static void test_evidence(void **state) {
  ok("p", EVID('a'));
  bad("p", EVID('A'), "Photo must be a photo taken and uploaded from the app");
  bad("p", S("sha256:abc"), "Photo must be a photo taken and uploaded from the app");
  ok("s", EVID('0'));
  bad("s", S("x"), "Signature must be a signature captured in the app");
}

static void test_ack_location_rating(void **state) {
  ok("k", B(true));
  ok("k", B(false)); /* not required here: declining is an answer */
  bad("k", S("yes"), "Notice read: the customer must acknowledge the document before you continue");
  const hs_value_t *echo = NULL;
  assert_null(
      attempt(fx.s_all, "loc", M(3, "lat", F(37.7), "lon", I(-122), "accuracy", I(10)), &echo));
  assert_int_equal(echo->type, HS_V_MAP);
  assert_true(fabs(hs_map_get(echo, "lon")->as.f + 122) < 1e-9);
  bad("loc", M(3, "lat", I(91), "lon", I(0), "accuracy", I(1)),
      "Place is not a real place (latitude -90 to 90, longitude -180 to 180)");
  bad("loc", M(3, "lat", I(1), "lon", I(0), "accuracy", I(100)),
      "Place is not precise enough (it must be within 50 m): wait for a better GPS fix, outdoors "
      "if you can");
  bad("loc", M(2, "lat", I(1), "lon", I(0)),
      "Place is not precise enough (it must be within 50 m): wait for a better GPS fix, outdoors "
      "if you can");
  bad("loc", M(4, "lat", I(1), "lon", I(0), "accuracy", I(1), "alt", I(3)),
      "Place must be a location from the phone's GPS (lat, lon, accuracy)");
  bad("loc", S("here"), "Place must be a location from the phone's GPS (lat, lon, accuracy)");
  ok("r", I(1));
  ok("r", I(5));
  bad("r", I(0), "Rating must be a whole number from 1 to 5");
  bad("r", I(6), "Rating must be a whole number from 1 to 5");
  bad("r", F(4.5), "Rating must be a whole number from 1 to 5");
}

static void test_unknown_and_shape(void **state) {
  bad("zzz", I(1), "This step has no field named 'zzz'");
  const char *msg = attempt(fx.s_all, NULL, A(1, I(1)), NULL);
  assert_string_equal(msg, "The answer must be a set of named fields, not a array");
  /* The step as a device gets it. */
  hs_value_t *step = NULL;
  hs_err_t err;
  assert_int_equal(hs_session_step(fx.s_all, &fx.a, &step, &err), HS_OK);
  assert_string_equal(hs_map_get(step, "session")->as.str.ptr, "s1");
  assert_int_equal(hs_map_get(step, "seq")->as.i, hs_session_seq(fx.s_all));
  assert_string_equal(hs_map_get(step, "id")->as.str.ptr, "all");
  assert_string_equal(hs_map_get(step, "audience")->as.str.ptr, "contractor");
  const hs_value_t *show = hs_map_get(step, "show");
  assert_int_equal(show->as.arr.len, 2); /* clip, and the ack's document added after it */
  assert_string_equal(hs_map_get(&show->as.arr.items[0], "kind")->as.str.ptr, "video");
  assert_string_equal(hs_map_get(&show->as.arr.items[1], "id")->as.str.ptr, "notice");
  assert_string_equal(hs_map_get(&show->as.arr.items[1], "version")->as.str.ptr, "v2");
  const hs_value_t *fields = hs_map_get(step, "fields");
  static const char *const order[] = {"t", "code", "roof_age", "temp", "ok",  "c", "m",
                                      "d", "p",    "s",        "k",    "loc", "r", "pii_field"};
  assert_int_equal(fields->as.arr.len, 14);
  for (size_t i = 0; i < 14; i++) {
    assert_string_equal(hs_map_get(&fields->as.arr.items[i], "name")->as.str.ptr, order[i]);
  }
  const hs_value_t *roof = &fields->as.arr.items[2];
  assert_string_equal(hs_map_get(roof, "type")->as.str.ptr, "integer");
  assert_int_equal(hs_map_get(roof, "max")->as.i, 120);
  assert_false(hs_map_get(roof, "required")->as.b);
  /* The members in their documented order, whatever order the author wrote them in. */
  static const char *const keys[] = {"name", "type", "label", "required", "min", "max"};
  assert_int_equal(roof->as.map.len, 6);
  for (size_t i = 0; i < 6; i++) {
    assert_string_equal(roof->as.map.items[i].key, keys[i]);
  }
  const hs_value_t *pii = &fields->as.arr.items[13];
  assert_string_equal(hs_map_get(pii, "label")->as.str.ptr, "Pii field");
  assert_true(hs_map_get(pii, "pii")->as.b);
  assert_int_equal(hs_map_get(&fields->as.arr.items[5], "options")->as.arr.len, 2);
}

static void test_required(void **state) {
  hs_step_result_t res;
  hs_err_t err;
  hs_session_t *s = fx.s_req;
  assert_int_equal(
      hs_session_complete(s, hs_session_seq(s), M(1, "t", S("")), 1, 0, &fx.a, &res, &err), HS_OK);
  assert_int_equal(res.status, HS_STEP_REJECTED);
  assert_int_equal(res.events->as.arr.len, 0);
  /* The author gave no show and no title: the ack's document is shown all the same, and the
   * title is the id. */
  const hs_value_t *show = hs_map_get(res.step, "show");
  assert_non_null(show);
  assert_int_equal(show->as.arr.len, 1);
  assert_string_equal(hs_map_get(&show->as.arr.items[0], "id")->as.str.ptr, "notice");
  assert_string_equal(hs_map_get(res.step, "title")->as.str.ptr, "req");
  assert_string_equal(hs_map_get(res.step, "audience")->as.str.ptr, "contractor");
  static const char *const want[][2] = {
      {"t", "Please fill in T"},
      {"i", "Please fill in I"},
      {"b", "Please answer Badge shown?"},
      {"p", "Please take a photo for Roof photo"},
      {"s", "Please have the customer sign: S"},
      {"k", "K: the customer must acknowledge the document before you continue"},
      {"c", "Please choose C"},
      {"m", "Please choose M"},
      {"l", "Please record the location: L"},
  };
  assert_int_equal(res.errors->as.map.len, 9);
  for (size_t i = 0; i < 9; i++) {
    const hs_value_t *m = hs_map_get(res.errors, want[i][0]);
    assert_non_null(m);
    assert_string_equal(m->as.str.ptr, want[i][1]);
  }
  /* The validate function runs only once the C checks pass, and its messages come back. */
  hs_value_t *good =
      M(9, "t", S("bad"), "i", I(1), "b", B(false), "p", EVID('1'), "s", EVID('2'), "k", B(true),
        "c", S("x"), "m", A(1, S("x")), "l", M(2, "lat", I(0), "lon", I(0)));
  assert_int_equal(hs_session_complete(s, hs_session_seq(s), good, 1, 0, &fx.a, &res, &err), HS_OK);
  assert_int_equal(res.status, HS_STEP_REJECTED);
  assert_string_equal(hs_map_get(res.errors, "t")->as.str.ptr, "Custom message");
  good->as.map.items[0].val = *S("whole");
  assert_int_equal(hs_session_complete(s, hs_session_seq(s), good, 1, 0, &fx.a, &res, &err), HS_OK);
  assert_string_equal(hs_map_get(res.errors, "")->as.str.ptr, "Whole step message");
  good->as.map.items[0].val = *S("boom");
  assert_int_equal(hs_session_complete(s, hs_session_seq(s), good, 1, 0, &fx.a, &res, &err),
                   HS_ESCRIPT);
  if (strstr(err.msg, "req.lua:19: validate exploded") == NULL) {
    fail_msg("got: %s", err.msg);
  }
  assert_int_equal(hs_session_status(s), HS_SESSION_WAITING);
  good->as.map.items[0].val = *S("weird");
  assert_int_equal(hs_session_complete(s, hs_session_seq(s), good, 1, 0, &fx.a, &res, &err),
                   HS_ESCRIPT);
  assert_non_null(strstr(err.msg, "must return nil, a message"));
  /* Accepted: the completion event records the data and which document version was acked. */
  good->as.map.items[0].val = *S("fine");
  uint32_t seq = hs_session_seq(s);
  assert_int_equal(hs_session_complete(s, seq, good, 77, 66, &fx.a, &res, &err), HS_OK);
  assert_int_equal(res.status, HS_STEP_WAITING);
  assert_int_equal(res.seq, seq + 1);
  const hs_value_t *e = &res.events->as.arr.items[0];
  assert_string_equal(hs_map_get(e, "type")->as.str.ptr, "complete");
  assert_int_equal(hs_map_get(e, "seq")->as.i, seq);
  assert_int_equal(hs_map_get(e, "at")->as.i, 77);
  assert_int_equal(hs_map_get(e, "device_at")->as.i, 66);
  assert_true(hs_value_equal(hs_map_get(e, "data"), good));
  const hs_value_t *doc = hs_map_get(hs_map_get(e, "documents"), "k");
  assert_string_equal(hs_map_get(doc, "id")->as.str.ptr, "notice");
  assert_string_equal(hs_map_get(doc, "version")->as.str.ptr, "v2");
  /* A stale or future seq is a conflict, not a validation failure. */
  assert_int_equal(hs_session_complete(s, seq, good, 1, 0, &fx.a, &res, &err), HS_ECONFLICT);
}

/* An author's mistake is refused at load with file:line and what to change. */
static void load_fails(const char *body, const char *want) {
  char src[2048];
  snprintf(src, sizeof src,
           "return process { name = 'x', title = 'X',\n"
           "  content = { clip = { kind = 'video', title = 'C', uri = 'u' } },\n"
           "  run = function(visit) visit:step { id = 'a', fields = { %s } } end,\n"
           "  tests = {} }\n",
           body);
  hs_process_t *p = NULL;
  hs_err_t err;
  int rc = hs_process_load(fx.vm, "bad.lua", src, strlen(src), &p, &err);
  if (rc == HS_OK) {
    /* Step-level mistakes show when the step runs. */
    hs_session_t *s = NULL;
    hs_step_result_t res;
    hs_session_start_t st = {.session_id = "x"};
    rc = hs_session_start(p, &st, &fx.a, &s, &res, &err);
    hs_session_free(s);
    hs_process_release(p);
  }
  assert_int_not_equal(rc, HS_OK);
  if (strstr(err.msg, want) == NULL || strstr(err.msg, "bad.lua:3:") == NULL) {
    fail_msg("expected bad.lua:3: ... %s, got: %s", want, err.msg);
  }
}

static void test_author_mistakes(void **state) {
  load_fails("field.integer { name = 'x', maxx = 3 }", "field.integer has no option 'maxx'");
  load_fails("field.text { name = 'Bad Name' }", "name 'Bad Name' must be lower-case");
  load_fails("field.integer { name = 'x', min = 5, max = 1 }", "min is above max");
  load_fails("field.integer { name = 'x', min = 1.5 }", "min must be a whole number");
  load_fails("field.choice { name = 'x' }", "needs options");
  load_fails("field.choice { name = 'x', options = { 'a', 'a' } }", "listed twice");
  load_fails("field.ack { name = 'x' }", "needs document");
  load_fails("field.ack { name = 'x', document = 'clip' }", "must be content of kind");
  load_fails("field.date { name = 'x', min = 'yesterday' }", "date string");
  load_fails("field.text { label = 'x' }", "needs a name");
  load_fails("field.text { name = 'x', required = 'yes' }", "required must be true or false");
  load_fails("field.text { name = 'x' }, field.text { name = 'x' }", "two fields are named 'x'");
  load_fails("{ name = 'x' }", "must be made with field.text");
  load_fails("field.bogus { name = 'x' }", "attempt to call a nil value");
  hs_err_t err;
  hs_process_t *p = NULL;
  static const char *const bad_process[][2] = {
      {"return process { name = 'Bad', title = 'x', run = function() end }", "process name 'Bad'"},
      {"return process { name = 'x', title = 'x' }", "process needs run"},
      {"return process { name = 'x', title = 'x', run = print, colour = 1 }", "no option 'colour'"},
      {"return process { name = 'x', title = 'x', run = print,\n content = { a = { kind = 'gif', "
       "title = 't', uri = 'u' } } }",
       "kind = one of"},
      {"return { name = 'x' }", "must end with `return process"},
      {"return process { name = 'x', title = 'x', run = function(visit)\n"
       " visit:step { id = 'a', show = 'nope' } end }",
       ""},
  };
  for (size_t i = 0; i < 5; i++) {
    const char *src = bad_process[i][0];
    assert_int_not_equal(hs_process_load(fx.vm, "p.lua", src, strlen(src), &p, &err), HS_OK);
    if (strstr(err.msg, bad_process[i][1]) == NULL) {
      fail_msg("expected \"%s\", got: %s", bad_process[i][1], err.msg);
    }
  }
}

static void test_step_mistakes(void **state) {
  static const char *const cases[][2] = {
      {"visit:step { id = 'a', show = 'nope' }", "show names 'nope'"},
      {"visit:step { id = 'a', titel = 'x' }", "visit:step has no option 'titel'"},
      {"visit:step { id = 'a', audience = 'everyone' }", "audience must be"},
      {"visit:step { title = 'x' }", "needs an id"},
      {"visit:suggest { slot = 's', from = { 'nope' } }", "from[1] must be an id"},
      {"visit:outcome('')", "the name must be 1 to"},
      {"local x = visit.colour", "visit has no field 'colour'"},
      {"visit.customer = {}", "visit cannot be changed"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char src[512];
    snprintf(src, sizeof src,
             "return process { name = 'x', title = 'X', run = function(visit)\n  %s\nend }\n",
             cases[i][0]);
    hs_process_t *p = NULL;
    hs_err_t err;
    assert_int_equal(hs_process_load(fx.vm, "step.lua", src, strlen(src), &p, &err), HS_OK);
    hs_session_t *s = NULL;
    hs_step_result_t res;
    hs_session_start_t st = {.session_id = "x"};
    assert_int_equal(hs_session_start(p, &st, &fx.a, &s, &res, &err), HS_ESCRIPT);
    if (strstr(err.msg, cases[i][1]) == NULL || strstr(err.msg, "step.lua:2:") == NULL) {
      fail_msg("expected step.lua:2: ... %s, got: %s", cases[i][1], err.msg);
    }
    assert_null(s);
    hs_process_release(p);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_text),
      cmocka_unit_test(test_integer),
      cmocka_unit_test(test_number),
      cmocka_unit_test(test_boolean_choice_multi),
      cmocka_unit_test(test_date),
      cmocka_unit_test(test_evidence),
      cmocka_unit_test(test_ack_location_rating),
      cmocka_unit_test(test_unknown_and_shape),
      cmocka_unit_test(test_required),
      cmocka_unit_test(test_author_mistakes),
      cmocka_unit_test(test_step_mistakes),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
