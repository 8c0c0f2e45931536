#include "codec/value.h"

#include <math.h>
#include <string.h>

#include "core/error.h"

const hs_codec_limits_t hs_codec_default_limits = {
    .max_bytes = 1024 * 1024,
    .max_depth = 16,
    .max_count = 4096,
    .max_items = 65536,
    .max_str_len = 256 * 1024,
};

hs_value_t *hs_value_new(hs_arena_t *a, hs_vtype_t type) {
  hs_value_t *v = hs_arena_calloc(a, 1, sizeof *v);
  if (v == NULL) {
    return NULL;
  }
  v->type = type;
  if (type == HS_V_STR || type == HS_V_BIN) {
    /* An empty string still points at a NUL so callers never see a NULL ptr. */
    v->as.str.ptr = "";
  }
  return v;
}

hs_value_t *hs_value_new_str(hs_arena_t *a, const char *s, size_t len) {
  hs_value_t *v = hs_value_new(a, HS_V_STR);
  if (v == NULL) {
    return NULL;
  }
  char *copy = hs_arena_strndup(a, s, len);
  if (copy == NULL) {
    return NULL;
  }
  v->as.str.ptr = copy;
  v->as.str.len = len;
  return v;
}

hs_value_t *hs_value_new_cstr(hs_arena_t *a, const char *s) {
  return hs_value_new_str(a, s, strlen(s));
}

hs_value_t *hs_value_new_bin(hs_arena_t *a, const void *p, size_t len) {
  hs_value_t *v = hs_value_new_str(a, len > 0 ? p : "", len);
  if (v != NULL) {
    v->type = HS_V_BIN;
  }
  return v;
}

hs_value_t *hs_value_new_int(hs_arena_t *a, int64_t i) {
  hs_value_t *v = hs_value_new(a, HS_V_INT);
  if (v != NULL) {
    v->as.i = i;
  }
  return v;
}

hs_value_t *hs_value_new_uint(hs_arena_t *a, uint64_t u) {
  if (u <= (uint64_t)INT64_MAX) {
    return hs_value_new_int(a, (int64_t)u);
  }
  hs_value_t *v = hs_value_new(a, HS_V_UINT);
  if (v != NULL) {
    v->as.u = u;
  }
  return v;
}

hs_value_t *hs_value_new_bool(hs_arena_t *a, bool b) {
  hs_value_t *v = hs_value_new(a, HS_V_BOOL);
  if (v != NULL) {
    v->as.b = b;
  }
  return v;
}

hs_value_t *hs_value_new_float(hs_arena_t *a, double f) {
  hs_value_t *v = hs_value_new(a, HS_V_FLOAT);
  if (v != NULL) {
    v->as.f = f;
  }
  return v;
}

hs_value_t *hs_value_new_map(hs_arena_t *a, size_t cap_hint) {
  hs_value_t *v = hs_value_new(a, HS_V_MAP);
  if (v == NULL) {
    return NULL;
  }
  if (cap_hint > 0) {
    if (cap_hint > SIZE_MAX / sizeof(hs_member_t)) {
      return NULL;
    }
    v->as.map.items = hs_arena_alloc(a, cap_hint * sizeof(hs_member_t));
    if (v->as.map.items == NULL) {
      return NULL;
    }
    v->as.map.cap = cap_hint;
  }
  return v;
}

hs_value_t *hs_value_new_array(hs_arena_t *a, size_t cap_hint) {
  hs_value_t *v = hs_value_new(a, HS_V_ARRAY);
  if (v == NULL) {
    return NULL;
  }
  if (cap_hint > 0) {
    if (cap_hint > SIZE_MAX / sizeof(hs_value_t)) {
      return NULL;
    }
    v->as.arr.items = hs_arena_alloc(a, cap_hint * sizeof(hs_value_t));
    if (v->as.arr.items == NULL) {
      return NULL;
    }
    v->as.arr.cap = cap_hint;
  }
  return v;
}

/* Grows an arena array to hold one more element. The old block stays in the arena until it is
 * freed: doubling keeps that waste below the size of the final array. */
static void *grow(hs_arena_t *a, void *items, size_t len, size_t *cap, size_t elem) {
  if (len < *cap) {
    return items;
  }
  size_t ncap = *cap == 0 ? 4 : *cap * 2;
  if (ncap > SIZE_MAX / elem) {
    return NULL;
  }
  void *n = hs_arena_alloc(a, ncap * elem);
  if (n == NULL) {
    return NULL;
  }
  if (len > 0) {
    memcpy(n, items, len * elem);
  }
  *cap = ncap;
  return n;
}

hs_value_t *hs_map_add(hs_arena_t *a, hs_value_t *map, const char *key, const hs_value_t *val) {
  if (map == NULL || map->type != HS_V_MAP) {
    return NULL;
  }
  size_t klen = strlen(key);
  char *k = hs_arena_strndup(a, key, klen);
  if (k == NULL) {
    return NULL;
  }
  hs_member_t *items =
      grow(a, map->as.map.items, map->as.map.len, &map->as.map.cap, sizeof(hs_member_t));
  if (items == NULL) {
    return NULL;
  }
  map->as.map.items = items;
  hs_member_t *m = &items[map->as.map.len++];
  m->key = k;
  m->key_len = klen;
  m->val = *val;
  return &m->val;
}

int hs_map_add_str(hs_arena_t *a, hs_value_t *map, const char *key, const char *s) {
  hs_value_t *v = hs_value_new_cstr(a, s);
  return v != NULL && hs_map_add(a, map, key, v) != NULL ? HS_OK : HS_ENOMEM;
}

