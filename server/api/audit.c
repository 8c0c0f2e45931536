/* GET /v1/audit, /v1/audit/checkpoint and /v1/audit/key: the compliance log, for compliance
 * staff and admins (SPEC §4, §6).
 *
 * The export streams the brand's sealed records in chain order, from the checkpoint before
 * `from` (or the chain's start) to the latest checkpoint, one page of records at a time: a page
 * is fetched only once the previous one has left the stream's buffer, so memory stays flat
 * however long the export. Records that the filters leave out still travel as their position
 * and hash ("elided"), because the verifier needs every link of the chain to reach the signed
 * head. The format is in proto/README.md; `handsel verify` checks it. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/auth.h"
#include "api/common.h"
#include "audit/record.h"
#include "audit/rows.h"
#include "audit/sign.h"
#include "codec/codec.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/str.h"
#include "http/worker.h"
#include "store/store.h"

enum {
  PAGE_ROWS = 2000, /* records per database round trip */
};

/* Runs x only while everything before it succeeded: the line builders below chain dozens of
 * appends, and the first failure is the one reported. */
#define TRY(x)                                                                                     \
  do {                                                                                             \
    if (rc == HS_OK) {                                                                             \
      rc = (x);                                                                                    \
    }                                                                                              \
  } while (0)

typedef struct xop {
  hs_req_t *req;
  hs_principal_t who;
  hs_db_job_t *job;
  /* Filters; empty / 0 when not given. */
  int64_t from_us, to_us;
  char process[65];
  char contractor[129];
  char session[40];
  char result[9];
  bool csv;
  bool see_pii;
  /* Progress through the chain. */
  int64_t position; /* records passed so far: the chain's size at after_id */
  int64_t after_id; /* the last record id passed */
  /* The next page to ask for: while one page is written out, the database already reads the
   * next (at most one query in flight, at most two pages of output held). */
  int64_t fetch_after_id;
  int64_t fetch_position;
  bool fetching;
  bool exhausted;   /* every page up to the covering checkpoint has been asked for */
  int64_t end_size; /* the covering checkpoint */
  int64_t end_through;
  uint8_t chain[32];
  uint64_t matched;
  hs_buf_t out;     /* owned: the page being written */
  hs_buf_t scratch; /* owned: the canonical encoding of the record being hashed */
  hs_arena_t arena;
} xop_t;

static void xop_free(xop_t *op) {
  hs_buf_free(&op->out);
  hs_buf_free(&op->scratch);
  hs_arena_reset(&op->arena);
  free(op);
}

static void on_cancel(hs_req_t *req) {
  xop_t *op = req->data;
  hs_db_job_cancel(op->job);
  xop_free(op);
}

static hs_store_t *store_of(hs_req_t *req) {
  return req->worker->app;
}

/* ------------------------------------------------------------ writing lines */

static int put_str(hs_buf_t *b, const char *s) {
  return hs_json_put_string(b, s, strlen(s));
}

/* A string literal, without strlen. */
#define PUT_LIT(b, lit) hs_buf_append((b), (lit), sizeof(lit) - 1)

/* The writers below run once per record of an export of millions: they append directly
 * instead of going through printf. */
static int put_hex(hs_buf_t *b, const uint8_t *p, size_t n) {
  int rc = hs_buf_reserve(b, 2 * n + 3);
  if (rc == HS_OK) {
    char *o = (char *)b->data + b->len;
    o[0] = '"';
    hs_hex(p, n, o + 1); /* writes a NUL, overwritten by the quote */
    o[2 * n + 1] = '"';
    b->len += 2 * n + 2;
  }
  return rc;
}

/* RFC 3339 with microseconds, quoted. Records of one export come in bursts within the same
 * second, so the date and time part is formatted once per second. */
static int put_time(hs_buf_t *b, int64_t us) {
  static _Thread_local int64_t cached_sec = INT64_MIN;
  static _Thread_local char cached[32];
  int64_t sec = us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000);
  int64_t frac = us - sec * 1000000;
  if (sec != cached_sec) {
    hs_audit_time_format(sec * 1000000, cached); /* "…T10:15:03.000000Z" */
    cached[19] = '\0';
    cached_sec = sec;
  }
  char tail[10] = {'.', 0, 0, 0, 0, 0, 0, 'Z', '"'};
  for (int i = 6; i >= 1; i--) {
    tail[i] = (char)('0' + frac % 10);
    frac /= 10;
  }
  int rc = hs_buf_append(b, "\"", 1);
  if (rc == HS_OK) {
    rc = hs_buf_append(b, cached, 19);
  }
  if (rc == HS_OK) {
    rc = hs_buf_append(b, tail, 9);
  }
  return rc;
}

