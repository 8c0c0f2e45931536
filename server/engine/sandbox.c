/* The brand's Lua state and its sandbox (SPEC §3, HARDENING.md "Lua 5.4").
 *
 * What a script can reach is built here by allow-list: a few base functions, the string,
 * table, math and utf8 libraries, and the DSL. Everything a script can spend is limited:
 *
 * - memory, by the allocator, which refuses to grow the state past the brand's cap;
 * - CPU in Lua code, by a count hook that charges every HS_HOOK_EVERY instructions to the
 *   running call's budget;
 * - CPU in C code (which the hook never sees: a pattern match can run for minutes inside one
 *   instruction), by wrappers that charge each library call for the bytes and elements it
 *   will touch, and refuse a pattern whose worst-case backtracking would exceed what is left.
 *
 * Once a limit is hit the call is "killed": the hook fires on every instruction and raises,
 * and the sandbox's pcall and xpcall rethrow instead of returning false, so no script can
 * swallow the error and carry on (the same idea as Redis's script kill). */
#include <errno.h>
#include <inttypes.h>
#include <lualib.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/str.h"
#include "engine/internal.h"

const hs_engine_limits_t hs_engine_default_limits = {
    .mem_cap = 64u * 1024 * 1024,
    .instr_budget = 10u * 1000 * 1000,
    .max_steps = 1000,
};

/* The longest string string.rep may build; larger needs are almost surely a bomb. */
enum { REP_MAX = 16 * 1024 * 1024 };
/* Lists longer than this cannot be shifted, moved or sorted by one call. */
enum { TABLE_OP_MAX = 16 * 1024 * 1024 };

hs_vm_t *hs__vm_of(lua_State *L) {
  void *ud = NULL;
  lua_getallocf(L, &ud);
  return ud;
}

/* ---- memory ---- */

/* Lua never asks to shrink and then fails, so only growth is checked against the cap. */
static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  hs_vm_t *vm = ud;
  size_t old = ptr != NULL ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    vm->mem_used -= old;
    return NULL;
  }
  if (nsize > old && nsize - old > vm->lim.mem_cap - vm->mem_used) {
    vm->oom = true;
    return NULL;
  }
  if (nsize > vm->lim.mem_cap) {
    vm->oom = true;
    return NULL;
  }
  void *p = realloc(ptr, nsize);
  if (p == NULL) {
    vm->oom = true;
    return NULL;
  }
  vm->mem_used = vm->mem_used - old + nsize;
  return p;
}

/* ---- CPU ---- */

static void count_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  hs_vm_t *vm = hs__vm_of(L);
  if (vm->killed != HS_KILL_NONE) {
    /* Already killed: every instruction raises until the error leaves the script. */
    lua_pushstring(L, vm->kill_msg);
    lua_error(L);
  }
  if (!vm->metering) {
    return;
  }
  if (vm->budget > HS_HOOK_EVERY) {
    vm->budget -= HS_HOOK_EVERY;
    return;
  }
  hs__kill(L, HS_KILL_BUDGET,
           "The script ran too long: one step may run at most %" PRIu64
           " Lua instructions (look for a loop that never ends)",
           vm->lim.instr_budget);
}

int hs__kill(lua_State *L, hs_kill_t why, const char *fmt, ...) {
  hs_vm_t *vm = hs__vm_of(L);
  if (vm->killed == HS_KILL_NONE) {
    char where[160] = "";
    lua_Debug ar;
    /* Level 1 is the running function when called from a hook, its caller otherwise; take
     * the first level that is Lua code so the author sees their own line. */
    for (int level = 0; level < 8 && lua_getstack(L, level, &ar); level++) {
      if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
        snprintf(where, sizeof where, "%s:%d: ", ar.short_src, ar.currentline);
        break;
      }
    }
    va_list ap;
    va_start(ap, fmt);
    char msg[300];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(vm->kill_msg, sizeof vm->kill_msg, "%s%s", where, msg);
    vm->killed = why;
    vm->budget = 0;
  }
  /* From now on the hook fires on every instruction of this thread. */
  lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
  lua_pushstring(L, vm->kill_msg);
  return lua_error(L);
}

