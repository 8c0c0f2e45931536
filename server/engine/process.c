/* Loading a process version: run the file in the sandbox, check what `process {…}` returned,
 * and name it by the SHA-256 of its source. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

static const char *const CONTENT_KINDS = "video pdf image document text";

static bool valid_process_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 64 || !(islower((unsigned char)s[0]) || isdigit((unsigned char)s[0]))) {
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-')) {
      return false;
    }
  }
  return true;
}

static bool is_kind(const char *k) {
  size_t n = strlen(k);
  const char *p = CONTENT_KINDS;
  while ((p = strstr(p, k)) != NULL) {
    if ((p == CONTENT_KINDS || p[-1] == ' ') && (p[n] == '\0' || p[n] == ' ')) {
      return true;
    }
    p += n;
  }
  return false;
}

/* The most a prior may claim: a brand's belief should be worth at most this many visits, so
 * what visits teach can still overrule it. */
#define PRIOR_MAX 10000.0

/* Reads one number of a prior, or raises an error naming the item. */
static double prior_number(lua_State *L, int idx, const char *id, const char *what) {
  if (lua_type(L, idx) != LUA_TNUMBER) {
    luaL_error(L,
               "process: content '%s': prior must be { successes, failures } or { successes = "
               "3, failures = 1 }, and %s is missing or not a number",
               id, what);
  }
  double v = lua_tonumber(L, idx);
  if (!(v >= 0.0 && v <= PRIOR_MAX)) {
    luaL_error(L, "process: content '%s': prior %s must be a number from 0 to %d", id, what,
               (int)PRIOR_MAX);
  }
  return v;
}

/* Checks a content item's prior (the brand's belief in it before any visit: as if it had been
 * shown successes + failures times) and pushes it as { successes = s, failures = f }. */
static void copy_prior(lua_State *L, int prior, const char *id) {
  if (lua_type(L, prior) != LUA_TTABLE) {
    luaL_error(L,
               "process: content '%s': prior must be a table { successes, failures }, e.g. "
               "prior = { 3, 1 }",
               id);
  }
  bool named = lua_getfield(L, prior, "successes") != LUA_TNIL;
  lua_pop(L, 1);
  lua_pushnil(L);
  while (lua_next(L, prior) != 0) {
    bool ok =
        named ? lua_type(L, -2) == LUA_TSTRING && (strcmp(lua_tostring(L, -2), "successes") == 0 ||
                                                   strcmp(lua_tostring(L, -2), "failures") == 0)
              : lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1 && lua_tointeger(L, -2) <= 2;
    if (!ok) {
      luaL_error(L,
                 "process: content '%s': prior takes two numbers, { successes, failures } or "
                 "{ successes = 3, failures = 1 }, and nothing else",
                 id);
    }
    lua_pop(L, 1);
  }
  if (named) {
    lua_getfield(L, prior, "successes");
    lua_getfield(L, prior, "failures");
  } else {
    lua_rawgeti(L, prior, 1);
    lua_rawgeti(L, prior, 2);
  }
  double s = prior_number(L, -2, id, "successes");
  double f = prior_number(L, -1, id, "failures");
  lua_pop(L, 2);
  lua_createtable(L, 0, 2);
  lua_pushnumber(L, s);
  lua_setfield(L, -2, "successes");
  lua_pushnumber(L, f);
  lua_setfield(L, -2, "failures");
}

