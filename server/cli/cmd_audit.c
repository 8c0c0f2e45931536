/* `handsel audit replay SESSION`: re-runs a session's pinned process version over its recorded
 * inputs and says, attempt by attempt, whether the compliance log follows from them.
 *
 * The inputs are what the server could not have made up: the session row (id, customer,
 * contractor, seed, start time), the pinned version's source, and each validation record's
 * submitted data and times, plus the evidence blobs the brand had stored when the attempt was
 * made. The outputs are everything the engine decided: the step each attempt was at, accepted
 * or rejected, the per-field messages, and for accepted attempts the events it produced (the
 * answer sent to the device is not stored: a server rebuilds it from these events, so it
 * follows from them). Outputs are compared as canonical msgpack bytes; where the bytes differ,
 * the first member that differs is named.
 *
 * It reads PostgreSQL with blocking libpq (a command, not the server) and streams the records
 * in single-row mode, so a session with any number of attempts is audited in bounded memory:
 * what it keeps grows only with the accepted steps, which the engine caps per session.
 *
 * The state of math.random is the one input the log does not hold for every attempt. A step's
 * validate function may draw from it, and a server that rebuilt the session from its record
 * (after an eviction, or on another node) restarted it from the last accepted completion, so
 * the draws of rejected attempts before the rebuild were forgotten. When an attempt does not
 * follow from the session run straight through, the audit therefore also tries the copies a
 * server could have rebuilt before each of the rejected attempts since the last accepted one;
 * an attempt that follows from one of them follows from the inputs. */
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "api/common.h"
#include "cli/commands.h"
#include "codec/codec.h"
#include "core/ids.h"
#include "core/str.h"
#include "engine/engine.h"
#include "store/store.h"

enum {
  MAX_PENDING = 32,  /* rejected attempts since the last accepted one tried as rebuild points */
  MAX_LISTED = 20,   /* attempts named in the summary */
  MAX_SHOWN = 96,    /* bytes of a value shown in a difference */
  MAX_REASON = 1024, /* bytes of one line's explanation */
};

/* Records are read back from our own tables: generous, but bounded (as the store reads them). */
static const hs_codec_limits_t k_record_limits = {
    .max_bytes = 64u << 20,
    .max_depth = 32,
    .max_count = 1u << 20,
    .max_items = 1u << 24,
    .max_str_len = 16u << 20,
};

/* One completion attempt as recorded. Pointers are in the arena it was read into. */
typedef struct attempt {
  uint32_t seq;
  const char *step_id;
  bool accepted;
  const hs_value_t *errors; /* rejected: the recorded messages (a map) */
  const hs_value_t *data;   /* the submitted data */
  bool digest_ok;           /* the data hashes to the record's data_digest */
  bool version_ok;          /* the record names the session's process, version and contractor */
  const char *server_time;  /* as PostgreSQL prints it, for the blob query */
  int64_t server_ms;
  int64_t device_ms; /* 0 when the device sent no time */
  /* Accepted: the completion's events (an accepted record always carries them). */
  const uint8_t *events_mp;
  size_t events_len;
  const hs_value_t *events;
  bool ended;
} attempt_t;

/* What the script made of one attempt. Values are in the arena of the run. */
typedef struct run {
  int rc; /* HS_OK, or the engine's failure (the server would have written no record) */
  hs_err_t err;
  bool accepted;
  bool ended;
  const hs_value_t *errors; /* rejected */
  hs_value_t *events;       /* accepted */
} run_t;

typedef struct audit {
  PGconn *pg; /* borrowed */
  const char *session_id;
  char brand_id[24];
  char version[65];
  char process[65];
  char contractor_id[129];
  hs_vm_t *vm;          /* owned */
  hs_process_t *proc;   /* belongs to vm */
  hs_session_t *sim;    /* owned: the session as the script runs it */
  hs_arena_t log_arena; /* owns log */
  hs_value_t *log;      /* the event log so far: start events, then each accepted attempt's */
  attempt_t pending[MAX_PENDING]; /* rejected attempts since the last accepted one, oldest first */
  hs_arena_t pending_arenas[MAX_PENDING]; /* each owns the values of its attempt */
  size_t n_pending;
  long n_attempts, n_accepted, n_rejected, n_bad;
  char listed[MAX_LISTED * 80];
  size_t n_listed;
} audit_t;

void hs_cmd_audit_help(FILE *out) {
  fputs("usage: handsel audit replay SESSION [--brand NAME] [--db CONNINFO]\n"
        "\n"
        "replay  re-runs the session's pinned process version from its recorded start (the same\n"
        "        session id, customer, contractor, seed and start time) and feeds it every\n"
        "        recorded completion attempt, accepted and rejected, in order, with its recorded\n"
        "        data and times, as the server did: a photo or signature must name a blob the\n"
        "        brand had stored when the attempt was made. For each attempt it checks the\n"
        "        step id and seq the script was at, accepted or rejected, the per-field\n"
        "        messages, and for accepted attempts the events the engine recorded, from\n"
        "        which the next step sent to the device follows. It prints one line per\n"
        "        attempt, such as\n"
        "          seq 3 roof: accepted, matches\n"
        "          seq 4 roof: the record says rejected (roof_age: ...), the script says accepted\n"
        "        then a summary. --brand refuses a session of another brand.\n"
        "\n"
        "It reads the database named by HANDSEL_DB (or --db); the server need not run.\n"
        "Exit status: 0 when every record follows from the inputs, 1 when one does not, 2 when\n"
        "the audit cannot be made (usage, an unknown session or version, no database).\n",
        out);
}

