/* The value model: what every request body and response body is, whether it travelled as
 * msgpack or as JSON. See proto/README.md for the mapping to each wire format.
 *
 * Ownership: every hs_value_t, string and array below is allocated from one hs_arena_t and
 * freed with it. Nothing here is freed on its own. */
#ifndef HS_CODEC_VALUE_H
#define HS_CODEC_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"

typedef enum hs_vtype {
  HS_V_NIL = 0,
  HS_V_BOOL,
  HS_V_INT,   /* any integer that fits int64_t */
  HS_V_UINT,  /* only integers above INT64_MAX (msgpack uint64); never used for smaller ones */
  HS_V_FLOAT, /* IEEE 754 double (msgpack float32 widens to it) */
  HS_V_STR,   /* UTF-8 text */
  HS_V_BIN,   /* raw bytes (base64 text in JSON) */
  HS_V_ARRAY,
  HS_V_MAP, /* string keys only, in wire order, no duplicates */
} hs_vtype_t;

typedef struct hs_value hs_value_t;
typedef struct hs_member hs_member_t;

struct hs_value {
  hs_vtype_t type;
  union {
    bool b;
    int64_t i;
    uint64_t u;
    double f;
    struct {
      const char *ptr; /* STR: NUL-terminated for convenience (len excludes it); BIN: not */
      size_t len;
    } str;
    struct {
      hs_value_t *items;
      size_t len;
      size_t cap;
    } arr;
    struct {
      hs_member_t *items;
      size_t len;
      size_t cap;
    } map;
  } as;
};

struct hs_member {
  const char *key; /* NUL-terminated UTF-8 */
  size_t key_len;
  hs_value_t val;
};

/* Limits checked while decoding untrusted bytes, before anything is allocated for them. Every
 * field is taken literally (0 means "none allowed", not "unlimited"); decoders given a NULL
 * limits pointer use hs_codec_default_limits. A value exactly at a limit is accepted; one past
 * it fails with HS_ELIMIT. */
typedef struct hs_codec_limits {
  size_t max_bytes;   /* the whole message */
  uint32_t max_depth; /* nesting of arrays and maps; a scalar at top level is depth 0, [] is 1.
                       * msgpack-c cannot nest deeper than 32, so msgpack caps this at 32 */
  uint32_t max_count; /* elements of one array or members of one map */
  uint32_t max_items; /* values in the whole message: the root plus every array element and
                       * every map member (a key and its value count once) */
  size_t max_str_len; /* one string, binary or map key, in decoded bytes */
} hs_codec_limits_t;

/* Defaults for request bodies: 1 MiB, depth 16, 4096 per container, 65536 values,
 * 256 KiB per string. */
extern const hs_codec_limits_t hs_codec_default_limits;

/* Builders. Each returns NULL when the arena is out of memory (or over its cap). Strings are
 * copied into the arena. */
hs_value_t *hs_value_new(hs_arena_t *a, hs_vtype_t type);
hs_value_t *hs_value_new_str(hs_arena_t *a, const char *s, size_t len);
hs_value_t *hs_value_new_cstr(hs_arena_t *a, const char *s);
hs_value_t *hs_value_new_int(hs_arena_t *a, int64_t i);
hs_value_t *hs_value_new_map(hs_arena_t *a, size_t cap_hint);
hs_value_t *hs_value_new_array(hs_arena_t *a, size_t cap_hint);
hs_value_t *hs_value_new_bool(hs_arena_t *a, bool b);
hs_value_t *hs_value_new_float(hs_arena_t *a, double f);
/* An unsigned integer: stored as HS_V_INT when it fits int64_t, HS_V_UINT only above it. */
hs_value_t *hs_value_new_uint(hs_arena_t *a, uint64_t u);
/* Raw bytes (HS_V_BIN); the bytes are copied into the arena. */
hs_value_t *hs_value_new_bin(hs_arena_t *a, const void *p, size_t len);

/* Appends a member to a map (the key is copied; the value is copied by value, shallowly). The
 * key must not be present already. Returns a pointer to the stored value, or NULL on OOM (or if
 * map is not a map).
 *
 * Pointers into a container (the one returned here, by hs_map_add_map/_array and by
 * hs_array_push) stay valid only until the next member or element is added to that same
 * container: growing it moves its members. Fill a child before adding its next sibling, or look
 * it up again with hs_map_get. */
hs_value_t *hs_map_add(hs_arena_t *a, hs_value_t *map, const char *key, const hs_value_t *val);

/* Shorthands for building responses: add a member of the given type. Return HS_OK or
 * HS_ENOMEM. hs_map_add_map/hs_map_add_array return the new container (NULL on OOM). */
int hs_map_add_str(hs_arena_t *a, hs_value_t *map, const char *key, const char *s);
int hs_map_add_int(hs_arena_t *a, hs_value_t *map, const char *key, int64_t i);
int hs_map_add_bool(hs_arena_t *a, hs_value_t *map, const char *key, bool b);
int hs_map_add_nil(hs_arena_t *a, hs_value_t *map, const char *key);
int hs_map_add_float(hs_arena_t *a, hs_value_t *map, const char *key, double f);
hs_value_t *hs_map_add_map(hs_arena_t *a, hs_value_t *map, const char *key);
hs_value_t *hs_map_add_array(hs_arena_t *a, hs_value_t *map, const char *key);

/* Appends an element to an array; returns a pointer to the stored element, or NULL on OOM. */
hs_value_t *hs_array_push(hs_arena_t *a, hs_value_t *arr, const hs_value_t *val);

/* Looks a key up in a map (linear; maps are small). Returns NULL if absent or not a map. */
const hs_value_t *hs_map_get(const hs_value_t *map, const char *key);

/* Deep equality (same types, same values, maps equal in order-insensitive way). Floats compare
 * with ==, except that NaN equals NaN so that a value always equals itself. An HS_V_INT never
 * equals an HS_V_FLOAT, even when both hold 1. */
bool hs_value_equal(const hs_value_t *x, const hs_value_t *y);

/* A static name for a type, for error messages ("string", "map", ...). */
const char *hs_vtype_name(hs_vtype_t type);

#endif
