/* Replay: a session rebuilt from its recorded events, at any point, reaches the same step
 * with the same data (random numbers, times and suggestions included) and then goes on
 * exactly like the original; a script that does not follow its record is stopped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/engine.h"

static hs_vm_t *vm;
static hs_arena_t arena;

static const char *source_dir(void) {
  const char *d = getenv("HANDSEL_SOURCE_DIR");
#ifdef HANDSEL_SOURCE_DIR
  if (d == NULL) {
    d = HANDSEL_SOURCE_DIR;
  }
#endif
  return d != NULL ? d : ".";
}

static int setup(void **state) {
  hs_err_t err;
  hs_arena_init(&arena, 0);
  return hs_vm_new("replay", NULL, &vm, &err) == HS_OK ? 0 : -1;
}

static int teardown(void **state) {
  hs_vm_free(vm);
  hs_arena_reset(&arena);
  return 0;
}

static hs_process_t *load(const char *name, const char *src) {
  hs_process_t *p = NULL;
  hs_err_t err;
  if (hs_process_load(vm, name, src, strlen(src), &p, &err) != HS_OK) {
    fail_msg("load %s: %s", name, err.msg);
  }
  return p;
}

static void append(hs_value_t *log, const hs_value_t *events) {
  for (size_t i = 0; i < events->as.arr.len; i++) {
    assert_non_null(hs_array_push(&arena, log, &events->as.arr.items[i]));
  }
}

/* A prefix of the log as its own array (shares the elements). */
static hs_value_t *prefix(const hs_value_t *log, size_t n) {
  hs_value_t *v = hs_value_new_array(&arena, n);
  for (size_t i = 0; i < n; i++) {
    hs_array_push(&arena, v, &log->as.arr.items[i]);
  }
  return v;
}

static void same_state(hs_session_t *live, const hs_step_result_t *lres, hs_session_t *again,
                       const hs_step_result_t *rres) {
  assert_int_equal(hs_session_status(again), hs_session_status(live));
  assert_int_equal(hs_session_seq(again), hs_session_seq(live));
  assert_int_equal(rres->status, lres->status);
  if (lres->step != NULL) {
    assert_non_null(rres->step);
    assert_true(hs_value_equal(rres->step, lres->step));
  }
}

/* Events equal apart from nothing: a rebuilt session must produce byte-for-byte the same
 * record as the original for the same input. */
static void same_events(const hs_value_t *x, const hs_value_t *y) {
  assert_int_equal(x->as.arr.len, y->as.arr.len);
  assert_true(hs_value_equal(x, y));
}

static hs_value_t *answer_for(const char *step) {
  hs_value_t *m = hs_value_new_map(&arena, 4);
  char photo[80] = "sha256:";
  memset(photo + 7, 'a', 64);
  photo[71] = '\0';
  if (strcmp(step, "greet") == 0) {
    hs_map_add_bool(&arena, m, "badge_shown", true);
  } else if (strcmp(step, "roof") == 0) {
    hs_map_add_int(&arena, m, "roof_age", 12);
    hs_map_add_str(&arena, m, "roof_type", "tile");
    hs_map_add_str(&arena, m, "roof_photo", photo);
  } else if (strcmp(step, "bill") == 0) {
    hs_map_add_float(&arena, m, "monthly_bill", 210.5);
    hs_map_add_str(&arena, m, "zip", "94110");
  } else if (strcmp(step, "decision") == 0) {
    hs_map_add_str(&arena, m, "choice", "lease");
    hs_map_add_str(&arena, m, "agreement", photo);
  } else if (strcmp(step, "rate-visit") == 0) {
    hs_map_add_int(&arena, m, "stars", 5);
  }
  return m;
}

/* solar-consult, rebuilt after every event batch, compared with the live session, and then
 * driven on from the rebuilt state. */
