/* Sessions: one coroutine per visit in the brand's state, the `visit` API the script calls,
 * and the C entry points that start, complete and replay a session.
 *
 * The script's coroutine runs until `visit:step` yields (lua_yield from C, with no values:
 * the normalized step spec is kept in the visit's user value 2). C validates a completion,
 * then resumes the coroutine with the validated data, which `visit:step` returns to the
 * script, the way OpenResty resumes a request's coroutine from an I/O callback.
 *
 * Replay does not yield at all: while recorded completions remain, `visit:step` checks that
 * the script asks for the recorded step and returns the recorded data at once, so a 100-step
 * session is rebuilt in one resume. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/endian.h"
#include "core/ids.h"
#include "engine/internal.h"
#include "learn/learn.h"

/* Every id the script gives (steps, slots) stays short: it is stored with every event. */
enum { ID_MAX = 64 };

static hs_session_t *check_visit(lua_State *L, bool for_step) {
  hs_vm_t *vm = hs__vm_of(L);
  hs_session_t *s = lua_touserdata(L, 1);
  if (s == NULL || s != vm->current) {
    /* Not the running session's own visit (the common case is, and needs no more checks). */
    s = luaL_checkudata(L, 1, HS_REG_VISIT);
  }
  if (s->ref == LUA_NOREF) {
    luaL_error(L, "this visit has ended; a visit cannot be kept after its session");
  }
  if (vm->current != s) {
    luaL_error(L, "this visit belongs to another session (do not keep a visit in a shared "
                  "variable)");
  }
  if (for_step && vm->in_validate) {
    luaL_error(L, "validate cannot call visit:step, visit:suggest or visit:outcome; do it in "
                  "run after the step returns");
  }
  return s;
}

static const hs_value_t *ev_get(const hs_value_t *e, const char *key, hs_vtype_t type) {
  const hs_value_t *v = hs_map_get(e, key);
  return v != NULL && v->type == type ? v : NULL;
}

static bool ev_is(const hs_value_t *e, const char *type) {
  const hs_value_t *t = ev_get(e, "type", HS_V_STR);
  return t != NULL && strcmp(t->as.str.ptr, type) == 0;
}

/* The next recorded input of a replay (a completion or a suggestion), or NULL at the end. */
static const hs_value_t *next_input(hs_session_t *s) {
  while (s->replay_pos < s->replay->as.arr.len) {
    const hs_value_t *e = &s->replay->as.arr.items[s->replay_pos];
    if (ev_is(e, "complete") || ev_is(e, "suggest")) {
      return e;
    }
    s->replay_pos++;
  }
  return NULL;
}

static hs_value_t *new_event(lua_State *L, hs_session_t *s, const char *type) {
  hs_value_t *e = hs_value_new_map(s->arena, 8);
  if (e == NULL || hs_map_add_str(s->arena, e, "type", type) != HS_OK ||
      hs_map_add_int(s->arena, e, "seq", s->seq) != HS_OK) {
    luaL_error(L, "out of memory recording an event");
  }
  return e;
}

static void push_event(lua_State *L, hs_session_t *s, hs_value_t *e) {
  if (hs_array_push(s->arena, s->events, e) == NULL) {
    luaL_error(L, "out of memory recording an event");
  }
}

/* Pushes the process's private content table. */
static void push_content(lua_State *L, hs_session_t *s) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->proc->content_ref);
}

static bool content_exists(lua_State *L, int content, const char *id) {
  bool ok = lua_getfield(L, content, id) == LUA_TTABLE;
  lua_pop(L, 1);
  return ok;
}

/* "sha256:<hex>" of a content item as the process declares it: each of kind, title, uri,
 * version and text as a 4-byte big-endian length and the bytes (length 0xffffffff when absent).
 * A compliance record keeps this next to the content id, so it names the exact document that
 * was shown even if a later version of the process changes what the id points to. */
static void content_hash(lua_State *L, int entry, char out[7 + 64 + 1]) {
  static const char *const keys[] = {"kind", "title", "uri", "version", "text"};
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    size_t n = 0;
    const char *v =
        lua_getfield(L, entry, keys[i]) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    uint32_t len = v != NULL ? (uint32_t)n : UINT32_MAX;
    uint8_t be[4];
    hs_put_be32(be, len);
    lua_pop(L, 1); /* the content table still holds the string */
    luaL_addlstring(&b, (const char *)be, 4);
    if (v != NULL) {
      luaL_addlstring(&b, v, n);
    }
  }
  luaL_pushresult(&b);
  size_t n = 0;
  const char *p = lua_tolstring(L, -1, &n);
  uint8_t digest[32];
  hs_sha256(p, n, digest);
  lua_pop(L, 1);
  memcpy(out, "sha256:", 7);
  hs_hex(digest, 32, out + 7);
}

static bool is_ack(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (!lua_getmetatable(L, idx)) {
    return false;
  }
  lua_getfield(L, -1, "type");
  bool ack = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "ack") == 0;
  lua_pop(L, 2);
  return ack;
}

/* The rating a customer gave on a step handed to them (audience "customer"): the value of its
 * first answered rating field, or 0. It counts as feedback on the visit. */
static int customer_rating(lua_State *L, int spec, const hs_value_t *data) {
  int top = lua_gettop(L);
  int rating = 0;
  if (lua_getfield(L, spec, "audience") == LUA_TSTRING &&
      strcmp(lua_tostring(L, -1), "customer") == 0 &&
      lua_getfield(L, spec, "fields") == LUA_TTABLE) {
    for (lua_Integer i = 1, n = (lua_Integer)lua_rawlen(L, -1); rating == 0 && i <= n; i++) {
      lua_rawgeti(L, -1, i);
      if (lua_getmetatable(L, -1)) {
        lua_getfield(L, -1, "type");
        if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "rating") == 0) {
          lua_getfield(L, -3, "name");
          const hs_value_t *v =
              lua_type(L, -1) == LUA_TSTRING && data != NULL && data->type == HS_V_MAP
                  ? hs_map_get(data, lua_tostring(L, -1))
                  : NULL;
          if (v != NULL && v->type == HS_V_INT && v->as.i >= 1 && v->as.i <= 5) {
            rating = (int)v->as.i;
          }
        }
      }
      lua_settop(L, top + 2);
    }
  }
  lua_settop(L, top);
  return rating;
}

