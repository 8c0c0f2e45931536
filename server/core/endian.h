/* Big-endian (network order) integers, as PostgreSQL's binary format, msgpack and HTTP/2 frames
 * write them. Byte by byte, so any alignment and any host order work. */
#ifndef HS_CORE_ENDIAN_H
#define HS_CORE_ENDIAN_H

#include <stdint.h>

static inline uint32_t hs_get_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t hs_get_be64(const uint8_t *p) {
  return (uint64_t)hs_get_be32(p) << 32 | hs_get_be32(p + 4);
}

static inline void hs_put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static inline void hs_put_be64(uint8_t *p, uint64_t v) {
  hs_put_be32(p, (uint32_t)(v >> 32));
  hs_put_be32(p + 4, (uint32_t)v);
}

#endif
