/* The hostile-script suite: every Lua file in tests/engine/hostile attacks the sandbox or a limit.
 * Each file says in its header at which phase it must fail and with what words:
 *
 *   -- phase: load | start | complete-waiting | steps | twice
 *   -- expect: <text the error message must contain>
 *
 * All of them run in one brand state that also serves a well-behaved session; after every
 * hostile file that session must still complete a step and compute the right answer, so a
 * failure is shown to stay inside its own session. */
#include <dirent.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/engine.h"

static const hs_engine_limits_t LIMITS = {
    .mem_cap = 16u * 1024 * 1024, .instr_budget = 2u * 1000 * 1000, .max_steps = 100};

static hs_vm_t *vm_a; /* the brand every hostile script runs in */
static hs_vm_t *vm_b; /* another brand, for other_brand_globals */
static hs_process_t *good;
static hs_session_t *good_session;
static int64_t good_sum;
static int64_t good_next = 1;

static const char GOOD[] = "local SECRET_OF_BRAND_A = 'do not read me'\n"
                           "return process { name = 'good', title = 'Good', run = function(visit)\n"
                           "  local n = 0\n"
                           "  while true do\n"
                           "    local d = visit:step { id = 'ping', fields = { field.integer { "
                           "name = 'n', required = true } } }\n"
                           "    n = n + d.n\n"
                           "    visit:outcome('sum', n .. SECRET_OF_BRAND_A:sub(1, 0))\n"
                           "  end\n"
                           "end }\n";

static const char *source_dir(void) {
  const char *d = getenv("HANDSEL_SOURCE_DIR");
#ifdef HANDSEL_SOURCE_DIR
  if (d == NULL) {
    d = HANDSEL_SOURCE_DIR;
  }
#endif
  return d != NULL ? d : ".";
}

/* The well-behaved session completes one more step and reports the running sum. */
static void ping_good(void) {
  hs_arena_t a;
  hs_arena_init(&a, 0);
  hs_value_t *data = hs_value_new_map(&a, 1);
  assert_int_equal(hs_map_add_int(&a, data, "n", good_next), HS_OK);
  hs_step_result_t res;
  hs_err_t err;
  int rc = hs_session_complete(good_session, hs_session_seq(good_session), data, 1000, 0, &a, &res,
                               &err);
  if (rc != HS_OK) {
    fail_msg("the well-behaved session failed: %s", err.msg);
  }
  assert_int_equal(res.status, HS_STEP_WAITING);
  good_sum += good_next;
  good_next++;
  char want[32];
  snprintf(want, sizeof want, "%lld", (long long)good_sum);
  assert_non_null(res.outcome);
  assert_string_equal(res.outcome, "sum");
  const hs_value_t *last = NULL;
  for (size_t i = 0; i < res.events->as.arr.len; i++) {
    const hs_value_t *t = hs_map_get(&res.events->as.arr.items[i], "type");
    if (strcmp(t->as.str.ptr, "outcome") == 0) {
      last = hs_map_get(&res.events->as.arr.items[i], "value");
    }
  }
  assert_non_null(last);
  assert_string_equal(last->as.str.ptr, want);
  hs_arena_reset(&a);
}

static int setup(void **state) {
  hs_err_t err;
  if (hs_vm_new("brand-a", &LIMITS, &vm_a, &err) != HS_OK ||
      hs_vm_new("brand-b", &LIMITS, &vm_b, &err) != HS_OK ||
      hs_process_load(vm_a, "good.lua", GOOD, sizeof GOOD - 1, &good, &err) != HS_OK) {
    fprintf(stderr, "setup: %s\n", err.msg);
    return -1;
  }
  hs_arena_t a;
  hs_arena_init(&a, 0);
  hs_session_start_t st = {.session_id = "good-1", .seed = 1, .at_ms = 1};
  hs_step_result_t res;
  if (hs_session_start(good, &st, &a, &good_session, &res, &err) != HS_OK) {
    fprintf(stderr, "setup: %s\n", err.msg);
    return -1;
  }
  hs_arena_reset(&a);
  return 0;
}