static void test_solar_midway(void **state) {
  char path[4096];
  snprintf(path, sizeof path, "%s/processes/solar-consult.lua", source_dir());
  hs_process_t *p = NULL;
  hs_err_t err;
  assert_int_equal(hs_process_load_file(vm, path, &p, &err), HS_OK);
  hs_value_t *customer = hs_value_new_map(&arena, 1);
  hs_map_add_str(&arena, customer, "name", "Ada");
  hs_value_t *contractor = hs_value_new_map(&arena, 2);
  hs_map_add_str(&arena, contractor, "id", "c-7");
  hs_map_add_str(&arena, contractor, "name", "Lin");
  hs_session_start_t st = {.session_id = "sess-1",
                           .customer = customer,
                           .contractor = contractor,
                           .seed = 42,
                           .at_ms = 1700000000000};
  hs_session_t *live = NULL;
  hs_step_result_t lres;
  assert_int_equal(hs_session_start(p, &st, &arena, &live, &lres, &err), HS_OK);
  hs_value_t *log = hs_value_new_array(&arena, 16);
  append(log, lres.events);
  int steps = 0;
  while (lres.status == HS_STEP_WAITING) {
    /* Rebuild from everything recorded so far. */
    hs_session_t *again = NULL;
    hs_step_result_t rres;
    assert_int_equal(
        hs_session_replay(p, prefix(log, log->as.arr.len), &arena, &again, &rres, &err), HS_OK);
    assert_int_equal(rres.events->as.arr.len, 0);
    same_state(live, &lres, again, &rres);
    const char *id = hs_session_step_id(live);
    assert_string_equal(hs_session_step_id(again), id);
    /* The same answer to both gives the same result and the same record. */
    hs_value_t *data = answer_for(id);
    int64_t at = 1700000000000 + 60000 * (++steps);
    hs_step_result_t r2;
    assert_int_equal(
        hs_session_complete(live, hs_session_seq(live), data, at, at - 5, &arena, &lres, &err),
        HS_OK);
    assert_int_equal(
        hs_session_complete(again, hs_session_seq(again), data, at, at - 5, &arena, &r2, &err),
        HS_OK);
    same_state(live, &lres, again, &r2);
    same_events(lres.events, r2.events);
    append(log, lres.events);
    hs_session_free(again);
  }
  assert_int_equal(lres.status, HS_STEP_ENDED);
  assert_int_equal(steps, 5);
  assert_string_equal(lres.outcome, "sale");
  /* The whole log rebuilds an ended session. */
  hs_session_t *done = NULL;
  hs_step_result_t rres;
  assert_int_equal(hs_session_replay(p, log, &arena, &done, &rres, &err), HS_OK);
  assert_int_equal(rres.status, HS_STEP_ENDED);
  assert_int_equal(hs_session_status(done), HS_SESSION_ENDED);
  hs_session_free(done);
  hs_session_free(live);
  hs_process_release(p);
}

#define RANDOM_SRC                                                                                 \
  "return process { name = 'random', title = 'Random', run = function(visit)\n"                    \
  "  local total = 0\n"                                                                            \
  "  for i = 1, 100 do\n"                                                                          \
  "    local d = visit:step { id = 's' .. (i % 3), title = 'r=' .. math.random(1000000) ..\n"      \
  "      ' now=' .. visit:now(), fields = { field.integer { name = 'n', required = true } },\n"    \
  "      validate = function(d) local r = math.random(10) if d.n < 0 then return 'no ' .. r end "  \
  "end }\n"                                                                                        \
  "    total = total + d.n\n"                                                                      \
  "    if i % 10 == 0 then\n"                                                                      \
  "      local pick = visit:suggest { slot = 'tip', from = { 'a', 'b', 'c' }, count = 2 }\n"       \
  "      visit:outcome('tip', pick[1] .. pick[2])\n"                                               \
  "    end\n"                                                                                      \
  "  end\n"                                                                                        \
  "  visit:outcome('total', total)\n"                                                              \
  "end, content = { a = { kind = 'text', title = 'A', text = 'a' },\n"                             \
  "  b = { kind = 'text', title = 'B', text = 'b' }, c = { kind = 'text', title = 'C', text = "    \
  "'c' } } }\n"

static const char RANDOM[] = RANDOM_SRC;

/* math.random (also drawn by validate, also on rejected attempts), visit:now() and
 * visit:suggest return on replay what they returned live. */
