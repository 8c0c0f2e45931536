/* visit:suggest learns: it picks by Thompson sampling over the items' priors and what the
 * server's counts hook reports, records each pick with its propensity and context key, and a
 * replay returns the recorded picks whatever the posteriors say by then. Also: a content
 * item's prior is checked when the process loads, a customer's rating on a step is reported
 * with the completion, and goals are known by name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "engine/engine.h"

static hs_vm_t *vm;
static hs_arena_t arena;

static int setup(void **state) {
  (void)state;
  hs_err_t err;
  hs_arena_init(&arena, 0);
  return hs_vm_new("7", NULL, &vm, &err) == HS_OK ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
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

#define PITCH_SRC(PRIOR_A)                                                                         \
  "return process { name = 'pitch', title = 'Pitch', goals = { sale = 'Sold' },\n"                 \
  "  content = {\n"                                                                                \
  "    a = { kind = 'video', title = 'A', uri = 'https://cdn.example/a' " PRIOR_A " },\n"          \
  "    b = { kind = 'pdf', title = 'B', uri = 'https://cdn.example/b' } },\n"                      \
  "  run = function(visit)\n"                                                                      \
  "    local pick = visit:suggest { slot = 'offer', from = { 'a', 'b' }, context = 'seg' }\n"      \
  "    local d = visit:step { id = 'pitch', title = 'Pitch', show = pick,\n"                       \
  "      fields = { field.boolean { name = 'sold', required = true } } }\n"                        \
  "    if d.sold then visit:outcome('sale') else visit:outcome('lost') end\n"                      \
  "    visit:step { id = 'rate', title = 'Rate', audience = 'customer',\n"                         \
  "      fields = { field.text { name = 'note' }, field.rating { name = 'stars' } } }\n"           \
  "    visit:step { id = 'self', title = 'Self',\n"                                                \
  "      fields = { field.rating { name = 'stars' } } }\n"                                         \
  "  end }\n"

/* The suggest event of a start's events. */
static const hs_value_t *suggest_of(const hs_value_t *events) {
  for (size_t i = 0; i < events->as.arr.len; i++) {
    const hs_value_t *t = hs_map_get(&events->as.arr.items[i], "type");
    if (t != NULL && strcmp(t->as.str.ptr, "suggest") == 0) {
      return &events->as.arr.items[i];
    }
  }
  fail_msg("no suggest event");
  return NULL;
}

/* Starts n sessions; counts how often a was picked and sums the propensities of the picks. */
static int picks_of_a(hs_process_t *p, int n, double *mean_prop_a) {
  int a = 0;
  double sum = 0;
  for (int i = 0; i < n; i++) {
    hs_session_start_t st = {.session_id = "s", .seed = (uint64_t)i * 7919u + 1, .at_ms = 1};
    hs_session_t *s = NULL;
    hs_step_result_t res;
    hs_err_t err;
    assert_int_equal(hs_session_start(p, &st, &arena, &s, &res, &err), HS_OK);
    const hs_value_t *e = suggest_of(res.events);
    const hs_value_t *picks = hs_map_get(e, "picks");
    const hs_value_t *props = hs_map_get(e, "propensities");
    const hs_value_t *ctx = hs_map_get(e, "context");
    assert_non_null(picks);
    assert_non_null(props);
    assert_non_null(ctx);
    assert_string_equal(ctx->as.str.ptr, "seg");
    assert_int_equal(picks->as.arr.len, 1);
    assert_int_equal(props->as.arr.len, 1);
    assert_int_equal(props->as.arr.items[0].type, HS_V_FLOAT);
    double prop = props->as.arr.items[0].as.f;
    assert_true(prop > 0.0 && prop <= 1.0);
    if (strcmp(picks->as.arr.items[0].as.str.ptr, "a") == 0) {
      a++;
      sum += prop;
    }
    hs_session_free(s);
  }
  *mean_prop_a = a > 0 ? sum / a : 0;
  return a;
}

/* Offline (no hook, as in `handsel test`): the priors alone decide. */
static void test_priors_only(void **state) {
  (void)state;
  hs_process_t *even = load("even.lua", PITCH_SRC(""));
  double prop = 0;
  int a = picks_of_a(even, 200, &prop);
  assert_true(a > 70 && a < 130);
  assert_true(prop > 0.4 && prop < 0.6);
  hs_process_release(even);
  hs_process_t *favoured = load("favoured.lua", PITCH_SRC(", prior = { 40, 2 }"));
  a = picks_of_a(favoured, 200, &prop);
  assert_true(a > 170);
  assert_true(prop > 0.9);
  hs_process_release(favoured);
  hs_process_t *named = load("named.lua", PITCH_SRC(", prior = { successes = 0, failures = 40 }"));
  a = picks_of_a(named, 200, &prop);
  assert_true(a < 30);
  hs_process_release(named);
}

typedef struct hook {
  uint64_t a_shown, a_wins, b_shown, b_wins;
  char last_brand[16], last_process[16], last_slot[16], last_context[16];
  int calls;
} hook_t;

static void counts(void *ctx, const char *brand, const char *process, const char *slot,
                   const char *context, const char *item, hs_content_counts_t *out) {
  hook_t *h = ctx;
  h->calls++;
  snprintf(h->last_brand, sizeof h->last_brand, "%s", brand);
  snprintf(h->last_process, sizeof h->last_process, "%s", process);
  snprintf(h->last_slot, sizeof h->last_slot, "%s", slot);
  snprintf(h->last_context, sizeof h->last_context, "%s", context);
  bool a = strcmp(item, "a") == 0;
  out->shown = a ? h->a_shown : h->b_shown;
  out->successes = a ? h->a_wins : h->b_wins;
}

