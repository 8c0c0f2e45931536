#include "audit/verify.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "audit/record.h"
#include "audit/sign.h"
#include "codec/codec.h"
#include "core/arena.h"
#include "core/buf.h"
#include "core/ids.h"
#include "core/str.h"

enum {
  /* A record holds at most one request body of data, written as JSON: a line past this is not
   * an export's. */
  MAX_LINE = 16 * 1024 * 1024,
};

typedef struct vstate {
  FILE *f;
  const uint8_t *pub;
  hs_audit_verify_report_t *rep;
  int64_t line;
  int64_t expected; /* the position the next record must have */
  uint8_t chain[32];
  int64_t last_cp;        /* the size of the last checkpoint seen */
  int64_t first_after_cp; /* the first position after it */
  bool ended;             /* the last line was a checkpoint at the promised end */
  hs_arena_t arena;
  hs_buf_t scratch; /* the canonical encoding of the record being hashed */
} vstate_t;

static int failf(vstate_t *v, const char *kind, int64_t position, int64_t id, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int failf(vstate_t *v, const char *kind, int64_t position, int64_t id, const char *fmt,
                 ...) {
  hs_audit_verify_report_t *r = v->rep;
  r->ok = false;
  r->kind = kind;
  r->position = position;
  r->line = v->line;
  r->id = id;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->message, sizeof r->message, fmt, ap);
  va_end(ap);
  return 1;
}

static bool get_hex(json_t *o, const char *key, uint8_t *out, size_t n) {
  const char *s = json_string_value(json_object_get(o, key));
  if (s == NULL || strlen(s) != 2 * n || !hs_is_hex(s, 2 * n)) {
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    unsigned b = 0;
    sscanf(s + 2 * i, "%2x", &b);
    out[i] = (uint8_t)b;
  }
  return true;
}

static bool get_int(json_t *o, const char *key, int64_t *out) {
  json_t *j = json_object_get(o, key);
  if (!json_is_integer(j)) {
    return false;
  }
  *out = (int64_t)json_integer_value(j);
  return true;
}

/* Only the members an export writes: anything else in a line is an alteration too. */
static bool only_members(json_t *o, const char *const *allowed) {
  const char *k;
  json_t *val;
  json_object_foreach(o, k, val) {
    bool ok = false;
    for (size_t i = 0; !ok && allowed[i] != NULL; i++) {
      ok = strcmp(allowed[i], k) == 0;
    }
    if (!ok) {
      return false;
    }
  }
  return true;
}

/* A JSON value as the codec's msgpack: the same bytes the server hashed, because both sides
 * go through the codec's value model. NULL out for JSON null. */
static int to_msgpack(vstate_t *v, json_t *j, hs_buf_t *out, bool *is_null) {
  *is_null = j == NULL || json_is_null(j);
  if (*is_null) {
    return HS_OK;
  }
  char *text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
  if (text == NULL) {
    return HS_ENOMEM;
  }
  hs_value_t *val = NULL;
  hs_err_t err;
  hs_codec_limits_t lim = hs_codec_default_limits;
  lim.max_bytes = MAX_LINE;
  int rc = hs_json_decode(text, strlen(text), &lim, &v->arena, &val, &err);
  free(text);
  return rc == HS_OK ? hs_msgpack_encode(val, out) : rc;
}

static bool same(const uint8_t a[32], const uint8_t b[32]) {
  return memcmp(a, b, 32) == 0;
}

/* Finds the line holding position `want` after the current one (seekable files only). */
static int64_t find_later(vstate_t *v, int64_t want) {
  long here = ftell(v->f);
  if (here < 0) {
    return 0;
  }
  char *buf = NULL;
  size_t cap = 0;
  ssize_t n;
  int64_t line = v->line, found = 0;
  char needle[48];
  int nl = snprintf(needle, sizeof needle, "\"position\":%" PRId64 ",", want);
  while (found == 0 && (n = getline(&buf, &cap, v->f)) > 0) {
    line++;
    char *p = strstr(buf, needle);
    if (p != NULL && (p[nl] != '\0')) {
      json_t *o = json_loadb(buf, (size_t)n, 0, NULL);
      int64_t pos = 0;
      if (o != NULL && get_int(o, "position", &pos) && pos == want) {
        found = line;
      }
      json_decref(o);
    }
  }
  free(buf);
  fseek(v->f, here, SEEK_SET);
  return found;
}