static void test_random_now_suggest(void **state) {
  hs_process_t *p = load("random.lua", RANDOM);
  hs_session_start_t st = {.session_id = "r", .seed = 99, .at_ms = 5000};
  hs_session_t *live = NULL;
  hs_step_result_t res;
  hs_err_t err;
  assert_int_equal(hs_session_start(p, &st, &arena, &live, &res, &err), HS_OK);
  /* A step that shows nothing still says so: an empty list. */
  const hs_value_t *show = hs_map_get(res.step, "show");
  assert_true(show != NULL && show->type == HS_V_ARRAY && show->as.arr.len == 0);
  hs_value_t *log = hs_value_new_array(&arena, 256);
  append(log, res.events);
  size_t cut[100];
  hs_value_t *steps[100];
  for (int i = 0; i < 100; i++) {
    cut[i] = log->as.arr.len;
    steps[i] = res.step;
    hs_value_t *bad = hs_value_new_map(&arena, 1);
    hs_map_add_int(&arena, bad, "n", -1);
    hs_value_t *good = hs_value_new_map(&arena, 1);
    hs_map_add_int(&arena, good, "n", i);
    /* A rejected attempt draws random numbers in validate; it records nothing. */
    hs_step_result_t rej;
    assert_int_equal(hs_session_complete(live, hs_session_seq(live), bad, 1, 0, &arena, &rej, &err),
                     HS_OK);
    assert_int_equal(hs_session_complete(live, hs_session_seq(live), good, 6000 + i * 1000, 0,
                                         &arena, &res, &err),
                     HS_OK);
    append(log, res.events);
  }
  assert_int_equal(res.status, HS_STEP_ENDED);
  static const int points[] = {0, 1, 9, 10, 11, 50, 98, 99};
  for (size_t k = 0; k < sizeof points / sizeof points[0]; k++) {
    int i = points[k];
    hs_session_t *again = NULL;
    hs_step_result_t rres;
    assert_int_equal(hs_session_replay(p, prefix(log, cut[i]), &arena, &again, &rres, &err), HS_OK);
    assert_int_equal(hs_session_seq(again), (uint32_t)i + 1);
    if (!hs_value_equal(rres.step, steps[i])) {
      fail_msg("step %d differs after replay: %s vs %s", i,
               hs_map_get(rres.step, "title")->as.str.ptr,
               hs_map_get(steps[i], "title")->as.str.ptr);
    }
    hs_session_free(again);
  }
  hs_session_free(live);
  hs_process_release(p);
}

static void expect_conflict(hs_process_t *p, const hs_value_t *log, const char *want) {
  hs_session_t *s = NULL;
  hs_step_result_t res;
  hs_err_t err;
  int rc = hs_session_replay(p, log, &arena, &s, &res, &err);
  assert_int_equal(rc, HS_ECONFLICT);
  assert_null(s);
  if (strstr(err.msg, want) == NULL) {
    fail_msg("expected \"%s\", got: %s", want, err.msg);
  }
}

/* A record the script does not follow is reported, never silently diverged from. */
static void test_non_deterministic(void **state) {
  hs_process_t *p = load("random.lua", RANDOM);
  hs_session_start_t st = {.session_id = "r", .seed = 3, .at_ms = 1};
  hs_session_t *live = NULL;
  hs_step_result_t res;
  hs_err_t err;
  assert_int_equal(hs_session_start(p, &st, &arena, &live, &res, &err), HS_OK);
  hs_value_t *log = hs_value_new_array(&arena, 64);
  append(log, res.events);
  for (int i = 0; i < 12; i++) {
    hs_value_t *good = hs_value_new_map(&arena, 1);
    hs_map_add_int(&arena, good, "n", i);
    assert_int_equal(
        hs_session_complete(live, hs_session_seq(live), good, 2, 0, &arena, &res, &err), HS_OK);
    append(log, res.events);
  }
  hs_session_free(live);
  /* A different step id where step 3 was recorded. */
  hs_arena_t a2;
  hs_arena_init(&a2, 0);
  hs_value_t *edited = hs_value_new_array(&a2, log->as.arr.len);
  size_t suggest_at = 0;
  for (size_t i = 0; i < log->as.arr.len; i++) {
    hs_value_t *e = hs_array_push(&a2, edited, &log->as.arr.items[i]);
    const hs_value_t *seq = hs_map_get(e, "seq");
    const char *type = hs_map_get(e, "type")->as.str.ptr;
    if (strcmp(type, "complete") == 0 && seq->as.i == 3) {
      hs_value_t *copy = hs_value_new_map(&a2, e->as.map.len);
      for (size_t j = 0; j < e->as.map.len; j++) {
        hs_value_t *v = &e->as.map.items[j].val;
        if (strcmp(e->as.map.items[j].key, "step") == 0) {
          v = hs_value_new_cstr(&a2, "somewhere-else");
        }
        hs_map_add(&a2, copy, e->as.map.items[j].key, v);
      }
      *e = *copy;
    }
    if (strcmp(type, "suggest") == 0 && suggest_at == 0) {
      suggest_at = i;
    }
  }
  expect_conflict(p, edited,
                  "not deterministic: at step 3 it asked for step 's0', but the "
                  "record has step 'somewhere-else'");
  /* The suggestion taken out of the record. */
  assert_true(suggest_at > 0);
  hs_value_t *cut = hs_value_new_array(&a2, log->as.arr.len);
  for (size_t i = 0; i < log->as.arr.len; i++) {
    if (i != suggest_at) {
      hs_array_push(&a2, cut, &log->as.arr.items[i]);
    }
  }
  expect_conflict(p, cut, "suggestion for 'tip'");
  /* Events of another version. */
  hs_process_t *other = load("random2.lua", "-- changed\n" RANDOM_SRC);
  expect_conflict(other, log, "recorded with version");
  hs_process_release(other);
  hs_arena_reset(&a2);
  hs_process_release(p);

  /* A script whose steps depend on state shared between sessions is caught by replay. */
  hs_process_t *shared = load("shared.lua", "local count = 0\n"
                                            "return process { name = 'shared', title = 'S', "
                                            "run = function(visit)\n"
                                            "  count = count + 1\n"
                                            "  visit:step { id = 'visit-' .. count }\n"
                                            "end }\n");
  assert_int_equal(hs_session_start(shared, &st, &arena, &live, &res, &err), HS_OK);
  hs_value_t *slog = hs_value_new_array(&arena, 4);
  append(slog, res.events);
  hs_value_t *empty = hs_value_new_map(&arena, 0);
  assert_int_equal(hs_session_complete(live, 1, empty, 2, 0, &arena, &res, &err), HS_OK);
  append(slog, res.events);
  expect_conflict(shared, slog, "not deterministic");
  hs_session_free(live);
  hs_process_release(shared);
}