/* Copies one content item into a private table, checking it. Pushes the copy. */
static void copy_content(lua_State *L, int item, const char *id) {
  item = lua_absindex(L, item);
  if (lua_type(L, item) != LUA_TTABLE) {
    luaL_error(L, "process: content '%s' must be a table { kind = ..., title = ..., uri = ... }",
               id);
  }
  lua_newtable(L);
  int out = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, item) != 0) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
    if (strcmp(k, "prior") == 0) {
      copy_prior(L, lua_gettop(L), id);
      lua_setfield(L, out, "prior");
      lua_pop(L, 1);
      continue;
    }
    bool known = strcmp(k, "kind") == 0 || strcmp(k, "title") == 0 || strcmp(k, "uri") == 0 ||
                 strcmp(k, "version") == 0 || strcmp(k, "text") == 0;
    if (!known) {
      luaL_error(L,
                 "process: content '%s' has no option '%s' (it takes kind, title, uri, "
                 "version, text, prior)",
                 id, k);
    }
    if (lua_type(L, -1) != LUA_TSTRING) {
      luaL_error(L, "process: content '%s': %s must be a string", id, k);
    }
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, out);
  }
  if (lua_getfield(L, out, "kind") != LUA_TSTRING || !is_kind(lua_tostring(L, -1))) {
    luaL_error(L, "process: content '%s' needs kind = one of %s", id, CONTENT_KINDS);
  }
  bool text = strcmp(lua_tostring(L, -1), "text") == 0;
  if (lua_getfield(L, out, "title") != LUA_TSTRING) {
    luaL_error(L, "process: content '%s' needs a title", id);
  }
  if (!text && lua_getfield(L, out, "uri") != LUA_TSTRING) {
    luaL_error(L, "process: content '%s' needs a uri", id);
  }
  if (text && lua_getfield(L, out, "text") != LUA_TSTRING) {
    luaL_error(L, "process: content '%s' (a talking point) needs text = \"...\"", id);
  }
  lua_settop(L, out);
}

int hs__process_fn(lua_State *L) {
  if (lua_type(L, 1) != LUA_TTABLE) {
    return luaL_error(L, "process takes a table: return process { name = \"...\", ... }");
  }
  lua_settop(L, 1);
  lua_Debug ar;
  int line = 0;
  if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "l", &ar)) {
    line = ar.currentline;
  }
  lua_newtable(L); /* 2: the private definition */
  lua_pushinteger(L, line);
  lua_setfield(L, 2, "line");
  lua_pushnil(L);
  while (lua_next(L, 1) != 0) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
    if (strcmp(k, "name") == 0 || strcmp(k, "title") == 0) {
      if (lua_type(L, -1) != LUA_TSTRING) {
        return luaL_error(L, "process: %s must be a string", k);
      }
    } else if (strcmp(k, "run") == 0) {
      if (lua_type(L, -1) != LUA_TFUNCTION) {
        return luaL_error(L, "process: run must be a function(visit)");
      }
    } else if (strcmp(k, "goals") == 0) {
      if (lua_type(L, -1) != LUA_TTABLE) {
        return luaL_error(L, "process: goals must be a table { outcome = \"what it means\" }");
      }
      int g = lua_gettop(L);
      lua_newtable(L);
      lua_pushnil(L);
      while (lua_next(L, g) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
          return luaL_error(L, "process: goals must map outcome names to descriptions, e.g. "
                               "goals = { sale = \"Signed agreement\" }");
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, g + 1);
      }
      lua_remove(L, g);
    } else if (strcmp(k, "content") == 0) {
      if (lua_type(L, -1) != LUA_TTABLE) {
        return luaL_error(L, "process: content must be a table { [\"id\"] = { kind, title, uri "
                             "} }");
      }
      int ct = lua_gettop(L);
      lua_newtable(L);
      lua_pushnil(L);
      while (lua_next(L, ct) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING) {
          return luaL_error(L, "process: content ids must be strings");
        }
        const char *id = lua_tostring(L, -2);
        copy_content(L, -1, id);
        lua_remove(L, -2);
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, ct + 1);
      }
      lua_remove(L, ct);
    } else if (strcmp(k, "tests") == 0) {
      if (lua_type(L, -1) != LUA_TTABLE) {
        return luaL_error(L, "process: tests must be a table of scenarios by name");
      }
    } else {
      return luaL_error(L,
                        "process has no option '%s' (it takes name, title, goals, content, "
                        "run, tests)",
                        k);
    }
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, 2);
  }
  if (lua_getfield(L, 2, "name") != LUA_TSTRING) {
    return luaL_error(L, "process needs a name, e.g. name = \"solar-consult\"");
  }
  if (!valid_process_name(lua_tostring(L, -1))) {
    return luaL_error(L,
                      "process name '%s' must be lower-case letters, digits and - (starting "
                      "with a letter or digit, at most 64)",
                      lua_tostring(L, -1));
  }
  if (lua_getfield(L, 2, "title") != LUA_TSTRING) {
    return luaL_error(L, "process needs a title, e.g. title = \"In-home solar consultation\"");
  }
  if (lua_getfield(L, 2, "run") != LUA_TFUNCTION) {
    return luaL_error(L, "process needs run = function(visit) ... end");
  }
  lua_settop(L, 2);
  luaL_setmetatable(L, HS_REG_PROCESS);
  return 1;
}