/* True when key is one of the names in ctx, a list of pii field names one per line. */
static bool is_hidden(void *ctx, const char *key, size_t kl) {
  for (const char *d = ctx; *d != '\0';) {
    const char *nl = strchr(d, '\n');
    size_t dl = nl != NULL ? (size_t)(nl - d) : strlen(d);
    if (dl == kl && memcmp(d, key, kl) == 0) {
      return true;
    }
    d += dl + (nl != NULL);
  }
  return false;
}

/* Stored msgpack (a map) as JSON; NULL bytes as null. With drop set (the record's pii names,
 * one per line), those members are left out. */
static int put_msgpack(hs_buf_t *b, const uint8_t *p, size_t n, const char *drop) {
  if (p == NULL) {
    return PUT_LIT(b, "null");
  }
  return hs_msgpack_to_json(p, n, b, drop != NULL ? is_hidden : NULL, (void *)drop);
}

static bool matches(const xop_t *op, const hs_audit_record_t *r) {
  return (op->from_us == 0 || r->server_us >= op->from_us) &&
         (op->to_us == 0 || r->server_us <= op->to_us) &&
         (op->process[0] == '\0' || strcmp(op->process, r->process) == 0) &&
         (op->contractor[0] == '\0' || strcmp(op->contractor, r->contractor) == 0) &&
         (op->session[0] == '\0' || strcmp(op->session, r->session) == 0) &&
         (op->result[0] == '\0' || strcmp(op->result, r->result) == 0);
}

/* The pii names of a record that this reader may not see, or NULL. */
static const char *hidden(const xop_t *op, const PGresult *res, int row) {
  if (op->see_pii || PQgetisnull(res, row, HS_AUDIT_ROW_COLUMNS + 1)) {
    return NULL;
  }
  const char *names = PQgetvalue(res, row, HS_AUDIT_ROW_COLUMNS + 1);
  return names[0] != '\0' ? names : NULL;
}

static int put_record_ndjson(xop_t *op, const PGresult *res, int row, const hs_audit_record_t *r,
                             const uint8_t hash[32]) {
  hs_buf_t *b = &op->out;
  const char *drop = hidden(op, res, row);
  int rc = PUT_LIT(b, "{\"type\":\"record\",\"position\":");
  TRY(hs_buf_put_int(b, op->position));
  TRY(PUT_LIT(b, ",\"id\":"));
  TRY(hs_buf_put_int(b, r->id));
  TRY(PUT_LIT(b, ",\"session\":"));
  TRY(put_str(b, r->session));
  TRY(PUT_LIT(b, ",\"process\":"));
  TRY(put_str(b, r->process));
  TRY(PUT_LIT(b, ",\"version\":"));
  TRY(put_str(b, r->version));
  TRY(PUT_LIT(b, ",\"step\":"));
  TRY(put_str(b, r->step));
  TRY(PUT_LIT(b, ",\"seq\":"));
  TRY(hs_buf_put_int(b, r->seq));
  TRY(PUT_LIT(b, ",\"contractor\":"));
  TRY(put_str(b, r->contractor));
  TRY(PUT_LIT(b, ",\"server_time\":"));
  TRY(put_time(b, r->server_us));
  TRY(PUT_LIT(b, ",\"device_time\":"));
  TRY((r->has_device ? put_time(b, r->device_us) : PUT_LIT(b, "null")));
  TRY(PUT_LIT(b, ",\"result\":"));
  TRY(put_str(b, r->result));
  TRY(PUT_LIT(b, ",\"errors\":"));
  TRY(put_msgpack(b, r->errors, r->errors_len, NULL));
  TRY(PUT_LIT(b, ",\"data\":"));
  TRY(put_msgpack(b, (const uint8_t *)PQgetvalue(res, row, HS_AUDIT_ROW_COLUMNS),
                  (size_t)PQgetlength(res, row, HS_AUDIT_ROW_COLUMNS), drop));
  if (drop != NULL) {
    TRY(PUT_LIT(b, ",\"redacted\":["));
    for (const char *d = drop; rc == HS_OK && *d != '\0';) {
      const char *nl = strchr(d, '\n');
      size_t dl = nl != NULL ? (size_t)(nl - d) : strlen(d);
      rc = hs_json_put_string(b, d, dl);
      d += dl + (nl != NULL);
      TRY((*d != '\0' ? PUT_LIT(b, ",") : HS_OK));
    }
    TRY(PUT_LIT(b, "]"));
  }
  TRY(PUT_LIT(b, ",\"data_digest\":"));
  TRY(put_hex(b, r->data_digest, 32));
  TRY(PUT_LIT(b, ",\"documents\":"));
  TRY(put_msgpack(b, r->documents, r->documents_len, NULL));
  TRY(PUT_LIT(b, ",\"record_hash\":"));
  TRY(put_hex(b, hash, 32));
  TRY(PUT_LIT(b, ",\"chain\":"));
  TRY(put_hex(b, op->chain, 32));
  if (rc == HS_OK) {
    rc = PUT_LIT(b, "}\n");
  }
  return rc;
}

