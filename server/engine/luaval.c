/* Values crossing between the value model (codec/value.h) and Lua: request data going in,
 * steps and events coming out. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/str.h"
#include "engine/internal.h"

/* Deeper than any request body the codec accepts (16), so its values always fit. */
enum { MAX_DEPTH = 32 };

static void push_value(lua_State *L, const hs_value_t *v, int depth) {
  if (depth > MAX_DEPTH) {
    luaL_error(L, "a value is nested more than %d levels deep", MAX_DEPTH);
  }
  luaL_checkstack(L, 4, "value too deep");
  if (v == NULL) {
    lua_pushnil(L);
    return;
  }
  switch (v->type) {
    case HS_V_NIL:
      lua_pushnil(L);
      break;
    case HS_V_BOOL:
      lua_pushboolean(L, v->as.b);
      break;
    case HS_V_INT:
      lua_pushinteger(L, (lua_Integer)v->as.i);
      break;
    case HS_V_UINT:
      lua_pushnumber(L, (lua_Number)v->as.u);
      break;
    case HS_V_FLOAT:
      lua_pushnumber(L, v->as.f);
      break;
    case HS_V_STR:
    case HS_V_BIN:
      lua_pushlstring(L, v->as.str.ptr, v->as.str.len);
      break;
    case HS_V_ARRAY:
      lua_createtable(L, (int)v->as.arr.len, 0);
      for (size_t i = 0; i < v->as.arr.len; i++) {
        push_value(L, &v->as.arr.items[i], depth + 1);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
      }
      break;
    case HS_V_MAP:
      lua_createtable(L, 0, (int)v->as.map.len);
      for (size_t i = 0; i < v->as.map.len; i++) {
        lua_pushlstring(L, v->as.map.items[i].key, v->as.map.items[i].key_len);
        push_value(L, &v->as.map.items[i].val, depth + 1);
        lua_rawset(L, -3);
      }
      break;
  }
}

void hs__push_value(lua_State *L, const hs_value_t *v) {
  push_value(L, v, 0);
}

const char *hs__value_non_utf8(const hs_value_t *v, const char *name) {
  switch (v->type) {
    case HS_V_STR:
      return hs_utf8_check((const uint8_t *)v->as.str.ptr, v->as.str.len) == v->as.str.len ? NULL
                                                                                           : name;
    case HS_V_ARRAY:
      for (size_t i = 0; i < v->as.arr.len; i++) {
        const char *bad = hs__value_non_utf8(&v->as.arr.items[i], name);
        if (bad != NULL) {
          return bad;
        }
      }
      return NULL;
    case HS_V_MAP:
      for (size_t i = 0; i < v->as.map.len; i++) {
        const hs_member_t *m = &v->as.map.items[i];
        if (hs_utf8_check((const uint8_t *)m->key, m->key_len) != m->key_len) {
          return name; /* a name in it (a goal's, a content id) is not text */
        }
        const char *bad = hs__value_non_utf8(&m->val, m->key);
        if (bad != NULL) {
          return bad;
        }
      }
      return NULL;
    default:
      return NULL;
  }
}

/* A Lua table is an array when its keys are exactly 1..n (n may be 0 only for {} which we
 * call a map: an empty answer is a map of no fields). */
static bool is_array(lua_State *L, int idx, size_t *n_out) {
  size_t n = lua_rawlen(L, idx);
  if (n == 0) {
    return false;
  }
  size_t count = 0;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    lua_pop(L, 1);
    if (!lua_isinteger(L, -1)) {
      lua_pop(L, 1);
      return false;
    }
    lua_Integer k = lua_tointeger(L, -1);
    if (k < 1 || (size_t)k > n) {
      lua_pop(L, 1);
      return false;
    }
    count++;
  }
  *n_out = n;
  return count == n;
}