typedef struct load_ctx {
  hs_vm_t *vm;
  const char *chunkname;
  const char *src;
  size_t len;
  hs_err_t *err;
  int rc;
  hs_process_t *proc;
} load_ctx_t;

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p != NULL) {
    memcpy(p, s, n);
  }
  return p;
}

static int load_protected(lua_State *L) {
  load_ctx_t *c = lua_touserdata(L, 1);
  hs_vm_t *vm = c->vm;
  lua_pushfstring(L, "@%s", c->chunkname);
  int st = luaL_loadbufferx(L, c->src, c->len, lua_tostring(L, -1), "t");
  if (st != LUA_OK) {
    const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "cannot load";
    if (st == LUA_ERRMEM) {
      c->rc = hs_err_set(c->err, HS_ELIMIT, "%s: too large to load within the brand's %zu MiB",
                         c->chunkname, vm->lim.mem_cap >> 20);
    } else {
      c->rc = hs_err_set(c->err, HS_ESCRIPT, "%s (fix the Lua syntax at that line)", msg);
    }
    return 0;
  }
  hs__push_env(L);
  lua_setupvalue(L, -2, 1);
  vm->current = NULL;
  hs__meter_begin(vm);
  st = lua_pcall(L, 0, 1, 0);
  if (st != LUA_OK) {
    c->rc = hs__script_error(vm, L, st, "loading the process", c->err);
    hs__meter_end(vm);
    return 0;
  }
  hs__meter_end(vm);
  bool is_def = false;
  if (lua_type(L, -1) == LUA_TTABLE && lua_getmetatable(L, -1)) {
    luaL_getmetatable(L, HS_REG_PROCESS);
    is_def = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
  }
  if (!is_def) {
    c->rc = hs_err_set(c->err, HS_ESCRIPT,
                       "%s: the file must end with `return process { name = ..., run = ... }` "
                       "(it returned a %s)",
                       c->chunkname, luaL_typename(L, -1));
    return 0;
  }
  int def = lua_gettop(L);
  hs_process_t *p = calloc(1, sizeof *p);
  if (p == NULL) {
    c->rc = hs_err_set(c->err, HS_ENOMEM, "out of memory loading %s", c->chunkname);
    return 0;
  }
  lua_getfield(L, def, "name");
  lua_getfield(L, def, "title");
  lua_getfield(L, def, "line");
  p->name = dup_str(lua_tostring(L, -3));
  p->title = dup_str(lua_tostring(L, -2));
  p->line = (int)lua_tointeger(L, -1);
  p->chunkname = dup_str(c->chunkname);
  lua_settop(L, def);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  if (p->name == NULL || p->title == NULL || p->chunkname == NULL ||
      EVP_Digest(c->src, c->len, md, &mdlen, EVP_sha256(), NULL) != 1) {
    free(p->name);
    free(p->title);
    free(p->chunkname);
    free(p);
    c->rc = hs_err_set(c->err, HS_ENOMEM, "out of memory loading %s", c->chunkname);
    return 0;
  }
  for (unsigned i = 0; i < mdlen && i < 32; i++) {
    snprintf(p->version + 2 * i, 3, "%02x", md[i]);
  }
  p->vm = vm;
  p->refs = 1;
  /* luaL_ref may raise on memory: the process is linked first so hs_vm_free frees it. */
  p->def_ref = LUA_NOREF;
  p->content_ref = LUA_NOREF;
  p->next = vm->procs;
  vm->procs = p;
  c->proc = p;
  if (lua_getfield(L, -1, "content") != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
  }
  p->content_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  p->def_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

int hs_process_load(hs_vm_t *vm, const char *chunkname, const char *src, size_t len,
                    hs_process_t **out, hs_err_t *err) {
  load_ctx_t c = {.vm = vm, .chunkname = chunkname, .src = src, .len = len, .err = err};
  int rc = hs__protect(vm, load_protected, &c, err);
  vm->metering = false;
  if (rc == HS_OK) {
    rc = c.rc;
  }
  if (rc == HS_OK && c.proc != NULL && c.proc->def_ref == LUA_NOREF) {
    rc = hs_err_set(err, HS_ENOMEM, "out of memory loading %s", chunkname);
  }
  if (rc != HS_OK) {
    if (c.proc != NULL) {
      c.proc->released = true;
      hs__process_unref(c.proc);
    }
    return rc;
  }
  /* The definition's text (title, goals, content) goes to devices and to the database. */
  hs_arena_t a;
  hs_arena_init(&a, 0);
  hs_value_t *desc = NULL;
  hs_err_t derr;
  const char *bad = NULL;
  if (hs_process_describe(c.proc, &a, &desc, &derr) == HS_OK) {
    bad = hs__value_non_utf8(desc, "process");
  }
  if (bad != NULL) {
    rc = hs_err_set(
        err, HS_ESCRIPT,
        "%s:%d: the process's %s holds text that is not UTF-8: write the script's text in UTF-8",
        chunkname, c.proc->line, bad);
  }
  hs_arena_reset(&a);
  if (rc != HS_OK) {
    c.proc->released = true;
    hs__process_unref(c.proc);
    return rc;
  }
  *out = c.proc;
  return HS_OK;
}

int hs_process_load_file(hs_vm_t *vm, const char *path, hs_process_t **out, hs_err_t *err) {
  enum { FILE_MAX = 1024 * 1024 };
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    return hs_err_set(err, HS_EIO, "%s: cannot open: %s", path, strerror(errno));
  }
  char *buf = malloc(FILE_MAX + 1);
  if (buf == NULL) {
    fclose(f);
    return hs_err_set(err, HS_ENOMEM, "out of memory reading %s", path);
  }
  size_t n = fread(buf, 1, FILE_MAX + 1, f);
  bool bad = ferror(f) != 0;
  fclose(f);
  int rc;
  if (bad) {
    rc = hs_err_set(err, HS_EIO, "%s: cannot read the file", path);
  } else if (n > FILE_MAX) {
    rc = hs_err_set(err, HS_ELIMIT, "%s: a process file may be at most 1 MiB", path);
  } else {
    rc = hs_process_load(vm, path, buf, n, out, err);
  }
  free(buf);
  return rc;
}