void hs__charge(lua_State *L, uint64_t units, const char *what) {
  hs_vm_t *vm = hs__vm_of(L);
  if (vm->killed != HS_KILL_NONE) {
    lua_pushstring(L, vm->kill_msg);
    lua_error(L);
  }
  if (!vm->metering) {
    return;
  }
  if (units < vm->budget) {
    vm->budget -= units;
    return;
  }
  hs__kill(L, HS_KILL_BUDGET,
           "The script ran too long: %s needs more work than is left of this step's budget "
           "of %" PRIu64 " instructions (use shorter text or a simpler pattern)",
           what, vm->lim.instr_budget);
}

void hs__meter_begin(hs_vm_t *vm) {
  vm->metering = true;
  vm->budget = vm->lim.instr_budget;
  vm->killed = HS_KILL_NONE;
  vm->kill_msg[0] = '\0';
  vm->oom = false;
}

void hs__meter_end(hs_vm_t *vm) {
  vm->metering = false;
  if (vm->killed != HS_KILL_NONE) {
    /* The main thread may have run killed code (a validate function); give it back the
     * normal hook. A killed coroutine is never resumed again. */
    lua_sethook(vm->L, count_hook, LUA_MASKCOUNT, HS_HOOK_EVERY);
    vm->killed = HS_KILL_NONE;
  }
}

int hs__script_error(hs_vm_t *vm, lua_State *L, int st, const char *what, hs_err_t *err) {
  if (vm->killed != HS_KILL_NONE) {
    int code =
        vm->killed == HS_KILL_NONDET || vm->killed == HS_KILL_ENDED ? HS_ECONFLICT : HS_ELIMIT;
    return hs_err_set(err, code, "%s", vm->kill_msg);
  }
  if (st == LUA_ERRMEM || vm->oom) {
    return hs_err_set(err, HS_ELIMIT,
                      "%s ran out of memory: brand %s may use at most %zu MiB for its scripts "
                      "(look for tables or strings that grow without end)",
                      what, vm->brand, vm->lim.mem_cap >> 20);
  }
  const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  if (msg == NULL) {
    return hs_err_set(err, HS_ESCRIPT, "%s failed with an error that is not a string (a %s)", what,
                      luaL_typename(L, -1));
  }
  return hs_err_set(err, HS_ESCRIPT, "%s failed: %s", what, msg);
}

int hs__protect(hs_vm_t *vm, lua_CFunction f, void *ctx, hs_err_t *err) {
  lua_State *L = vm->L;
  int top = lua_gettop(L);
  lua_pushcfunction(L, f);
  lua_pushlightuserdata(L, ctx);
  int st = lua_pcall(L, 1, 0, 0);
  int rc = HS_OK;
  if (st != LUA_OK) {
    if (st == LUA_ERRMEM) {
      rc = hs_err_set(err, HS_ENOMEM, "brand %s's scripts ran out of memory (cap %zu MiB)",
                      vm->brand, vm->lim.mem_cap >> 20);
    } else {
      const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "unknown error";
      rc = hs_err_set(err, HS_ESCRIPT, "%s", msg);
    }
  }
  lua_settop(L, top);
  return rc;
}

/* ---- random numbers: splitmix64, one state per session, so a replay repeats them ---- */

