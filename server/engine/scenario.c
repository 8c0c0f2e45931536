/* `handsel test`: the scenarios in a process's `tests` table, run offline through the same
 * session API and the same validation the server uses (SPEC §3). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

enum { MAX_VISITED = 1024 };

typedef struct scen {
  hs_process_t *p;
  const char *name;
  hs_arena_t *a;
  /* filled by the protected helpers */
  hs_value_t *value;
  char why[300];
  /* for answer_protected */
  const char *step_id;
  int occurrence;
  const hs_value_t *step;
} scen_t;

/* Pushes tests[name] (or nil). */
static void push_scenario(lua_State *L, scen_t *c) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->p->def_ref);
  if (lua_getfield(L, -1, "tests") != LUA_TTABLE) {
    lua_pushnil(L);
    return;
  }
  lua_getfield(L, -1, c->name);
}

/* value = tests[name][key] as a value (NULL when absent). */
static int part_protected(lua_State *L) {
  scen_t *c = lua_touserdata(L, 1);
  const char *key = c->step_id;
  push_scenario(L, c);
  c->value = NULL;
  if (lua_type(L, -1) != LUA_TTABLE) {
    snprintf(c->why, sizeof c->why, "the scenario must be a table");
    return 0;
  }
  if (lua_getfield(L, -1, key) != LUA_TNIL) {
    c->value = hs__to_value(L, -1, c->a, key, c->why, sizeof c->why);
  }
  return 0;
}

/* value = the answer to the occurrence-th visit of step_id, or NULL with why empty when the
 * scenario has none. */
static int answer_protected(lua_State *L) {
  scen_t *c = lua_touserdata(L, 1);
  hs_vm_t *vm = c->p->vm;
  c->value = NULL;
  c->why[0] = '\0';
  push_scenario(L, c);
  if (lua_type(L, -1) != LUA_TTABLE || lua_getfield(L, -1, "answers") != LUA_TTABLE) {
    return 0;
  }
  int t = lua_getfield(L, -1, c->step_id);
  if (t == LUA_TFUNCTION) {
    hs__push_value(L, c->step);
    vm->current = NULL;
    hs__meter_begin(vm);
    int st = lua_pcall(L, 1, 1, 0);
    if (st != LUA_OK) {
      hs_err_t err;
      hs__script_error(vm, L, st, "The answer function", &err);
      hs__meter_end(vm);
      snprintf(c->why, sizeof c->why, "%.290s", err.msg);
      return 0;
    }
    hs__meter_end(vm);
    t = lua_type(L, -1);
  } else if (t == LUA_TTABLE && lua_rawlen(L, -1) > 0) {
    /* A list of answers for a step that repeats: the n-th visit takes the n-th. */
    if (lua_rawgeti(L, -1, 1) == LUA_TTABLE) {
      lua_pop(L, 1);
      t = lua_rawgeti(L, -1, c->occurrence);
    } else {
      lua_pop(L, 1);
    }
  }
  if (t == LUA_TNIL) {
    return 0;
  }
  if (t != LUA_TTABLE) {
    snprintf(c->why, sizeof c->why, "the answer for step '%s' must be a table of field = value",
             c->step_id);
    return 0;
  }
  c->value = hs__to_value(L, -1, c->a, "answer", c->why, sizeof c->why);
  return 0;
}

static int names_protected(lua_State *L) {
  scen_t *c = lua_touserdata(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->p->def_ref);
  c->value = hs_value_new_array(c->a, 8);
  if (lua_getfield(L, -1, "tests") != LUA_TTABLE || c->value == NULL) {
    return 0;
  }
  lua_pushnil(L);
  while (lua_next(L, -2) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING) {
      hs_value_t *s = hs_value_new_cstr(c->a, lua_tostring(L, -1));
      if (s == NULL || hs_array_push(c->a, c->value, s) == NULL) {
        return luaL_error(L, "out of memory");
      }
    }
  }
  return 0;
}

static int cmp_names(const void *x, const void *y) {
  const hs_value_t *a = x, *b = y;
  return strcmp(a->as.str.ptr, b->as.str.ptr);
}

typedef struct report {
  FILE *out;
  const char *file;
  bool failed;
} report_t;

