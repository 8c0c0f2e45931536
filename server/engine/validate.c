/* Fields: the `field.*{…}` constructors a brand author calls, and the checks every completion
 * goes through in C before a step's own `validate` function sees it (SPEC §3).
 *
 * Messages are written for the contractor holding the phone, who was never trained for this
 * brand: they name the field by its label and say what to enter ("Roof age (years) must be at
 * most 120"), never the rule's name. */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "engine/internal.h"

/* A text field without max_length still stops here: a step is not a document store. */
enum { TEXT_MAX_DEFAULT = 10000 };
enum { FIELD_NAME_MAX = 64 };

typedef enum ftype {
  F_TEXT,
  F_INTEGER,
  F_NUMBER,
  F_BOOLEAN,
  F_CHOICE,
  F_MULTI,
  F_DATE,
  F_PHOTO,
  F_SIGNATURE,
  F_ACK,
  F_LOCATION,
  F_RATING,
  F_UNKNOWN,
} ftype_t;

/* The types' names, as field.<name>{...} makes them and a device is told. Same order as
 * ftype_t and sandbox.c's constructors. */
static const char *const TYPE_NAMES[] = {"text",      "integer", "number",   "boolean",
                                         "choice",    "multi",   "date",     "photo",
                                         "signature", "ack",     "location", "rating"};

/* Options each type takes besides the common name, label, hint, required, pii. */
static const char *const TYPE_OPTIONS[] = {
    "max_length pattern", "min max", "min max", "", "options", "options min max", "min max", "", "",
    "document",           "max",     ""};

enum opt {
  O_NAME = 1 << 0,
  O_LABEL = 1 << 1,
  O_HINT = 1 << 2,
  O_REQUIRED = 1 << 3,
  O_PII = 1 << 4,
  O_MAX_LENGTH = 1 << 5,
  O_PATTERN = 1 << 6,
  O_MIN = 1 << 7,
  O_MAX = 1 << 8,
  O_OPTIONS = 1 << 9,
  O_DOCUMENT = 1 << 10,
};

/* The options each type takes, as bits of enum opt (name, label, hint, required and pii are
 * common to all). Same order as TYPE_NAMES. */
static const unsigned TYPE_OPTION_BITS[] = {O_MAX_LENGTH | O_PATTERN,
                                            O_MIN | O_MAX,
                                            O_MIN | O_MAX,
                                            0,
                                            O_OPTIONS,
                                            O_OPTIONS | O_MIN | O_MAX,
                                            O_MIN | O_MAX,
                                            0,
                                            0,
                                            O_DOCUMENT,
                                            O_MAX,
                                            0};

/* Which option a key names, or 0. Called for every key of every field a step declares, so it
 * dispatches on the first letter instead of comparing with every name. */
static unsigned option_of(const char *k) {
  switch (k[0]) {
    case 'n':
      return strcmp(k, "name") == 0 ? O_NAME : 0;
    case 'l':
      return strcmp(k, "label") == 0 ? O_LABEL : 0;
    case 'h':
      return strcmp(k, "hint") == 0 ? O_HINT : 0;
    case 'r':
      return strcmp(k, "required") == 0 ? O_REQUIRED : 0;
    case 'p':
      return strcmp(k, "pii") == 0 ? O_PII : strcmp(k, "pattern") == 0 ? O_PATTERN : 0;
    case 'm':
      return strcmp(k, "min") == 0          ? O_MIN
             : strcmp(k, "max") == 0        ? O_MAX
             : strcmp(k, "max_length") == 0 ? O_MAX_LENGTH
                                            : 0;
    case 'o':
      return strcmp(k, "options") == 0 ? O_OPTIONS : 0;
    case 'd':
      return strcmp(k, "document") == 0 ? O_DOCUMENT : 0;
    default:
      return 0;
  }
}

static bool valid_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > FIELD_NAME_MAX || !(islower((unsigned char)s[0]) || s[0] == '_')) {
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '_')) {
      return false;
    }
  }
  return true;
}