uint64_t hs__rng_next(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t *rng_of(lua_State *L) {
  hs_vm_t *vm = hs__vm_of(L);
  return vm->current != NULL ? &vm->current->rng : &vm->load_rng;
}

static int sb_random(lua_State *L) {
  uint64_t r = hs__rng_next(rng_of(L));
  lua_Integer lo, hi;
  switch (lua_gettop(L)) {
    case 0:
      lua_pushnumber(L, (lua_Number)(r >> 11) * 0x1.0p-53);
      return 1;
    case 1:
      lo = 1;
      hi = luaL_checkinteger(L, 1);
      break;
    case 2:
      lo = luaL_checkinteger(L, 1);
      hi = luaL_checkinteger(L, 2);
      break;
    default:
      return luaL_error(L, "math.random takes at most 2 numbers");
  }
  luaL_argcheck(L, lo <= hi, lua_gettop(L), "the interval is empty");
  uint64_t span = (uint64_t)hi - (uint64_t)lo;
  uint64_t v = span == UINT64_MAX ? r : r % (span + 1);
  lua_pushinteger(L, (lua_Integer)((uint64_t)lo + v));
  return 1;
}

static int sb_randomseed(lua_State *L) {
  *rng_of(L) = (uint64_t)luaL_checkinteger(L, 1);
  return 0;
}

/* ---- protected calls that a killed call cannot use to survive ---- */

static int finish_pcall(lua_State *L, int status, lua_KContext extra) {
  hs_vm_t *vm = hs__vm_of(L);
  if (vm->killed != HS_KILL_NONE) {
    lua_pushstring(L, vm->kill_msg);
    return lua_error(L);
  }
  if (status != LUA_OK && status != LUA_YIELD) {
    lua_pushboolean(L, 0);
    lua_pushvalue(L, -2);
    return 2;
  }
  return lua_gettop(L) - (int)extra;
}

static int sb_pcall(lua_State *L) {
  luaL_checkany(L, 1);
  lua_pushboolean(L, 1);
  lua_insert(L, 1);
  int status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, finish_pcall);
  return finish_pcall(L, status, 0);
}

/* The script's message handler runs through this wrapper. Lua calls a message handler from
 * inside lua_error, and when the error was raised by the count hook, hooks are still off at
 * that moment: a handler that loops would never be stopped. Once the call is killed the
 * handler is therefore skipped and the message passes through unchanged. */
static int xpcall_handler(lua_State *L) {
  if (hs__vm_of(L)->killed != HS_KILL_NONE) {
    return 1;
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

static int sb_xpcall(lua_State *L) {
  int n = lua_gettop(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, xpcall_handler, 1);
  lua_replace(L, 2);
  lua_pushboolean(L, 1);
  lua_pushvalue(L, 1);
  lua_rotate(L, 3, 2);
  int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, finish_pcall);
  return finish_pcall(L, status, 2);
}

/* ---- base functions narrowed for the sandbox ---- */

static int sb_print(lua_State *L) {
  hs_vm_t *vm = hs__vm_of(L);
  int n = lua_gettop(L);
  if (vm->print_out == NULL) {
    return 0;
  }
  for (int i = 1; i <= n; i++) {
    size_t len;
    const char *s = luaL_tolstring(L, i, &len);
    if (i > 1) {
      fputc('\t', vm->print_out);
    }
    fwrite(s, 1, len, vm->print_out);
    lua_pop(L, 1);
  }
  fputc('\n', vm->print_out);
  return 0;
}

/* load: text only (binary chunks are not checked by Lua and can crash it), from a string
 * only (a reader function runs under load's own error handler, a place to hide a loop), and
 * in the read-only base environment unless one is given. */
static int sb_load(lua_State *L) {
  size_t len;
  const char *s = lua_tolstring(L, 1, &len);
  if (s == NULL || lua_type(L, 1) != LUA_TSTRING) {
    return luaL_error(L, "load takes the source code as a string in a process");
  }
  const char *name = luaL_optstring(L, 2, "=(load)");
  const char *mode = luaL_optstring(L, 3, "t");
  if (strcmp(mode, "t") != 0) {
    return luaL_error(L, "load accepts only text chunks (mode \"t\") in a process");
  }
  hs__charge(L, len / 8, "load");
  int st = luaL_loadbufferx(L, s, len, name, "t");
  if (st != LUA_OK) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  if (!lua_isnone(L, 4)) {
    lua_pushvalue(L, 4);
  } else {
    lua_getfield(L, LUA_REGISTRYINDEX, HS_REG_BASE);
  }
  if (lua_setupvalue(L, -2, 1) == NULL) {
    lua_pop(L, 1);
  }
  return 1;
}

static int sb_collectgarbage(lua_State *L) {
  const char *opt = luaL_optstring(L, 1, "count");
  if (strcmp(opt, "count") != 0) {
    return luaL_error(L, "collectgarbage only supports \"count\" in a process");
  }
  int kb = lua_gc(L, LUA_GCCOUNT, 0);
  int b = lua_gc(L, LUA_GCCOUNTB, 0);
  lua_pushnumber(L, (lua_Number)kb + ((lua_Number)b / 1024));
  return 1;
}

/* setmetatable: no __gc. A finalizer runs whenever the collector decides, in the middle of
 * some other session's step, charged to that session's budget; so scripts get none. */
static int sb_setmetatable(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int t = lua_type(L, 2);
  luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
  if (t == LUA_TTABLE) {
    lua_pushliteral(L, "__gc");
    if (lua_rawget(L, 2) != LUA_TNIL) {
      return luaL_error(L, "__gc metamethods are not allowed in a process");
    }
    lua_pop(L, 1);
  }
  if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL) {
    return luaL_error(L, "cannot change a protected metatable");
  }
  lua_settop(L, 2);
  lua_setmetatable(L, 1);
  return 1;
}