/* ------------------------------------------------------------ database */

static PGconn *connect_db(const char *db) {
  if (db == NULL || *db == '\0') {
    fprintf(stderr, "handsel audit: no database: set HANDSEL_DB or pass --db CONNINFO\n");
    return NULL;
  }
  PGconn *pg = PQconnectdb(db);
  if (PQstatus(pg) != CONNECTION_OK) {
    fprintf(stderr, "handsel audit: cannot connect to the database: %s", PQerrorMessage(pg));
    PQfinish(pg);
    return NULL;
  }
  return pg;
}

static PGresult *query(PGconn *pg, const char *sql, int n, const char *const *v) {
  PGresult *r = PQexecParams(pg, sql, n, NULL, v, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    fprintf(stderr, "handsel audit: %s", PQresultErrorMessage(r));
    PQclear(r);
    return NULL;
  }
  return r;
}

/* Decodes a bytea column (text form) holding msgpack into a. raw_out and raw_len (may be NULL) get
 * a copy of the bytes in a. NULL with a sentence in err when the bytes are not readable. */
static hs_value_t *decode_bytea(const PGresult *r, int row, int col, hs_arena_t *a,
                                const uint8_t **raw_out, size_t *raw_len, hs_err_t *err) {
  size_t n = 0;
  unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col), &n);
  if (raw == NULL) {
    hs_err_set(err, HS_ENOMEM, "out of memory");
    return NULL;
  }
  hs_value_t *v = NULL;
  int rc = hs_msgpack_decode(raw, n, &k_record_limits, a, &v, err);
  if (rc == HS_OK && raw_out != NULL) {
    uint8_t *copy = hs_arena_alloc(a, n > 0 ? n : 1);
    if (copy == NULL) {
      rc = hs_err_set(err, HS_ENOMEM, "out of memory");
    } else {
      memcpy(copy, raw, n);
      *raw_out = copy;
      *raw_len = n;
    }
  }
  PQfreemem(raw);
  return rc == HS_OK ? v : NULL;
}

/* ------------------------------------------------------------ describing values */

/* Up to MAX_SHOWN bytes of v as JSON, for a person. */
static void show(const hs_value_t *v, char *out, size_t cap) {
  if (v == NULL) {
    snprintf(out, cap, "nothing");
    return;
  }
  hs_buf_t b;
  hs_buf_init(&b, 0);
  if (hs_json_encode(v, &b) != HS_OK) {
    snprintf(out, cap, "(a %s)", hs_vtype_name(v->type));
  } else if (b.len > MAX_SHOWN) {
    snprintf(out, cap, "%.*s...", (int)MAX_SHOWN, (const char *)b.data);
  } else {
    snprintf(out, cap, "%.*s", (int)b.len, (const char *)b.data);
  }
  hs_buf_free(&b);
}

/* Writes where rec (the record) and got (the script's) first differ: "path: the record has X,
 * the script Y". Returns false when they are equal member by member. */
static bool diff(const hs_value_t *rec, const hs_value_t *got, const char *path, char *out,
                 size_t cap) {
  char a[MAX_SHOWN + 8], b[MAX_SHOWN + 8], sub[256];
  if (rec->type == HS_V_MAP && got->type == HS_V_MAP) {
    for (size_t i = 0; i < rec->as.map.len; i++) {
      const hs_member_t *m = &rec->as.map.items[i];
      snprintf(sub, sizeof sub, "%s.%s", path, m->key);
      const hs_value_t *g = hs_map_get(got, m->key);
      if (g == NULL) {
        show(&m->val, a, sizeof a);
        snprintf(out, cap, "%s: the record has %s, the script nothing", sub, a);
        return true;
      }
      if (diff(&m->val, g, sub, out, cap)) {
        return true;
      }
    }
    for (size_t i = 0; i < got->as.map.len; i++) {
      const hs_member_t *m = &got->as.map.items[i];
      if (hs_map_get(rec, m->key) == NULL) {
        show(&m->val, b, sizeof b);
        snprintf(out, cap, "%s.%s: the record has nothing, the script %s", path, m->key, b);
        return true;
      }
    }
    return false;
  }
  if (rec->type == HS_V_ARRAY && got->type == HS_V_ARRAY) {
    size_t n = rec->as.arr.len < got->as.arr.len ? rec->as.arr.len : got->as.arr.len;
    for (size_t i = 0; i < n; i++) {
      snprintf(sub, sizeof sub, "%s[%zu]", path, i);
      if (diff(&rec->as.arr.items[i], &got->as.arr.items[i], sub, out, cap)) {
        return true;
      }
    }
    if (rec->as.arr.len != got->as.arr.len) {
      snprintf(out, cap, "%s: the record has %zu items, the script %zu", path, rec->as.arr.len,
               got->as.arr.len);
      return true;
    }
    return false;
  }
  if (hs_value_equal(rec, got)) {
    return false;
  }
  show(rec, a, sizeof a);
  show(got, b, sizeof b);
  snprintf(out, cap, "%s: the record has %s, the script %s", path, a, b);
  return true;
}