/* YYYY-MM-DD, a real calendar day. Returns days since 0000-03-01 (for comparisons) or -1. */
static long parse_date(const char *s, size_t len) {
  if (len != 10 || s[4] != '-' || s[7] != '-') {
    return -1;
  }
  for (int i = 0; i < 10; i++) {
    if (i != 4 && i != 7 && !isdigit((unsigned char)s[i])) {
      return -1;
    }
  }
  int y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
  int m = (s[5] - '0') * 10 + (s[6] - '0');
  int d = (s[8] - '0') * 10 + (s[9] - '0');
  static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (y < 1 || m < 1 || m > 12 || d < 1 || d > mdays[m - 1] + (m == 2 && leap)) {
    return -1;
  }
  /* Days from civil (Howard Hinnant's algorithm). */
  y -= m <= 2;
  long era = y / 400;
  long yoe = y - era * 400;
  long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe;
}

static bool is_evidence(const char *s, size_t len) {
  if (len != 7 + 64 || memcmp(s, "sha256:", 7) != 0) {
    return false;
  }
  for (size_t i = 7; i < len; i++) {
    if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f')) {
      return false;
    }
  }
  return true;
}

/* ---- the constructors ---- */

static void need_type(lua_State *L, const char *fn, const char *key, int want, const char *what) {
  if (lua_type(L, -1) != want) {
    luaL_error(L, "%s: %s must be %s, not a %s", fn, key, what, luaL_typename(L, -1));
  }
}

int hs__field_new(lua_State *L) {
  const char *tname = lua_tostring(L, lua_upvalueindex(1));
  ftype_t t = (ftype_t)lua_tointeger(L, lua_upvalueindex(2));
  char fn[32] = "field.";
  memcpy(fn + 6, tname, strlen(tname) + 1);
  if (lua_type(L, 1) != LUA_TTABLE) {
    return luaL_error(L, "%s takes a table: %s { name = \"...\", ... }", fn, fn);
  }
  lua_settop(L, 1);
  /* The author's table itself becomes the field spec (marked by its metatable): building a
   * copy for every field of every step would cost an allocation each time a step runs. */
  if (lua_getmetatable(L, 1)) {
    return luaL_error(L,
                      "%s: this table is already a field or has a metatable; call %s on a "
                      "new table { name = ... }",
                      fn, fn);
  }
  hs_vm_t *vm = hs__vm_of(L);
  if (vm->current != NULL && vm->current->replaying) {
    /* A replay re-runs steps the same script already ran live, where these options were
     * checked: only the mark is needed. */
    lua_pushvalue(L, lua_upvalueindex(3));
    lua_setmetatable(L, 1);
    return 1;
  }
  bool has_min = false, has_max = false;
  lua_Number min = 0, max = 0;
  lua_pushnil(L);
  while (lua_next(L, 1) != 0) {
    if (lua_type(L, -2) != LUA_TSTRING) {
      return luaL_error(L, "%s: options are named (name = ..., label = ...)", fn);
    }
    const char *key = lua_tostring(L, -2);
    unsigned opt = option_of(key);
    const unsigned common = O_NAME | O_LABEL | O_HINT | O_REQUIRED | O_PII;
    if (opt == 0 || (opt & (common | TYPE_OPTION_BITS[t])) == 0) {
      return luaL_error(L, "%s has no option '%s' (it takes name, label, hint, required, pii%s%s)",
                        fn, key, TYPE_OPTIONS[t][0] ? ", " : "", TYPE_OPTIONS[t]);
    }
    if (opt == O_NAME) {
      need_type(L, fn, key, LUA_TSTRING, "a string");
      if (!valid_name(lua_tostring(L, -1))) {
        return luaL_error(L,
                          "%s: name '%s' must be lower-case letters, digits and _ (starting "
                          "with a letter or _, at most 64)",
                          fn, lua_tostring(L, -1));
      }
    } else if (opt & (O_LABEL | O_HINT | O_PATTERN | O_DOCUMENT)) {
      need_type(L, fn, key, LUA_TSTRING, "a string");
    } else if (opt & (O_REQUIRED | O_PII)) {
      need_type(L, fn, key, LUA_TBOOLEAN, "true or false");
    } else if (opt == O_MAX_LENGTH) {
      if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) {
        return luaL_error(L, "%s: max_length must be a whole number of characters above 0", fn);
      }
    } else if (opt == O_OPTIONS) {
      need_type(L, fn, key, LUA_TTABLE, "a list of strings");
      lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
      if (n == 0) {
        return luaL_error(L, "%s: options must list at least one choice", fn);
      }
      int opts = lua_gettop(L);
      for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, opts, i) != LUA_TSTRING) {
          return luaL_error(L, "%s: options[%d] must be a string", fn, (int)i);
        }
        for (lua_Integer j = 1; j < i; j++) {
          lua_rawgeti(L, opts, j);
          if (lua_rawequal(L, -1, -2)) {
            return luaL_error(L, "%s: option '%s' is listed twice", fn, lua_tostring(L, -2));
          }
          lua_pop(L, 1);
        }
        lua_pop(L, 1);
      }
    } else if (opt & (O_MIN | O_MAX)) {
      bool is_min = opt == O_MIN;
      lua_Number num = 0;
      if (t == F_DATE) {
        size_t len;
        const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
        if (s == NULL || parse_date(s, len) < 0) {
          return luaL_error(L, "%s: %s must be a date string like \"2024-05-31\"", fn, key);
        }
        num = (lua_Number)parse_date(s, len);
      } else {
        if (lua_type(L, -1) != LUA_TNUMBER) {
          return luaL_error(L, "%s: %s must be a number", fn, key);
        }
        num = lua_tonumber(L, -1);
        if ((t == F_INTEGER || t == F_MULTI) && !lua_isinteger(L, -1)) {
          return luaL_error(L, "%s: %s must be a whole number", fn, key);
        }
        if (t == F_LOCATION && num <= 0) {
          return luaL_error(L, "%s: max is the worst GPS accuracy accepted, in meters (above 0)",
                            fn);
        }
      }
      if (is_min) {
        has_min = true;
        min = num;
      } else {
        has_max = true;
        max = num;
      }
    }
    lua_pop(L, 1);
  }
  if (lua_getfield(L, 1, "name") != LUA_TSTRING) {
    return luaL_error(L, "%s needs a name: %s { name = \"...\" }", fn, fn);
  }
  lua_pop(L, 1);
  if (has_min && has_max && min > max) {
    return luaL_error(L, "%s: min is above max", fn);
  }
  if ((t == F_CHOICE || t == F_MULTI) && lua_getfield(L, 1, "options") != LUA_TTABLE) {
    return luaL_error(L, "%s needs options = { \"...\", ... }", fn);
  }
  if (t == F_ACK && lua_getfield(L, 1, "document") != LUA_TSTRING) {
    return luaL_error(L, "%s needs document = \"<content id of a document>\"", fn);
  }
  lua_settop(L, 1);
  lua_pushvalue(L, lua_upvalueindex(3));
  lua_setmetatable(L, 1);
  return 1;
}