static hs_value_t *to_value(lua_State *L, int idx, hs_arena_t *a, char *path, size_t pathcap,
                            char *why, size_t whylen, int depth) {
  idx = lua_absindex(L, idx);
  if (depth > MAX_DEPTH) {
    snprintf(why, whylen,
             "a value refers to itself or is nested more than %d levels deep (at %.80s)", MAX_DEPTH,
             path);
    return NULL;
  }
  luaL_checkstack(L, 4, "value too deep");
  hs_value_t *v = NULL;
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      v = hs_value_new(a, HS_V_NIL);
      break;
    case LUA_TBOOLEAN:
      v = hs_value_new_bool(a, lua_toboolean(L, idx));
      break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        v = hs_value_new_int(a, (int64_t)lua_tointeger(L, idx));
      } else {
        v = hs_value_new_float(a, (double)lua_tonumber(L, idx));
      }
      break;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      v = hs_utf8_check((const uint8_t *)s, len) == len ? hs_value_new_str(a, s, len)
                                                        : hs_value_new_bin(a, s, len);
      break;
    }
    case LUA_TTABLE: {
      size_t n = 0;
      size_t plen = strlen(path);
      if (is_array(L, idx, &n)) {
        v = hs_value_new_array(a, n);
        for (size_t i = 1; v != NULL && i <= n; i++) {
          snprintf(path + plen, pathcap - plen, "[%zu]", i);
          lua_rawgeti(L, idx, (lua_Integer)i);
          hs_value_t *item = to_value(L, -1, a, path, pathcap, why, whylen, depth + 1);
          lua_pop(L, 1);
          if (item == NULL || hs_array_push(a, v, item) == NULL) {
            return NULL;
          }
        }
      } else {
        v = hs_value_new_map(a, 4);
        lua_pushnil(L);
        while (v != NULL && lua_next(L, idx) != 0) {
          if (lua_type(L, -2) != LUA_TSTRING) {
            path[plen] = '\0';
            snprintf(why, whylen, "%s has a key that is not a string (a %s)", path,
                     luaL_typename(L, -2));
            lua_pop(L, 2);
            return NULL;
          }
          const char *key = lua_tostring(L, -2);
          snprintf(path + plen, pathcap - plen, "%s%s", plen > 0 ? "." : "", key);
          hs_value_t *item = to_value(L, -1, a, path, pathcap, why, whylen, depth + 1);
          lua_pop(L, 1);
          if (item == NULL || hs_map_add(a, v, key, item) == NULL) {
            if (item != NULL) {
              snprintf(why, whylen, "out of memory");
            }
            lua_pop(L, 1);
            return NULL;
          }
        }
      }
      path[plen] = '\0';
      break;
    }
    default:
      snprintf(why, whylen, "%s is a %s, which cannot be stored or sent", path[0] ? path : "value",
               luaL_typename(L, idx));
      return NULL;
  }
  if (v == NULL && why[0] == '\0') {
    snprintf(why, whylen, "out of memory");
  }
  return v;
}

hs_value_t *hs__to_value(lua_State *L, int idx, hs_arena_t *a, const char *path, char *why,
                         size_t whylen) {
  char buf[256];
  hs_strlcpy(buf, path != NULL ? path : "", sizeof buf);
  why[0] = '\0';
  return to_value(L, idx, a, buf, sizeof buf, why, whylen, 0);
}

hs_value_t *hs__value_copy(hs_arena_t *a, const hs_value_t *v) {
  hs_value_t *c = NULL;
  switch (v->type) {
    case HS_V_STR:
      return hs_value_new_str(a, v->as.str.ptr, v->as.str.len);
    case HS_V_BIN:
      return hs_value_new_bin(a, v->as.str.ptr, v->as.str.len);
    case HS_V_ARRAY:
      c = hs_value_new_array(a, v->as.arr.len);
      for (size_t i = 0; c != NULL && i < v->as.arr.len; i++) {
        hs_value_t *item = hs__value_copy(a, &v->as.arr.items[i]);
        if (item == NULL || hs_array_push(a, c, item) == NULL) {
          return NULL;
        }
      }
      return c;
    case HS_V_MAP:
      c = hs_value_new_map(a, v->as.map.len);
      for (size_t i = 0; c != NULL && i < v->as.map.len; i++) {
        hs_value_t *item = hs__value_copy(a, &v->as.map.items[i].val);
        if (item == NULL || hs_map_add(a, c, v->as.map.items[i].key, item) == NULL) {
          return NULL;
        }
      }
      return c;
    default:
      c = hs_value_new(a, v->type);
      if (c != NULL) {
        *c = *v;
      }
      return c;
  }
}