static bool list_has(lua_State *L, int list, const char *s) {
  for (lua_Integer i = 1, n = (lua_Integer)lua_rawlen(L, list); i <= n; i++) {
    lua_rawgeti(L, list, i);
    bool eq = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), s) == 0;
    lua_pop(L, 1);
    if (eq) {
      return true;
    }
  }
  return false;
}

/* Checks the step table a script gave visit:step and pushes the session's private copy of it
 * (the spec): {id, title, audience, say?, help?, show?, fields?, validate?, line}. Runs on
 * every step, so what it learns on the walk over the table's keys is kept in locals rather
 * than looked up again. */
static void normalize_step(lua_State *L, hs_session_t *s, int in) {
  lua_createtable(L, 0, 8);
  int out = lua_gettop(L);
  push_content(L, s);
  int content = lua_gettop(L);
  lua_Debug ar;
  if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "l", &ar)) {
    lua_pushinteger(L, ar.currentline);
    lua_setfield(L, out, "line");
  }
  size_t id_len = 0;
  bool has_id = false, has_title = false, has_show = false, has_ack = false;
  const char *audience = NULL; /* anchored by `in` */
  s->step_has_record_info = false;
  s->step_has_validate = false;
  lua_pushnil(L);
  while (lua_next(L, in) != 0) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
    int t = lua_type(L, -1);
    if (strcmp(k, "id") == 0 || strcmp(k, "title") == 0 || strcmp(k, "say") == 0 ||
        strcmp(k, "help") == 0 || strcmp(k, "audience") == 0) {
      if (t != LUA_TSTRING) {
        luaL_error(L, "visit:step: %s must be a string, not a %s", k, lua_typename(L, t));
      }
      if (k[0] == 'i') {
        has_id = true;
        lua_tolstring(L, -1, &id_len);
      } else if (k[0] == 't') {
        has_title = true;
      } else if (k[0] == 'a') {
        audience = lua_tostring(L, -1);
      }
      lua_setfield(L, out, k);
    } else if (strcmp(k, "validate") == 0) {
      if (t != LUA_TFUNCTION) {
        luaL_error(L, "visit:step: validate must be a function(data, visit)");
      }
      s->step_has_validate = true;
      lua_setfield(L, out, k);
    } else if (strcmp(k, "show") == 0) {
      if (t == LUA_TSTRING) {
        lua_createtable(L, 1, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
      } else if (t != LUA_TTABLE) {
        luaL_error(L, "visit:step: show must be a content id or a list of them");
      }
      int list = lua_gettop(L);
      lua_Integer n = (lua_Integer)lua_rawlen(L, list);
      lua_createtable(L, (int)n, 0);
      for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, list, i) != LUA_TSTRING) {
          luaL_error(L, "visit:step: show[%d] must be a content id (a string)", (int)i);
        }
        if (!content_exists(L, content, lua_tostring(L, -1))) {
          luaL_error(L, "visit:step: show names '%s', which is not in the process's content",
                     lua_tostring(L, -1));
        }
        lua_rawseti(L, -2, i);
      }
      has_show = true;
      lua_setfield(L, out, "show");
      lua_pop(L, 1);
    } else if (strcmp(k, "fields") == 0) {
      if (t != LUA_TTABLE) {
        luaL_error(L, "visit:step: fields must be a list of field.*{...}");
      }
      int list = lua_gettop(L);
      lua_Integer n = (lua_Integer)lua_rawlen(L, list);
      lua_createtable(L, (int)n, 0);
      for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, list, i);
        int type = hs__field_type(L, -1);
        if (type < 0) {
          luaL_error(L,
                     "visit:step: fields[%d] must be made with field.text{...}, "
                     "field.integer{...}, ...",
                     (int)i);
        }
        has_ack |= is_ack(L, -1);
        lua_getfield(L, -1, "pii");
        s->step_has_record_info |= lua_toboolean(L, -1) && lua_type(L, -1) == LUA_TBOOLEAN;
        lua_pop(L, 1);
        lua_getfield(L, -1, "name");
        const char *name = lua_tostring(L, -1);
        for (lua_Integer j = 1; j < i; j++) {
          lua_rawgeti(L, -3, j);
          lua_getfield(L, -1, "name");
          if (lua_rawequal(L, -1, -3)) {
            luaL_error(L, "visit:step: two fields are named '%s'", name);
          }
          lua_pop(L, 2);
        }
        lua_pop(L, 1);
        lua_rawseti(L, -2, i);
      }
      lua_setfield(L, out, "fields");
      lua_pop(L, 1);
    } else {
      luaL_error(L,
                 "visit:step has no option '%s' (it takes id, title, say, help, audience, "
                 "show, fields, validate)",
                 k);
    }
  }
  if (!has_id || id_len == 0 || id_len > ID_MAX) {
    luaL_error(L, "visit:step needs an id = \"...\" (1 to %d characters)", (int)ID_MAX);
  }
  if (!has_title) {
    lua_getfield(L, out, "id");
    lua_setfield(L, out, "title");
  }
  s->step_for_customer = false;
  if (audience != NULL) {
    s->step_for_customer = strcmp(audience, "customer") == 0;
    if (!s->step_for_customer && strcmp(audience, "contractor") != 0) {
      luaL_error(L, "visit:step: audience must be \"contractor\" or \"customer\", not '%s'",
                 audience);
    }
  } else {
    lua_pushliteral(L, "contractor");
    lua_setfield(L, out, "audience");
  }
  if (!has_ack) {
    lua_settop(L, out);
    return;
  }
  /* An acknowledgment is of a document the step shows: add it if the author did not. */
  s->step_has_record_info = true;
  if (!has_show) {
    lua_newtable(L);
    lua_setfield(L, out, "show");
  }
  lua_getfield(L, out, "show");
  int show = lua_gettop(L);
  lua_getfield(L, out, "fields");
  for (lua_Integer i = 1, n = (lua_Integer)lua_rawlen(L, -1); i <= n; i++) {
    lua_rawgeti(L, -1, i);
    if (is_ack(L, -1)) {
      lua_getfield(L, -1, "document");
      const char *doc = lua_tostring(L, -1);
      if (doc == NULL || lua_getfield(L, content, doc) != LUA_TTABLE) {
        luaL_error(L, "visit:step: ack field needs document = a content id, '%s' is not one",
                   doc != NULL ? doc : "?");
      }
      lua_getfield(L, -1, "kind");
      if (strcmp(lua_tostring(L, -1), "document") != 0) {
        luaL_error(L,
                   "visit:step: ack field's document '%s' must be content of kind "
                   "\"document\"",
                   doc);
      }
      lua_pop(L, 2);
      if (!list_has(L, show, doc)) {
        lua_rawseti(L, show, (lua_Integer)lua_rawlen(L, show) + 1);
      } else {
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  lua_settop(L, out);
}

static int visit_step(lua_State *L) {
  hs_session_t *s = check_visit(L, true);
  hs_vm_t *vm = s->vm;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  if (s->seq >= vm->lim.max_steps) {
    return hs__kill(L, HS_KILL_STEPS,
                    "The visit reached its limit of %" PRIu32
                    " steps (look for a loop of steps that never ends)",
                    vm->lim.max_steps);
  }
  const hs_value_t *e = s->replaying ? next_input(s) : NULL;
  if (s->replaying && e == NULL) {
    s->replaying = false; /* the record ends here: this is the step the session is at */
  }
  if (s->replaying) {
    /* Replay's fast path: the live run already checked this spec (the same version of the
     * script made it), so only the id and the fields matter; no copy is made. */
    s->seq++;
    lua_getfield(L, 2, "id");
    const char *id = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
    const hs_value_t *rid = ev_get(e, "step", HS_V_STR);
    const hs_value_t *rseq = ev_get(e, "seq", HS_V_INT);
    if (!ev_is(e, "complete") || rid == NULL || strcmp(rid->as.str.ptr, id) != 0 || rseq == NULL ||
        rseq->as.i != s->seq) {
      const hs_value_t *slot = ev_get(e, "slot", HS_V_STR);
      return hs__kill(L, HS_KILL_NONDET,
                      "The script is not deterministic: at step %" PRIu32
                      " it asked for step '%s', but the record has %s '%s' there (does it "
                      "depend on something other than the visit's answers?)",
                      s->seq, id, ev_is(e, "complete") ? "step" : "a suggestion for",
                      rid != NULL ? rid->as.str.ptr : (slot != NULL ? slot->as.str.ptr : "?"));
    }
    s->replay_pos++;
    const hs_value_t *at = ev_get(e, "at", HS_V_INT);
    const hs_value_t *rng = ev_get(e, "rng", HS_V_INT);
    if (at != NULL) {
      s->now_ms = at->as.i;
    }
    if (rng != NULL) {
      s->rng = (uint64_t)rng->as.i;
    }
    hs_value_t *errors = hs_value_new_map(s->arena, 0);
    if (errors == NULL) {
      return luaL_error(L, "out of memory replaying");
    }
    hs__validate_fields(L, 2, hs_map_get(e, "data"), s->arena, errors);
    if (errors->as.map.len > 0) {
      return hs__kill(L, HS_KILL_NONDET,
                      "The record's answer to step %" PRIu32
                      " ('%s') no longer passes the step's checks (%s: %s): the events "
                      "belong to another version",
                      s->seq, id, errors->as.map.items[0].key,
                      errors->as.map.items[0].val.as.str.ptr);
    }
    s->vm->budget = s->vm->lim.instr_budget;
    return 1;
  }
  normalize_step(L, s, 2);
  int spec = lua_gettop(L);
  s->seq++;
  lua_pushvalue(L, spec);
  lua_setiuservalue(L, 1, 2);
  return lua_yield(L, 0);
}

/* The belief in content item id of slot: its prior from the process's content, plus what the
 * brand's visits taught (through the VM's counts hook, when the server set one). */
static hs_arm_t item_arm(lua_State *L, hs_session_t *s, int content, const char *slot,
                         const char *context, const char *id) {
  double ps = 0, pf = 0;
  lua_getfield(L, content, id);
  if (lua_getfield(L, -1, "prior") == LUA_TTABLE) {
    lua_getfield(L, -1, "successes");
    lua_getfield(L, -2, "failures");
    ps = lua_tonumber(L, -2);
    pf = lua_tonumber(L, -1);
    lua_pop(L, 2);
  }
  lua_pop(L, 2);
  hs_content_counts_t c = {0, 0};
  if (s->vm->counts_fn != NULL) {
    s->vm->counts_fn(s->vm->counts_ctx, s->vm->brand, s->proc->name, slot, context, id, &c);
  }
  return hs_learn_arm(ps, pf, c.shown, c.successes);
}

static int visit_suggest(lua_State *L) {
  hs_session_t *s = check_visit(L, true);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  if (lua_getfield(L, 2, "slot") != LUA_TSTRING || lua_rawlen(L, -1) == 0 ||
      lua_rawlen(L, -1) > ID_MAX) {
    return luaL_error(L, "visit:suggest needs slot = \"...\" (1 to %d characters)", (int)ID_MAX);
  }
  const char *slot = lua_tostring(L, 3);
  if (lua_getfield(L, 2, "from") != LUA_TTABLE || lua_rawlen(L, -1) == 0) {
    return luaL_error(L, "visit:suggest needs from = { content ids to choose from }");
  }
  int from = 4;
  lua_Integer n = (lua_Integer)lua_rawlen(L, from);
  if (n > HS_LEARN_MAX_ARMS) {
    return luaL_error(L, "visit:suggest: from may list at most %d content ids",
                      (int)HS_LEARN_MAX_ARMS);
  }
  push_content(L, s);
  int content = lua_gettop(L);
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_rawgeti(L, from, i) != LUA_TSTRING ||
        !content_exists(L, content, lua_tostring(L, -1))) {
      return luaL_error(L, "visit:suggest: from[%d] must be an id from the process's content",
                        (int)i);
    }
    lua_pop(L, 1);
  }
  lua_Integer count = 1;
  if (lua_getfield(L, 2, "count") != LUA_TNIL) {
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > n) {
      return luaL_error(L, "visit:suggest: count must be a whole number from 1 to #from (%d)",
                        (int)n);
    }
    count = lua_tointeger(L, -1);
  }
  lua_pop(L, 1);
  /* The context key: what the script knows about this visit that may change what works (a
   * customer segment from earlier answers). Each key learns on its own. */
  const char *context = "";
  if (lua_getfield(L, 2, "context") != LUA_TNIL) {
    size_t len = 0;
    const char *c = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    if (c == NULL || len == 0 || len > ID_MAX || hs_utf8_check((const uint8_t *)c, len) != len) {
      return luaL_error(L, "visit:suggest: context must be text of 1 to %d characters",
                        (int)ID_MAX);
    }
    context = c;
  }
  /* context stays on the stack below the picks, which keeps the string alive. */
  lua_createtable(L, (int)count, 0);
  int picks = lua_gettop(L);
  if (s->replaying) {
    const hs_value_t *e = next_input(s);
    const hs_value_t *rslot = e != NULL ? ev_get(e, "slot", HS_V_STR) : NULL;
    const hs_value_t *rp = e != NULL ? ev_get(e, "picks", HS_V_ARRAY) : NULL;
    if (e == NULL || !ev_is(e, "suggest") || rslot == NULL || strcmp(rslot->as.str.ptr, slot) ||
        rp == NULL || rp->as.arr.len != (size_t)count) {
      return hs__kill(L, HS_KILL_NONDET,
                      "The script is not deterministic: after step %" PRIu32
                      " it asked for a suggestion for '%s', which the record does not have "
                      "there",
                      s->seq, slot);
    }
    for (size_t i = 0; i < rp->as.arr.len; i++) {
      const hs_value_t *id = &rp->as.arr.items[i];
      if (id->type != HS_V_STR || !list_has(L, from, id->as.str.ptr)) {
        return hs__kill(L, HS_KILL_NONDET,
                        "The record's suggestion for '%s' is not among the script's choices: "
                        "the events belong to another version",
                        slot);
      }
      lua_pushlstring(L, id->as.str.ptr, id->as.str.len);
      lua_rawseti(L, picks, (lua_Integer)i + 1);
    }
    /* Draw as the live run did, so a rebuilt session continues exactly like the original. */
    (void)hs__rng_next(&s->pick);
    s->replay_pos++;
    return 1;
  }
  /* Thompson sampling over the items' posteriors, with an exploration floor. Every draw comes
   * from one number of the session's recorded generator; the picks and their propensities are
   * recorded, so a replay never needs the posteriors again. */
  hs_arm_t arms[HS_LEARN_MAX_ARMS];
  for (lua_Integer i = 0; i < n; i++) {
    lua_rawgeti(L, from, i + 1);
    arms[i] = item_arm(L, s, content, slot, context, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  hs__charge(L, (uint64_t)n * 2000u, "visit:suggest");
  size_t chosen[HS_LEARN_MAX_ARMS];
  double prop[HS_LEARN_MAX_ARMS];
  if (hs_learn_pick(arms, (size_t)n, (size_t)count, HS_LEARN_FLOOR, hs__rng_next(&s->pick), chosen,
                    prop) != HS_OK) {
    return luaL_error(L, "visit:suggest: cannot pick %d of %d", (int)count, (int)n);
  }
  hs_value_t *e = new_event(L, s, "suggest");
  if (hs_map_add_str(s->arena, e, "slot", slot) != HS_OK) {
    return luaL_error(L, "out of memory");
  }
  hs_value_t *arr = hs_value_new_array(s->arena, (size_t)count);
  hs_value_t *props = hs_value_new_array(s->arena, (size_t)count);
  if (arr == NULL || props == NULL) {
    return luaL_error(L, "out of memory");
  }
  for (lua_Integer i = 0; i < count; i++) {
    lua_rawgeti(L, from, (lua_Integer)chosen[i] + 1);
    hs_value_t *id = hs_value_new_cstr(s->arena, lua_tostring(L, -1));
    hs_value_t *p = hs_value_new_float(s->arena, prop[i]);
    if (id == NULL || p == NULL || hs_array_push(s->arena, arr, id) == NULL ||
        hs_array_push(s->arena, props, p) == NULL) {
      return luaL_error(L, "out of memory");
    }
    lua_rawseti(L, picks, i + 1);
  }
  if (hs_map_add(s->arena, e, "picks", arr) == NULL ||
      hs_map_add(s->arena, e, "propensities", props) == NULL ||
      (context[0] != '\0' && hs_map_add_str(s->arena, e, "context", context) != HS_OK)) {
    return luaL_error(L, "out of memory");
  }
  push_event(L, s, e);
  lua_settop(L, picks);
  return 1;
}

static int visit_outcome(lua_State *L) {
  hs_session_t *s = check_visit(L, true);
  size_t len;
  const char *name = luaL_checklstring(L, 2, &len);
  if (len == 0 || len > ID_MAX) {
    return luaL_error(L, "visit:outcome: the name must be 1 to %d characters", (int)ID_MAX);
  }
  if (s->replaying) {
    /* An output: recorded the first time, recomputed now. */
    s->outcome = hs_arena_strndup(s->arena, name, len);
    return 0;
  }
  hs_value_t *e = new_event(L, s, "outcome");
  if (hs_map_add_str(s->arena, e, "name", name) != HS_OK) {
    return luaL_error(L, "out of memory");
  }
  if (!lua_isnoneornil(L, 3)) {
    char why[200];
    hs_value_t *v = hs__to_value(L, 3, s->arena, "the outcome's value", why, sizeof why);
    if (v == NULL) {
      return luaL_error(L, "visit:outcome: %s", why);
    }
    if (hs_map_add(s->arena, e, "value", v) == NULL) {
      return luaL_error(L, "out of memory");
    }
  }
  push_event(L, s, e);
  s->outcome = hs_map_get(e, "name")->as.str.ptr;
  return 0;
}

static int visit_now(lua_State *L) {
  hs_session_t *s = check_visit(L, false);
  lua_pushinteger(L, (lua_Integer)(s->now_ms / 1000));
  return 1;
}

static int visit_index(lua_State *L) {
  if (lua_touserdata(L, 1) != hs__vm_of(L)->current) {
    luaL_checkudata(L, 1, HS_REG_VISIT); /* the running session's visit needs no check */
  }
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "step") == 0) {
    lua_pushcfunction(L, visit_step);
  } else if (strcmp(k, "suggest") == 0) {
    lua_pushcfunction(L, visit_suggest);
  } else if (strcmp(k, "outcome") == 0) {
    lua_pushcfunction(L, visit_outcome);
  } else if (strcmp(k, "now") == 0) {
    lua_pushcfunction(L, visit_now);
  } else if (strcmp(k, "customer") == 0 || strcmp(k, "contractor") == 0 ||
             strcmp(k, "session") == 0) {
    lua_getiuservalue(L, 1, 3);
    lua_getfield(L, -1, k);
  } else {
    return luaL_error(L,
                      "visit has no field '%s' (it has step, suggest, outcome, now, "
                      "customer, contractor, session)",
                      k);
  }
  return 1;
}