static bool is_frozen(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  lua_getfield(L, LUA_REGISTRYINDEX, HS_REG_FROZEN);
  lua_pushvalue(L, idx);
  bool frozen = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 2);
  return frozen;
}

static int sb_rawset(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checkany(L, 2);
  luaL_checkany(L, 3);
  if (is_frozen(L, 1)) {
    return luaL_error(L, "cannot change a library or the global environment: they are shared "
                         "by every visit");
  }
  lua_settop(L, 3);
  lua_rawset(L, 1);
  return 1;
}

static int sb_readonly(lua_State *L) {
  if (lua_type(L, 2) == LUA_TSTRING) {
    return luaL_error(L,
                      "cannot assign the global '%s': declare it with local (globals are "
                      "shared by every visit)",
                      lua_tostring(L, 2));
  }
  return luaL_error(L, "cannot change a library or the global environment");
}

static int sb_lib_readonly(lua_State *L) {
  const char *lib = lua_tostring(L, lua_upvalueindex(1));
  if (lua_type(L, 2) == LUA_TSTRING) {
    return luaL_error(L, "cannot change a library: %s.%s is shared by every visit", lib,
                      lua_tostring(L, 2));
  }
  return luaL_error(L, "cannot change a library: %s is shared by every visit", lib);
}

static int sb_unknown_global(lua_State *L) {
  if (lua_type(L, 2) == LUA_TSTRING) {
    return luaL_error(L,
                      "unknown global '%s' (processes can use string, table, math, utf8, "
                      "field, process and the base functions; declare your own with local)",
                      lua_tostring(L, 2));
  }
  return luaL_error(L, "unknown global");
}

/* ---- library calls charged for the work they do in C ---- */

static uint64_t ipow_sat(uint64_t b, int e) {
  uint64_t r = 1;
  for (int i = 0; i < e; i++) {
    if (b != 0 && r > UINT64_MAX / b) {
      return UINT64_MAX;
    }
    r *= b;
  }
  return r;
}

static uint64_t mul_sat(uint64_t a, uint64_t b) {
  return (b != 0 && a > UINT64_MAX / b) ? UINT64_MAX : a * b;
}

/* An upper bound on the steps Lua's backtracking matcher can take for pattern p on a subject
 * of n bytes: each repetition item (*, +, -) may try every length, nested in the next, so the
 * cost grows as n^(repetitions), times n start positions unless anchored, times 2 per
 * optional item, times n per back-reference. Real patterns ("^%d+$", an e-mail check) stay
 * far below the budget; ("a-"):rep(16).."b" does not. */