/* CSV (RFC 4180) for spreadsheets. A cell that a spreadsheet would run as a formula (it starts
 * with = + - @, a tab, a carriage return or NUL) gets a leading apostrophe (CWE-1236); the
 * NDJSON export is the one to verify. */
static int put_csv_cell(hs_buf_t *b, const char *s, size_t n, bool last) {
  bool guard = n > 0 && strchr("=+-@\t\r", s[0]) != NULL;
  bool quote =
      guard || memchr(s, ',', n) || memchr(s, '"', n) || memchr(s, '\n', n) || memchr(s, '\r', n);
  int rc = quote ? PUT_LIT(b, "\"") : HS_OK;
  TRY((guard ? PUT_LIT(b, "'") : HS_OK));
  for (size_t i = 0; rc == HS_OK && i < n; i++) {
    rc = s[i] == '"' ? PUT_LIT(b, "\"\"") : hs_buf_append(b, &s[i], 1);
  }
  TRY((quote ? PUT_LIT(b, "\"") : HS_OK));
  if (rc == HS_OK) {
    rc = hs_buf_puts(b, last ? "\r\n" : ",");
  }
  return rc;
}

static int put_csv_str(hs_buf_t *b, const char *s, bool last) {
  return put_csv_cell(b, s, strlen(s), last);
}

static int put_csv_json(hs_buf_t *b, const uint8_t *p, size_t n, const char *drop) {
  hs_buf_t tmp;
  hs_buf_init(&tmp, 0);
  int rc = p != NULL ? put_msgpack(&tmp, p, n, drop) : HS_OK;
  TRY(put_csv_cell(b, tmp.data != NULL ? (const char *)tmp.data : "", tmp.len, false));
  hs_buf_free(&tmp);
  return rc;
}

static const char k_csv_header[] = "position,id,server_time,device_time,session,process,version,"
                                   "step,seq,contractor,result,errors,data,redacted,data_digest,"
                                   "documents,record_hash,chain\r\n";

static int put_record_csv(xop_t *op, const PGresult *res, int row, const hs_audit_record_t *r,
                          const uint8_t hash[32]) {
  hs_buf_t *b = &op->out;
  const char *drop = hidden(op, res, row);
  char num[32], t1[32], t2[32], hex[65], chain[65];
  snprintf(num, sizeof num, "%" PRId64, op->position);
  int rc = put_csv_str(b, num, false);
  snprintf(num, sizeof num, "%" PRId64, r->id);
  TRY(put_csv_str(b, num, false));
  hs_audit_time_format(r->server_us, t1);
  TRY(put_csv_str(b, t1, false));
  if (r->has_device) {
    hs_audit_time_format(r->device_us, t2);
  } else {
    t2[0] = '\0';
  }
  TRY(put_csv_str(b, t2, false));
  TRY(put_csv_str(b, r->session, false));
  TRY(put_csv_str(b, r->process, false));
  TRY(put_csv_str(b, r->version, false));
  TRY(put_csv_str(b, r->step, false));
  snprintf(num, sizeof num, "%" PRId64, r->seq);
  TRY(put_csv_str(b, num, false));
  TRY(put_csv_str(b, r->contractor, false));
  TRY(put_csv_str(b, r->result, false));
  TRY(put_csv_json(b, r->errors, r->errors_len, NULL));
  TRY(put_csv_json(b, (const uint8_t *)PQgetvalue(res, row, HS_AUDIT_ROW_COLUMNS),
                   (size_t)PQgetlength(res, row, HS_AUDIT_ROW_COLUMNS), drop));
  /* The redacted names, space-separated. */
  char names[1024] = "";
  if (drop != NULL) {
    hs_strlcpy(names, drop, sizeof names);
    for (char *c = names; *c != '\0'; c++) {
      *c = *c == '\n' ? ' ' : *c;
    }
  }
  TRY(put_csv_str(b, names, false));
  hs_hex(r->data_digest, 32, hex);
  TRY(put_csv_str(b, hex, false));
  TRY(put_csv_json(b, r->documents, r->documents_len, NULL));
  hs_hex(hash, 32, hex);
  TRY(put_csv_str(b, hex, false));
  hs_hex(op->chain, 32, chain);
  if (rc == HS_OK) {
    rc = put_csv_str(b, chain, true);
  }
  return rc;
}

