/* `handsel test` and `handsel check`: the scenario runner reports what a brand author needs
 * (file:line, scenario, step, field, expected and got) and the commands exit non-zero on any
 * failure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli/commands.h"
#include "engine/engine.h"

static const char *source_dir(void) {
  const char *d = getenv("HANDSEL_SOURCE_DIR");
#ifdef HANDSEL_SOURCE_DIR
  if (d == NULL) {
    d = HANDSEL_SOURCE_DIR;
  }
#endif
  return d != NULL ? d : ".";
}

/* Runs the scenarios of src; returns the report (free it) and the counts. */
static char *run_scenarios(const char *src, int *passed, int *failed) {
  hs_vm_t *vm = NULL;
  hs_process_t *p = NULL;
  hs_err_t err;
  assert_int_equal(hs_vm_new("t", NULL, &vm, &err), HS_OK);
  if (hs_process_load(vm, "scen.lua", src, strlen(src), &p, &err) != HS_OK) {
    fail_msg("load: %s", err.msg);
  }
  char *text = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&text, &len);
  assert_int_equal(hs_process_test(p, out, passed, failed, &err), HS_OK);
  fclose(out);
  hs_vm_free(vm);
  return text;
}

static void has(const char *text, const char *want) {
  if (strstr(text, want) == NULL) {
    fail_msg("the report lacks \"%s\":\n%s", want, text);
  }
}

static const char BROKEN[] =
    "return process { name = 'scen', title = 'Scenarios',\n" /* 1 */
    "  run = function(visit)\n"                              /* 2 */
    "    local a = visit:step { id = 'age', fields = {\n"    /* 3 */
    "      field.integer { name = 'age', label = 'Age', required = true, max = 120 } } }\n"
    "    if a.age > 60 then\n"             /* 5 */
    "      visit:step { id = 'senior' }\n" /* 6 */
    "      visit:outcome('senior')\n"
    "    else\n"
    "      visit:step { id = 'adult', fields = { field.text { name = 'note' } } }\n" /* 9 */
    "      visit:outcome('adult')\n"
    "    end\n"
    "  end,\n"
    "  tests = {\n"
    "    ['passes'] = { answers = { age = { age = 30 }, adult = {} },\n"
    "                   expect = { steps = { 'age', 'adult' }, outcome = 'adult' } },\n"
    "    ['wrong steps'] = { answers = { age = { age = 70 }, senior = {} },\n"
    "                        expect = { steps = { 'age', 'adult' }, outcome = 'adult' } },\n"
    "    ['unexpected rejection'] = { answers = { age = { age = 130 } } },\n"
    "    ['missing rejection'] = { answers = { age = { age = 20 } },\n"
    "                              expect = { rejected = { age = { 'age' } } } },\n"
    "    ['wrong field rejected'] = { answers = { age = { age = 20 }, adult = { note = 5 } },\n"
    "                                 expect = { rejected = { adult = { 'age' } } } },\n"
    "    ['expected rejection'] = { answers = { age = { age = 121 } },\n"
    "                               expect = { steps = { 'age' }, rejected = { age = { 'age' } } } "
    "},\n"
    "    ['answer function fails'] = { answers = { age = function(step) error('oops') end } },\n"
    "    ['answer from a function'] = { answers = { age = function(step)\n"
    "        assert(step.id == 'age' and step.seq == 1 and step.fields[1].name == 'age')\n"
    "        return { age = 61 } end, senior = {} },\n"
    "      expect = { steps = { 'age', 'senior' }, outcome = 'senior' } },\n"
    "  } }\n";

static void test_report(void **state) {
  int passed = 0, failed = 0;
  char *text = run_scenarios(BROKEN, &passed, &failed);
  assert_int_equal(passed, 3);
  assert_int_equal(failed, 5);
  has(text, "scen.lua: scen, 8 scenarios\n");
  has(text, "  ok    passes\n");
  has(text, "  ok    expected rejection\n");
  has(text, "  ok    answer from a function\n");
  has(text, "  FAIL  wrong steps\n");
  has(text, "scen.lua:1: scenario 'wrong steps': expected steps age, adult, but the visit went "
            "age, senior");
  has(text, "scenario 'wrong steps': expected outcome adult, but got senior");
  has(text, "scen.lua:3: scenario 'unexpected rejection', step 'age' (seq 1), field age: the "
            "answer was rejected (\"Age must be at most 120\"), but the scenario does not expect "
            "it to be");
  has(text, "scenario 'missing rejection', step 'age': expected age to be rejected, but the "
            "answer was accepted");
  has(text, "scen.lua:9: scenario 'wrong field rejected', step 'adult', field note: rejected "
            "(\"Note must be text\"), but expect.rejected lists only age");
  has(text, "scenario 'wrong field rejected', step 'adult', field age: expected to be rejected, "
            "but it passed");
  has(text, "scenario 'answer function fails', step 'age' (seq 1): The answer function failed: "
            "scen.lua:25: oops");
  free(text);
}