static uint64_t pattern_cost(const char *p, size_t plen, size_t n, bool anchorable) {
  size_t i = 0;
  int reps = 0, opts = 0, backrefs = 0;
  bool anchored = anchorable && plen > 0 && p[0] == '^';
  if (anchored) {
    i = 1;
  }
  while (i < plen) {
    size_t item = i;
    if (p[i] == '%' && i + 1 < plen) {
      char c = p[i + 1];
      if (c == 'b') {
        i += 4;
        continue;
      }
      if (c == 'f') {
        i += 2;
        if (i < plen && p[i] == '[') {
          i++;
          if (i < plen && p[i] == '^') {
            i++;
          }
          do {
            if (i < plen && p[i] == '%') {
              i++;
            }
            i++;
          } while (i < plen && p[i] != ']');
          i++;
        }
        continue;
      }
      if (c >= '1' && c <= '9') {
        backrefs++;
      }
      i += 2;
    } else if (p[i] == '[') {
      i++;
      if (i < plen && p[i] == '^') {
        i++;
      }
      do {
        if (i < plen && p[i] == '%') {
          i++;
        }
        i++;
      } while (i < plen && p[i] != ']');
      i++;
    } else if (p[i] == '(' || p[i] == ')') {
      i++;
      continue;
    } else {
      i++;
    }
    (void)item;
    if (i < plen) {
      if (p[i] == '*' || p[i] == '+' || p[i] == '-') {
        reps++;
        i++;
      } else if (p[i] == '?') {
        opts++;
        i++;
      }
    }
  }
  uint64_t n1 = (uint64_t)n + 1;
  uint64_t cost = anchored ? 1 : n1;
  cost = mul_sat(cost, ipow_sat(n1, reps));
  cost = mul_sat(cost, ipow_sat(2, opts > 62 ? 62 : opts));
  cost = mul_sat(cost, ipow_sat(n1, backrefs));
  return mul_sat(cost, plen / 8 + 1);
}

/* A wrapper closure: upvalue 1 is the library function, upvalue 2 its name, upvalue 3 how to
 * charge it. */
enum charge_kind {
  CH_BYTES,   /* string arguments' total length */
  CH_PATTERN, /* find, match, gmatch, gsub: bytes plus the pattern's worst case */
  CH_REP,     /* string.rep: the size of the result */
  CH_TABLEN,  /* table.insert, remove, sort, concat, unpack: the list's length */
  CH_MOVE,    /* table.move: the range */
};

static uint64_t bytes_of_args(lua_State *L) {
  uint64_t total = 0;
  for (int i = 1, n = lua_gettop(L); i <= n; i++) {
    if (lua_type(L, i) == LUA_TSTRING) {
      total += lua_rawlen(L, i);
    }
  }
  return total;
}

static int charged_call(lua_State *L) {
  const char *name = lua_tostring(L, lua_upvalueindex(2));
  int kind = (int)lua_tointeger(L, lua_upvalueindex(3));
  uint64_t units = 1 + bytes_of_args(L) / 16;
  switch (kind) {
    case CH_PATTERN: {
      size_t n, plen;
      luaL_checklstring(L, 1, &n);
      const char *p = luaL_checklstring(L, 2, &plen);
      bool plain = strcmp(name, "string.find") == 0 && lua_toboolean(L, 4);
      uint64_t cost = plain ? mul_sat(n + 1, plen / 16 + 1)
                            : pattern_cost(p, plen, n, strcmp(name, "string.gmatch") != 0);
      units = cost > UINT64_MAX - units ? UINT64_MAX : units + cost;
      break;
    }
    case CH_REP: {
      size_t l = 0, lsep = 0;
      luaL_checklstring(L, 1, &l);
      lua_Integer times = luaL_checkinteger(L, 2);
      luaL_optlstring(L, 3, "", &lsep);
      if (times > 0) {
        if (l + lsep == 0) {
          /* Lua would loop `times` times copying nothing. */
          lua_pushliteral(L, "");
          return 1;
        }
        uint64_t total = mul_sat((uint64_t)times, l + lsep);
        if (total > REP_MAX) {
          /* lua_pushfstring knows no 64-bit unsigned format: a saturated total prints as
           * the largest integer, which is still the truth for the author ("too big"). */
          return luaL_error(
              L,
              "string.rep would build a string of %I bytes; the limit in a "
              "process is %d bytes",
              (lua_Integer)(total > (uint64_t)LUA_MAXINTEGER ? LUA_MAXINTEGER : (lua_Integer)total),
              (int)REP_MAX);
        }
        units += total / 16;
      }
      break;
    }
    case CH_TABLEN: {
      luaL_checktype(L, 1, LUA_TTABLE);
      lua_Integer len = luaL_len(L, 1); /* honours __len: that is what the library will use */
      if (len > TABLE_OP_MAX) {
        return luaL_error(L, "%s: the list has %I elements; at most %d are allowed", name, len,
                          (int)TABLE_OP_MAX);
      }
      uint64_t ulen = len > 0 ? (uint64_t)len : 0;
      units += strcmp(name, "table.sort") == 0 ? ulen * 24 : ulen;
      break;
    }
    case CH_MOVE: {
      lua_Integer f = luaL_checkinteger(L, 2), e = luaL_checkinteger(L, 3);
      if (e >= f) {
        uint64_t span = (uint64_t)e - (uint64_t)f;
        if (span >= TABLE_OP_MAX) {
          return luaL_error(L, "table.move: at most %d elements can be moved at once",
                            (int)TABLE_OP_MAX);
        }
        units += span;
      }
      break;
    }
    default:
      break;
  }
  hs__charge(L, units, name);
  int n = lua_gettop(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, n, LUA_MULTRET);
  return lua_gettop(L);
}