static int put_checkpoint(xop_t *op, const PGresult *res, int row) {
  /* size, head, through_id, signed_us, key_id, signature (binary) */
  int64_t size = hs_audit_be64(PQgetvalue(res, row, 0));
  char head[65], sig[129], t[32];
  hs_hex((const uint8_t *)PQgetvalue(res, row, 1), 32, head);
  hs_audit_time_format(hs_audit_be64(PQgetvalue(res, row, 3)), t);
  hs_hex((const uint8_t *)PQgetvalue(res, row, 5), 64, sig);
  int rc = PUT_LIT(&op->out, "{\"type\":\"checkpoint\",\"brand\":");
  TRY(put_str(&op->out, op->who.brand));
  if (rc == HS_OK) {
    rc = hs_buf_printf(&op->out,
                       ",\"size\":%" PRId64 ",\"head\":\"%s\",\"time\":\"%s\","
                       "\"key_id\":\"%s\",\"signature\":\"%s\"}\n",
                       size, head, t, PQgetvalue(res, row, 4), sig);
  }
  return rc;
}

/* ------------------------------------------------------------ paging */

static void fetch_page(xop_t *op);

static void finish(xop_t *op) {
  hs_req_t *req = op->req;
  hs_db_job_cancel(op->job);
  op->job = NULL;
  req->on_cancel = NULL;
  req->on_drain = NULL;
  req->data = NULL;
  hs_log(HS_LOG_INFO, "audit_export", "{s:s, s:s, s:i, s:i}", "brand", op->who.brand, "subject",
         op->who.subject, "records", (int)op->position, "matched", (int)op->matched);
  xop_free(op);
  hs_req_stream_end(req);
}

enum { OUT_CAP = 2 * 1024 * 1024 }; /* output held before the next page is asked for */

static void maybe_fetch(xop_t *op) {
  if (!op->fetching && !op->exhausted && op->out.len < OUT_CAP) {
    fetch_page(op);
  }
}

/* Hands the pages written so far to the stream; asks for the next page; ends the export once
 * every page has been written and sent to the stream. */
static void pump(hs_req_t *req) {
  xop_t *op = req->data;
  if (op->out.len > 0) {
    int rc = hs_req_stream_write_buf(req, &op->out);
    if (rc == HS_ELIMIT) {
      /* The stream holds its cap: wait until half of it is sent. At most the cap plus two
       * pages are held. */
      req->on_drain = pump;
      return;
    }
    if (rc != HS_OK) {
      finish(op); /* the client cannot take more; the truncated export fails verification */
      return;
    }
  }
  req->on_drain = NULL;
  maybe_fetch(op);
  if (op->exhausted && !op->fetching) {
    finish(op);
  }
}

static void on_page(void *ctx, const hs_db_result_t *res) {
  xop_t *op = ctx;
  op->job = NULL;
  if (res->status != HS_OK) {
    /* Headers are out: the stream just ends, short of its checkpoint, and verification says
     * so. The log says why. */
    hs_log(HS_LOG_WARN, "audit_export_failed", "{s:s}", "error", res->error);
    finish(op);
    return;
  }
  PGresult *recs = res->results[0];
  PGresult *cps = res->results[1];
  int n = PQntuples(recs);
  int n_cps = PQntuples(cps);
  int cp = 0;
  op->fetching = false;
  if (n > 0 && PQgetlength(recs, n - 1, 0) == 8) {
    op->fetch_after_id = hs_audit_be64(PQgetvalue(recs, n - 1, 0));
    op->fetch_position += n;
  }
  op->exhausted = n == 0 || op->fetch_position >= op->end_size;
  maybe_fetch(op); /* the database reads the next page while this one is written */
  hs_arena_reset(&op->arena);
  int rc = HS_OK;
  for (int i = 0; rc == HS_OK && i < n; i++) {
    hs_audit_record_t r;
    int64_t brand_id;
    uint8_t h[32];
    rc = hs_audit_row_parse(recs, i, &r, &brand_id);
    TRY(hs_audit_record_hash(&r, &op->scratch, h));
    if (rc != HS_OK) {
      break;
    }
    op->position++;
    op->after_id = r.id;
    hs_audit_chain_next(op->chain, h, op->chain);
    if (matches(op, &r)) {
      op->matched++;
      rc = op->csv ? put_record_csv(op, recs, i, &r, h) : put_record_ndjson(op, recs, i, &r, h);
    } else if (!op->csv) {
      rc = PUT_LIT(&op->out, "{\"type\":\"elided\",\"position\":");
      TRY(hs_buf_put_int(&op->out, op->position));
      TRY(PUT_LIT(&op->out, ",\"record_hash\":"));
      TRY(put_hex(&op->out, h, 32));
      TRY(PUT_LIT(&op->out, ",\"chain\":"));
      TRY(put_hex(&op->out, op->chain, 32));
      TRY(PUT_LIT(&op->out, "}\n"));
    }
    /* The checkpoints inside the range go right after the record they end at, so a verifier
     * can pin a tampered record down to the stretch between two signatures. */
    while (rc == HS_OK && cp < n_cps && hs_audit_be64(PQgetvalue(cps, cp, 0)) <= op->position) {
      if (hs_audit_be64(PQgetvalue(cps, cp, 0)) == op->position) {
        if (memcmp(PQgetvalue(cps, cp, 1), op->chain, 32) != 0) {
          hs_log(HS_LOG_ERROR, "audit_chain_mismatch", "{s:s, s:i}", "brand", op->who.brand, "size",
                 (int)op->position);
        }
        if (!op->csv) {
          rc = put_checkpoint(op, cps, cp);
        }
      }
      cp++;
    }
  }
  if (rc != HS_OK) {
    hs_log(HS_LOG_ERROR, "audit_export_failed", "{s:s, s:i}", "error", "a record could not be read",
           "id", (int)op->after_id);
    finish(op);
    return;
  }
  pump(op->req);
}