/* Compares the recorded bytes of a value with the script's value, encoded the same way. */
static bool same_bytes(const uint8_t *rec, size_t rec_len, const hs_value_t *rec_v,
                       const hs_value_t *got, const char *path, char *out, size_t cap) {
  hs_buf_t b;
  hs_buf_init(&b, 0);
  bool same = hs_msgpack_encode(got, &b) == HS_OK && b.len == rec_len &&
              (rec_len == 0 || memcmp(b.data, rec, rec_len) == 0);
  hs_buf_free(&b);
  if (!same && !diff(rec_v, got, path, out, cap)) {
    snprintf(out, cap, "%s: the same members, encoded differently (in another order)", path);
  }
  return same;
}

/* "n: Pick a number from 1 to 10; note: ..." */
static void show_errors(const hs_value_t *errors, char *out, size_t cap) {
  size_t used = 0;
  out[0] = '\0';
  for (size_t i = 0; errors != NULL && errors->type == HS_V_MAP && i < errors->as.map.len; i++) {
    const hs_member_t *m = &errors->as.map.items[i];
    const char *msg = m->val.type == HS_V_STR ? m->val.as.str.ptr : "?";
    int w = m->key[0] != '\0'
                ? snprintf(out + used, cap - used, "%s%s: %s", used > 0 ? "; " : "", m->key, msg)
                : snprintf(out + used, cap - used, "%s%s", used > 0 ? "; " : "", msg);
    if (w < 0 || (size_t)w >= cap - used) {
      break;
    }
    used += (size_t)w;
  }
}

static void show_result(bool accepted, const hs_value_t *errors, char *out, size_t cap) {
  if (accepted) {
    snprintf(out, cap, "accepted");
    return;
  }
  char e[400];
  show_errors(errors, e, sizeof e);
  snprintf(out, cap, "rejected (%s)", e);
}

/* ------------------------------------------------------------ reading records */

static const char k_attempts_sql[] =
    "SELECT v.seq, v.step_id, v.result, v.errors, v.data,"
    " v.data_digest = sha256(v.data),"
    " v.process = $3 AND v.version = $4 AND v.contractor_id = $5,"
    " v.server_time,"
    " round(extract(epoch FROM v.server_time) * 1000)::bigint,"
    " coalesce(floor(extract(epoch FROM v.device_time) * 1000)::bigint, 0),"
    " v.events, v.ended"
    " FROM validation_records v"
    /* A session's attempts are found by session, each half through its own partial index
     * (validation_records_step, _rejected): every record is one or the other, and saying so
     * lets the planner use both. The brand only filters what they find (`+ 0` keeps it out
     * of the index search), since a session is a handful of records and a brand may be
     * millions. */
    " WHERE v.session_id = $1 AND (v.result = 'accepted' OR v.result = 'rejected')"
    " AND v.brand_id + 0 = $2"
    /* Within a seq every rejected attempt came before the accepted one (after it, the seq
     * answers from the stored completion and writes no record), whatever order one group
     * commit gave their ids. */
    " ORDER BY v.seq, v.result = 'accepted', v.id";

enum {
  C_SEQ,
  C_STEP,
  C_RESULT,
  C_ERRORS,
  C_DATA,
  C_DIGEST_OK,
  C_VERSION_OK,
  C_SERVER_TIME,
  C_SERVER_MS,
  C_DEVICE_MS,
  C_EVENTS,
  C_ENDED,
};

static int read_attempt(const PGresult *r, hs_arena_t *a, attempt_t *at, hs_err_t *err) {
  memset(at, 0, sizeof *at);
  at->seq = (uint32_t)strtoul(PQgetvalue(r, 0, C_SEQ), NULL, 10);
  at->step_id = hs_arena_strndup(a, PQgetvalue(r, 0, C_STEP), strlen(PQgetvalue(r, 0, C_STEP)));
  at->server_time =
      hs_arena_strndup(a, PQgetvalue(r, 0, C_SERVER_TIME), strlen(PQgetvalue(r, 0, C_SERVER_TIME)));
  if (at->step_id == NULL || at->server_time == NULL) {
    return hs_err_set(err, HS_ENOMEM, "out of memory");
  }
  at->accepted = strcmp(PQgetvalue(r, 0, C_RESULT), "accepted") == 0;
  at->digest_ok = strcmp(PQgetvalue(r, 0, C_DIGEST_OK), "t") == 0;
  at->version_ok = strcmp(PQgetvalue(r, 0, C_VERSION_OK), "t") == 0;
  at->server_ms = strtoll(PQgetvalue(r, 0, C_SERVER_MS), NULL, 10);
  at->device_ms = strtoll(PQgetvalue(r, 0, C_DEVICE_MS), NULL, 10);
  at->data = decode_bytea(r, 0, C_DATA, a, NULL, NULL, err);
  if (at->data == NULL) {
    return err->code;
  }
  if (!PQgetisnull(r, 0, C_ERRORS)) {
    at->errors = decode_bytea(r, 0, C_ERRORS, a, NULL, NULL, err);
    if (at->errors == NULL) {
      return err->code;
    }
  }
  if (at->accepted) {
    at->events = decode_bytea(r, 0, C_EVENTS, a, &at->events_mp, &at->events_len, err);
    if (at->events == NULL) {
      return err->code;
    }
    at->ended = strcmp(PQgetvalue(r, 0, C_ENDED), "t") == 0;
  }
  return HS_OK;
}