static void wrap_charged(lua_State *L, int lib, const char *libname, const char *fname, int kind) {
  lua_getfield(L, lib, fname);
  lua_pushfstring(L, "%s.%s", libname, fname);
  lua_pushinteger(L, kind);
  lua_pushcclosure(L, charged_call, 3);
  lua_setfield(L, lib, fname);
}

/* Copies the named members of the table at src into a new table, pushed. */
static void copy_fields(lua_State *L, int src, const char *const *names) {
  src = lua_absindex(L, src);
  lua_newtable(L);
  for (const char *const *n = names; *n != NULL; n++) {
    lua_getfield(L, src, *n);
    lua_setfield(L, -2, *n);
  }
}

/* Pushes a read-only proxy of the library table at idx and records it in the frozen set. */
static void push_readonly(lua_State *L, int idx, const char *name) {
  idx = lua_absindex(L, idx);
  lua_newtable(L);
  lua_newtable(L);
  lua_pushvalue(L, idx);
  lua_setfield(L, -2, "__index");
  lua_pushstring(L, name);
  lua_pushcclosure(L, sb_lib_readonly, 1);
  lua_setfield(L, -2, "__newindex");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2);
  lua_getfield(L, LUA_REGISTRYINDEX, HS_REG_FROZEN);
  lua_pushvalue(L, -2);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

void hs__push_env(lua_State *L) {
  lua_newtable(L);
  lua_newtable(L);
  lua_getfield(L, LUA_REGISTRYINDEX, HS_REG_BASE);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, sb_readonly);
  lua_setfield(L, -2, "__newindex");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2);
  lua_getfield(L, LUA_REGISTRYINDEX, HS_REG_FROZEN);
  lua_pushvalue(L, -2);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

static const char *const STRING_FNS[] = {"byte",    "char", "find",  "format", "gmatch",
                                         "gsub",    "len",  "lower", "match",  "rep",
                                         "reverse", "sub",  "upper", NULL};
static const char *const TABLE_FNS[] = {"concat", "insert", "move",   "pack",
                                        "remove", "sort",   "unpack", NULL};
static const char *const MATH_FNS[] = {
    "abs", "ceil",       "cos",  "deg",        "exp",  "floor", "fmod", "huge", "log",
    "max", "maxinteger", "min",  "mininteger", "modf", "pi",    "rad",  "sin",  "sqrt",
    "tan", "tointeger",  "type", "ult",        "atan", "asin",  "acos", NULL};
static const char *const UTF8_FNS[] = {"char", "charpattern", "codepoint", "codes",
                                       "len",  "offset",      NULL};
static const char *const BASE_FNS[] = {"assert",   "error",    "getmetatable", "ipairs",   "next",
                                       "pairs",    "rawequal", "rawget",       "rawlen",   "select",
                                       "tonumber", "tostring", "type",         "_VERSION", NULL};