static void fetch_page(xop_t *op) {
  char brand[24], after[24], through[24], pos[24], end[24], rows[16];
  snprintf(brand, sizeof brand, "%" PRId64, op->who.brand_id);
  snprintf(after, sizeof after, "%" PRId64, op->fetch_after_id);
  snprintf(through, sizeof through, "%" PRId64, op->end_through);
  snprintf(pos, sizeof pos, "%" PRId64, op->fetch_position);
  snprintf(end, sizeof end, "%" PRId64, op->end_size);
  snprintf(rows, sizeof rows, "%d", PAGE_ROWS);
  const char *p1[] = {brand, after, through, rows, op->who.brand};
  const char *p2[] = {brand, pos, end, rows};
  /* A page ends at the next record with more than 4 KiB of data (validation_records_large), so
   * it holds at most PAGE_ROWS small records and one large one. */
  hs_db_stmt_t st[] = {
      {.name = "hs_audit_page",
       .sql = "SELECT " HS_AUDIT_ROW_SELECT ", r.data, array_to_string(r.pii, E'\\n')"
              " FROM validation_records r, (SELECT $5::text AS name) b"
              " WHERE r.brand_id = $1::int8 AND r.id > $2::int8 AND r.id <= least($3::int8,"
              " coalesce((SELECT l.id FROM validation_records l WHERE l.brand_id = $1::int8"
              " AND l.id > $2::int8 AND octet_length(l.data) > 4096 ORDER BY l.id LIMIT 1),"
              " $3::int8)) ORDER BY r.id LIMIT $4::int4",
       .n_params = 5,
       .values = p1,
       .binary_result = true},
      {.name = "hs_audit_page_cps",
       .sql = "SELECT size, head, through_id, signed_us, key_id, signature FROM audit_checkpoints"
              " WHERE brand_id = $1::int8 AND size > $2::int8 AND size <= least($3::int8,"
              " $2::int8 + $4::int4) ORDER BY size",
       .n_params = 4,
       .values = p2,
       .binary_result = true},
  };
  if (hs_db_exec(hs_store_pool(store_of(op->req)), st, 2, on_page, op, &op->job) != HS_OK) {
    hs_log(HS_LOG_WARN, "audit_export_failed", "{s:s}", "error", "the database is unavailable");
    op->exhausted = true; /* the stream ends short of its checkpoint: verification says so */
    return;
  }
  op->fetching = true;
}

/* ------------------------------------------------------------ GET /v1/audit */

