#include "audit/record.h"

#include <inttypes.h>
#include <msgpack.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/ids.h"

/* Bumped if the canonical form ever changes; old exports keep verifying under the old tag. */
static const char k_record_tag[] = "handsel.audit.record.v1";

typedef struct sink {
  hs_buf_t *buf;
  int rc; /* the first failure: a partial encoding is never hashed */
} sink_t;

static int sink_write(void *data, const char *p, size_t n) {
  sink_t *s = data;
  if (s->rc == HS_OK) {
    s->rc = hs_buf_append(s->buf, p, n);
  }
  return s->rc == HS_OK ? 0 : -1;
}

static void pack_cstr(msgpack_packer *pk, const char *s) {
  size_t n = s != NULL ? strlen(s) : 0;
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, s != NULL ? s : "", n);
}

/* Appends already-encoded msgpack, or nil. */
static void pack_raw(msgpack_packer *pk, sink_t *s, const uint8_t *p, size_t n) {
  if (p == NULL) {
    msgpack_pack_nil(pk);
  } else {
    (void)sink_write(s, (const char *)p, n);
  }
}

int hs_audit_record_hash(const hs_audit_record_t *r, hs_buf_t *scratch, uint8_t out[32]) {
  sink_t s = {.buf = scratch, .rc = HS_OK};
  scratch->len = 0;
  msgpack_packer pk;
  msgpack_packer_init(&pk, &s, sink_write);
  msgpack_pack_array(&pk, 15);
  pack_cstr(&pk, k_record_tag);
  msgpack_pack_int64(&pk, r->id);
  pack_cstr(&pk, r->brand);
  pack_cstr(&pk, r->session);
  pack_cstr(&pk, r->process);
  pack_cstr(&pk, r->version);
  pack_cstr(&pk, r->step);
  msgpack_pack_int64(&pk, r->seq);
  pack_cstr(&pk, r->contractor);
  msgpack_pack_int64(&pk, r->server_us);
  if (r->has_device) {
    msgpack_pack_int64(&pk, r->device_us);
  } else {
    msgpack_pack_nil(&pk);
  }
  pack_cstr(&pk, r->result);
  pack_raw(&pk, &s, r->errors, r->errors_len);
  msgpack_pack_bin(&pk, 32);
  msgpack_pack_bin_body(&pk, r->data_digest, 32);
  pack_raw(&pk, &s, r->documents, r->documents_len);
  if (s.rc == HS_OK) {
    hs_sha256(scratch->data, scratch->len, out);
  }
  return s.rc;
}

void hs_audit_chain_next(const uint8_t prev[32], const uint8_t record_hash[32], uint8_t out[32]) {
  uint8_t in[64];
  memcpy(in, prev, 32);
  memcpy(in + 32, record_hash, 32);
  hs_sha256(in, sizeof in, out);
}

int hs_audit_checkpoint_text(const hs_audit_checkpoint_t *c, hs_buf_t *out) {
  char head[65];
  char when[32];
  hs_hex(c->head, 32, head);
  hs_audit_time_format(c->signed_us, when);
  return hs_buf_printf(
      out, "handsel audit checkpoint v1\nbrand %s\nsize %" PRId64 "\nhead %s\ntime %s\n", c->brand,
      c->size, head, when);
}

void hs_audit_time_format(int64_t us, char out[32]) {
  int64_t secs = us / 1000000;
  int64_t frac = us % 1000000;
  if (frac < 0) {
    frac += 1000000;
    secs -= 1;
  }
  time_t t = (time_t)secs;
  struct tm tm;
  if (gmtime_r(&t, &tm) == NULL) {
    snprintf(out, 32, "1970-01-01T00:00:00.000000Z");
    return;
  }
  int n = snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                   tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
  if (n < 0 || n >= 32) {
    /* Only a year longer than 8 characters is that long, which no timestamp PostgreSQL
       stores has. */
    snprintf(out, 32, "1970-01-01T00:00:00.000000Z");
  }
}

int hs_audit_time_parse(const char *s, int64_t *us) {
  int y, mo, d, h, mi, se, fr;
  int n = 0;
  if (s == NULL || strlen(s) != 27 ||
      sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%6dZ%n", &y, &mo, &d, &h, &mi, &se, &fr, &n) != 7 ||
      n != 27) {
    return HS_EINVAL;
  }
  struct tm tm = {.tm_year = y - 1900,
                  .tm_mon = mo - 1,
                  .tm_mday = d,
                  .tm_hour = h,
                  .tm_min = mi,
                  .tm_sec = se};
  time_t t = timegm(&tm);
  int64_t v = (int64_t)t * 1000000 + fr;
  char back[32];
  hs_audit_time_format(v, back);
  if (strcmp(back, s) != 0) {
    return HS_EINVAL; /* out-of-range parts (month 13) or a form we never write */
  }
  *us = v;
  return HS_OK;
}