/* Builds the sandbox inside L: runs protected (any allocation may fail). */
static int build_sandbox(lua_State *L) {
  lua_settop(L, 0);
  luaL_requiref(L, LUA_GNAME, luaopen_base, 0);
  luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 0);
  luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 0);
  luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 0);
  luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 0);
  int base = 1, str = 2, tab = 3, math = 4, utf = 5;

  lua_newtable(L); /* frozen set, weak keys */
  lua_newtable(L);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, HS_REG_FROZEN);

  /* string: the allow-listed functions, the costly ones charged. */
  copy_fields(L, str, STRING_FNS);
  int gstr = lua_gettop(L);
  wrap_charged(L, gstr, "string", "find", CH_PATTERN);
  wrap_charged(L, gstr, "string", "match", CH_PATTERN);
  wrap_charged(L, gstr, "string", "gmatch", CH_PATTERN);
  wrap_charged(L, gstr, "string", "gsub", CH_PATTERN);
  wrap_charged(L, gstr, "string", "rep", CH_REP);
  for (const char *const *n = (const char *const[]){"byte", "format", "lower", "reverse", "sub",
                                                    "upper", "char", NULL};
       *n != NULL; n++) {
    wrap_charged(L, gstr, "string", *n, CH_BYTES);
  }
  lua_pushvalue(L, gstr);
  lua_setfield(L, LUA_REGISTRYINDEX, HS_REG_STRINGLIB);
  /* The string metatable's __index is how ("x"):rep(1e9) reaches string functions: point it
   * at the guarded table, and hide the metatable from getmetatable(""). */
  lua_pushliteral(L, "");
  lua_getmetatable(L, -1);
  lua_pushvalue(L, gstr);
  lua_setfield(L, -2, "__index");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 2);

  copy_fields(L, tab, TABLE_FNS);
  int gtab = lua_gettop(L);
  wrap_charged(L, gtab, "table", "insert", CH_TABLEN);
  wrap_charged(L, gtab, "table", "remove", CH_TABLEN);
  wrap_charged(L, gtab, "table", "sort", CH_TABLEN);
  wrap_charged(L, gtab, "table", "concat", CH_TABLEN);
  wrap_charged(L, gtab, "table", "move", CH_MOVE);

  copy_fields(L, math, MATH_FNS);
  int gmath = lua_gettop(L);
  lua_pushcfunction(L, sb_random);
  lua_setfield(L, gmath, "random");
  lua_pushcfunction(L, sb_randomseed);
  lua_setfield(L, gmath, "randomseed");

  copy_fields(L, utf, UTF8_FNS);
  int gutf = lua_gettop(L);
  wrap_charged(L, gutf, "utf8", "len", CH_BYTES);
  wrap_charged(L, gutf, "utf8", "codepoint", CH_BYTES);
  wrap_charged(L, gutf, "utf8", "char", CH_BYTES);

  /* The base environment. */
  copy_fields(L, base, BASE_FNS);
  int env = lua_gettop(L);
  static const luaL_Reg own[] = {{"pcall", sb_pcall},
                                 {"xpcall", sb_xpcall},
                                 {"print", sb_print},
                                 {"load", sb_load},
                                 {"collectgarbage", sb_collectgarbage},
                                 {"setmetatable", sb_setmetatable},
                                 {"rawset", sb_rawset},
                                 {"process", hs__process_fn},
                                 {NULL, NULL}};
  luaL_setfuncs(L, own, 0);
  push_readonly(L, gstr, "string");
  lua_setfield(L, env, "string");
  push_readonly(L, gtab, "table");
  lua_setfield(L, env, "table");
  push_readonly(L, gmath, "math");
  lua_setfield(L, env, "math");
  push_readonly(L, gutf, "utf8");
  lua_setfield(L, env, "utf8");

  /* field.text{…}, field.integer{…}, …: one closure per type. */
  static const char *const types[] = {"text",     "integer", "number", "boolean",   "choice",
                                      "multi",    "date",    "photo",  "signature", "ack",
                                      "location", "rating",  NULL};
  lua_newtable(L);
  for (int i = 0; types[i] != NULL; i++) {
    lua_pushstring(L, types[i]);
    lua_pushinteger(L, i); /* the same order as validate.c's types */
    /* A hidden metatable per type marks a table as a field of that type; nothing is added
     * to the author's table itself, so making a field costs no rehash. */
    lua_createtable(L, 1, 2);
    lua_pushinteger(L, i);
    lua_rawseti(L, -2, 1);
    lua_pushstring(L, types[i]);
    lua_setfield(L, -2, "type");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pushcclosure(L, hs__field_new, 3);
    lua_setfield(L, -2, types[i]);
  }
  int fields = lua_gettop(L);
  push_readonly(L, fields, "field");
  lua_setfield(L, env, "field");
  lua_settop(L, env);

  /* Unknown names raise instead of reading as nil: a typo is found at its line. */
  lua_newtable(L);
  lua_pushcfunction(L, sb_unknown_global);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, sb_readonly);
  lua_setfield(L, -2, "__newindex");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, env);
  lua_getfield(L, LUA_REGISTRYINDEX, HS_REG_FROZEN);
  lua_pushvalue(L, env);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  lua_pushvalue(L, env);
  lua_setfield(L, LUA_REGISTRYINDEX, HS_REG_BASE);

  /* The real global table keeps nothing a script could use if it ever reached it. */
  lua_newtable(L);
  lua_rawseti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  lua_pushnil(L);
  lua_setfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);

  /* Marker metatables, hidden from getmetatable so a script cannot forge a field or a
   * process definition. */
  luaL_newmetatable(L, HS_REG_PROCESS);
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
  hs__visit_register(L);
  lua_settop(L, 0);
  return 0;
}