static void on_start(void *ctx, const hs_db_result_t *res) {
  xop_t *op = ctx;
  op->job = NULL;
  hs_req_t *req = op->req;
  if (res->status != HS_OK) {
    req->on_cancel = NULL;
    req->data = NULL;
    xop_free(op);
    hs_api_unavailable(req, res->error);
    return;
  }
  PGresult *end = res->results[0];
  PGresult *start = res->results[1];
  bool have_end = PQntuples(end) == 1;
  if (PQntuples(start) == 1) {
    op->position = hs_audit_be64(PQgetvalue(start, 0, 0));
    memcpy(op->chain, PQgetvalue(start, 0, 1), 32);
    op->after_id = hs_audit_be64(PQgetvalue(start, 0, 2));
  }
  op->fetch_after_id = op->after_id;
  op->fetch_position = op->position;
  int64_t start_size = op->position;
  uint8_t start_head[32];
  memcpy(start_head, op->chain, 32);
  if (have_end) {
    op->end_size = hs_audit_be64(PQgetvalue(end, 0, 0));
    op->end_through = hs_audit_be64(PQgetvalue(end, 0, 2));
  } else {
    op->end_size = op->position;
  }
  op->exhausted = op->fetch_position >= op->end_size;
  char count[24];
  snprintf(count, sizeof count, "%" PRId64, op->end_size - start_size);
  const char *headers[] = {"x-handsel-records", count};
  int rc = hs_req_stream_start_h(
      req, 200, op->csv ? "text/csv; charset=utf-8" : "application/x-ndjson", headers, 1);
  if (rc != HS_OK) {
    req->on_cancel = NULL;
    req->data = NULL;
    xop_free(op);
    hs_api_unavailable(req, "cannot start the export");
    return;
  }
  if (op->csv) {
    rc = hs_buf_puts(&op->out, k_csv_header);
  } else {
    /* The header line: what this export covers and where its chain starts. */
    char now[32];
    hs_audit_time_format(hs_time_now_ms() * 1000, now);
    hs_buf_t *b = &op->out;
    rc = PUT_LIT(b, "{\"type\":\"export\",\"format\":\"handsel-audit-v1\",\"brand\":");
    TRY(put_str(b, op->who.brand));
    TRY(hs_buf_printf(b, ",\"exported_at\":\"%s\",\"filters\":{", now));
    bool first = true;
#define FILTER(key, val)                                                                           \
  if (rc == HS_OK && (val)[0] != '\0') {                                                           \
    rc = hs_buf_printf(b, "%s\"" key "\":", first ? "" : ",");                                     \
    TRY(put_str(b, val));                                                                          \
    first = false;                                                                                 \
  }
    char from[32] = "", to[32] = "";
    if (op->from_us != 0) {
      hs_audit_time_format(op->from_us, from);
    }
    if (op->to_us != 0) {
      hs_audit_time_format(op->to_us, to);
    }
    FILTER("from", from)
    FILTER("to", to)
    FILTER("process", op->process)
    FILTER("contractor", op->contractor)
    FILTER("session", op->session)
    FILTER("result", op->result)
#undef FILTER
    TRY(hs_buf_printf(b, "},\"pii\":%s,\"start\":{\"size\":%" PRId64 ",\"head\":",
                      op->see_pii ? "\"shown\"" : "\"redacted\"", start_size));
    TRY(put_hex(b, start_head, 32));
    TRY(hs_buf_printf(b, "},\"end\":{\"size\":%" PRId64 "},\"records\":%" PRId64 "}\n",
                      op->end_size, op->end_size - start_size));
  }
  if (rc != HS_OK) {
    finish(op);
    return;
  }
  pump(req);
}