/* The server time the engine saw for an accepted attempt: the `at` of its recorded completion
 * event (the validation record's server_time is the later commit's clock). */
static int64_t attempt_at(const attempt_t *at) {
  for (size_t i = 0;
       at->events != NULL && at->events->type == HS_V_ARRAY && i < at->events->as.arr.len; i++) {
    const hs_value_t *e = &at->events->as.arr.items[i];
    const hs_value_t *type = hs_map_get(e, "type");
    const hs_value_t *t = hs_map_get(e, "at");
    if (type != NULL && type->type == HS_V_STR && strcmp(type->as.str.ptr, "complete") == 0 &&
        t != NULL && t->type == HS_V_INT) {
      return t->as.i;
    }
  }
  return at->server_ms;
}

/* ------------------------------------------------------------ running an attempt */

/* The evidence rule of the live path: every photo or signature the current step asks for and
 * the data names must be a blob of the brand stored by the time of the attempt. Adds the
 * fields whose blob was not to missing. */
static int check_evidence(audit_t *au, hs_session_t *s, const attempt_t *at, hs_arena_t *a,
                          hs_value_t *missing, hs_err_t *err) {
  hs_value_t *step = NULL;
  int rc = hs_session_step(s, a, &step, err);
  if (rc != HS_OK || !hs_step_needs_evidence(step)) {
    return rc;
  }
  const hs_value_t *fields = hs_map_get(step, "fields");
  for (size_t i = 0; fields != NULL && i < fields->as.arr.len; i++) {
    const hs_value_t *type = hs_map_get(&fields->as.arr.items[i], "type");
    const hs_value_t *name = hs_map_get(&fields->as.arr.items[i], "name");
    if (type == NULL || name == NULL || type->type != HS_V_STR || name->type != HS_V_STR ||
        (strcmp(type->as.str.ptr, "photo") != 0 && strcmp(type->as.str.ptr, "signature") != 0)) {
      continue;
    }
    const hs_value_t *v = hs_map_get(at->data, name->as.str.ptr);
    if (v == NULL || v->type != HS_V_STR || strncmp(v->as.str.ptr, "sha256:", 7) != 0 ||
        !hs_is_hex(v->as.str.ptr + 7, 64) || v->as.str.len != 71) {
      continue; /* absent or malformed: the engine's own check says so */
    }
    const char *params[] = {au->brand_id, v->as.str.ptr + 7, at->server_time};
    PGresult *r = query(au->pg,
                        "SELECT 1 FROM blobs WHERE brand_id = $1 AND hash = $2"
                        " AND created_at <= $3::timestamptz",
                        3, params);
    if (r == NULL) {
      return hs_err_set(err, HS_EUNAVAIL, "the blobs could not be read");
    }
    bool stored = PQntuples(r) > 0;
    PQclear(r);
    if (!stored) {
      char msg[200];
      hs_evidence_missing_message(msg, sizeof msg, type->as.str.ptr, v->as.str.ptr);
      if (hs_map_add_str(a, missing, name->as.str.ptr, msg) != HS_OK) {
        return hs_err_set(err, HS_ENOMEM, "out of memory");
      }
    }
  }
  return HS_OK;
}

/* Feeds one attempt to s as the server did. Returns HS_OK when run says what the script made
 * of it (run->rc may still hold an engine failure); an error only when the audit itself
 * cannot go on (the database, memory). */
static int run_attempt(audit_t *au, hs_session_t *s, const attempt_t *at, hs_arena_t *a, run_t *run,
                       hs_err_t *err) {
  memset(run, 0, sizeof *run);
  hs_err_clear(&run->err);
  hs_value_t *missing = hs_value_new_map(a, 2);
  if (missing == NULL) {
    return hs_err_set(err, HS_ENOMEM, "out of memory");
  }
  int rc = check_evidence(au, s, at, a, missing, err);
  if (rc == HS_EUNAVAIL || rc == HS_ENOMEM) {
    return rc;
  }
  if (rc != HS_OK) {
    run->rc = rc;
    run->err = *err;
    hs_err_clear(err);
    return HS_OK;
  }
  if (missing->as.map.len > 0) {
    run->errors = missing; /* the server rejects without letting the script see the data */
    return HS_OK;
  }
  hs_step_result_t res;
  run->rc = hs_session_complete(s, at->seq, at->data, at->accepted ? attempt_at(at) : at->server_ms,
                                at->device_ms, a, &res, &run->err);
  if (run->rc != HS_OK) {
    return HS_OK;
  }
  if (res.status == HS_STEP_REJECTED) {
    run->errors = res.errors;
    return HS_OK;
  }
  run->accepted = true;
  run->ended = res.status == HS_STEP_ENDED;
  run->events = res.events;
  return HS_OK;
}