int hs__field_type(lua_State *L, int idx) {
  if (!lua_getmetatable(L, idx)) {
    return -1;
  }
  int t = -1;
  if (lua_rawgeti(L, -1, 1) == LUA_TNUMBER && lua_isinteger(L, -1)) {
    lua_Integer n = lua_tointeger(L, -1);
    t = n >= 0 && n < F_UNKNOWN ? (int)n : -1;
  }
  lua_pop(L, 2);
  return t;
}

/* "Roof age (years)" from the name "roof_age_years" when the author gave no label. */
static const char *label_from_name(const char *name, char *buf, size_t len) {
  size_t i = 0;
  for (; name[i] != '\0' && i + 1 < len; i++) {
    char c = name[i] == '_' ? ' ' : name[i];
    buf[i] = i == 0 ? (char)toupper((unsigned char)c) : c;
  }
  buf[i] = '\0';
  return buf;
}

const char *hs__field_label(lua_State *L, int idx, char *buf, size_t len) {
  idx = lua_absindex(L, idx);
  if (lua_getfield(L, idx, "label") == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    n = n < len ? n : len - 1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    lua_pop(L, 1);
    return buf;
  }
  lua_pop(L, 1);
  lua_getfield(L, idx, "name");
  label_from_name(lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "field", buf, len);
  lua_pop(L, 1);
  return buf;
}

/* A field option as a value: a string, number, boolean or list of strings (what the field
 * constructors accept). Anything else (a script changed the field after making it) is left
 * out as nil. NULL on out of memory. */