static int teardown(void **state) {
  hs_session_free(good_session);
  hs_vm_free(vm_a);
  hs_vm_free(vm_b);
  return 0;
}

static void header(const char *path, char *phase, char *expect) {
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  char line[512];
  phase[0] = expect[0] = '\0';
  while (fgets(line, sizeof line, f) != NULL && strncmp(line, "--", 2) == 0) {
    line[strcspn(line, "\n")] = '\0';
    if (strncmp(line, "-- phase: ", 10) == 0) {
      snprintf(phase, 64, "%.60s", line + 10);
    } else if (strncmp(line, "-- expect: ", 11) == 0) {
      snprintf(expect, 256, "%.250s", line + 11);
    }
  }
  fclose(f);
  assert_true(phase[0] != '\0');
}

static void expect_error(int rc, const hs_err_t *err, const char *expect, const char *path) {
  if (rc == HS_OK) {
    fail_msg("%s: expected an error containing \"%s\", but it succeeded", path, expect);
  }
  /* expect may list alternatives separated by |, where the limit hit first depends on the
   * build (a deep recursion runs out of memory before Lua's stack limit under a small cap). */
  bool found = false;
  char alts[256];
  snprintf(alts, sizeof alts, "%s", expect);
  for (char *save = NULL, *alt = strtok_r(alts, "|", &save); alt != NULL && !found;
       alt = strtok_r(NULL, "|", &save)) {
    found = strstr(err->msg, alt) != NULL;
  }
  if (!found && expect[0] != '\0') {
    fail_msg("%s: expected an error containing \"%s\", got: %s", path, expect, err->msg);
  }
  /* Every error must be a sentence a person can read, not an empty or internal code. */
  assert_true(strlen(err->msg) > 10);
}

static void run_case(void **state) {
  const char *path = *state;
  char phase[64], expect[256];
  header(path, phase, expect);
  hs_vm_t *vm = strstr(path, "other_brand") != NULL ? vm_b : vm_a;
  hs_err_t err;
  hs_err_clear(&err);
  hs_process_t *p = NULL;
  int rc = hs_process_load_file(vm, path, &p, &err);
  hs_arena_t a;
  hs_arena_init(&a, 0);
  hs_session_start_t st = {.session_id = "hostile", .seed = 7, .at_ms = 1};
  hs_step_result_t res;
  hs_session_t *s = NULL, *s2 = NULL;
  if (strcmp(phase, "load") == 0) {
    expect_error(rc, &err, expect, path);
    goto good;
  }
  if (rc != HS_OK) {
    fail_msg("%s: failed to load: %s", path, err.msg);
  }
  if (strcmp(phase, "start") == 0) {
    rc = hs_session_start(p, &st, &a, &s, &res, &err);
    expect_error(rc, &err, expect, path);
    assert_null(res.step);
  } else if (strcmp(phase, "complete-waiting") == 0) {
    assert_int_equal(hs_session_start(p, &st, &a, &s, &res, &err), HS_OK);
    hs_value_t *data = hs_value_new_map(&a, 0);
    for (int attempt = 0; attempt < 2; attempt++) {
      rc = hs_session_complete(s, hs_session_seq(s), data, 2, 0, &a, &res, &err);
      expect_error(rc, &err, expect, path);
      /* A failing validate function leaves the session at its step, ready for a retry. */
      assert_int_equal(hs_session_status(s), HS_SESSION_WAITING);
      assert_int_equal(hs_session_seq(s), 1);
    }
  } else if (strcmp(phase, "steps") == 0) {
    assert_int_equal(hs_session_start(p, &st, &a, &s, &res, &err), HS_OK);
    hs_value_t *data = hs_value_new_map(&a, 0);
    rc = HS_OK;
    for (int i = 0; i < 1000 && rc == HS_OK; i++) {
      rc = hs_session_complete(s, hs_session_seq(s), data, 2, 0, &a, &res, &err);
    }
    expect_error(rc, &err, expect, path);
    assert_int_equal(rc, HS_ELIMIT);
    assert_int_equal(hs_session_status(s), HS_SESSION_FAILED);
    assert_int_equal(hs_session_seq(s), LIMITS.max_steps);
  } else if (strcmp(phase, "twice") == 0) {
    assert_int_equal(hs_session_start(p, &st, &a, &s, &res, &err), HS_OK);
    rc = hs_session_start(p, &st, &a, &s2, &res, &err);
    expect_error(rc, &err, expect, path);
  } else {
    fail_msg("%s: unknown phase '%s'", path, phase);
  }
  hs_session_free(s);
  hs_session_free(s2);
  hs_process_release(p);
good:
  hs_arena_reset(&a);
  ping_good();
  /* The brand's state is not left full: what the failed session held can be collected. */
  assert_true(hs_vm_memory(vm_a) < LIMITS.mem_cap);
}