static int visit_newindex(lua_State *L) {
  return luaL_error(L, "visit cannot be changed; keep your own values in local variables");
}

void hs__visit_register(lua_State *L) {
  luaL_newmetatable(L, HS_REG_VISIT);
  lua_pushcfunction(L, visit_index);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, visit_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
}

/* ---- building what leaves the engine ---- */

static hs_value_t *str_or_null(lua_State *L, int t, const char *k, hs_arena_t *a) {
  hs_value_t *v = NULL;
  if (lua_getfield(L, t, k) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    v = hs_value_new_str(a, s, n);
  }
  lua_pop(L, 1);
  return v;
}

#define NEED(x)                                                                                    \
  do {                                                                                             \
    if (!(x)) {                                                                                    \
      luaL_error(L, "out of memory building a step");                                              \
    }                                                                                              \
  } while (0)

/* The step as sent to a device (SPEC §4). Field order is the script's. */
static hs_value_t *build_step(lua_State *L, hs_session_t *s, int spec, hs_arena_t *a) {
  spec = lua_absindex(L, spec);
  int top = lua_gettop(L);
  hs_value_t *step = hs_value_new_map(a, 10);
  NEED(step != NULL);
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
  lua_getiuservalue(L, -1, 3);
  lua_getfield(L, -1, "session");
  NEED(hs_map_add_str(a, step, "session",
                      lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "") == HS_OK);
  lua_settop(L, top);
  NEED(hs_map_add_int(a, step, "seq", s->seq) == HS_OK);
  static const char *const strs[] = {"id", "title", "say", "help", "audience"};
  for (int i = 0; i < 5; i++) {
    hs_value_t *v = str_or_null(L, spec, strs[i], a);
    if (v != NULL) {
      NEED(hs_map_add(a, step, strs[i], v) != NULL);
    }
  }
  push_content(L, s);
  int content = lua_gettop(L);
  hs_value_t *show = hs_value_new_array(a, 2);
  NEED(show != NULL);
  lua_getfield(L, spec, "show");
  for (lua_Integer i = 1, n = (lua_Integer)lua_rawlen(L, -1); i <= n; i++) {
    lua_rawgeti(L, -1, i);
    const char *id = lua_tostring(L, -1);
    lua_getfield(L, content, id);
    int item = lua_gettop(L);
    hs_value_t *m = hs_value_new_map(a, 5);
    NEED(m != NULL && hs_map_add_str(a, m, "id", id) == HS_OK);
    static const char *const keys[] = {"kind", "title", "uri", "text", "version"};
    for (int k = 0; k < 5; k++) {
      hs_value_t *v = str_or_null(L, item, keys[k], a);
      if (v != NULL) {
        NEED(hs_map_add(a, m, keys[k], v) != NULL);
      }
    }
    NEED(hs_array_push(a, show, m) != NULL);
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
  NEED(hs_map_add(a, step, "show", show) != NULL);
  hs_value_t *fields = hs_value_new_array(a, 4);
  NEED(fields != NULL);
  if (lua_getfield(L, spec, "fields") == LUA_TTABLE) {
    for (lua_Integer i = 1, n = (lua_Integer)lua_rawlen(L, -1); i <= n; i++) {
      lua_rawgeti(L, -1, i);
      int f = lua_gettop(L);
      hs_value_t *m = hs__field_describe(L, f, a);
      NEED(m != NULL);
      NEED(hs_array_push(a, fields, m) != NULL);
      lua_settop(L, f - 1);
    }
  }
  NEED(hs_map_add(a, step, "fields", fields) != NULL);
  lua_settop(L, top);
  const char *bad = hs__value_non_utf8(step, "step");
  if (bad != NULL) {
    luaL_error(L, "the step's %s holds text that is not UTF-8: write the script's text in UTF-8",
               bad);
  }
  return step;
}

/* ---- running the coroutine ---- */

typedef struct call_ctx {
  hs_session_t *s;
  hs_process_t *p;
  const hs_session_start_t *start;
  const hs_value_t *replay;
  uint32_t seq;
  const hs_value_t *data;
  int64_t at_ms, device_ms;
  hs_arena_t *a;
  hs_step_result_t *res;
  hs_err_t *err;
  int rc;
} call_ctx_t;

static void add_end_event(lua_State *L, hs_session_t *s) {
  hs_value_t *e = new_event(L, s, "end");
  NEED(hs_map_add_int(s->arena, e, "at", s->now_ms) == HS_OK);
  push_event(L, s, e);
}

/* Resumes the session's coroutine with nargs values already on its stack, and fills the
 * result. Runs inside a protected call on the main state. */
static void resume(lua_State *L, call_ctx_t *c, int nargs) {
  hs_session_t *s = c->s;
  hs_vm_t *vm = s->vm;
  lua_State *co = s->co;
  int nres = 0;
  vm->current = s;
  hs__meter_begin(vm);
  int st = lua_resume(co, L, nargs, &nres);
  vm->current = NULL;
  if (st == LUA_YIELD) {
    hs__meter_end(vm);
    lua_pop(co, nres);
    s->state = HS_SESSION_WAITING;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
    lua_getiuservalue(L, -1, 2);
    lua_getfield(L, -1, "id");
    s->step_id = lua_tostring(L, -1); /* anchored by the spec in user value 2 */
    lua_getfield(L, -2, "line");
    s->step_line = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    c->res->status = HS_STEP_WAITING;
    c->res->seq = s->seq;
    c->res->step = build_step(L, s, -2, c->a);
    lua_pop(L, 3);
    return;
  }
  if (st == LUA_OK) {
    hs__meter_end(vm);
    if (s->replaying && next_input(s) != NULL) {
      s->state = HS_SESSION_FAILED;
      c->rc = hs_err_set(c->err, HS_ECONFLICT,
                         "The script is not deterministic: it ended after step %" PRIu32
                         ", but the record goes on",
                         s->seq);
      return;
    }
    lua_pop(co, nres);
    s->state = HS_SESSION_ENDED;
    if (!s->replaying) {
      add_end_event(L, s);
    }
    c->res->status = HS_STEP_ENDED;
    c->res->seq = s->seq;
    c->res->step = NULL;
  } else {
    c->rc = hs__script_error(vm, co, st, "The script", c->err);
    hs__meter_end(vm);
    s->state = HS_SESSION_FAILED;
  }
  /* The coroutine is dead either way: let the collector have it. */
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
  lua_pushnil(L);
  lua_setiuservalue(L, -2, 1);
  lua_pop(L, 1);
  s->co = NULL;
  if (c->rc != HS_OK && vm->mem_used > vm->lim.mem_cap / 2) {
    /* A failed script may leave most of the brand's memory as garbage (a memory bomb). In
     * generational mode that garbage is old and would wait for the next major collection,
     * so the brand's other sessions would run short: collect it now. No script has a
     * finalizer, so this runs no script code. */
    lua_gc(L, LUA_GCCOLLECT);
  }
}

static int start_protected(lua_State *L) {
  call_ctx_t *c = lua_touserdata(L, 1);
  hs_arena_t *a = c->a;
  const hs_value_t *start_ev = NULL;
  const char *sid;
  const hs_value_t *customer, *contractor;
  uint64_t seed;
  int64_t at;
  if (c->replay != NULL) {
    if (c->replay->type != HS_V_ARRAY || c->replay->as.arr.len == 0 ||
        !ev_is(&c->replay->as.arr.items[0], "start")) {
      c->rc = hs_err_set(c->err, HS_EINVAL,
                         "the events must be a list that begins with the "
                         "session's start event");
      return 0;
    }
    start_ev = &c->replay->as.arr.items[0];
    const hs_value_t *v = ev_get(start_ev, "session", HS_V_STR);
    sid = v != NULL ? v->as.str.ptr : "";
    customer = hs_map_get(start_ev, "customer");
    contractor = hs_map_get(start_ev, "contractor");
    v = ev_get(start_ev, "seed", HS_V_INT);
    seed = v != NULL ? (uint64_t)v->as.i : 0;
    v = ev_get(start_ev, "at", HS_V_INT);
    at = v != NULL ? v->as.i : 0;
    v = ev_get(start_ev, "version", HS_V_STR);
    if (v != NULL && strcmp(v->as.str.ptr, c->p->version) != 0) {
      c->rc = hs_err_set(c->err, HS_ECONFLICT,
                         "the events were recorded with version %.12s of %s, not %.12s: replay "
                         "them with the version the session is pinned to",
                         v->as.str.ptr, c->p->name, c->p->version);
      return 0;
    }
  } else {
    sid = c->start->session_id != NULL ? c->start->session_id : "";
    customer = c->start->customer;
    contractor = c->start->contractor;
    seed = c->start->seed;
    at = c->start->at_ms;
  }
  if ((customer != NULL && customer->type != HS_V_MAP && customer->type != HS_V_NIL) ||
      (contractor != NULL && contractor->type != HS_V_MAP && contractor->type != HS_V_NIL)) {
    c->rc = hs_err_set(c->err, HS_EINVAL, "customer and contractor must be maps");
    return 0;
  }
  hs_session_t *s = lua_newuserdatauv(L, sizeof *s, 3);
  int ud = lua_gettop(L);
  memset(s, 0, sizeof *s);
  s->ref = LUA_NOREF;
  s->vm = c->p->vm;
  s->proc = c->p;
  s->state = HS_SESSION_FAILED;
  s->rng = seed;
  s->pick = seed ^ 0x5eed5eed5eed5eedull;
  s->now_ms = at;
  s->arena = a;
  luaL_setmetatable(L, HS_REG_VISIT);
  lua_createtable(L, 0, 3);
  if (customer != NULL && customer->type == HS_V_MAP) {
    hs__push_value(L, customer);
  } else {
    lua_newtable(L);
  }
  lua_setfield(L, -2, "customer");
  if (contractor != NULL && contractor->type == HS_V_MAP) {
    hs__push_value(L, contractor);
  } else {
    lua_newtable(L);
  }
  lua_setfield(L, -2, "contractor");
  lua_pushstring(L, sid);
  lua_setfield(L, -2, "session");
  lua_setiuservalue(L, ud, 3);
  lua_State *co = lua_newthread(L);
  lua_setiuservalue(L, ud, 1);
  s->co = co;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->p->def_ref);
  lua_getfield(L, -1, "run");
  lua_remove(L, -2);
  lua_pushvalue(L, ud);
  if (!lua_checkstack(co, 4)) {
    return luaL_error(L, "out of memory starting a session");
  }
  lua_xmove(L, co, 2);

  s->events = hs_value_new_array(a, 4);
  NEED(s->events != NULL);
  c->res->events = s->events;
  if (c->replay == NULL) {
    hs_value_t *e = hs_value_new_map(a, 8);
    NEED(e != NULL);
    NEED(hs_map_add_str(a, e, "type", "start") == HS_OK);
    NEED(hs_map_add_str(a, e, "session", sid) == HS_OK);
    NEED(hs_map_add_str(a, e, "process", c->p->name) == HS_OK);
    NEED(hs_map_add_str(a, e, "version", c->p->version) == HS_OK);
    NEED(hs_map_add_int(a, e, "seed", (int64_t)seed) == HS_OK);
    NEED(hs_map_add_int(a, e, "at", at) == HS_OK);
    hs_value_t *cu = customer != NULL ? hs__value_copy(a, customer) : hs_value_new_map(a, 0);
    hs_value_t *ct = contractor != NULL ? hs__value_copy(a, contractor) : hs_value_new_map(a, 0);
    NEED(cu != NULL && ct != NULL);
    NEED(hs_map_add(a, e, "customer", cu) != NULL && hs_map_add(a, e, "contractor", ct) != NULL);
    NEED(hs_array_push(a, s->events, e) != NULL);
  } else {
    s->replaying = true;
    s->replay = c->replay;
    s->replay_pos = 1;
  }
  lua_pushvalue(L, ud);
  s->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  c->s = s;
  resume(L, c, 1);
  if (c->replay != NULL) {
    /* A replay produces nothing to persist: everything it did is already recorded. */
    s->events->as.arr.len = 0;
  }
  return 0;
}