static int check_link(vstate_t *v, json_t *o, int64_t pos, int64_t id, const uint8_t h[32]) {
  uint8_t claimed[32], next[32];
  if (!get_hex(o, "chain", claimed, 32)) {
    return failf(v, "changed", pos, id, "its chain member is missing or not 64 hex digits");
  }
  hs_audit_chain_next(v->chain, h, next);
  if (!same(next, claimed)) {
    /* This record's own hash is right; so the link from the one before is what broke: the
     * previous record (or, first in the export, the start) was altered with its hashes
     * recomputed. */
    if (pos - 1 > v->rep->start_size) {
      v->line--;
      return failf(v, "changed", pos - 1, 0,
                   "the chain breaks between positions %" PRId64 " and %" PRId64
                   ": the record at %" PRId64 " was changed and its hashes recomputed",
                   pos - 1, pos, pos - 1);
    }
    return failf(v, "changed", pos, id,
                 "the chain does not continue from the export's start: the start or this record "
                 "was changed");
  }
  memcpy(v->chain, next, 32);
  return 0;
}

static int position_order(vstate_t *v, int64_t pos, int64_t id) {
  if (pos == v->expected) {
    return 0;
  }
  if (pos < v->expected) {
    return failf(v, "inserted", pos, id,
                 "position %" PRId64 " comes again where %" PRId64
                 " was due: a record was inserted (or copied) here",
                 pos, v->expected);
  }
  /* Ahead of its place: a copy (the same position comes again later), a moved record (the
   * missing one comes later), or a gap. */
  int64_t again = find_later(v, pos);
  if (again > 0) {
    return failf(v, "inserted", pos, id,
                 "position %" PRId64 " comes before its place (%" PRId64
                 " was due) and again on line %" PRId64 ": a record was inserted (or copied) here",
                 pos, v->expected, again);
  }
  int64_t later = find_later(v, v->expected);
  if (later > 0) {
    return failf(v, "reordered", v->expected, 0,
                 "the record at position %" PRId64 " was moved: it is on line %" PRId64
                 ", after position %" PRId64,
                 v->expected, later, pos);
  }
  if (pos == v->expected + 1) {
    return failf(v, "removed", v->expected, 0,
                 "the record at position %" PRId64 " was removed (this line has %" PRId64 ")",
                 v->expected, pos);
  }
  return failf(v, "removed", v->expected, 0,
               "the records at positions %" PRId64 " to %" PRId64 " were removed", v->expected,
               pos - 1);
}

static const char *const k_record_members[] = {
    "type",     "position",    "id",          "session",     "process", "version", "step",
    "seq",      "contractor",  "server_time", "device_time", "result",  "errors",  "data",
    "redacted", "data_digest", "documents",   "record_hash", "chain",   NULL};

static int do_record(vstate_t *v, json_t *o) {
  int64_t pos = 0, id = 0, seq = 0;
  (void)get_int(o, "id", &id);
  if (!get_int(o, "position", &pos)) {
    return failf(v, "changed", v->expected, id, "the line has no position");
  }
  if (position_order(v, pos, id) != 0) {
    return 1;
  }
  hs_audit_record_t r;
  memset(&r, 0, sizeof r);
  r.id = id;
  r.brand = v->rep->brand;
  r.session = json_string_value(json_object_get(o, "session"));
  r.process = json_string_value(json_object_get(o, "process"));
  r.version = json_string_value(json_object_get(o, "version"));
  r.step = json_string_value(json_object_get(o, "step"));
  r.contractor = json_string_value(json_object_get(o, "contractor"));
  r.result = json_string_value(json_object_get(o, "result"));
  const char *st = json_string_value(json_object_get(o, "server_time"));
  json_t *dt = json_object_get(o, "device_time");
  uint8_t claimed[32];
  if (!only_members(o, k_record_members) || !json_is_integer(json_object_get(o, "id")) ||
      !get_int(o, "seq", &seq) || r.session == NULL || r.process == NULL || r.version == NULL ||
      r.step == NULL || r.contractor == NULL || r.result == NULL || st == NULL ||
      hs_audit_time_parse(st, &r.server_us) != HS_OK ||
      !(json_is_null(dt) || (json_is_string(dt) &&
                             hs_audit_time_parse(json_string_value(dt), &r.device_us) == HS_OK)) ||
      !get_hex(o, "data_digest", r.data_digest, 32) || !get_hex(o, "record_hash", claimed, 32) ||
      !json_is_object(json_object_get(o, "data"))) {
    return failf(v, "changed", pos, id,
                 "the record's members are not all there in the form an export writes them");
  }
  r.seq = seq;
  r.has_device = json_is_string(dt);
  hs_arena_reset(&v->arena);
  hs_buf_t errors, docs, data;
  hs_buf_init(&errors, 0);
  hs_buf_init(&docs, 0);
  hs_buf_init(&data, 0);
  bool e_null, d_null, data_null;
  int rc = to_msgpack(v, json_object_get(o, "errors"), &errors, &e_null);
  if (rc == HS_OK) {
    rc = to_msgpack(v, json_object_get(o, "documents"), &docs, &d_null);
  }
  json_t *redacted = json_object_get(o, "redacted");
  bool has_redactions = redacted != NULL;
  if (rc == HS_OK && !has_redactions) {
    rc = to_msgpack(v, json_object_get(o, "data"), &data, &data_null);
  }
  uint8_t h[32];
  int result = 0;
  if (rc != HS_OK) {
    result = failf(v, "changed", pos, id, "its errors, documents or data cannot be read back");
  } else {
    r.errors = e_null ? NULL : errors.data;
    r.errors_len = errors.len;
    r.documents = d_null ? NULL : docs.data;
    r.documents_len = docs.len;
    if (hs_audit_record_hash(&r, &v->scratch, h) != HS_OK) {
      result = failf(v, "malformed", pos, id, "out of memory hashing the record");
    } else if (!same(h, claimed)) {
      result = failf(v, "changed", pos, id,
                     "its members do not hash to its record_hash: the record was changed");
    } else if (!has_redactions) {
      uint8_t dd[32];
      hs_sha256(data.data, data.len, dd);
      if (!same(dd, r.data_digest)) {
        result = failf(v, "changed", pos, id,
                       "its data does not match its data_digest: the captured data was changed");
      }
    } else {
      v->rep->redacted++;
    }
  }
  hs_buf_free(&errors);
  hs_buf_free(&docs);
  hs_buf_free(&data);
  if (result != 0 || check_link(v, o, pos, id, h) != 0) {
    return 1;
  }
  v->rep->records++;
  v->expected++;
  return 0;
}