/* A step that blows its budget fails that session only; replaying its record brings it back
 * to the same step, where a different answer goes through. */
static void test_retry_after_failure(void **state) {
  hs_process_t *p = load("loop.lua", "return process { name = 'loop', title = 'L', "
                                     "run = function(visit)\n"
                                     "  local d = visit:step { id = 'a', fields = { "
                                     "field.boolean { name = 'spin' } } }\n"
                                     "  if d.spin then while true do end end\n"
                                     "  visit:step { id = 'b' }\n"
                                     "end }\n");
  hs_session_start_t st = {.session_id = "l", .seed = 1, .at_ms = 1};
  hs_session_t *s = NULL, *other = NULL;
  hs_step_result_t res;
  hs_err_t err;
  assert_int_equal(hs_session_start(p, &st, &arena, &s, &res, &err), HS_OK);
  assert_int_equal(hs_session_start(p, &st, &arena, &other, &res, &err), HS_OK);
  hs_value_t *log = hs_value_new_array(&arena, 4);
  append(log, res.events);
  hs_value_t *spin = hs_value_new_map(&arena, 1);
  hs_map_add_bool(&arena, spin, "spin", true);
  assert_int_equal(hs_session_complete(s, 1, spin, 2, 0, &arena, &res, &err), HS_ELIMIT);
  assert_non_null(strstr(err.msg, "loop.lua:3: The script ran too long"));
  assert_int_equal(hs_session_status(s), HS_SESSION_FAILED);
  assert_int_equal(hs_session_complete(s, 1, spin, 2, 0, &arena, &res, &err), HS_ECONFLICT);
  hs_session_free(s);
  /* The other session of the same process never noticed. */
  hs_value_t *calm = hs_value_new_map(&arena, 1);
  hs_map_add_bool(&arena, calm, "spin", false);
  assert_int_equal(hs_session_complete(other, 1, calm, 2, 0, &arena, &res, &err), HS_OK);
  assert_string_equal(hs_session_step_id(other), "b");
  /* Rebuilt from its record (the start), the failed session is back at step a. */
  assert_int_equal(hs_session_replay(p, log, &arena, &s, &res, &err), HS_OK);
  assert_string_equal(hs_session_step_id(s), "a");
  assert_int_equal(hs_session_complete(s, 1, calm, 2, 0, &arena, &res, &err), HS_OK);
  assert_string_equal(hs_session_step_id(s), "b");
  hs_session_free(s);
  hs_session_free(other);
  hs_process_release(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_solar_midway),
      cmocka_unit_test(test_random_now_suggest),
      cmocka_unit_test(test_non_deterministic),
      cmocka_unit_test(test_retry_after_failure),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