static void result_init(hs_step_result_t *res) {
  memset(res, 0, sizeof *res);
}

/* Common ending of a call: detach the per-call pointers, map a failure. */
static int finish_call(hs_session_t *s, call_ctx_t *c, int rc) {
  if (s != NULL) {
    s->arena = NULL;
    s->events = NULL;
    s->replay = NULL;
    s->replaying = false;
    c->res->outcome = s->outcome;
    s->outcome = NULL;
  }
  if (rc == HS_OK) {
    rc = c->rc;
  }
  return rc;
}

static int begin(hs_process_t *p, const hs_session_start_t *start, const hs_value_t *replay,
                 hs_arena_t *a, hs_session_t **out, hs_step_result_t *res, hs_err_t *err) {
  result_init(res);
  if (start == NULL && replay == NULL) {
    return hs_err_set(err, HS_EINVAL, "a session needs a start or events to replay");
  }
  call_ctx_t c = {.p = p, .start = start, .replay = replay, .a = a, .res = res, .err = err};
  int rc = hs__protect(p->vm, start_protected, &c, err);
  p->vm->metering = false;
  p->vm->current = NULL;
  rc = finish_call(c.s, &c, rc);
  if (c.s != NULL && c.s->ref != LUA_NOREF) {
    p->refs++;
    if (rc != HS_OK) {
      hs_session_free(c.s);
      c.s = NULL;
    }
  }
  if (rc != HS_OK) {
    memset(res, 0, sizeof *res);
    return rc;
  }
  if (res->errors == NULL) {
    res->errors = hs_value_new_map(a, 0);
  }
  *out = c.s;
  return HS_OK;
}