static int do_elided(vstate_t *v, json_t *o) {
  static const char *const members[] = {"type", "position", "record_hash", "chain", NULL};
  int64_t pos = 0;
  uint8_t h[32];
  if (!get_int(o, "position", &pos)) {
    return failf(v, "changed", v->expected, 0, "the line has no position");
  }
  if (position_order(v, pos, 0) != 0) {
    return 1;
  }
  if (!only_members(o, members) || !get_hex(o, "record_hash", h, 32)) {
    return failf(v, "changed", pos, 0, "the elided record's members were altered");
  }
  if (check_link(v, o, pos, 0, h) != 0) {
    return 1;
  }
  v->rep->elided++;
  v->expected++;
  return 0;
}

static int do_checkpoint(vstate_t *v, json_t *o) {
  static const char *const members[] = {"type", "brand",  "size",      "head",
                                        "time", "key_id", "signature", NULL};
  hs_audit_checkpoint_t cp;
  memset(&cp, 0, sizeof cp);
  const char *brand = json_string_value(json_object_get(o, "brand"));
  const char *t = json_string_value(json_object_get(o, "time"));
  const char *kid = json_string_value(json_object_get(o, "key_id"));
  if (!only_members(o, members) || brand == NULL || t == NULL || kid == NULL ||
      !get_int(o, "size", &cp.size) || !get_hex(o, "head", cp.head, 32) ||
      !get_hex(o, "signature", cp.signature, 64) ||
      hs_audit_time_parse(t, &cp.signed_us) != HS_OK) {
    return failf(v, "changed", v->expected - 1, 0, "a checkpoint line was altered");
  }
  if (strcmp(brand, v->rep->brand) != 0) {
    return failf(v, "changed", v->expected - 1, 0,
                 "the checkpoint is for brand '%s', the export for '%s'", brand, v->rep->brand);
  }
  if (cp.size != v->expected - 1) {
    /* The records before it do not add up to its size: some were removed or inserted. */
    return failf(v, cp.size > v->expected - 1 ? "removed" : "inserted",
                 cp.size > v->expected - 1 ? v->expected : v->first_after_cp, 0,
                 "the checkpoint at size %" PRId64 " comes after position %" PRId64
                 ": records between positions %" PRId64 " and %" PRId64 " were %s",
                 cp.size, v->expected - 1, v->first_after_cp, cp.size,
                 cp.size > v->expected - 1 ? "removed" : "inserted");
  }
  char own[17];
  hs_audit_public_id(v->pub, own);
  cp.brand = brand;
  hs_buf_t text;
  hs_buf_init(&text, 0);
  bool sig_ok = hs_audit_checkpoint_text(&cp, &text) == HS_OK &&
                hs_audit_signature_ok(v->pub, text.data, text.len, cp.signature);
  hs_buf_free(&text);
  if (!sig_ok) {
    if (strcmp(kid, own) != 0) {
      return failf(v, "unsigned", cp.size, 0,
                   "the checkpoint at size %" PRId64 " is signed by key %s, not by the given key "
                   "%s",
                   cp.size, kid, own);
    }
    return failf(v, "changed", cp.size, 0,
                 "the signature of the checkpoint at size %" PRId64 " does not verify: the "
                 "checkpoint was altered",
                 cp.size);
  }
  if (!same(cp.head, v->chain)) {
    return failf(v, "changed", v->first_after_cp, 0,
                 "the chain does not reach the signed head at size %" PRId64
                 ": records from position %" PRId64 " to %" PRId64
                 " were changed, with their hashes recomputed",
                 cp.size, v->first_after_cp, cp.size);
  }
  v->rep->checkpoints++;
  v->last_cp = cp.size;
  v->first_after_cp = cp.size + 1;
  v->rep->end_size = cp.size;
  hs_strlcpy(v->rep->key_id, kid, sizeof v->rep->key_id);
  hs_strlcpy(v->rep->signed_at, t, sizeof v->rep->signed_at);
  return 0;
}

