/* Decoding response bodies in tests with the product's own codec, and picking values out of
 * them. */
#ifndef HS_TEST_BODY_H
#define HS_TEST_BODY_H

#include "codec/value.h"
#include "core/arena.h"
#include "core/error.h"
#include "hs_test_h2.h"

/* Decodes r's body as JSON when its content-type is application/json, else as msgpack. *out
 * is allocated in arena. */
int hs_test_decode_body(const hs_h2_response_t *r, hs_arena_t *arena, hs_value_t **out,
                        hs_err_t *err);

/* Follows a dotted path of map keys ("error.code") and returns the string there, or NULL
 * when a key is missing or the value is not a string. The string is owned by v's arena. */
const char *hs_test_str_at(const hs_value_t *v, const char *path);

#endif