int hs_session_start(hs_process_t *p, const hs_session_start_t *start, hs_arena_t *a,
                     hs_session_t **out, hs_step_result_t *res, hs_err_t *err) {
  return begin(p, start, NULL, a, out, res, err);
}

int hs_session_replay(hs_process_t *p, const hs_value_t *events, hs_arena_t *a, hs_session_t **out,
                      hs_step_result_t *res, hs_err_t *err) {
  if (events == NULL) {
    return hs_err_set(err, HS_EINVAL, "no events to replay");
  }
  return begin(p, NULL, events, a, out, res, err);
}

/* What the compliance record of an attempt at the step `spec` keeps besides the data: the
 * document each ack field was about ({field = {id, hash, version?}}, or NULL when the step has
 * no ack field) and the names of its `pii` fields (an array, or NULL when there are none). */
static void step_record_info(lua_State *L, hs_session_t *s, int spec, hs_arena_t *a,
                             hs_value_t **docs_out, hs_value_t **pii_out) {
  hs_value_t *docs = NULL;
  hs_value_t *pii = NULL;
  int top = lua_gettop(L);
  push_content(L, s);
  int content = lua_gettop(L);
  lua_getfield(L, spec, "fields");
  int fields = lua_gettop(L);
  for (lua_Integer i = 1, n = (lua_Integer)lua_rawlen(L, fields); i <= n; i++) {
    lua_settop(L, fields);
    lua_rawgeti(L, fields, i);
    int f = lua_gettop(L);
    lua_getfield(L, f, "name");
    const char *name = lua_tostring(L, -1);
    if (name == NULL) {
      continue;
    }
    if (lua_getfield(L, f, "pii") == LUA_TBOOLEAN && lua_toboolean(L, -1)) {
      if (pii == NULL) {
        pii = hs_value_new_array(a, 1);
        NEED(pii != NULL);
      }
      hs_value_t *v = hs_value_new_cstr(a, name);
      NEED(v != NULL && hs_array_push(a, pii, v) != NULL);
    }
    if (!is_ack(L, f)) {
      continue;
    }
    if (docs == NULL) {
      docs = hs_value_new_map(a, 1);
      NEED(docs != NULL);
    }
    lua_getfield(L, f, "document");
    hs_value_t *doc = hs_value_new_map(a, 3);
    NEED(doc != NULL && hs_map_add_str(a, doc, "id", lua_tostring(L, -1)) == HS_OK);
    lua_getfield(L, content, lua_tostring(L, -1));
    char hash[7 + 64 + 1];
    content_hash(L, lua_gettop(L), hash);
    NEED(hs_map_add_str(a, doc, "hash", hash) == HS_OK);
    if (lua_getfield(L, -1, "version") == LUA_TSTRING) {
      NEED(hs_map_add_str(a, doc, "version", lua_tostring(L, -1)) == HS_OK);
    }
    NEED(hs_map_add(a, docs, name, doc) != NULL);
  }
  lua_settop(L, top);
  *docs_out = docs;
  *pii_out = pii;
}