static void test_nondeterminism_is_reported(void **state) {
  int passed = 0, failed = 0;
  char *text = run_scenarios("local n = 0\n"
                             "return process { name = 'nd', title = 'ND', run = function(visit)\n"
                             "  n = n + 1\n"
                             "  visit:step { id = 's' .. n }\n"
                             "end, tests = { one = { answers = { s1 = {} } } } }\n",
                             &passed, &failed);
  assert_int_equal(failed, 1);
  has(text, "replaying its events failed: scen.lua:4: The script is not deterministic: at step 1 "
            "it asked for step 's2', but the record has step 's1'");
  free(text);
}

static int run_cli(int (*main_fn)(int, char **), int argc, char **argv) {
  fflush(stdout);
  int saved = dup(1);
  FILE *devnull = freopen("/dev/null", "w", stdout);
  assert_non_null(devnull);
  int rc = main_fn(argc, argv);
  fflush(stdout);
  dup2(saved, 1);
  close(saved);
  return rc;
}

static void test_commands(void **state) {
  char a[4096], b[4096], c[4096], broken[4096];
  snprintf(a, sizeof a, "%s/processes/solar-consult.lua", source_dir());
  snprintf(b, sizeof b, "%s/processes/home-health.lua", source_dir());
  snprintf(c, sizeof c, "%s/processes/appliance-install.lua", source_dir());
  snprintf(broken, sizeof broken, "%s/tests/engine/hostile/loop_top_level.lua", source_dir());
  char *ok_args[] = {"test", a, b, c, NULL};
  assert_int_equal(run_cli(hs_cmd_test_main, 4, ok_args), 0);
  char *check_args[] = {"check", a, b, c, NULL};
  assert_int_equal(run_cli(hs_cmd_check_main, 4, check_args), 0);
  char *bad_args[] = {"check", a, broken, NULL};
  assert_int_equal(run_cli(hs_cmd_check_main, 3, bad_args), 1);
  char *missing[] = {"test", "/nonexistent/x.lua", NULL};
  assert_int_equal(run_cli(hs_cmd_test_main, 2, missing), 1);
  char *none[] = {"test", NULL};
  assert_int_equal(run_cli(hs_cmd_test_main, 1, none), 2);
  /* A process with failing scenarios makes `test` fail while `check` is happy. */
  char tmp[] = "/tmp/handsel-scen-XXXXXX";
  int fd = mkstemp(tmp);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, BROKEN, sizeof BROKEN - 1), (ssize_t)(sizeof BROKEN - 1));
  close(fd);
  char *t1[] = {"test", tmp, NULL};
  assert_int_equal(run_cli(hs_cmd_test_main, 2, t1), 1);
  char *t2[] = {"check", tmp, NULL};
  assert_int_equal(run_cli(hs_cmd_check_main, 2, t2), 0);
  unlink(tmp);
}

/* Every shipped process passes its own scenarios. */
static void test_shipped_processes(void **state) {
  static const char *const names[] = {"solar-consult", "home-health", "appliance-install"};
  for (int i = 0; i < 3; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/processes/%s.lua", source_dir(), names[i]);
    hs_vm_t *vm = NULL;
    hs_process_t *p = NULL;
    hs_err_t err;
    assert_int_equal(hs_vm_new("t", NULL, &vm, &err), HS_OK);
    if (hs_process_load_file(vm, path, &p, &err) != HS_OK) {
      fail_msg("%s", err.msg);
    }
    assert_string_equal(hs_process_name(p), names[i]);
    assert_int_equal(strlen(hs_process_version(p)), 64);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    int passed = 0, failed = 0;
    assert_int_equal(hs_process_test(p, out, &passed, &failed, &err), HS_OK);
    fclose(out);
    if (failed != 0 || passed < 8) {
      fail_msg("%s: %d passed, %d failed:\n%s", names[i], passed, failed, text);
    }
    free(text);
    hs_vm_free(vm);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_report),
      cmocka_unit_test(test_nondeterminism_is_reported),
      cmocka_unit_test(test_commands),
      cmocka_unit_test(test_shipped_processes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