int hs_map_add_int(hs_arena_t *a, hs_value_t *map, const char *key, int64_t i) {
  hs_value_t v = {.type = HS_V_INT, .as.i = i};
  return hs_map_add(a, map, key, &v) != NULL ? HS_OK : HS_ENOMEM;
}

int hs_map_add_bool(hs_arena_t *a, hs_value_t *map, const char *key, bool b) {
  hs_value_t v = {.type = HS_V_BOOL, .as.b = b};
  return hs_map_add(a, map, key, &v) != NULL ? HS_OK : HS_ENOMEM;
}

int hs_map_add_nil(hs_arena_t *a, hs_value_t *map, const char *key) {
  hs_value_t v = {.type = HS_V_NIL};
  return hs_map_add(a, map, key, &v) != NULL ? HS_OK : HS_ENOMEM;
}

int hs_map_add_float(hs_arena_t *a, hs_value_t *map, const char *key, double f) {
  hs_value_t v = {.type = HS_V_FLOAT, .as.f = f};
  return hs_map_add(a, map, key, &v) != NULL ? HS_OK : HS_ENOMEM;
}

hs_value_t *hs_map_add_map(hs_arena_t *a, hs_value_t *map, const char *key) {
  hs_value_t v = {.type = HS_V_MAP};
  return hs_map_add(a, map, key, &v);
}

hs_value_t *hs_map_add_array(hs_arena_t *a, hs_value_t *map, const char *key) {
  hs_value_t v = {.type = HS_V_ARRAY};
  return hs_map_add(a, map, key, &v);
}

hs_value_t *hs_array_push(hs_arena_t *a, hs_value_t *arr, const hs_value_t *val) {
  if (arr == NULL || arr->type != HS_V_ARRAY) {
    return NULL;
  }
  hs_value_t *items =
      grow(a, arr->as.arr.items, arr->as.arr.len, &arr->as.arr.cap, sizeof(hs_value_t));
  if (items == NULL) {
    return NULL;
  }
  arr->as.arr.items = items;
  hs_value_t *slot = &items[arr->as.arr.len++];
  *slot = *val;
  return slot;
}

const hs_value_t *hs_map_get(const hs_value_t *map, const char *key) {
  if (map == NULL || map->type != HS_V_MAP || key == NULL) {
    return NULL;
  }
  size_t klen = strlen(key);
  for (size_t i = 0; i < map->as.map.len; i++) {
    const hs_member_t *m = &map->as.map.items[i];
    if (m->key_len == klen && memcmp(m->key, key, klen) == 0) {
      return &m->val;
    }
  }
  return NULL;
}

static const hs_member_t *find_member(const hs_value_t *map, const char *key, size_t klen) {
  for (size_t i = 0; i < map->as.map.len; i++) {
    const hs_member_t *m = &map->as.map.items[i];
    if (m->key_len == klen && memcmp(m->key, key, klen) == 0) {
      return m;
    }
  }
  return NULL;
}

bool hs_value_equal(const hs_value_t *x, const hs_value_t *y) {
  if (x == y) {
    return true;
  }
  if (x == NULL || y == NULL || x->type != y->type) {
    return false;
  }
  switch (x->type) {
    case HS_V_NIL:
      return true;
    case HS_V_BOOL:
      return x->as.b == y->as.b;
    case HS_V_INT:
      return x->as.i == y->as.i;
    case HS_V_UINT:
      return x->as.u == y->as.u;
    case HS_V_FLOAT:
      return x->as.f == y->as.f || (isnan(x->as.f) && isnan(y->as.f));
    case HS_V_STR:
    case HS_V_BIN:
      return x->as.str.len == y->as.str.len &&
             (x->as.str.len == 0 || memcmp(x->as.str.ptr, y->as.str.ptr, x->as.str.len) == 0);
    case HS_V_ARRAY:
      if (x->as.arr.len != y->as.arr.len) {
        return false;
      }
      for (size_t i = 0; i < x->as.arr.len; i++) {
        if (!hs_value_equal(&x->as.arr.items[i], &y->as.arr.items[i])) {
          return false;
        }
      }
      return true;
    case HS_V_MAP:
      if (x->as.map.len != y->as.map.len) {
        return false;
      }
      for (size_t i = 0; i < x->as.map.len; i++) {
        const hs_member_t *mx = &x->as.map.items[i];
        /* Maps usually arrive in the same order: try the same position first so comparing two
         * copies of one message stays linear. Keys are unique, so equal lengths plus every key
         * of x found in y means the key sets are equal. */
        const hs_member_t *my = &y->as.map.items[i];
        if (my->key_len != mx->key_len || memcmp(my->key, mx->key, mx->key_len) != 0) {
          my = find_member(y, mx->key, mx->key_len);
        }
        if (my == NULL || !hs_value_equal(&mx->val, &my->val)) {
          return false;
        }
      }
      return true;
  }
  return false;
}

const char *hs_vtype_name(hs_vtype_t type) {
  switch (type) {
    case HS_V_NIL:
      return "nil";
    case HS_V_BOOL:
      return "boolean";
    case HS_V_INT:
      return "integer";
    case HS_V_UINT:
      return "integer";
    case HS_V_FLOAT:
      return "number";
    case HS_V_STR:
      return "string";
    case HS_V_BIN:
      return "binary";
    case HS_V_ARRAY:
      return "array";
    case HS_V_MAP:
      return "map";
  }
  return "unknown";
}