/* Whether the script's run of an attempt says what its record says; if not, why (in why). */
static bool follows(const attempt_t *at, const run_t *run, char *why, size_t cap) {
  char rec[512], got[512];
  show_result(at->accepted, at->errors, rec, sizeof rec);
  if (run->rc != HS_OK) {
    snprintf(why, cap, "the record says %.480s, but the script fails there: %.480s", rec,
             run->err.msg);
    return false;
  }
  show_result(run->accepted, run->errors, got, sizeof got);
  if (at->accepted != run->accepted) {
    /* Each side is cut to fit a reason line (MAX_REASON). */
    snprintf(why, cap, "the record says %.480s, the script says %.480s", rec, got);
    return false;
  }
  if (!at->accepted) {
    if (at->errors == NULL || !hs_value_equal(at->errors, run->errors)) {
      char d[600];
      if (at->errors == NULL || !diff(at->errors, run->errors, "errors", d, sizeof d)) {
        snprintf(d, sizeof d, "the record has no messages");
      }
      snprintf(why, cap, "rejected, but the messages differ: %s", d);
      return false;
    }
    return true;
  }
  char d[700];
  if (!same_bytes(at->events_mp, at->events_len, at->events, run->events, "events", d, sizeof d)) {
    snprintf(why, cap, "accepted, but %s", d);
    return false;
  }
  if (at->ended != run->ended) {
    snprintf(why, cap, "accepted, but the record says the session %s there and the script %s",
             at->ended ? "ended" : "went on", run->ended ? "ends" : "goes on");
    return false;
  }
  return true;
}

/* ------------------------------------------------------------ the session as a server holds it */

/* A copy of the session rebuilt from the event log so far, as a server does when it loads the
 * session. NULL with err when the record cannot be replayed. */
static hs_session_t *rebuild(audit_t *au, hs_err_t *err) {
  hs_arena_t a;
  hs_arena_init(&a, 0);
  hs_session_t *s = NULL;
  hs_step_result_t res;
  if (hs_session_replay(au->proc, au->log, &a, &s, &res, err) != HS_OK) {
    s = NULL;
  }
  hs_arena_reset(&a);
  return s;
}

static int log_append(audit_t *au, const hs_value_t *events, hs_err_t *err) {
  for (size_t i = 0; events != NULL && events->type == HS_V_ARRAY && i < events->as.arr.len; i++) {
    /* Copy through msgpack: the events live in an arena that is reset after the attempt. */
    hs_buf_t b;
    hs_buf_init(&b, 0);
    hs_value_t *copy = NULL;
    int rc = hs_msgpack_encode(&events->as.arr.items[i], &b);
    if (rc == HS_OK) {
      rc = hs_msgpack_decode(b.data, b.len, &k_record_limits, &au->log_arena, &copy, err);
    }
    hs_buf_free(&b);
    if (rc != HS_OK || hs_array_push(&au->log_arena, au->log, copy) == NULL) {
      return hs_err_set(err, HS_ENOMEM, "the events could not be kept: out of memory");
    }
  }
  return HS_OK;
}

static void pending_clear(audit_t *au) {
  for (size_t i = 0; i < au->n_pending; i++) {
    hs_arena_reset(&au->pending_arenas[i]);
  }
  au->n_pending = 0;
}

/* Keeps a rejected attempt as a possible rebuild point: the newest MAX_PENDING of them, so a
 * long run of rejections costs no more memory than that. */
static int pending_add(audit_t *au, const PGresult *row, hs_err_t *err) {
  if (au->n_pending == MAX_PENDING) {
    hs_arena_reset(&au->pending_arenas[0]);
    /* The values live in each arena's chunks, not in the arena struct: moving both is safe. */
    memmove(&au->pending[0], &au->pending[1], (MAX_PENDING - 1) * sizeof au->pending[0]);
    memmove(&au->pending_arenas[0], &au->pending_arenas[1],
            (MAX_PENDING - 1) * sizeof au->pending_arenas[0]);
    au->n_pending--;
  }
  size_t i = au->n_pending;
  hs_arena_init(&au->pending_arenas[i], 0);
  int rc = read_attempt(row, &au->pending_arenas[i], &au->pending[i], err);
  if (rc != HS_OK) {
    hs_arena_reset(&au->pending_arenas[i]);
    return rc;
  }
  au->n_pending++;
  return HS_OK;
}

/* Tries the copies a server could have held instead: rebuilt from the record before pending
 * attempt j (newest first), then fed pending[j..] (which must still follow) and at. On
 * success the copy replaces au->sim. */
static bool explain_by_rebuild(audit_t *au, const attempt_t *at, hs_arena_t *a) {
  for (size_t j = au->n_pending + 1; j-- > 0;) {
    hs_err_t err;
    hs_err_clear(&err);
    hs_session_t *s = rebuild(au, &err);
    bool ok = s != NULL;
    char why[MAX_REASON];
    for (size_t i = j; ok && i < au->n_pending; i++) {
      run_t run;
      ok = run_attempt(au, s, &au->pending[i], a, &run, &err) == HS_OK &&
           follows(&au->pending[i], &run, why, sizeof why);
    }
    run_t run;
    ok = ok && run_attempt(au, s, at, a, &run, &err) == HS_OK && follows(at, &run, why, sizeof why);
    if (ok) {
      hs_session_free(au->sim);
      au->sim = s;
      return true;
    }
    hs_session_free(s);
  }
  return false;
}