static void failf(report_t *r, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void failf(report_t *r, int line, const char *fmt, ...) {
  r->failed = true;
  if (line > 0) {
    fprintf(r->out, "        %s:%d: ", r->file, line);
  } else {
    fprintf(r->out, "        %s: ", r->file);
  }
  va_list ap;
  va_start(ap, fmt);
  vfprintf(r->out, fmt, ap);
  va_end(ap);
  fputc('\n', r->out);
}

static bool list_contains(const hs_value_t *list, const char *s) {
  for (size_t i = 0; list != NULL && list->type == HS_V_ARRAY && i < list->as.arr.len; i++) {
    if (list->as.arr.items[i].type == HS_V_STR &&
        strcmp(list->as.arr.items[i].as.str.ptr, s) == 0) {
      return true;
    }
  }
  return false;
}

static void join_list(char *buf, size_t len, const hs_value_t *list) {
  size_t used = 0;
  buf[0] = '\0';
  for (size_t i = 0; list != NULL && list->type == HS_V_ARRAY && i < list->as.arr.len; i++) {
    const hs_value_t *v = &list->as.arr.items[i];
    int w = snprintf(buf + used, len - used, "%s%s", i > 0 ? ", " : "",
                     v->type == HS_V_STR ? v->as.str.ptr : "?");
    if (w < 0 || (size_t)w >= len - used) {
      break;
    }
    used += (size_t)w;
  }
  if (buf[0] == '\0') {
    snprintf(buf, len, "(none)");
  }
}

/* The name a rejection of the whole step goes by in expect.rejected. */
static const char *err_key(const char *k) {
  return k[0] == '\0' ? "_step" : k;
}

static void run_scenario(hs_process_t *p, const char *name, report_t *r) {
  hs_vm_t *vm = p->vm;
  hs_arena_t a;
  hs_arena_init(&a, 0);
  scen_t c = {.p = p, .name = name, .a = &a};
  hs_err_t err;
  hs_err_clear(&err);
  /* Fixed inputs, so a scenario runs the same every time. */
  uint64_t seed = 1469598103934665603ull;
  for (const char *q = name; *q != '\0'; q++) {
    seed = (seed ^ (unsigned char)*q) * 1099511628211ull;
  }
  int64_t at = 1700000000000;
  const hs_value_t *customer = NULL, *contractor = NULL, *expect = NULL;
  c.step_id = "customer";
  if (hs__protect(vm, part_protected, &c, &err) != HS_OK || c.why[0] != '\0') {
    failf(r, p->line, "scenario '%s': %s", name, c.why[0] ? c.why : err.msg);
    goto done;
  }
  customer = c.value;
  c.step_id = "contractor";
  if (hs__protect(vm, part_protected, &c, &err) != HS_OK || c.why[0] != '\0') {
    failf(r, p->line, "scenario '%s': %s", name, c.why[0] ? c.why : err.msg);
    goto done;
  }
  contractor = c.value;
  c.step_id = "expect";
  if (hs__protect(vm, part_protected, &c, &err) != HS_OK || c.why[0] != '\0') {
    failf(r, p->line, "scenario '%s': %s", name, c.why[0] ? c.why : err.msg);
    goto done;
  }
  expect = c.value;
  if (contractor == NULL) {
    hs_value_t *m = hs_value_new_map(&a, 2);
    hs_map_add_str(&a, m, "id", "test-contractor");
    hs_map_add_str(&a, m, "name", "Test Contractor");
    contractor = m;
  }

  hs_session_start_t start = {.session_id = "test-session",
                              .customer = customer,
                              .contractor = contractor,
                              .seed = seed,
                              .at_ms = at};
  hs_session_t *s = NULL;
  hs_step_result_t res;
  hs_value_t *visited = hs_value_new_array(&a, 8);
  hs_value_t *log = hs_value_new_array(&a, 16);
  const char *rejected_step = NULL;
  int rejected_line = 0;
  hs_value_t *rejected_errors = NULL;
  const char *outcome = NULL;
  int last_line = p->line;
  bool stopped = false;
  int rc = hs_session_start(p, &start, &a, &s, &res, &err);
  while (rc == HS_OK) {
    for (size_t i = 0; i < res.events->as.arr.len; i++) {
      hs_array_push(&a, log, &res.events->as.arr.items[i]);
    }
    if (res.outcome != NULL) {
      outcome = hs_arena_strndup(&a, res.outcome, strlen(res.outcome));
    }
    if (res.status == HS_STEP_REJECTED) {
      rejected_step = hs_session_step_id(s);
      rejected_line = s->step_line;
      rejected_errors = res.errors;
      break;
    }
    if (res.status == HS_STEP_ENDED) {
      break;
    }
    const char *id = hs_session_step_id(s);
    last_line = s->step_line;
    hs_array_push(&a, visited, hs_value_new_cstr(&a, id));
    if (visited->as.arr.len > MAX_VISITED) {
      failf(r, last_line, "scenario '%s' went on for more than %d steps", name, MAX_VISITED);
      stopped = true;
      break;
    }
    int occurrence = 0;
    for (size_t i = 0; i < visited->as.arr.len; i++) {
      occurrence += strcmp(visited->as.arr.items[i].as.str.ptr, id) == 0;
    }
    c.step_id = id;
    c.occurrence = occurrence;
    c.step = res.step;
    if (hs__protect(vm, answer_protected, &c, &err) != HS_OK || c.why[0] != '\0') {
      failf(r, last_line, "scenario '%s', step '%s' (seq %" PRIu32 "): %s", name, id,
            hs_session_seq(s), c.why[0] ? c.why : err.msg);
      stopped = true;
      break;
    }
    if (c.value == NULL) {
      break; /* the scenario does not go further */
    }
    at += 60000;
    uint32_t seq = hs_session_seq(s);
    rc = hs_session_complete(s, seq, c.value, at, 0, &a, &res, &err);
    if (rc != HS_OK) {
      failf(r, last_line, "scenario '%s', step '%s' (seq %" PRIu32 "): %s", name, id, seq, err.msg);
      stopped = true;
      break;
    }
  }
  if (rc != HS_OK && !stopped) {
    failf(r, last_line, "scenario '%s': %s", name, err.msg);
    stopped = true;
  }
  if (stopped) {
    hs_session_free(s);
    goto done;
  }

  /* expect.rejected */
  const hs_value_t *exp_rej = expect != NULL ? hs_map_get(expect, "rejected") : NULL;
  char buf[600], buf2[600];
  if (rejected_step != NULL) {
    const hs_value_t *want = exp_rej != NULL ? hs_map_get(exp_rej, rejected_step) : NULL;
    if (want == NULL) {
      for (size_t i = 0; i < rejected_errors->as.map.len; i++) {
        const hs_member_t *m = &rejected_errors->as.map.items[i];
        failf(r, rejected_line,
              "scenario '%s', step '%s' (seq %" PRIu32 "), field %s: the answer was rejected "
              "(\"%s\"), but the scenario does not expect it to be",
              name, rejected_step, hs_session_seq(s), err_key(m->key), m->val.as.str.ptr);
      }
    } else {
      for (size_t i = 0; i < rejected_errors->as.map.len; i++) {
        const hs_member_t *m = &rejected_errors->as.map.items[i];
        if (!list_contains(want, err_key(m->key))) {
          failf(r, rejected_line,
                "scenario '%s', step '%s', field %s: rejected (\"%s\"), but expect.rejected "
                "lists only %s",
                name, rejected_step, err_key(m->key), m->val.as.str.ptr,
                (join_list(buf, sizeof buf, want), buf));
        }
      }
      for (size_t i = 0; want->type == HS_V_ARRAY && i < want->as.arr.len; i++) {
        const hs_value_t *f = &want->as.arr.items[i];
        const char *fname = f->type == HS_V_STR ? f->as.str.ptr : "?";
        bool got = hs_map_get(rejected_errors, fname) != NULL ||
                   (strcmp(fname, "_step") == 0 && hs_map_get(rejected_errors, "") != NULL);
        if (!got) {
          failf(r, rejected_line,
                "scenario '%s', step '%s', field %s: expected to be rejected, but it passed", name,
                rejected_step, fname);
        }
      }
    }
  }
  for (size_t i = 0; exp_rej != NULL && exp_rej->type == HS_V_MAP && i < exp_rej->as.map.len; i++) {
    const char *sid = exp_rej->as.map.items[i].key;
    if (rejected_step == NULL || strcmp(sid, rejected_step) != 0) {
      join_list(buf, sizeof buf, &exp_rej->as.map.items[i].val);
      failf(r, last_line, "scenario '%s', step '%s': expected %s to be rejected, but %s", name, sid,
            buf,
            list_contains(visited, sid) ? "the answer was accepted" : "the visit never got there");
    }
  }

  /* expect.steps */
  const hs_value_t *exp_steps = expect != NULL ? hs_map_get(expect, "steps") : NULL;
  if (exp_steps != NULL) {
    if (!hs_value_equal(exp_steps, visited)) {
      join_list(buf, sizeof buf, exp_steps);
      join_list(buf2, sizeof buf2, visited);
      failf(r, p->line, "scenario '%s': expected steps %s, but the visit went %s", name, buf, buf2);
    }
  }
  /* expect.outcome */
  const hs_value_t *exp_out = expect != NULL ? hs_map_get(expect, "outcome") : NULL;
  if (exp_out != NULL) {
    const char *want = exp_out->type == HS_V_STR ? exp_out->as.str.ptr : NULL;
    if ((want == NULL) != (outcome == NULL) || (want != NULL && strcmp(want, outcome) != 0)) {
      failf(r, p->line, "scenario '%s': expected outcome %s, but got %s", name,
            want != NULL ? want : "none", outcome != NULL ? outcome : "none");
    }
  }

  /* Determinism: the recorded events must rebuild the session exactly where it is. */
  {
    hs_session_t *again = NULL;
    hs_step_result_t rres;
    hs_err_t rerr;
    int rrc = hs_session_replay(p, log, &a, &again, &rres, &rerr);
    if (rrc != HS_OK) {
      failf(r, last_line, "scenario '%s': replaying its events failed: %s", name, rerr.msg);
    } else if (hs_session_seq(again) != hs_session_seq(s) ||
               hs_session_status(again) != hs_session_status(s) ||
               (hs_session_step_id(s) != NULL &&
                strcmp(hs_session_step_id(again), hs_session_step_id(s)) != 0)) {
      failf(r, last_line,
            "scenario '%s': replaying its events reached step %" PRIu32 " instead of %" PRIu32
            ": the script is not deterministic",
            name, hs_session_seq(again), hs_session_seq(s));
    }
    hs_session_free(again);
  }
  hs_session_free(s);
done:
  hs_arena_reset(&a);
}

int hs_process_test(hs_process_t *p, FILE *out, int *passed, int *failed, hs_err_t *err) {
  hs_arena_t a;
  hs_arena_init(&a, 0);
  scen_t c = {.p = p, .a = &a};
  *passed = 0;
  *failed = 0;
  int rc = hs__protect(p->vm, names_protected, &c, err);
  if (rc != HS_OK || c.value == NULL) {
    hs_arena_reset(&a);
    return rc != HS_OK ? rc : hs_err_set(err, HS_ENOMEM, "out of memory");
  }
  hs_value_t *names = c.value;
  if (names->as.arr.len > 1) {
    qsort(names->as.arr.items, names->as.arr.len, sizeof(hs_value_t), cmp_names);
  }
  fprintf(out, "%s: %s, %zu scenario%s\n", p->chunkname, p->name, names->as.arr.len,
          names->as.arr.len == 1 ? "" : "s");
  if (names->as.arr.len == 0) {
    fprintf(out,
            "        %s:%d: no tests: add tests = { [\"a scenario\"] = { answers = ..., "
            "expect = ... } }\n",
            p->chunkname, p->line);
  }
  for (size_t i = 0; i < names->as.arr.len; i++) {
    const char *name = names->as.arr.items[i].as.str.ptr;
    /* The report lines for a scenario come after its ok/FAIL line: collect them first. */
    char *text = NULL;
    size_t textlen = 0;
    FILE *mem = open_memstream(&text, &textlen);
    if (mem == NULL) {
      hs_arena_reset(&a);
      return hs_err_set(err, HS_ENOMEM, "out of memory");
    }
    report_t r = {.out = mem, .file = p->chunkname, .failed = false};
    run_scenario(p, name, &r);
    fclose(mem);
    fprintf(out, "  %-5s %s\n", r.failed ? "FAIL" : "ok", name);
    fputs(text, out);
    free(text);
    if (r.failed) {
      (*failed)++;
    } else {
      (*passed)++;
    }
  }
  hs_arena_reset(&a);
  return HS_OK;
}