static hs_value_t *option_value(lua_State *L, hs_arena_t *a) {
  switch (lua_type(L, -1)) {
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, -1, &n);
      return hs_value_new_str(a, s, n);
    }
    case LUA_TNUMBER:
      return lua_isinteger(L, -1) ? hs_value_new_int(a, (int64_t)lua_tointeger(L, -1))
                                  : hs_value_new_float(a, (double)lua_tonumber(L, -1));
    case LUA_TBOOLEAN:
      return hs_value_new_bool(a, lua_toboolean(L, -1));
    case LUA_TTABLE: {
      lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
      hs_value_t *arr = hs_value_new_array(a, (size_t)n);
      for (lua_Integer i = 1; arr != NULL && i <= n; i++) {
        size_t len = 0;
        const char *s = lua_rawgeti(L, -1, i) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : "";
        hs_value_t *item = hs_value_new_str(a, s, len);
        lua_pop(L, 1);
        if (item == NULL || hs_array_push(a, arr, item) == NULL) {
          return NULL;
        }
      }
      return arr;
    }
    default:
      return hs_value_new(a, HS_V_NIL);
  }
}

/* The options a device is told about, in the order it is told (after name, type, label and
 * required). */
static const struct {
  unsigned opt;
  const char *key;
} DESCRIBED[] = {{O_HINT, "hint"},
                 {O_PII, "pii"},
                 {O_MIN, "min"},
                 {O_MAX, "max"},
                 {O_MAX_LENGTH, "max_length"},
                 {O_PATTERN, "pattern"},
                 {O_OPTIONS, "options"},
                 {O_DOCUMENT, "document"}};
enum { N_DESCRIBED = sizeof DESCRIBED / sizeof DESCRIBED[0] };

hs_value_t *hs__field_describe(lua_State *L, int idx, hs_arena_t *a) {
  idx = lua_absindex(L, idx);
  int t = hs__field_type(L, idx);
  if (t < 0) {
    return NULL;
  }
  /* One walk over the keys the field has, instead of a lookup for every option it might
   * have: a step is described on every completion. A field table has no __index, so this
   * sees what lookups would. */
  const char *name = NULL, *label = NULL;
  size_t label_len = 0;
  bool required = false;
  hs_value_t *opts[N_DESCRIBED] = {0};
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    unsigned o = lua_type(L, -2) == LUA_TSTRING ? option_of(lua_tostring(L, -2)) : 0;
    if (o == O_NAME && lua_type(L, -1) == LUA_TSTRING) {
      name = lua_tostring(L, -1); /* anchored by the field table */
    } else if (o == O_LABEL && lua_type(L, -1) == LUA_TSTRING) {
      label = lua_tolstring(L, -1, &label_len);
    } else if (o == O_REQUIRED) {
      required = lua_toboolean(L, -1);
    } else if (o != 0) {
      for (size_t k = 0; k < N_DESCRIBED; k++) {
        if (DESCRIBED[k].opt == o) {
          opts[k] = option_value(L, a);
          if (opts[k] == NULL) {
            lua_pop(L, 2);
            return NULL;
          }
        }
      }
    }
    lua_pop(L, 1);
  }
  if (name == NULL) {
    return NULL;
  }
  hs_value_t *m = hs_value_new_map(a, 4 + N_DESCRIBED);
  char buf[128];
  if (label == NULL) {
    label = label_from_name(name, buf, sizeof buf);
    label_len = strlen(label);
  } else if (label_len >= sizeof buf) {
    label_len = sizeof buf - 1; /* as hs__field_label cuts it */
  }
  hs_value_t *label_v = hs_value_new_str(a, label, label_len);
  if (m == NULL || label_v == NULL || hs_map_add_str(a, m, "name", name) != HS_OK ||
      hs_map_add_str(a, m, "type", TYPE_NAMES[t]) != HS_OK ||
      hs_map_add(a, m, "label", label_v) == NULL ||
      hs_map_add_bool(a, m, "required", required) != HS_OK) {
    return NULL;
  }
  for (size_t k = 0; k < N_DESCRIBED; k++) {
    if (opts[k] != NULL && hs_map_add(a, m, DESCRIBED[k].key, opts[k]) == NULL) {
      return NULL;
    }
  }
  return m;
}

/* ---- checking a completion ---- */