/* ------------------------------------------------------------ the audit */

/* Counts a finding and names it (label: "seq 3 roof", "start") in the summary. */
static void finding(audit_t *au, const char *label) {
  au->n_bad++;
  if (au->n_listed < MAX_LISTED) {
    size_t used = strlen(au->listed);
    snprintf(au->listed + used, sizeof au->listed - used, "%s%s", au->n_listed > 0 ? ", " : "",
             label);
    au->n_listed++;
  }
}

/* Checks one attempt and prints its line. Returns HS_OK, or an error that ends the audit. */
static int audit_attempt(audit_t *au, const PGresult *row) {
  hs_arena_t a;
  hs_arena_init(&a, 0);
  hs_err_t err;
  hs_err_clear(&err);
  attempt_t at;
  int rc = read_attempt(row, &a, &at, &err);
  if (rc != HS_OK) {
    printf("seq %s %s: the record cannot be read: %s\n", PQgetvalue(row, 0, C_SEQ),
           PQgetvalue(row, 0, C_STEP), err.msg);
    finding(au, "an unreadable record");
    hs_arena_reset(&a);
    return HS_OK;
  }
  au->n_attempts++;
  if (at.accepted) {
    au->n_accepted++;
  } else {
    au->n_rejected++;
  }
  char why[MAX_REASON];
  bool ok = true;
  const char *note = "";
  uint32_t cur = hs_session_seq(au->sim);
  hs_session_state_t st = hs_session_status(au->sim);
  const char *cur_id = hs_session_step_id(au->sim);
  if (!at.digest_ok) {
    snprintf(why, sizeof why, "the record's data does not hash to its data_digest");
    ok = false;
  } else if (!at.version_ok) {
    snprintf(why, sizeof why,
             "the record names another process, version or contractor than the session's");
    ok = false;
  } else if (st != HS_SESSION_WAITING) {
    snprintf(why, sizeof why, "the record says %s at seq %" PRIu32 ", but the script %s at seq %u",
             at.accepted ? "accepted" : "rejected", at.seq,
             st == HS_SESSION_ENDED ? "had ended" : "had failed", cur);
    ok = false;
  } else if (at.seq != cur || strcmp(at.step_id, cur_id) != 0) {
    snprintf(why, sizeof why,
             "the record says step %s at seq %" PRIu32 ", but the script is at step %s, seq %u",
             at.step_id, at.seq, cur_id, cur);
    ok = false;
  }
  run_t run;
  memset(&run, 0, sizeof run);
  bool ran = false;
  if (ok) {
    rc = run_attempt(au, au->sim, &at, &a, &run, &err);
    if (rc != HS_OK) {
      hs_arena_reset(&a);
      fprintf(stderr, "handsel audit replay: %s\n", err.msg);
      return rc;
    }
    ran = true;
    ok = follows(&at, &run, why, sizeof why);
    if (!ok && au->n_pending > 0) {
      hs_arena_t b;
      hs_arena_init(&b, 0);
      if (explain_by_rebuild(au, &at, &b)) {
        ok = true;
        note = " (by a copy rebuilt from the record, as a server holds it after a reload)";
      }
      hs_arena_reset(&b);
    }
  }
  if (ok) {
    char res[512];
    show_result(at.accepted, at.errors, res, sizeof res);
    printf("seq %" PRIu32 " %s: %s, matches%s\n", at.seq, at.step_id, res, note);
  } else {
    printf("seq %" PRIu32 " %s: %s\n", at.seq, at.step_id, why);
    char label[96];
    snprintf(label, sizeof label, "seq %" PRIu32 " %s", at.seq, at.step_id);
    finding(au, label);
  }
  /* Keep the simulation where the server's record is, so one forged or altered attempt is
   * named alone and the ones after it are still checked. A record at another step than the
   * script's (a duplicate, a skipped seq) cannot be followed: the simulation stays put. */
  bool moved = ran && run.rc == HS_OK && run.accepted;
  size_t log_len = au->log->as.arr.len;
  if (ran && at.accepted) {
    rc = log_append(au, at.events, &err);
    pending_clear(au);
  } else if (ran && ok) {
    rc = pending_add(au, row, &err);
  }
  /* A mismatch leaves the simulation elsewhere than the record when either side moved on (the
   * record accepted, or the script did) or the script failed: rebuild it from the record. */
  bool resync = rc == HS_OK && ran && !ok &&
                (at.accepted || moved || hs_session_status(au->sim) == HS_SESSION_FAILED);
  if (resync) {
    hs_session_t *s = rebuild(au, &err);
    if (s != NULL) {
      hs_session_free(au->sim);
      au->sim = s;
      pending_clear(au);
    } else {
      /* The record's own events do not replay: go on from the script's run instead, so the
       * attempts after this one are still checked. */
      printf("  the record cannot be replayed past this attempt (%s); the attempts after it are "
             "checked against the script's own run\n",
             err.msg);
      au->log->as.arr.len = log_len;
      rc = moved ? log_append(au, run.events, &err) : HS_OK;
    }
  }
  hs_arena_reset(&a);
  if (rc != HS_OK) {
    fprintf(stderr, "handsel audit replay: %s\n", err.msg);
  }
  return rc;
}