/* The query parameters, checked: a misspelt filter must not silently export everything. */
static bool parse_filters(hs_req_t *req, xop_t *op) {
  static const char *const known[] = {"from",    "to",     "process", "contractor",
                                      "session", "result", "format",  NULL};
  for (const char *q = req->query; *q != '\0';) {
    const char *amp = strchr(q, '&');
    size_t len = amp != NULL ? (size_t)(amp - q) : strlen(q);
    const char *eq = memchr(q, '=', len);
    size_t kl = eq != NULL ? (size_t)(eq - q) : len;
    bool ok = kl == 0;
    for (size_t i = 0; !ok && known[i] != NULL; i++) {
      ok = strlen(known[i]) == kl && memcmp(known[i], q, kl) == 0;
    }
    if (!ok) {
      hs_req_respond_error(req, 400, "malformed",
                           "Unknown query parameter '%.*s': the filters are from, to, process, "
                           "contractor, session, result and format",
                           (int)(kl > 64 ? 64 : kl), q);
      return false;
    }
    q += len + (amp != NULL);
  }
  char v[160];
  const char *times[] = {"from", "to"};
  int64_t *dst[] = {&op->from_us, &op->to_us};
  for (int i = 0; i < 2; i++) {
    int rc = hs_req_query(req, times[i], v, sizeof v);
    if (rc == HS_OK) {
      int64_t ms = 0;
      if (hs_time_parse(v, &ms) != HS_OK || ms <= 0) {
        hs_req_respond_error(req, 400, "malformed",
                             "%s must be a time like 2026-11-23T09:30:00Z (RFC 3339)", times[i]);
        return false;
      }
      *dst[i] = ms * 1000;
    } else if (rc == HS_ELIMIT) {
      hs_req_respond_error(req, 400, "malformed", "%s is too long to be a time", times[i]);
      return false;
    }
  }
  if (op->from_us != 0 && op->to_us != 0 && op->from_us > op->to_us) {
    hs_req_respond_error(req, 400, "malformed", "from must not be after to");
    return false;
  }
  int rc = hs_req_query(req, "process", op->process, sizeof op->process);
  if (rc == HS_ELIMIT || (rc == HS_OK && !hs_api_valid_name(op->process))) {
    hs_req_respond_error(req, 400, "malformed",
                         "process must be a process name (lower-case letters, digits, dashes)");
    return false;
  }
  rc = hs_req_query(req, "contractor", op->contractor, sizeof op->contractor);
  if (rc == HS_ELIMIT || (rc == HS_OK && op->contractor[0] == '\0')) {
    hs_req_respond_error(req, 400, "malformed", "contractor must be 1 to 128 characters");
    return false;
  }
  rc = hs_req_query(req, "session", op->session, sizeof op->session);
  if (rc == HS_ELIMIT || (rc == HS_OK && !hs_uuid_valid(op->session))) {
    hs_req_respond_error(req, 400, "malformed", "session must be a session id (a UUID)");
    return false;
  }
  rc = hs_req_query(req, "result", op->result, sizeof op->result);
  if (rc == HS_ELIMIT ||
      (rc == HS_OK && strcmp(op->result, "accepted") != 0 && strcmp(op->result, "rejected") != 0)) {
    hs_req_respond_error(req, 400, "malformed", "result must be accepted or rejected");
    return false;
  }
  rc = hs_req_query(req, "format", v, 16);
  if (rc == HS_OK && strcmp(v, "csv") == 0) {
    op->csv = true;
  } else if (rc == HS_ELIMIT || (rc == HS_OK && strcmp(v, "ndjson") != 0)) {
    hs_req_respond_error(req, 400, "malformed", "format must be ndjson or csv");
    return false;
  }
  return true;
}

static void export_authorized(hs_req_t *req, const hs_principal_t *who) {
  xop_t *op = calloc(1, sizeof *op);
  if (op == NULL) {
    hs_api_unavailable(req, "out of memory");
    return;
  }
  hs_buf_init(&op->out, 0);
  hs_buf_init(&op->scratch, 0);
  hs_arena_init(&op->arena, 0);
  op->req = req;
  op->who = *who;
  /* Compliance staff see what was captured; an admin manages the brand and sees pii fields
   * only as redacted. */
  op->see_pii = who->role == HS_ROLE_COMPLIANCE;
  if (!parse_filters(req, op)) {
    xop_free(op);
    return;
  }
  req->data = op;
  req->on_cancel = on_cancel;
  char brand[24], from[24];
  snprintf(brand, sizeof brand, "%" PRId64, who->brand_id);
  snprintf(from, sizeof from, "%" PRId64, op->from_us != 0 ? op->from_us : INT64_MIN);
  const char *p1[] = {brand};
  const char *p2[] = {brand, from};
  /* The covering checkpoint is the latest; the start is the last checkpoint signed before
   * `from`: every record it covers committed before it was signed, so before `from`. */
  hs_db_stmt_t st[] = {
      {.name = "hs_audit_end",
       .sql = "SELECT size, head, through_id FROM audit_checkpoints WHERE brand_id = $1::int8"
              " ORDER BY size DESC LIMIT 1",
       .n_params = 1,
       .values = p1,
       .binary_result = true},
      {.name = "hs_audit_start",
       .sql = "SELECT size, head, through_id FROM audit_checkpoints WHERE brand_id = $1::int8"
              " AND signed_us <= $2::int8 ORDER BY size DESC LIMIT 1",
       .n_params = 2,
       .values = p2,
       .binary_result = true},
  };
  if (hs_db_exec(hs_store_pool(store_of(req)), st, 2, on_start, op, &op->job) != HS_OK) {
    req->on_cancel = NULL;
    req->data = NULL;
    xop_free(op);
    hs_api_unavailable(req, "the database is unavailable");
  }
}

void hs_api_audit_export(hs_req_t *req) {
  hs_auth_resolve(req, HS_ROLE_COMPLIANCE | HS_ROLE_ADMIN, export_authorized);
}

/* ------------------------------------------------------------ GET /v1/audit/checkpoint */

typedef struct cop {
  hs_principal_t who;
  hs_db_job_t *job;
} cop_t;