typedef struct vctx {
  lua_State *L;
  hs_arena_t *a;
  hs_value_t *errors;
  int oom;
} vctx_t;

static void fail(vctx_t *c, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(vctx_t *c, const char *field, const char *fmt, ...) {
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (hs_map_get(c->errors, field) != NULL) {
    return;
  }
  if (hs_map_add_str(c->a, c->errors, field, msg) != HS_OK) {
    c->oom = 1;
  }
}

static bool opt_number(lua_State *L, int spec, const char *key, lua_Number *out) {
  bool ok = lua_getfield(L, spec, key) == LUA_TNUMBER;
  if (ok) {
    *out = lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
  return ok;
}

static void fmt_num(char *buf, size_t len, lua_Number n) {
  if (n == floor(n) && fabs(n) < 1e15) {
    snprintf(buf, len, "%.0f", n);
  } else {
    snprintf(buf, len, "%g", n);
  }
}

/* The options list as "a, b, c" for messages. */
static void options_text(lua_State *L, int spec, char *buf, size_t len) {
  buf[0] = '\0';
  lua_getfield(L, spec, "options");
  size_t used = 0;
  for (lua_Integer i = 1, n = (lua_Integer)lua_rawlen(L, -1); i <= n && used < len; i++) {
    lua_rawgeti(L, -1, i);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
    int w = snprintf(buf + used, len - used, "%s%s", i > 1 ? ", " : "", s);
    used += w > 0 ? (size_t)w : 0;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

static bool in_options(lua_State *L, int spec, const char *s, size_t slen) {
  bool found = false;
  lua_getfield(L, spec, "options");
  for (lua_Integer i = 1, n = (lua_Integer)lua_rawlen(L, -1); i <= n && !found; i++) {
    lua_rawgeti(L, -1, i);
    size_t len;
    const char *o = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    found = o != NULL && len == slen && memcmp(o, s, len) == 0;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return found;
}

static size_t utf8_chars(const char *s, size_t len) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    n += ((unsigned char)s[i] & 0xc0) != 0x80;
  }
  return n;
}

/* Whole-value match of a Lua pattern, through the guarded string.find so it is charged to
 * the budget like any script's match. */
static bool pattern_matches(lua_State *L, const char *s, size_t len, const char *pat) {
  size_t plen = strlen(pat);
  bool head = plen > 0 && pat[0] == '^';
  bool tail = plen > 0 && pat[plen - 1] == '$' && (plen < 2 || pat[plen - 2] != '%');
  lua_getfield(L, LUA_REGISTRYINDEX, HS_REG_STRINGLIB);
  lua_getfield(L, -1, "find");
  lua_pushlstring(L, s, len);
  lua_pushfstring(L, "%s%s%s", head ? "" : "^", pat, tail ? "" : "$");
  lua_call(L, 2, 1);
  bool ok = !lua_isnil(L, -1);
  lua_pop(L, 2);
  return ok;
}

/* Checks one present value; pushes the Lua value the script will get, or nothing on failure
 * (returns false). */
static bool check_value(vctx_t *c, int spec, ftype_t t, const char *name, char *labelbuf,
                        const hs_value_t *v) {
  lua_State *L = c->L;
/* The label is only needed for a message: work it out on the first failure. */
#define label (labelbuf[0] != '\0' ? labelbuf : hs__field_label(L, spec, labelbuf, 128))
  lua_Number min = 0, max = 0;
  bool has_min = opt_number(L, spec, "min", &min);
  bool has_max = opt_number(L, spec, "max", &max);
  char a[64], b[64];
  switch (t) {
    case F_TEXT: {
      if (v->type != HS_V_STR) {
        fail(c, name, "%s must be text", label);
        return false;
      }
      if (hs_utf8_check((const uint8_t *)v->as.str.ptr, v->as.str.len) != v->as.str.len) {
        fail(c, name, "%s contains characters that are not valid text", label);
        return false;
      }
      lua_Number maxlen = TEXT_MAX_DEFAULT;
      opt_number(L, spec, "max_length", &maxlen);
      size_t chars = utf8_chars(v->as.str.ptr, v->as.str.len);
      if ((lua_Number)chars > maxlen) {
        fmt_num(a, sizeof a, maxlen);
        fail(c, name, "%s must be at most %s characters long (it has %zu)", label, a, chars);
        return false;
      }
      if (lua_getfield(L, spec, "pattern") == LUA_TSTRING) {
        const char *pat = lua_tostring(L, -1);
        if (!pattern_matches(L, v->as.str.ptr, v->as.str.len, pat)) {
          lua_pop(L, 1);
          char hint[200] = "";
          if (lua_getfield(L, spec, "hint") == LUA_TSTRING) {
            snprintf(hint, sizeof hint, " (%s)", lua_tostring(L, -1));
          }
          lua_pop(L, 1);
          fail(c, name, "%s is not in the expected format%s", label, hint);
          return false;
        }
      }
      lua_pop(L, 1);
      lua_pushlstring(L, v->as.str.ptr, v->as.str.len);
      return true;
    }
    case F_INTEGER:
    case F_RATING: {
      int64_t i;
      if (v->type == HS_V_INT) {
        i = v->as.i;
      } else if (v->type == HS_V_FLOAT && v->as.f == floor(v->as.f) && fabs(v->as.f) < 9e15) {
        i = (int64_t)v->as.f;
      } else {
        if (t == F_RATING) {
          fail(c, name, "%s must be a whole number from 1 to 5", label);
        } else {
          fail(c, name, "%s must be a whole number", label);
        }
        return false;
      }
      if (t == F_RATING) {
        if (i < 1 || i > 5) {
          fail(c, name, "%s must be a whole number from 1 to 5", label);
          return false;
        }
      } else if (has_min && (lua_Number)i < min) {
        fmt_num(a, sizeof a, min);
        fail(c, name, "%s must be at least %s", label, a);
        return false;
      } else if (has_max && (lua_Number)i > max) {
        fmt_num(a, sizeof a, max);
        fail(c, name, "%s must be at most %s", label, a);
        return false;
      }
      lua_pushinteger(L, (lua_Integer)i);
      return true;
    }
    case F_NUMBER: {
      double d;
      if (v->type == HS_V_INT) {
        d = (double)v->as.i;
      } else if (v->type == HS_V_FLOAT && isfinite(v->as.f)) {
        d = v->as.f;
      } else {
        fail(c, name, "%s must be a number", label);
        return false;
      }
      if (has_min && d < min) {
        fmt_num(a, sizeof a, min);
        fail(c, name, "%s must be at least %s", label, a);
        return false;
      }
      if (has_max && d > max) {
        fmt_num(a, sizeof a, max);
        fail(c, name, "%s must be at most %s", label, a);
        return false;
      }
      if (v->type == HS_V_INT) {
        lua_pushinteger(L, (lua_Integer)v->as.i);
      } else {
        lua_pushnumber(L, d);
      }
      return true;
    }
    case F_BOOLEAN:
      if (v->type != HS_V_BOOL) {
        fail(c, name, "%s must be answered yes or no", label);
        return false;
      }
      lua_pushboolean(L, v->as.b);
      return true;
    case F_ACK: {
      bool required = lua_getfield(L, spec, "required") == LUA_TBOOLEAN && lua_toboolean(L, -1);
      lua_pop(L, 1);
      if (v->type != HS_V_BOOL || (required && !v->as.b)) {
        fail(c, name, "%s: the customer must acknowledge the document before you continue", label);
        return false;
      }
      lua_pushboolean(L, v->as.b);
      return true;
    }
    case F_CHOICE: {
      if (v->type != HS_V_STR || !in_options(L, spec, v->as.str.ptr, v->as.str.len)) {
        options_text(L, spec, b, sizeof b);
        fail(c, name, "%s must be one of: %s", label, b);
        return false;
      }
      lua_pushlstring(L, v->as.str.ptr, v->as.str.len);
      return true;
    }
    case F_MULTI: {
      if (v->type != HS_V_ARRAY) {
        options_text(L, spec, b, sizeof b);
        fail(c, name, "%s must be a list of choices from: %s", label, b);
        return false;
      }
      size_t n = v->as.arr.len;
      for (size_t i = 0; i < n; i++) {
        const hs_value_t *it = &v->as.arr.items[i];
        if (it->type != HS_V_STR || !in_options(L, spec, it->as.str.ptr, it->as.str.len)) {
          options_text(L, spec, b, sizeof b);
          fail(c, name, "%s: every choice must be one of: %s", label, b);
          return false;
        }
        for (size_t j = 0; j < i; j++) {
          if (hs_value_equal(it, &v->as.arr.items[j])) {
            fail(c, name, "%s lists '%s' twice", label, it->as.str.ptr);
            return false;
          }
        }
      }
      if (has_min && (lua_Number)n < min) {
        fmt_num(a, sizeof a, min);
        fail(c, name, "Choose at least %s for %s", a, label);
        return false;
      }
      if (has_max && (lua_Number)n > max) {
        fmt_num(a, sizeof a, max);
        fail(c, name, "Choose at most %s for %s", a, label);
        return false;
      }
      lua_createtable(L, (int)n, 0);
      for (size_t i = 0; i < n; i++) {
        lua_pushlstring(L, v->as.arr.items[i].as.str.ptr, v->as.arr.items[i].as.str.len);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
      }
      return true;
    }
    case F_DATE: {
      long day = v->type == HS_V_STR ? parse_date(v->as.str.ptr, v->as.str.len) : -1;
      if (day < 0) {
        fail(c, name, "%s must be a date written like 2024-05-31", label);
        return false;
      }
      /* Date bounds are kept as the author wrote them ("2024-01-01"). */
      static const char *const bounds[] = {"min", "max"};
      for (int i = 0; i < 2; i++) {
        size_t blen;
        const char *bound =
            lua_getfield(L, spec, bounds[i]) == LUA_TSTRING ? lua_tolstring(L, -1, &blen) : NULL;
        long bday = bound != NULL ? parse_date(bound, blen) : -1;
        if (bday >= 0 && (i == 0 ? day < bday : day > bday)) {
          fail(c, name, "%s must be on or %s %s", label, i == 0 ? "after" : "before", bound);
          lua_pop(L, 1);
          return false;
        }
        lua_pop(L, 1);
      }
      lua_pushlstring(L, v->as.str.ptr, v->as.str.len);
      return true;
    }
    case F_PHOTO:
    case F_SIGNATURE:
      if (v->type != HS_V_STR || !is_evidence(v->as.str.ptr, v->as.str.len)) {
        fail(c, name,
             t == F_PHOTO ? "%s must be a photo taken and uploaded from the app"
                          : "%s must be a signature captured in the app",
             label);
        return false;
      }
      lua_pushlstring(L, v->as.str.ptr, v->as.str.len);
      return true;
    case F_LOCATION: {
      const hs_value_t *lat = hs_map_get(v, "lat"), *lon = hs_map_get(v, "lon");
      const hs_value_t *acc = hs_map_get(v, "accuracy");
      double dlat = 0, dlon = 0, dacc = -1;
      bool ok = v->type == HS_V_MAP && lat != NULL && lon != NULL;
      const hs_value_t *parts[3] = {lat, lon, acc};
      double *outs[3] = {&dlat, &dlon, &dacc};
      for (int i = 0; ok && i < 3; i++) {
        if (parts[i] == NULL) {
          continue;
        }
        if (parts[i]->type == HS_V_INT) {
          *outs[i] = (double)parts[i]->as.i;
        } else if (parts[i]->type == HS_V_FLOAT && isfinite(parts[i]->as.f)) {
          *outs[i] = parts[i]->as.f;
        } else {
          ok = false;
        }
      }
      for (size_t i = 0; ok && i < v->as.map.len; i++) {
        const char *k = v->as.map.items[i].key;
        ok = strcmp(k, "lat") == 0 || strcmp(k, "lon") == 0 || strcmp(k, "accuracy") == 0;
      }
      if (!ok) {
        fail(c, name, "%s must be a location from the phone's GPS (lat, lon, accuracy)", label);
        return false;
      }
      if (dlat < -90 || dlat > 90 || dlon < -180 || dlon > 180 || (acc != NULL && dacc < 0)) {
        fail(c, name, "%s is not a real place (latitude -90 to 90, longitude -180 to 180)", label);
        return false;
      }
      if (has_max && (acc == NULL || dacc > max)) {
        fmt_num(a, sizeof a, max);
        fail(c, name,
             "%s is not precise enough (it must be within %s m): wait for a better GPS fix, "
             "outdoors if you can",
             label, a);
        return false;
      }
      lua_createtable(L, 0, 3);
      lua_pushnumber(L, dlat);
      lua_setfield(L, -2, "lat");
      lua_pushnumber(L, dlon);
      lua_setfield(L, -2, "lon");
      if (acc != NULL) {
        lua_pushnumber(L, dacc);
        lua_setfield(L, -2, "accuracy");
      }
      return true;
    }
    case F_UNKNOWN:
      break;
  }
  fail(c, name, "%s has a type this server does not know", label);
  return false;
#undef label
}

int hs__validate_fields(lua_State *L, int spec_idx, const hs_value_t *data, hs_arena_t *a,
                        hs_value_t *errors) {
  spec_idx = lua_absindex(L, spec_idx);
  vctx_t c = {.L = L, .a = a, .errors = errors, .oom = 0};
  lua_createtable(L, 0, data != NULL && data->type == HS_V_MAP ? (int)data->as.map.len : 0);
  int out = lua_gettop(L);
  if (data != NULL && data->type != HS_V_MAP && data->type != HS_V_NIL) {
    fail(&c, "", "The answer must be a set of named fields, not a %s", hs_vtype_name(data->type));
    return c.oom ? HS_ENOMEM : HS_OK;
  }
  lua_getfield(L, spec_idx, "fields");
  int fields = lua_gettop(L);
  lua_Integer nfields = lua_type(L, fields) == LUA_TTABLE ? (lua_Integer)lua_rawlen(L, fields) : 0;
  size_t matched = 0;
  for (lua_Integer f = 1; f <= nfields; f++) {
    lua_rawgeti(L, fields, f);
    int spec = lua_gettop(L);
    lua_getfield(L, spec, "name");
    lua_getfield(L, spec, "required");
    const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    int tnum = hs__field_type(L, spec);
    ftype_t t = tnum >= 0 ? (ftype_t)tnum : F_UNKNOWN;
    bool required = lua_toboolean(L, -1);
    if (name == NULL) {
      lua_settop(L, spec - 1);
      continue;
    }
    char label[128] = "";
    const hs_value_t *v = data != NULL ? hs_map_get(data, name) : NULL;
    matched += v != NULL;
    bool empty = v == NULL || v->type == HS_V_NIL ||
                 (t != F_BOOLEAN && v->type == HS_V_STR && v->as.str.len == 0) ||
                 (t == F_MULTI && v->type == HS_V_ARRAY && v->as.arr.len == 0);
    if (empty) {
      if (required) {
        hs__field_label(L, spec, label, sizeof label);
        switch (t) {
          case F_BOOLEAN:
            fail(&c, name, "Please answer %s", label);
            break;
          case F_PHOTO:
            fail(&c, name, "Please take a photo for %s", label);
            break;
          case F_SIGNATURE:
            fail(&c, name, "Please have the customer sign: %s", label);
            break;
          case F_ACK:
            fail(&c, name, "%s: the customer must acknowledge the document before you continue",
                 label);
            break;
          case F_CHOICE:
          case F_MULTI:
            fail(&c, name, "Please choose %s", label);
            break;
          case F_LOCATION:
            fail(&c, name, "Please record the location: %s", label);
            break;
          default:
            fail(&c, name, "Please fill in %s", label);
            break;
        }
      }
    } else if (check_value(&c, spec, t, name, label, v)) {
      lua_setfield(L, out, name);
    }
    lua_settop(L, spec - 1);
  }
  /* A field the step does not have is refused, never stored. Counting the members that
   * matched a field finds out cheaply whether there is one at all. */
  size_t members = data != NULL && data->type == HS_V_MAP ? data->as.map.len : 0;
  for (size_t i = 0; matched < members && i < members; i++) {
    const char *key = data->as.map.items[i].key;
    bool known = false;
    for (lua_Integer f = 1; f <= nfields && !known; f++) {
      lua_rawgeti(L, fields, f);
      lua_getfield(L, -1, "name");
      known = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), key) == 0;
      lua_pop(L, 2);
    }
    if (!known) {
      fail(&c, key, "This step has no field named '%s'", key);
    }
  }
  lua_settop(L, out);
  return c.oom ? HS_ENOMEM : HS_OK;
}