bool hs_process_file_is_meta(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    return false;
  }
  char head[9] = "";
  size_t n = fread(head, 1, 8, f);
  fclose(f);
  return n == 8 && memcmp(head, "---@meta", 8) == 0;
}

void hs__process_unref(hs_process_t *p) {
  if (--p->refs > 0) {
    return;
  }
  hs_vm_t *vm = p->vm;
  luaL_unref(vm->L, LUA_REGISTRYINDEX, p->def_ref);
  luaL_unref(vm->L, LUA_REGISTRYINDEX, p->content_ref);
  for (hs_process_t **pp = &vm->procs; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == p) {
      *pp = p->next;
      break;
    }
  }
  free(p->name);
  free(p->title);
  free(p->chunkname);
  free(p);
}

void hs_process_release(hs_process_t *p) {
  if (p != NULL && !p->released) {
    p->released = true;
    hs__process_unref(p);
  }
}

const char *hs_process_name(const hs_process_t *p) {
  return p->name;
}
const char *hs_process_title(const hs_process_t *p) {
  return p->title;
}
const char *hs_process_version(const hs_process_t *p) {
  return p->version;
}
const char *hs_process_chunkname(const hs_process_t *p) {
  return p->chunkname;
}

typedef struct goal_ctx {
  hs_process_t *p;
  const char *outcome;
  bool goal;
} goal_ctx_t;