/* Memory pressure everywhere: the same process loaded and its scenarios run under every cap
 * from tiny to comfortable, so allocation failures hit the parser, the collector, the
 * sandbox's own C code and the engine's conversions at every point. Each must end in a clean
 * error (or success), never a crash or an unprotected Lua error (which aborts). */
static void test_memory_pressure(void **state) {
  char path[4096];
  snprintf(path, sizeof path, "%s/processes/solar-consult.lua", source_dir());
  FILE *devnull = fopen("/dev/null", "w");
  assert_non_null(devnull);
  int loaded = 0, ran = 0;
  for (size_t cap = 8 * 1024; cap <= 640 * 1024; cap += 3 * 1024) {
    hs_engine_limits_t lim = LIMITS;
    lim.mem_cap = cap;
    hs_vm_t *vm = NULL;
    hs_err_t err;
    if (hs_vm_new("tight", &lim, &vm, &err) != HS_OK) {
      assert_int_equal(err.code, HS_ENOMEM);
      continue;
    }
    hs_process_t *p = NULL;
    int rc = hs_process_load_file(vm, path, &p, &err);
    if (rc == HS_OK) {
      loaded++;
      int passed = 0, failed = 0;
      if (hs_process_test(p, devnull, &passed, &failed, &err) == HS_OK && failed == 0) {
        ran++;
      }
    } else {
      assert_true(rc == HS_ENOMEM || rc == HS_ELIMIT || rc == HS_ESCRIPT);
      assert_true(strlen(err.msg) > 0);
    }
    hs_vm_free(vm);
  }
  fclose(devnull);
  /* The range reaches caps where everything fits, so the loop is known to test both sides. */
  assert_true(loaded > 0);
  assert_true(ran > 0);
}

static int cmp_str(const void *x, const void *y) {
  return strcmp(*(char *const *)x, *(char *const *)y);
}

int main(void) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/tests/engine/hostile", source_dir());
  DIR *d = opendir(dir);
  if (d == NULL) {
    fprintf(stderr, "cannot open %s (set HANDSEL_SOURCE_DIR)\n", dir);
    return 1;
  }
  char **paths = NULL;
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    size_t len = strlen(e->d_name);
    if (len > 4 && strcmp(e->d_name + len - 4, ".lua") == 0) {
      paths = realloc(paths, (n + 1) * sizeof *paths);
      size_t plen = strlen(dir) + len + 2;
      paths[n] = malloc(plen);
      snprintf(paths[n], plen, "%s/%s", dir, e->d_name);
      n++;
    }
  }
  closedir(d);
  if (n < 25) {
    fprintf(stderr, "expected at least 25 hostile scripts in %s, found %zu\n", dir, n);
    return 1;
  }
  qsort(paths, n, sizeof *paths, cmp_str);
  struct CMUnitTest *tests = calloc(n + 1, sizeof *tests);
  for (size_t i = 0; i < n; i++) {
    tests[i].name = strrchr(paths[i], '/') + 1;
    tests[i].test_func = run_case;
    tests[i].initial_state = paths[i];
  }
  tests[n].name = "memory pressure";
  tests[n].test_func = test_memory_pressure;
  int failed = _cmocka_run_group_tests("hostile", tests, n + 1, setup, teardown);
  for (size_t i = 0; i < n; i++) {
    free(paths[i]);
  }
  free(paths);
  free(tests);
  return failed;
}