/* With the server's counts, what visits taught outweighs a mild prior. */
static void test_counts_hook(void **state) {
  (void)state;
  hook_t h = {.a_shown = 200, .a_wins = 10, .b_shown = 200, .b_wins = 80};
  hs_vm_set_counts(vm, counts, &h);
  hs_process_t *p = load("hook.lua", PITCH_SRC(", prior = { 3, 1 }"));
  double prop = 0;
  int a = picks_of_a(p, 200, &prop);
  assert_true(a < 20);
  assert_true(h.calls >= 400);
  assert_string_equal(h.last_brand, "7");
  assert_string_equal(h.last_process, "pitch");
  assert_string_equal(h.last_slot, "offer");
  assert_string_equal(h.last_context, "seg");
  hs_process_release(p);
  hs_vm_set_counts(vm, NULL, NULL);
}

/* A replay returns the recorded pick without asking the posteriors, even after they turned. */
static void test_replay_keeps_picks(void **state) {
  (void)state;
  hook_t h = {.a_shown = 500, .a_wins = 400, .b_shown = 500, .b_wins = 10};
  hs_vm_set_counts(vm, counts, &h);
  hs_process_t *p = load("replay.lua", PITCH_SRC(""));
  for (uint64_t seed = 1; seed <= 20; seed++) {
    h.a_wins = 400;
    h.b_wins = 10;
    hs_session_start_t st = {.session_id = "r", .seed = seed, .at_ms = 1};
    hs_session_t *s = NULL;
    hs_step_result_t res;
    hs_err_t err;
    assert_int_equal(hs_session_start(p, &st, &arena, &s, &res, &err), HS_OK);
    hs_value_t *first = res.step;
    const hs_value_t *events = res.events;
    /* Now b looks best; a replay must not care. */
    h.a_wins = 0;
    h.b_wins = 490;
    int calls = h.calls;
    hs_session_t *again = NULL;
    hs_step_result_t rres;
    assert_int_equal(hs_session_replay(p, events, &arena, &again, &rres, &err), HS_OK);
    assert_true(hs_value_equal(rres.step, first));
    assert_int_equal(h.calls, calls);
    hs_session_free(again);
    hs_session_free(s);
  }
  hs_process_release(p);
  hs_vm_set_counts(vm, NULL, NULL);
}

/* A customer's rating on a step handed to them comes back with the completion; a rating on
 * the contractor's own step does not. */
static void test_customer_rating(void **state) {
  (void)state;
  hs_process_t *p = load("rating.lua", PITCH_SRC(""));
  hs_session_start_t st = {.session_id = "c", .seed = 5, .at_ms = 1};
  hs_session_t *s = NULL;
  hs_step_result_t res;
  hs_err_t err;
  assert_int_equal(hs_session_start(p, &st, &arena, &s, &res, &err), HS_OK);
  hs_value_t *d = hs_value_new_map(&arena, 1);
  hs_map_add_bool(&arena, d, "sold", true);
  assert_int_equal(hs_session_complete(s, 1, d, 2, 0, &arena, &res, &err), HS_OK);
  assert_string_equal(res.outcome, "sale");
  assert_true(hs_process_is_goal(p, res.outcome));
  assert_false(hs_process_is_goal(p, "lost"));
  assert_int_equal(res.customer_rating, 0);
  d = hs_value_new_map(&arena, 1);
  hs_map_add_int(&arena, d, "stars", 5);
  assert_int_equal(hs_session_complete(s, 2, d, 3, 0, &arena, &res, &err), HS_OK);
  assert_int_equal(res.customer_rating, 5);
  assert_int_equal(hs_session_complete(s, 3, d, 4, 0, &arena, &res, &err), HS_OK);
  assert_int_equal(res.customer_rating, 0);
  hs_session_free(s);
  hs_process_release(p);
}

/* A prior that is not two non-negative numbers is refused at load, with file:line. */
static void test_prior_checks(void **state) {
  (void)state;
  static const char *const bad[] = {
      ", prior = 3",
      ", prior = { 3 }",
      ", prior = { 3, 1, 2 }",
      ", prior = { 3, -1 }",
      ", prior = { 'x', 1 }",
      ", prior = { successes = 3 }",
      ", prior = { successes = 3, failure = 1 }",
      ", prior = { 1e9, 1 }",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char src[2048];
    snprintf(src, sizeof src,
             "return process { name = 'pitch', title = 'Pitch',\n"
             "  content = { a = { kind = 'video', title = 'A', uri = 'u' %s } },\n"
             "  run = function(visit) end }\n",
             bad[i]);
    hs_process_t *p = NULL;
    hs_err_t err;
    assert_int_not_equal(hs_process_load(vm, "bad.lua", src, strlen(src), &p, &err), HS_OK);
    if (strstr(err.msg, "bad.lua:1:") == NULL || strstr(err.msg, "prior") == NULL ||
        strstr(err.msg, "'a'") == NULL) {
      fail_msg("%s: the message should name file:line, the item and its prior: %s", bad[i],
               err.msg);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_priors_only),        cmocka_unit_test(test_counts_hook),
      cmocka_unit_test(test_replay_keeps_picks), cmocka_unit_test(test_customer_rating),
      cmocka_unit_test(test_prior_checks),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