/* Starts the script from the session row and compares its start events with the recorded
 * ones. Returns HS_OK (findings counted), or an error that ends the audit. */
static int audit_start(audit_t *au, const PGresult *srow) {
  hs_arena_t a;
  hs_arena_init(&a, 0);
  hs_err_t err;
  hs_err_clear(&err);
  const uint8_t *rec_mp = NULL;
  size_t rec_len = 0;
  /* Columns: see k_session_sql. */
  hs_value_t *customer = decode_bytea(srow, 0, 5, &a, NULL, NULL, &err);
  hs_value_t *contractor = customer != NULL ? decode_bytea(srow, 0, 6, &a, NULL, NULL, &err) : NULL;
  hs_value_t *recorded =
      contractor != NULL ? decode_bytea(srow, 0, 8, &a, &rec_mp, &rec_len, &err) : NULL;
  if (recorded == NULL) {
    fprintf(stderr, "handsel audit replay: the session row cannot be read: %s\n", err.msg);
    hs_arena_reset(&a);
    return HS_EINVAL;
  }
  hs_session_start_t start = {
      .session_id = au->session_id,
      .customer = customer,
      .contractor = contractor,
      .seed = (uint64_t)strtoll(PQgetvalue(srow, 0, 7), NULL, 10),
      .at_ms = strtoll(PQgetvalue(srow, 0, 9), NULL, 10),
  };
  hs_step_result_t res;
  int rc = hs_session_start(au->proc, &start, &a, &au->sim, &res, &err);
  if (rc != HS_OK) {
    printf("start: the script fails to start from the recorded inputs: %s\n", err.msg);
    finding(au, "start");
    hs_arena_reset(&a);
    return HS_ECONFLICT;
  }
  char why[MAX_REASON];
  if (same_bytes(rec_mp, rec_len, recorded, res.events, "events", why, sizeof why)) {
    printf("start: matches\n");
  } else {
    printf("start: the recorded start events differ from the script's: %s\n", why);
    finding(au, "start");
  }
  /* Rebuilds start from the script's own start: it follows from the session row, which holds
   * the inputs, whatever the recorded events say. */
  rc = log_append(au, res.events, &err);
  hs_arena_reset(&a);
  if (rc != HS_OK) {
    fprintf(stderr, "handsel audit replay: %s\n", err.msg);
  }
  return rc;
}

static const char k_session_sql[] =
    "SELECT s.brand_id, b.name, s.process, s.version, s.contractor_id, s.customer, s.contractor,"
    " s.seed, s.events, round(extract(epoch FROM s.created_at) * 1000)::bigint"
    " FROM sessions s JOIN brands b ON b.id = s.brand_id"
    " WHERE s.id = $1 AND ($2::text IS NULL OR b.name = $2)";

/* Streams the attempts through audit_attempt on a connection of their own (au->pg stays free
 * for the blob look-ups an attempt needs), one row in memory at a time. */
static int audit_attempts(audit_t *au, PGconn *stream) {
  const char *params[] = {au->session_id, au->brand_id, au->process, au->version,
                          au->contractor_id};
  if (!PQsendQueryParams(stream, k_attempts_sql, 5, NULL, params, NULL, NULL, 0) ||
      !PQsetSingleRowMode(stream)) {
    fprintf(stderr, "handsel audit replay: %s", PQerrorMessage(stream));
    return HS_EUNAVAIL;
  }
  int rc = HS_OK;
  PGresult *r;
  while ((r = PQgetResult(stream)) != NULL) {
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_SINGLE_TUPLE) {
      if (rc == HS_OK) {
        rc = audit_attempt(au, r); /* after a failure the rest is drained unread */
      }
    } else if (st != PGRES_TUPLES_OK && rc == HS_OK) {
      fprintf(stderr, "handsel audit replay: %s", PQresultErrorMessage(r));
      rc = HS_EUNAVAIL;
    }
    PQclear(r);
  }
  return rc;
}

static void audit_free(audit_t *au) {
  hs_session_free(au->sim);
  hs_vm_free(au->vm);
  hs_arena_reset(&au->log_arena);
  pending_clear(au);
}