static int complete_protected(lua_State *L) {
  call_ctx_t *c = lua_touserdata(L, 1);
  hs_session_t *s = c->s;
  hs_vm_t *vm = s->vm;
  hs_arena_t *a = c->a;
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
  int ud = lua_gettop(L);
  lua_getiuservalue(L, ud, 2);
  int spec = lua_gettop(L);
  if (s->step_has_record_info) {
    step_record_info(L, s, spec, a, &c->res->documents, &c->res->pii);
  } else {
    c->res->documents = NULL;
    c->res->pii = NULL;
  }
  hs_value_t *errors = hs_value_new_map(a, 2);
  NEED(errors != NULL);
  c->res->errors = errors;
  NEED(hs__validate_fields(L, spec, c->data, a, errors) == HS_OK);
  int data = lua_gettop(L);
  if (errors->as.map.len == 0 && s->step_has_validate &&
      lua_getfield(L, spec, "validate") == LUA_TFUNCTION) {
    lua_pushvalue(L, data);
    lua_pushvalue(L, ud);
    vm->current = s;
    vm->in_validate = true;
    hs__meter_begin(vm);
    int st = lua_pcall(L, 2, 1, 0);
    vm->in_validate = false;
    vm->current = NULL;
    if (st != LUA_OK) {
      c->rc = hs__script_error(vm, L, st, "The step's validate function", c->err);
      hs__meter_end(vm);
      return 0;
    }
    hs__meter_end(vm);
    int r = lua_gettop(L);
    if (lua_type(L, r) == LUA_TSTRING) {
      NEED(hs_map_add_str(a, errors, "", lua_tostring(L, r)) == HS_OK);
    } else if (lua_type(L, r) == LUA_TTABLE) {
      lua_pushnil(L);
      while (lua_next(L, r) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
          c->rc = hs_err_set(c->err, HS_ESCRIPT,
                             "%s: the validate function of step seq %" PRIu32
                             " must return nil, a message, or { field = \"message\" }",
                             s->proc->chunkname, s->seq);
          return 0;
        }
        const char *k = lua_tostring(L, -2);
        if (hs_map_get(errors, k) == NULL) {
          NEED(hs_map_add_str(a, errors, k, lua_tostring(L, -1)) == HS_OK);
        }
        lua_pop(L, 1);
      }
    } else if (!lua_isnil(L, r)) {
      c->rc = hs_err_set(c->err, HS_ESCRIPT,
                         "%s: the validate function of step seq %" PRIu32
                         " must return nil, a message, or { field = \"message\" }, not a %s",
                         s->proc->chunkname, s->seq, luaL_typename(L, r));
      return 0;
    }
    /* validate may have changed the table it was given; the script gets a fresh one, the
     * same a replay will build. */
    lua_settop(L, spec);
    if (errors->as.map.len == 0) {
      hs_value_t *scratch = hs_value_new_map(a, 0);
      NEED(scratch != NULL);
      NEED(hs__validate_fields(L, spec, c->data, a, scratch) == HS_OK);
    }
  }
  if (errors->as.map.len > 0) {
    c->res->status = HS_STEP_REJECTED;
    c->res->seq = s->seq;
    c->res->step = build_step(L, s, spec, a);
    return 0;
  }
  lua_settop(L, spec + 1); /* the validated data on top */
  /* The completion event: exactly what a replay needs to rebuild this step's answer. */
  hs_value_t *e = new_event(L, s, "complete");
  NEED(hs_map_add_str(a, e, "step", s->step_id) == HS_OK);
  hs_value_t *d = c->data != NULL && c->data->type == HS_V_MAP ? hs__value_copy(a, c->data)
                                                               : hs_value_new_map(a, 0);
  NEED(d != NULL && hs_map_add(a, e, "data", d) != NULL);
  NEED(hs_map_add_int(a, e, "at", c->at_ms) == HS_OK);
  if (c->device_ms != 0) {
    NEED(hs_map_add_int(a, e, "device_at", c->device_ms) == HS_OK);
  }
  NEED(hs_map_add_int(a, e, "rng", (int64_t)s->rng) == HS_OK);
  /* Which document (and which version of it) each acknowledgment was about. */
  hs_value_t *docs = c->res->documents;
  if (docs != NULL) {
    NEED(hs_map_add(a, e, "documents", docs) != NULL);
  }
  c->res->customer_rating = s->step_for_customer ? customer_rating(L, spec, c->data) : 0;
  push_event(L, s, e);
  s->now_ms = c->at_ms;
  lua_settop(L, spec + 1);
  if (!lua_checkstack(s->co, 2)) {
    return luaL_error(L, "out of memory resuming a session");
  }
  lua_xmove(L, s->co, 1);
  resume(L, c, 1);
  return 0;
}