static int sb_panic(lua_State *L) {
  /* Never reached by design (C enters Lua only through protected calls); if it is, dying
   * loudly beats continuing with a broken state. */
  const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
  fprintf(stderr, "handsel: unprotected Lua error: %s\n", msg);
  abort();
}

int hs_vm_new(const char *brand, const hs_engine_limits_t *lim, hs_vm_t **out, hs_err_t *err) {
  hs_vm_t *vm = calloc(1, sizeof *vm);
  if (vm == NULL) {
    return hs_err_set(err, HS_ENOMEM, "out of memory creating a Lua state");
  }
  vm->lim = lim != NULL ? *lim : hs_engine_default_limits;
  if (vm->lim.mem_cap == 0 || vm->lim.instr_budget == 0 || vm->lim.max_steps == 0) {
    free(vm);
    return hs_err_set(err, HS_EINVAL, "engine limits must all be above zero");
  }
  hs_strlcpy(vm->brand, brand != NULL ? brand : "", sizeof vm->brand);
  vm->load_rng = 0x68616e6473656cull;
  vm->L = lua_newstate(vm_alloc, vm);
  if (vm->L == NULL) {
    free(vm);
    return hs_err_set(err, HS_ENOMEM, "out of memory creating a Lua state");
  }
  lua_atpanic(vm->L, sb_panic);
  lua_sethook(vm->L, count_hook, LUA_MASKCOUNT, HS_HOOK_EVERY);
  int rc = hs__protect(vm, build_sandbox, NULL, err);
  if (rc != HS_OK) {
    lua_close(vm->L);
    free(vm);
    return rc;
  }
  /* A state holding many suspended sessions is mostly old objects: generational collection
   * visits them rarely. */
  lua_gc(vm->L, LUA_GCGEN, 0, 0);
  *out = vm;
  return HS_OK;
}

void hs_vm_free(hs_vm_t *vm) {
  if (vm == NULL) {
    return;
  }
  lua_close(vm->L);
  hs_process_t *p = vm->procs;
  while (p != NULL) {
    hs_process_t *next = p->next;
    free(p->name);
    free(p->title);
    free(p->chunkname);
    free(p);
    p = next;
  }
  free(vm);
}

size_t hs_vm_memory(const hs_vm_t *vm) {
  return vm->mem_used;
}

void hs_vm_set_print(hs_vm_t *vm, FILE *out) {
  vm->print_out = out;
}

void hs_vm_set_counts(hs_vm_t *vm, hs_vm_counts_fn fn, void *ctx) {
  vm->counts_fn = fn;
  vm->counts_ctx = ctx;
}