/* Loads the session and its version; prints why and returns 2 when they cannot be had. */
static int audit_open(audit_t *au, const char *brand, PGresult **srow_out) {
  const char *params[] = {au->session_id, brand};
  PGresult *srow = query(au->pg, k_session_sql, 2, params);
  if (srow == NULL) {
    return 2;
  }
  if (PQntuples(srow) != 1) {
    if (brand != NULL) {
      fprintf(stderr, "handsel audit replay: there is no session %s of brand %s\n", au->session_id,
              brand);
    } else {
      fprintf(stderr, "handsel audit replay: there is no session %s\n", au->session_id);
    }
    PQclear(srow);
    return 2;
  }
  hs_strlcpy(au->brand_id, PQgetvalue(srow, 0, 0), sizeof au->brand_id);
  hs_strlcpy(au->process, PQgetvalue(srow, 0, 2), sizeof au->process);
  hs_strlcpy(au->version, PQgetvalue(srow, 0, 3), sizeof au->version);
  hs_strlcpy(au->contractor_id, PQgetvalue(srow, 0, 4), sizeof au->contractor_id);
  const char *vparams[] = {au->brand_id, au->process, au->version};
  PGresult *src = query(au->pg,
                        "SELECT source FROM process_versions"
                        " WHERE brand_id = $1 AND name = $2 AND version = $3",
                        3, vparams);
  if (src == NULL || PQntuples(src) != 1) {
    fprintf(stderr,
            "handsel audit replay: the session is pinned to version %s of %s, which is not "
            "stored\n",
            au->version, au->process);
    PQclear(src);
    PQclear(srow);
    return 2;
  }
  printf("session %s: process %s of brand %s, version %s, contractor %s\n", au->session_id,
         au->process, PQgetvalue(srow, 0, 1), au->version, au->contractor_id);
  hs_err_t err;
  hs_err_clear(&err);
  /* The VM is named by the brand's id, as the server's are: messages read the same. */
  char chunk[80];
  snprintf(chunk, sizeof chunk, "%s.lua", au->process);
  int rc = hs_vm_new(au->brand_id, NULL, &au->vm, &err);
  if (rc == HS_OK) {
    rc = hs_process_load(au->vm, chunk, PQgetvalue(src, 0, 0), (size_t)PQgetlength(src, 0, 0),
                         &au->proc, &err);
  }
  PQclear(src);
  if (rc != HS_OK) {
    printf("version: the stored source does not load: %s\n", err.msg);
    PQclear(srow);
    return 1;
  }
  if (strcmp(hs_process_version(au->proc), au->version) != 0) {
    printf("version: the stored source hashes to %s, not to the version %s it is stored as\n",
           hs_process_version(au->proc), au->version);
    PQclear(srow);
    return 1;
  }
  *srow_out = srow;
  return 0;
}

int hs_cmd_audit_main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    hs_cmd_audit_help(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (strcmp(argv[1], "replay") != 0) {
    fprintf(stderr, "handsel audit: unknown action '%s' (see handsel help audit)\n", argv[1]);
    return 2;
  }
  const char *db = getenv("HANDSEL_DB");
  const char *brand = NULL, *session = NULL;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--db") == 0 && i + 1 < argc) {
      db = argv[++i];
    } else if (strcmp(argv[i], "--brand") == 0 && i + 1 < argc) {
      brand = argv[++i];
    } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      hs_cmd_audit_help(stdout);
      return 0;
    } else if (session == NULL && argv[i][0] != '-') {
      session = argv[i];
    } else {
      fprintf(stderr, "handsel audit replay: unexpected argument '%s' (see handsel help audit)\n",
              argv[i]);
      return 2;
    }
  }
  if (session == NULL || !hs_uuid_valid(session)) {
    fprintf(stderr, "handsel audit replay: give the session's id, a UUID such as "
                    "3f1c9b52-8d4e-4b7a-9c61-2f0e5d7a8b90\n");
    return 2;
  }
  if (brand != NULL && !hs_api_valid_name(brand)) {
    fprintf(stderr, "handsel audit replay: --brand takes a brand name: lower-case letters, "
                    "digits and dashes, at most 64\n");
    return 2;
  }
  PGconn *pg = connect_db(db);
  if (pg == NULL) {
    return 2;
  }
  audit_t au;
  memset(&au, 0, sizeof au);
  au.pg = pg;
  au.session_id = session;
  hs_arena_init(&au.log_arena, 0);
  au.log = hs_value_new_array(&au.log_arena, 16);
  PGresult *srow = NULL;
  int status = au.log != NULL ? audit_open(&au, brand, &srow) : 2;
  int rc = HS_OK;
  if (status == 0) {
    rc = audit_start(&au, srow);
    PQclear(srow);
    PGconn *stream = rc == HS_OK ? connect_db(db) : NULL;
    if (stream != NULL) {
      rc = audit_attempts(&au, stream);
      PQfinish(stream);
    } else if (rc == HS_OK) {
      rc = HS_EUNAVAIL;
    }
    if (rc == HS_OK) {
      if (au.n_bad == 0) {
        printf("%ld attempt%s (%ld accepted, %ld rejected): every one follows from the "
               "recorded inputs\n",
               au.n_attempts, au.n_attempts == 1 ? "" : "s", au.n_accepted, au.n_rejected);
      } else {
        printf("%ld attempt%s (%ld accepted, %ld rejected): %ld finding%s: the record does not "
               "follow from the inputs%s%s\n",
               au.n_attempts, au.n_attempts == 1 ? "" : "s", au.n_accepted, au.n_rejected, au.n_bad,
               au.n_bad == 1 ? "" : "s", au.n_listed > 0 ? " at " : "", au.listed);
      }
      status = au.n_bad == 0 ? 0 : 1;
    } else if (rc == HS_ECONFLICT) {
      status = 1; /* the script does not even start: a finding, printed already */
    } else {
      fprintf(stderr, "handsel audit replay: the audit could not be completed\n");
      status = 2;
    }
  }
  audit_free(&au);
  PQfinish(pg);
  return status;
}