static int do_header(vstate_t *v, json_t *o, int64_t *promised) {
  const char *fmt = json_string_value(json_object_get(o, "format"));
  const char *brand = json_string_value(json_object_get(o, "brand"));
  json_t *start = json_object_get(o, "start");
  json_t *end = json_object_get(o, "end");
  int64_t size = 0;
  if (fmt == NULL || strcmp(fmt, "handsel-audit-v1") != 0 || brand == NULL ||
      strlen(brand) >= sizeof v->rep->brand || !json_is_object(start) ||
      !get_int(start, "size", &size) || size < 0 || !get_hex(start, "head", v->chain, 32) ||
      !json_is_object(end) || !get_int(end, "size", promised)) {
    return failf(v, "malformed", 0, 0,
                 "the first line is not the header of a handsel audit export (NDJSON, "
                 "format handsel-audit-v1; a CSV export cannot be verified)");
  }
  hs_strlcpy(v->rep->brand, brand, sizeof v->rep->brand);
  v->rep->start_size = size;
  v->expected = size + 1;
  v->first_after_cp = size + 1;
  v->last_cp = size;
  return 0;
}

int hs_audit_verify(FILE *f, const uint8_t pub[32], hs_audit_verify_report_t *rep, hs_err_t *err) {
  memset(rep, 0, sizeof *rep);
  rep->ok = true;
  vstate_t v = {.f = f, .pub = pub, .rep = rep};
  hs_arena_init(&v.arena, 0);
  hs_buf_init(&v.scratch, 0);
  char *buf = NULL;
  size_t cap = 0;
  ssize_t n;
  int64_t promised = -1;
  int stop = 0;
  while (stop == 0 && (n = getline(&buf, &cap, f)) > 0) {
    v.line++;
    if (n > MAX_LINE) {
      stop = failf(&v, "malformed", v.expected, 0, "line %" PRId64 " is over %d bytes", v.line,
                   MAX_LINE);
      break;
    }
    json_error_t je;
    json_t *o = json_loadb(buf, (size_t)n, 0, &je);
    const char *type = json_string_value(json_object_get(o, "type"));
    if (o == NULL || type == NULL) {
      stop = failf(&v, v.line == 1 ? "malformed" : "changed", v.line == 1 ? 0 : v.expected, 0,
                   "the line is not an export line (%s)", o == NULL ? je.text : "no type");
    } else if (v.line == 1) {
      stop = strcmp(type, "export") == 0
                 ? do_header(&v, o, &promised)
                 : failf(&v, "malformed", 0, 0, "the file does not start with an export header");
    } else {
      v.ended = false;
      if (strcmp(type, "record") == 0) {
        stop = do_record(&v, o);
      } else if (strcmp(type, "elided") == 0) {
        stop = do_elided(&v, o);
      } else if (strcmp(type, "checkpoint") == 0) {
        stop = do_checkpoint(&v, o);
        v.ended = stop == 0 && v.last_cp == promised;
      } else {
        stop = failf(&v, "changed", v.expected, 0, "a line of unknown type '%s'", type);
      }
    }
    json_decref(o);
  }
  bool read_error = ferror(f) != 0;
  free(buf);
  hs_arena_reset(&v.arena);
  hs_buf_free(&v.scratch);
  if (read_error) {
    return hs_err_set(err, HS_EIO, "cannot read the export");
  }
  if (stop == 0 && v.line == 0) {
    failf(&v, "malformed", 0, 0, "the file is empty");
  } else if (stop == 0 && promised > v.expected - 1) {
    v.line++;
    failf(&v, "removed", v.expected, 0,
          "the export ends at position %" PRId64 " but its header promises %" PRId64
          ": the records after %" PRId64 " were removed",
          v.expected - 1, promised, v.expected - 1);
  } else if (stop == 0 && promised < v.expected - 1) {
    failf(&v, "inserted", promised + 1, 0,
          "the export goes on past position %" PRId64 ", which its header promises as its end",
          promised);
  } else if (stop == 0 && promised > rep->start_size && !v.ended) {
    failf(&v, "unsigned", v.first_after_cp, 0,
          "the records from position %" PRId64 " on are not covered by a signed checkpoint",
          v.first_after_cp);
  }
  return HS_OK;
}