int hs_session_complete(hs_session_t *s, uint32_t seq, const hs_value_t *data, int64_t at_ms,
                        int64_t device_ms, hs_arena_t *a, hs_step_result_t *res, hs_err_t *err) {
  result_init(res);
  if (s->state != HS_SESSION_WAITING) {
    return hs_err_set(err, HS_ECONFLICT, "the session has %s; no step is waiting",
                      s->state == HS_SESSION_ENDED ? "ended" : "failed");
  }
  if (seq != s->seq) {
    return hs_err_set(err, HS_ECONFLICT, "step %" PRIu32 " is not the current step (%" PRIu32 ")",
                      seq, s->seq);
  }
  hs_value_t *events = hs_value_new_array(a, 4);
  if (events == NULL) {
    return hs_err_set(err, HS_ENOMEM, "out of memory");
  }
  s->arena = a;
  s->events = events;
  res->events = events;
  call_ctx_t c = {.s = s,
                  .p = s->proc,
                  .seq = seq,
                  .data = data,
                  .at_ms = at_ms,
                  .device_ms = device_ms,
                  .a = a,
                  .res = res,
                  .err = err};
  int rc = hs__protect(s->vm, complete_protected, &c, err);
  s->vm->metering = false;
  s->vm->current = NULL;
  s->vm->in_validate = false;
  rc = finish_call(s, &c, rc);
  if (rc != HS_OK) {
    hs_step_status_t st = res->status;
    memset(res, 0, sizeof *res);
    res->status = st;
    return rc;
  }
  if (res->status == HS_STEP_REJECTED) {
    events->as.arr.len = 0;
  }
  return HS_OK;
}