static void on_checkpoint(void *ctx, const hs_db_result_t *res) {
  hs_req_t *req = ctx;
  cop_t *op = req->data;
  req->on_cancel = NULL;
  req->data = NULL;
  char brand[65];
  hs_strlcpy(brand, op->who.brand, sizeof brand);
  free(op);
  if (res->status != HS_OK) {
    hs_api_unavailable(req, res->error);
    return;
  }
  PGresult *r = res->results[0];
  if (PQntuples(r) != 1) {
    hs_req_respond_error(req, 404, "not_found",
                         "No checkpoint yet: the brand has no sealed validation records");
    return;
  }
  hs_arena_t *a = &req->arena;
  char head[65], t[32];
  hs_hex((const uint8_t *)PQgetvalue(r, 0, 1), 32, head);
  hs_audit_time_format(hs_audit_be64(PQgetvalue(r, 0, 3)), t);
  hs_value_t *v = hs_value_new_map(a, 6);
  hs_value_t *sig = hs_value_new_bin(a, PQgetvalue(r, 0, 5), 64);
  if (v == NULL || sig == NULL || hs_map_add_str(a, v, "brand", brand) != HS_OK ||
      hs_map_add_int(a, v, "size", hs_audit_be64(PQgetvalue(r, 0, 0))) != HS_OK ||
      hs_map_add_str(a, v, "head", head) != HS_OK || hs_map_add_str(a, v, "time", t) != HS_OK ||
      hs_map_add_str(a, v, "key_id", PQgetvalue(r, 0, 4)) != HS_OK ||
      hs_map_add(a, v, "signature", sig) == NULL) {
    hs_api_unavailable(req, "out of memory");
    return;
  }
  hs_req_respond(req, 200, v);
}

static void checkpoint_cancel(hs_req_t *req) {
  cop_t *op = req->data;
  hs_db_job_cancel(op->job);
  free(op);
}

static void checkpoint_authorized(hs_req_t *req, const hs_principal_t *who) {
  cop_t *op = calloc(1, sizeof *op);
  if (op == NULL) {
    hs_api_unavailable(req, "out of memory");
    return;
  }
  op->who = *who;
  char brand[24];
  snprintf(brand, sizeof brand, "%" PRId64, who->brand_id);
  const char *p[] = {brand};
  hs_db_stmt_t st = {.name = "hs_audit_latest",
                     .sql = "SELECT size, head, through_id, signed_us, key_id, signature"
                            " FROM audit_checkpoints WHERE brand_id = $1::int8"
                            " ORDER BY size DESC LIMIT 1",
                     .n_params = 1,
                     .values = p,
                     .binary_result = true};
  req->data = op;
  if (hs_db_exec(hs_store_pool(store_of(req)), &st, 1, on_checkpoint, req, &op->job) != HS_OK) {
    req->data = NULL;
    free(op);
    hs_api_unavailable(req, "the database is unavailable");
    return;
  }
  req->on_cancel = checkpoint_cancel;
}

void hs_api_audit_checkpoint(hs_req_t *req) {
  hs_auth_resolve(req, HS_ROLE_COMPLIANCE | HS_ROLE_ADMIN, checkpoint_authorized);
}

/* ------------------------------------------------------------ GET /v1/audit/key */

static void key_authorized(hs_req_t *req, const hs_principal_t *who) {
  const hs_audit_key_t *key = hs_store_audit_key(store_of(req));
  if (key == NULL) {
    hs_api_unavailable(req, "no signing key is loaded");
    return;
  }
  hs_arena_t *a = &req->arena;
  hs_buf_t pem;
  hs_buf_init(&pem, 0);
  int rc = hs_audit_key_public_pem(key, &pem);
  TRY(hs_buf_append(&pem, "", 1));
  hs_value_t *v = hs_value_new_map(a, 4);
  hs_value_t *raw = hs_value_new_bin(a, hs_audit_key_public(key), 32);
  if (rc != HS_OK || v == NULL || raw == NULL ||
      hs_map_add_str(a, v, "algorithm", "ed25519") != HS_OK ||
      hs_map_add_str(a, v, "key_id", hs_audit_key_id(key)) != HS_OK ||
      hs_map_add(a, v, "public_key", raw) == NULL ||
      hs_map_add_str(a, v, "pem", (const char *)pem.data) != HS_OK) {
    hs_buf_free(&pem);
    hs_api_unavailable(req, "out of memory");
    return;
  }
  hs_buf_free(&pem);
  hs_req_respond(req, 200, v);
}

void hs_api_audit_key(hs_req_t *req) {
  hs_auth_resolve(req, HS_ROLE_COMPLIANCE | HS_ROLE_ADMIN, key_authorized);
}