static int goal_protected(lua_State *L) {
  goal_ctx_t *c = lua_touserdata(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->p->def_ref);
  if (lua_getfield(L, -1, "goals") == LUA_TTABLE) {
    c->goal = lua_getfield(L, -1, c->outcome) == LUA_TSTRING;
  }
  return 0;
}

bool hs_process_is_goal(hs_process_t *p, const char *outcome) {
  goal_ctx_t c = {.p = p, .outcome = outcome};
  hs_err_t err;
  return outcome != NULL && hs__protect(p->vm, goal_protected, &c, &err) == HS_OK && c.goal;
}

typedef struct describe_ctx {
  hs_process_t *p;
  hs_arena_t *a;
  hs_value_t *out;
  hs_err_t *err;
  int rc;
} describe_ctx_t;

static int describe_protected(lua_State *L) {
  describe_ctx_t *c = lua_touserdata(L, 1);
  hs_arena_t *a = c->a;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->p->def_ref);
  int def = lua_gettop(L);
  hs_value_t *v = hs_value_new_map(a, 6);
  char why[200];
  if (v == NULL || hs_map_add_str(a, v, "name", c->p->name) != HS_OK ||
      hs_map_add_str(a, v, "title", c->p->title) != HS_OK ||
      hs_map_add_str(a, v, "version", c->p->version) != HS_OK) {
    c->rc = hs_err_set(c->err, HS_ENOMEM, "out of memory");
    return 0;
  }
  static const char *const parts[] = {"goals", "content"};
  for (int i = 0; i < 2; i++) {
    lua_getfield(L, def, parts[i]);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_newtable(L);
    }
    hs_value_t *x = hs__to_value(L, -1, a, parts[i], why, sizeof why);
    if (x == NULL || hs_map_add(a, v, parts[i], x) == NULL) {
      c->rc = hs_err_set(c->err, HS_ENOMEM, "out of memory");
      return 0;
    }
    lua_pop(L, 1);
  }
  hs_value_t *tests = hs_value_new_array(a, 4);
  if (tests == NULL) {
    c->rc = hs_err_set(c->err, HS_ENOMEM, "out of memory");
    return 0;
  }
  if (lua_getfield(L, def, "tests") == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
      lua_pop(L, 1);
      if (lua_type(L, -1) == LUA_TSTRING) {
        hs_value_t *s = hs_value_new_cstr(a, lua_tostring(L, -1));
        if (s == NULL || hs_array_push(a, tests, s) == NULL) {
          c->rc = hs_err_set(c->err, HS_ENOMEM, "out of memory");
          return 0;
        }
      }
    }
  }
  if (hs_map_add(a, v, "tests", tests) == NULL) {
    c->rc = hs_err_set(c->err, HS_ENOMEM, "out of memory");
    return 0;
  }
  c->out = v;
  return 0;
}

int hs_process_describe(hs_process_t *p, hs_arena_t *a, hs_value_t **out, hs_err_t *err) {
  describe_ctx_t c = {.p = p, .a = a, .err = err};
  int rc = hs__protect(p->vm, describe_protected, &c, err);
  if (rc == HS_OK) {
    rc = c.rc;
  }
  if (rc == HS_OK) {
    *out = c.out;
  }
  return rc;
}