typedef struct step_ctx {
  hs_session_t *s;
  hs_arena_t *a;
  hs_value_t *out;
} step_ctx_t;

static int step_protected(lua_State *L) {
  step_ctx_t *c = lua_touserdata(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->s->ref);
  lua_getiuservalue(L, -1, 2);
  c->out = build_step(L, c->s, -1, c->a);
  return 0;
}

int hs_session_step(hs_session_t *s, hs_arena_t *a, hs_value_t **out, hs_err_t *err) {
  if (s->state != HS_SESSION_WAITING) {
    return hs_err_set(err, HS_ECONFLICT, "the session is not at a step");
  }
  step_ctx_t c = {.s = s, .a = a};
  int rc = hs__protect(s->vm, step_protected, &c, err);
  if (rc == HS_OK) {
    *out = c.out;
  }
  return rc;
}

typedef struct info_ctx {
  hs_session_t *s;
  hs_arena_t *a;
  hs_value_t *documents, *pii;
} info_ctx_t;

static int info_protected(lua_State *L) {
  info_ctx_t *c = lua_touserdata(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->s->ref);
  lua_getiuservalue(L, -1, 2);
  step_record_info(L, c->s, lua_gettop(L), c->a, &c->documents, &c->pii);
  return 0;
}

int hs_session_record_info(hs_session_t *s, hs_arena_t *a, hs_value_t **documents, hs_value_t **pii,
                           hs_err_t *err) {
  if (s->state != HS_SESSION_WAITING) {
    return hs_err_set(err, HS_ECONFLICT, "the session is not at a step");
  }
  info_ctx_t c = {.s = s, .a = a};
  int rc = hs__protect(s->vm, info_protected, &c, err);
  if (rc == HS_OK) {
    *documents = c.documents;
    *pii = c.pii;
  }
  return rc;
}

hs_session_state_t hs_session_status(const hs_session_t *s) {
  return s->state;
}

uint32_t hs_session_seq(const hs_session_t *s) {
  return s->seq;
}

const char *hs_session_step_id(const hs_session_t *s) {
  return s->state == HS_SESSION_WAITING ? s->step_id : NULL;
}

void hs_session_free(hs_session_t *s) {
  if (s == NULL || s->ref == LUA_NOREF) {
    return;
  }
  lua_State *L = s->vm->L;
  hs_process_t *p = s->proc;
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
  lua_pushnil(L);
  lua_setiuservalue(L, -2, 1);
  lua_pushnil(L);
  lua_setiuservalue(L, -2, 2);
  lua_pop(L, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, s->ref);
  s->ref = LUA_NOREF;
  s->co = NULL;
  s->state = HS_SESSION_FAILED;
  hs__process_unref(p);
}
