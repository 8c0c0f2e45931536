/* The compliance log end to end (SPEC §6): two servers sharing one PostgreSQL write validation
 * records at once, each seals and signs in batches, and the export of GET /v1/audit must verify
 * against the public key of GET /v1/audit/key, in full and filtered, with pii redacted for an
 * admin; the CSV form guards cells against formula injection; the database refuses to rewrite
 * records; and a randomized tamperer changes, removes, inserts and reorders records of the
 * export hundreds of times, each of which verification must catch and pin to the first record
 * it touched. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "audit/verify.h"
#include "core/ids.h"
#include "hs_test_api.h"
#include "hs_test_auth.h"
#include "hs_test_metrics.h"
#include "hs_test_pg.h"
#include "hs_test_server.h"

static hs_test_server_t g_a, g_b;
static PGconn *g_db;
static char g_key_path[HS_TEST_PATH_MAX];
static uint8_t g_pub[32];
static char g_brand[65]; /* the brand of the export test, shared with the tamper test */

/* A customer step with a pii phone number and a rule that rejects n = 7, then a consent that
 * acknowledges a versioned document. */
static const char VISIT[] =
    "return process {\n"
    "  name = \"visit\",\n"
    "  title = \"Audited visit\",\n"
    "  content = { terms = { kind = \"document\", title = \"Terms\",\n"
    "                        uri = \"https://cdn.example/terms.pdf\", version = \"3\" } },\n"
    "  run = function(visit)\n"
    "    visit:step { id = \"who\", title = \"Customer\",\n"
    "      fields = { field.text { name = \"phone\", label = \"Phone\", pii = true, required = "
    "true },\n"
    "                 field.text { name = \"note\", label = \"Note\" },\n"
    "                 field.integer { name = \"n\", label = \"N\", required = true, min = 1, max = "
    "9 } },\n"
    "      validate = function(d) if d.n == 7 then return { n = \"Seven is not allowed\" } end "
    "end }\n"
    "    visit:step { id = \"consent\", title = \"Consent\", audience = \"customer\",\n"
    "      fields = { field.ack { name = \"agreed\", label = \"Agreed\", document = \"terms\",\n"
    "                             required = true } } }\n"
    "  end,\n"
    "}\n";

static void call(hs_api_t *c, const char *role, const char *method, const char *path,
                 const char *body, hs_api_resp_t *r) {
  if (hs_api_call(c, role, method, path, body, r) != 0) {
    hs_test_server_dump_stderr(&g_a, 3000);
    fail_msg("%s %s: no answer", method, path);
  }
}

/* One visit: a rejected first try (n = 7), the accepted one, then the consent. Returns the
 * number of attempts (validation records) it made. */
static int visit(hs_api_t *c, const char *phone, const char *note, char id[40]) {
  int64_t seq = 0;
  int st = hs_api_start(c, "visit", NULL, id, &seq);
  if (st != 201 || seq != 1) {
    fail_msg("starting a visit: %d", st);
  }
  char path[128], body[512];
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  hs_api_step_path(path, sizeof path, id, 1);
  snprintf(body, sizeof body, "{\"data\":{\"phone\":\"%s\",\"note\":\"%s\",\"n\":7}}", phone, note);
  call(c, "contractor", "POST", path, body, &r);
  if (r.status != 422) {
    fail_msg("n = 7 must be rejected: %d %s", r.status, hs_api_body_text(&r));
  }
  snprintf(body, sizeof body, "{\"data\":{\"phone\":\"%s\",\"note\":\"%s\",\"n\":3}}", phone, note);
  call(c, "contractor", "POST", path, body, &r);
  if (r.status != 200) {
    fail_msg("step 1: %d %s", r.status, hs_api_body_text(&r));
  }
  hs_api_step_path(path, sizeof path, id, 2);
  call(c, "contractor", "POST", path, "{\"data\":{\"agreed\":true}}", &r);
  if (r.status != 200) {
    fail_msg("step 2: %d %s", r.status, hs_api_body_text(&r));
  }
  hs_api_resp_free(&r);
  return 3;
}

/* One contractor of the burst: visits without pause on one server. */
enum { BURST_THREADS = 6, BURST_VISITS = 20 };
typedef struct burst {
  int port;
  int index;
  int attempts;
  bool failed;
  char why[256];
} burst_t;

static void *burst_main(void *arg) {
  burst_t *b = arg;
  char subject[32];
  snprintf(subject, sizeof subject, "burst-%d", b->index);
  hs_api_t c;
  hs_api_init(&c, b->port, g_brand, subject);
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  for (int v = 0; v < BURST_VISITS && !b->failed; v++) {
    char id[40], path[128];
    int64_t seq = 0;
    if (hs_api_start(&c, "visit", NULL, id, &seq) != 201) {
      snprintf(b->why, sizeof b->why, "start failed");
      b->failed = true;
      break;
    }
    hs_api_step_path(path, sizeof path, id, 1);
    const char *bodies[] = {"{\"data\":{\"phone\":\"555\",\"n\":7}}",
                            "{\"data\":{\"phone\":\"555\",\"n\":2}}"};
    int want[] = {422, 200};
    for (int k = 0; k < 2 && !b->failed; k++) {
      if (hs_api_call(&c, "contractor", "POST", path, bodies[k], &r) != 0 || r.status != want[k]) {
        snprintf(b->why, sizeof b->why, "step 1 answered %d", r.status);
        b->failed = true;
      }
      b->attempts++;
    }
  }
  hs_api_resp_free(&r);
  hs_api_close(&c);
  return NULL;
}

/* Waits until the brand's latest checkpoint covers `want` records. */
static void wait_sealed(hs_api_t *c, int64_t want) {
  long long deadline = hs_test_now_ms() + 20000;
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  for (;;) {
    call(c, "compliance", "GET", "/v1/audit/checkpoint", NULL, &r);
    int64_t size = r.status == 200 ? hs_api_int(r.v, "size", -1) : 0;
    if (size == want) {
      break;
    }
    if (size > want) {
      fail_msg("the checkpoint covers %lld records, but only %lld were written", (long long)size,
               (long long)want);
    }
    if (hs_test_now_ms() > deadline) {
      fail_msg("the records were not sealed within 20 s (checkpoint size %lld of %lld)",
               (long long)size, (long long)want);
    }
    hs_test_sleep_ms(50);
  }
  hs_api_resp_free(&r);
}

/* GET /v1/audit?query as role; the body as a malloc'd NUL-terminated string. */
static char *export(hs_api_t *c, const char *role, const char *query, int64_t *records_header) {
  char path[512];
  snprintf(path, sizeof path, "/v1/audit%s%s", query[0] ? "?" : "", query);
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  call(c, role, "GET", path, NULL, &r);
  if (r.status != 200) {
    fail_msg("GET %s: %d %s", path, r.status, hs_api_body_text(&r));
  }
  char *text = malloc(r.body.len + 1);
  assert_non_null(text);
  memcpy(text, r.body.data, r.body.len);
  text[r.body.len] = '\0';
  (void)records_header;
  hs_api_resp_free(&r);
  return text;
}

static void verify_text(const char *text, size_t len, hs_audit_verify_report_t *rep) {
  FILE *f = fmemopen((void *)text, len, "r");
  assert_non_null(f);
  hs_err_t err;
  hs_err_clear(&err);
  assert_int_equal(hs_audit_verify(f, g_pub, rep, &err), HS_OK);
  fclose(f);
}

static void verify_file_report(FILE *f, hs_audit_verify_report_t *rep) {
  hs_err_t err;
  hs_err_clear(&err);
  assert_int_equal(hs_audit_verify(f, g_pub, rep, &err), HS_OK);
}

static void must_verify(const char *text, hs_audit_verify_report_t *rep, const char *what) {
  verify_text(text, strlen(text), rep);
  if (!rep->ok) {
    fail_msg("%s does not verify: %s (position %lld, line %lld)", what, rep->message,
             (long long)rep->position, (long long)rep->line);
  }
}

static void load_public_key(hs_api_t *c) {
  hs_api_resp_t r;
  hs_api_resp_init(&r);
  call(c, "compliance", "GET", "/v1/audit/key", NULL, &r);
  assert_int_equal(r.status, 200);
  const hs_value_t *raw = hs_api_at(r.v, "public_key");
  if (raw == NULL || raw->type != HS_V_BIN || raw->as.str.len != 32 ||
      strcmp(hs_api_str(r.v, "algorithm"), "ed25519") != 0) {
    fail_msg("GET /v1/audit/key: %s", hs_api_body_text(&r));
  }
  memcpy(g_pub, raw->as.str.ptr, 32);
  hs_api_resp_free(&r);
}

/* ---- the tests ---- */

/* Both servers write at once; every attempt is a record, sealed once, in one chain. */
static char *g_full; /* the compliance export, shared with the tamper test */
static int64_t g_total;

static void test_export_verifies(void **state) {
  hs_api_unique_name(g_brand, "au");
  hs_api_t a, b, eq;
  hs_api_init(&a, g_a.port, g_brand, "alice");
  hs_api_init(&b, g_b.port, g_brand, "bob");
  hs_api_init(&eq, g_a.port, g_brand, "=1+2");
  char version[65];
  assert_int_equal(hs_api_deploy(&a, "visit", VISIT, version), 201);
  char id[40], first_session[40] = "";
  int64_t total = 0;
  for (int i = 0; i < 12; i++) {
    total += visit(i % 2 ? &b : &a, "555-0100", "ok", id);
    if (i == 0) {
      snprintf(first_session, sizeof first_session, "%s", id);
    }
  }
  total += visit(&eq, "555-0199", "-2+3", id);
  /* Then a burst: several contractors at once on both servers, so that batches of records
   * commit concurrently and out of id order while the sealers run. */
  burst_t burst[BURST_THREADS];
  pthread_t th[BURST_THREADS];
  for (int i = 0; i < BURST_THREADS; i++) {
    burst[i] = (burst_t){.port = i % 2 ? g_b.port : g_a.port, .index = i};
    assert_int_equal(pthread_create(&th[i], NULL, burst_main, &burst[i]), 0);
  }
  for (int i = 0; i < BURST_THREADS; i++) {
    pthread_join(th[i], NULL);
    if (burst[i].failed) {
      fail_msg("a burst visit failed: %s", burst[i].why);
    }
    total += burst[i].attempts;
  }
  g_total = total;
  load_public_key(&a);
  wait_sealed(&a, total);
  hs_test_say("%lld attempts through two servers, %d contractors at once, were sealed into one "
              "chain, each exactly once",
              (long long)total, BURST_THREADS);

  g_full = export(&a, "compliance", "", NULL);
  hs_audit_verify_report_t rep;
  must_verify(g_full, &rep, "the full export");
  assert_int_equal(rep.records, total);
  assert_int_equal(rep.end_size, total);
  assert_int_equal(rep.elided, 0);
  assert_int_equal(rep.redacted, 0);
  assert_true(rep.checkpoints >= 1);
  assert_non_null(strstr(g_full, "\"result\":\"rejected\""));
  assert_non_null(strstr(g_full, "\"errors\":{\"n\":\"Seven is not allowed\"}"));
  assert_non_null(strstr(g_full, "\"phone\":\"555-0100\""));
  hs_test_say("the full export verifies: %lld records, %lld checkpoints", (long long)rep.records,
              (long long)rep.checkpoints);

  /* The ack names the document and the hash of its declared content. */
  uint8_t canon[256];
  size_t n = 0;
  const char *parts[] = {"document", "Terms", "https://cdn.example/terms.pdf", "3", NULL};
  for (int i = 0; i < 5; i++) {
    uint32_t len = parts[i] != NULL ? (uint32_t)strlen(parts[i]) : UINT32_MAX;
    canon[n++] = (uint8_t)(len >> 24);
    canon[n++] = (uint8_t)(len >> 16);
    canon[n++] = (uint8_t)(len >> 8);
    canon[n++] = (uint8_t)len;
    if (parts[i] != NULL) {
      memcpy(canon + n, parts[i], len);
      n += len;
    }
  }
  char hex[65], want[160];
  hs_api_sha256_hex(canon, n, hex);
  snprintf(want, sizeof want,
           "\"documents\":{\"agreed\":{\"id\":\"terms\",\"hash\":\"sha256:%s\",\"version\":\"3\"}}",
           hex);
  if (strstr(g_full, want) == NULL) {
    fail_msg("the consent records do not name the document as %s", want);
  }
  hs_test_say("an ack's record names the document, its version and the hash of its content");

  /* An admin sees pii only as redacted, and the export still verifies. */
  char *admin = export(&a, "admin", "", NULL);
  must_verify(admin, &rep, "the admin's export");
  assert_null(strstr(admin, "555-0100"));
  assert_non_null(strstr(admin, "\"redacted\":[\"phone\"]"));
  assert_true(rep.redacted > 0);
  free(admin);
  hs_test_say("an admin's export redacts pii (%lld records) and verifies", (long long)rep.redacted);

  /* A filter leaves the other records as hashes: still one verifiable chain. */
  char q[128];
  snprintf(q, sizeof q, "session=%s", first_session);
  char *one = export(&a, "compliance", q, NULL);
  must_verify(one, &rep, "the one-session export");
  assert_int_equal(rep.records, 3);
  assert_int_equal(rep.elided, total - 3);
  free(one);
  char *rej = export(&a, "compliance", "result=rejected", NULL);
  must_verify(rej, &rep, "the rejected-only export");
  assert_int_equal(rep.records, 13 + BURST_THREADS * BURST_VISITS);
  free(rej);
  hs_test_say("filtered exports (one session; rejected only) verify with the rest elided");

  /* CSV: a contractor id that a spreadsheet would run as a formula is defused. */
  char *csv = export(&a, "compliance", "format=csv", NULL);
  assert_non_null(strstr(csv, ",\"'=1+2\","));
  assert_null(strstr(csv, ",=1+2,"));
  size_t lines = 0;
  for (const char *p = csv; (p = strstr(p, "\r\n")) != NULL; p += 2) {
    lines++;
  }
  assert_int_equal(lines, (size_t)total + 1);
  free(csv);
  hs_test_say("the CSV export has a row per record and defuses formula cells");

  hs_api_resp_t r;
  hs_api_resp_init(&r);
  call(&a, "contractor", "GET", "/v1/audit", NULL, &r);
  assert_int_equal(r.status, 403);
  call(&a, "compliance", "GET", "/v1/audit?from=yesterday", NULL, &r);
  assert_int_equal(r.status, 400);
  call(&a, "compliance", "GET", "/v1/audit?sesion=x", NULL, &r);
  assert_int_equal(r.status, 400);
  hs_api_resp_free(&r);
  hs_test_say("a contractor may not export; a bad time or a misspelt filter is a 400");

  /* The key's file is the one the servers sign with, and the CLI agrees. */
  char cmd[HS_TEST_PATH_MAX * 8];
  char path[HS_TEST_PATH_MAX];
  snprintf(path, sizeof path, "%s/export-%d.ndjson", hs_test_tmpdir(), (int)getpid());
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(g_full, f);
  fclose(f);
  snprintf(cmd, sizeof cmd, "\"%s\" verify \"%s\" --key \"%s\" > /dev/null", getenv("HANDSEL_BIN"),
           path, g_key_path);
  int st = system(cmd);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  hs_test_say("handsel verify FILE --key PRIVATE-OR-PUBLIC-KEY-FILE exits 0 on the export");

  /* `handsel export` with a compliance officer's token writes the same export to a file. */
  hs_auth_token_t tok;
  hs_auth_must_token(&tok, g_brand, "compliance", "carol", NULL, NULL, 0);
  char out[HS_TEST_PATH_MAX];
  snprintf(out, sizeof out, "%s/cli-%d.ndjson", hs_test_tmpdir(), (int)getpid());
  snprintf(cmd, sizeof cmd,
           "HANDSEL_TOKEN=%s \"%s\" export --server http://127.0.0.1:%d -o \"%s\" 2>/dev/null && "
           "\"%s\" verify \"%s\" --key \"%s\" > /dev/null",
           tok.secret, getenv("HANDSEL_BIN"), g_a.port, out, getenv("HANDSEL_BIN"), out,
           g_key_path);
  st = system(cmd);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  f = fopen(out, "r");
  assert_non_null(f);
  verify_file_report(f, &rep);
  fclose(f);
  unlink(out);
  unlink(path);
  assert_true(rep.ok);
  assert_int_equal(rep.records, total);
  hs_test_say("handsel export -o FILE with a compliance token writes an export that verifies");
  hs_api_close(&a);
  hs_api_close(&b);
  hs_api_close(&eq);
}

/* Two brands whose records alternate, more of them than a sealer round takes (5,000 ids), all
 * committed at once: the sealers cross several rounds, and each brand's chain must still hold
 * exactly its own records, in id order, and verify. */
static void test_brands_seal_in_rounds(void **state) {
  enum { PER_BRAND = 6000 };
  char names[2][65];
  hs_api_t api[2];
  char version[65];
  for (int b = 0; b < 2; b++) {
    hs_api_unique_name(names[b], b == 0 ? "ra" : "rb");
    hs_api_init(&api[b], g_a.port, names[b], "alice");
    assert_int_equal(hs_api_deploy(&api[b], "visit", VISIT, version), 201);
  }
  /* An empty msgpack map (0x80) as each record's data, with its digest; an accepted record
   * also carries its completion's log, here an empty list of events (0x90). */
  PGresult *res = hs_test_db_query(
      g_db,
      "INSERT INTO validation_records (brand_id, session_id, process, version, step_id, seq,"
      " contractor_id, result, data_digest, data, digest, events, ended)"
      " SELECT (SELECT id FROM brands WHERE name = CASE WHEN g % 2 = 0 THEN $1 ELSE $2 END),"
      " 'bulk-' || $1 || '-' || g, 'visit', $3, 'who', 1, 'alice', 'accepted', "
      "sha256('\\x80'::bytea),"
      " '\\x80'::bytea, sha256('\\x80'::bytea), '\\x90'::bytea, false"
      " FROM generate_series(1, $4::int) g",
      4, (const char *[]){names[0], names[1], version, "12000"});
  assert_non_null(res);
  assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
  assert_string_equal(PQcmdTuples(res), "12000");
  PQclear(res);
  for (int b = 0; b < 2; b++) {
    wait_sealed(&api[b], PER_BRAND);
    char *text = export(&api[b], "compliance", "", NULL);
    hs_audit_verify_report_t rep;
    must_verify(text, &rep, "a brand's export after several rounds");
    assert_int_equal(rep.records, PER_BRAND);
    assert_int_equal(rep.end_size, PER_BRAND);
    free(text);
    hs_api_close(&api[b]);
  }
  hs_test_say("12,000 records of two brands, alternating, were sealed across several rounds into "
              "one chain each of %d records, and each brand's export verifies",
              PER_BRAND);
}

static void test_records_are_append_only(void **state) {
  const char *stmts[] = {
      "UPDATE validation_records SET result = 'accepted' WHERE result = 'rejected'",
      "DELETE FROM validation_records",
      "TRUNCATE validation_records",
      "UPDATE audit_checkpoints SET size = size + 1",
      "DELETE FROM audit_checkpoints",
  };
  long long before = hs_test_db_scalar(g_db, "SELECT count(*) FROM validation_records", 0, NULL);
  for (size_t i = 0; i < sizeof stmts / sizeof stmts[0]; i++) {
    PGresult *res = PQexec(g_db, stmts[i]);
    ExecStatusType s = PQresultStatus(res);
    PQclear(res);
    if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK) {
      fail_msg("the server's database role could run: %s", stmts[i]);
    }
  }
  long long after = hs_test_db_scalar(g_db, "SELECT count(*) FROM validation_records", 0, NULL);
  assert_int_equal(before, after);
  hs_test_say("UPDATE, DELETE and TRUNCATE of records and checkpoints are refused");
}

/* ---- the tamperer ---- */

typedef struct lines {
  char **v;
  size_t n;
} lines_t;

static lines_t split(const char *text) {
  lines_t l = {0};
  for (const char *p = text; *p != '\0';) {
    const char *nl = strchr(p, '\n');
    size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
    l.v = realloc(l.v, (l.n + 1) * sizeof *l.v);
    l.v[l.n] = strndup(p, len);
    l.n++;
    p += len + (nl != NULL);
  }
  return l;
}

static char *join(const lines_t *l, size_t *len) {
  size_t total = 0;
  for (size_t i = 0; i < l->n; i++) {
    total += strlen(l->v[i]) + 1;
  }
  char *out = malloc(total + 1);
  size_t o = 0;
  for (size_t i = 0; i < l->n; i++) {
    size_t n = strlen(l->v[i]);
    memcpy(out + o, l->v[i], n);
    out[o + n] = '\n';
    o += n + 1;
  }
  out[o] = '\0';
  *len = o;
  return out;
}

static void free_lines(lines_t *l) {
  for (size_t i = 0; i < l->n; i++) {
    free(l->v[i]);
  }
  free(l->v);
}

static uint64_t g_rng;
static uint64_t next_rand(void) {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return g_rng;
}

static int64_t position_of(const char *line) {
  const char *p = strstr(line, "\"position\":");
  return p != NULL ? strtoll(p + 11, NULL, 10) : -1;
}

static bool is_record(const char *line) {
  return strstr(line, "\"type\":\"record\"") != NULL;
}

/* Replaces the first `from` in *line by `to`. */
static bool replace(char **line, const char *from, const char *to) {
  char *p = strstr(*line, from);
  if (p == NULL) {
    return false;
  }
  size_t n = strlen(*line) - strlen(from) + strlen(to);
  char *out = malloc(n + 1);
  size_t head = (size_t)(p - *line);
  memcpy(out, *line, head);
  strcpy(out + head, to);
  strcat(out, p + strlen(from));
  free(*line);
  *line = out;
  return true;
}

static void test_tampering_is_caught(void **state) {
  assert_non_null(g_full);
  g_rng = 0x9e3779b97f4a7c15ull;
  lines_t base = split(g_full);
  size_t recs[4096];
  size_t n_recs = 0;
  for (size_t i = 0; i < base.n && n_recs < 4096; i++) {
    if (is_record(base.v[i])) {
      recs[n_recs++] = i;
    }
  }
  assert_true(n_recs >= 10);
  int counts[4] = {0};
  static const char *const kinds[] = {"changed", "removed", "inserted", "reordered"};
  for (int iter = 0; iter < 400; iter++) {
    lines_t t = split(g_full);
    int kind = (int)(next_rand() % 4);
    size_t pick = recs[next_rand() % n_recs];
    int64_t want_pos = position_of(t.v[pick]);
    int64_t want_line = 0;
    char what[96];
    if (kind == 0) {
      /* Change one member of one record. */
      static const char *const edits[][2] = {
          {"\"result\":\"accepted\"", "\"result\":\"rejected\""},
          {"\"result\":\"rejected\"", "\"result\":\"accepted\""},
          {"\"n\":3", "\"n\":4"},
          {"\"phone\":\"555-0100\"", "\"phone\":\"555-0101\""},
          {"\"step\":\"who\"", "\"step\":\"whom\""},
          {"\"seq\":1,", "\"seq\":2,"},
          {"\"contractor\":\"alice\"", "\"contractor\":\"mallory\""},
          {"\"agreed\":true", "\"agreed\":false"},
          {"Seven is not allowed", "Seven is allowed"},
          {"\"version\":\"3\"", "\"version\":\"4\""},
      };
      size_t e = next_rand() % (sizeof edits / sizeof edits[0]);
      size_t tries = 0;
      while (!replace(&t.v[pick], edits[e][0], edits[e][1]) && tries++ < 20) {
        e = (e + 1) % (sizeof edits / sizeof edits[0]);
      }
      if (tries > 20) {
        /* server_time's last digit is in every record. */
        char *p = strstr(t.v[pick], "Z\",\"device_time\"");
        p[-1] = p[-1] == '9' ? '0' : (char)(p[-1] + 1);
      }
      snprintf(what, sizeof what, "a member of position %lld changed", (long long)want_pos);
    } else if (kind == 1) {
      free(t.v[pick]);
      memmove(&t.v[pick], &t.v[pick + 1], (t.n - pick - 1) * sizeof *t.v);
      t.n--;
      snprintf(what, sizeof what, "position %lld removed", (long long)want_pos);
    } else if (kind == 2) {
      /* A copy of one record inserted somewhere else among the records. */
      size_t at = recs[next_rand() % n_recs];
      char *copy = strdup(t.v[pick]);
      t.v = realloc(t.v, (t.n + 1) * sizeof *t.v);
      memmove(&t.v[at + 1], &t.v[at], (t.n - at) * sizeof *t.v);
      t.v[at] = copy;
      t.n++;
      want_pos = -1;
      want_line = (int64_t)at + 1;
      snprintf(what, sizeof what, "a copy of position %lld inserted at line %lld",
               (long long)position_of(copy), (long long)want_line);
    } else {
      /* Two records swapped. */
      size_t k = 0;
      while (recs[k] != pick) {
        k++;
      }
      size_t other = recs[(k + 1 + next_rand() % (n_recs - 1)) % n_recs];
      char *tmp = t.v[pick];
      t.v[pick] = t.v[other];
      t.v[other] = tmp;
      int64_t a = position_of(t.v[pick]), b = position_of(t.v[other]);
      want_pos = a < b ? a : b;
      snprintf(what, sizeof what, "positions %lld and %lld swapped", (long long)a, (long long)b);
    }
    size_t len = 0;
    char *text = join(&t, &len);
    hs_audit_verify_report_t rep;
    verify_text(text, len, &rep);
    if (rep.ok) {
      fail_msg("iteration %d: %s, and the export still verifies", iter, what);
    }
    if (want_pos > 0 && rep.position != want_pos) {
      fail_msg("iteration %d: %s, but verification names position %lld (%s: %s)", iter, what,
               (long long)rep.position, rep.kind, rep.message);
    }
    /* A copy put right before its original is indistinguishable from it: then the original
     * is the line that comes again. */
    bool twin = want_line > 0 && (size_t)want_line < t.n &&
                strcmp(t.v[want_line - 1], t.v[want_line]) == 0 && rep.line == want_line + 1;
    if (want_line > 0 && rep.line != want_line && !twin) {
      fail_msg("iteration %d: %s, but verification names line %lld (%s: %s)", iter, what,
               (long long)rep.line, rep.kind, rep.message);
    }
    if (strcmp(rep.kind, kinds[kind]) != 0) {
      fail_msg("iteration %d: %s, but verification calls it %s: %s", iter, what, rep.kind,
               rep.message);
    }
    counts[kind]++;
    free(text);
    free_lines(&t);
  }
  /* And the last checkpoint cut off. */
  lines_t t = split(g_full);
  free(t.v[--t.n]);
  size_t len = 0;
  char *text = join(&t, &len);
  hs_audit_verify_report_t rep;
  verify_text(text, len, &rep);
  assert_false(rep.ok);
  free(text);
  free_lines(&t);
  free_lines(&base);
  hs_test_say("400 random tamperings (%d changed, %d removed, %d inserted, %d reordered) were all "
              "caught and named, and so was a missing final checkpoint",
              counts[0], counts[1], counts[2], counts[3]);
}

/* With one node, the sealer hashes the records its own workers committed from what they handed
 * over, the rejected attempts' too, without reading them back (audit/tap.h), and the chain it
 * signs still verifies against the export, which reads every record from the database. A round
 * whose every record was handed over asks PostgreSQL for nothing, not even which ids its range
 * holds (audit/sealer.c, tap_items). */
static void test_records_sealed_from_memory(void **state) {
  hs_test_server_stop(&g_b); /* so no other node's sealer takes these records first */
  char brand[65];
  hs_api_unique_name(brand, "tm");
  hs_api_t a;
  hs_api_init(&a, g_a.port, brand, "alice");
  char version[65], id[40];
  assert_int_equal(hs_api_deploy(&a, "visit", VISIT, version), 201);
  double before = hs_test_metric(g_a.port, "handsel_audit_sealed_tapped_total", NULL);
  double unread_before = hs_test_metric(g_a.port, "handsel_audit_rounds_unread_total", NULL);
  assert_true(before >= 0 && unread_before >= 0);
  int64_t total = 0;
  for (int i = 0; i < 10; i++) {
    total += visit(&a, "555-0142", "memory", id);
  }
  wait_sealed(&a, total);
  /* Each visit made one rejected attempt and two accepted completions. A round may start
     between a commit and its hand-over, and read those records back. */
  double tapped = hs_test_metric(g_a.port, "handsel_audit_sealed_tapped_total", NULL) - before;
  if (tapped < 1 || tapped > 30) {
    fail_msg("%.0f of the 30 records were sealed from memory", tapped);
  }
  double unread =
      hs_test_metric(g_a.port, "handsel_audit_rounds_unread_total", NULL) - unread_before;
  if (unread < 1) {
    fail_msg("no round sealed its records without reading them back");
  }
  /* Ten visits are far below the budget: the workers handed over every record. */
  assert_true(hs_test_metric(g_a.port, "handsel_audit_tap_dropped_total", NULL) == 0);
  char *text = export(&a, "compliance", "", NULL);
  hs_audit_verify_report_t rep;
  must_verify(text, &rep, "the export of records sealed from memory");
  assert_int_equal(rep.records, total);
  int rejected = 0;
  for (const char *p = text; (p = strstr(p, "\"result\":\"rejected\"")) != NULL; p++) {
    rejected++;
  }
  assert_int_equal(rejected, 10);
  free(text);
  hs_api_close(&a);
  hs_test_say("%.0f of 30 records (10 of them rejected attempts) were sealed from what the "
              "workers handed over, %.0f rounds read nothing back, and the export verifies",
              tapped, unread);
}

/* ---- set-up ---- */

static int start_server(hs_test_server_t *s, const char *db) {
  char env_db[HS_TEST_PATH_MAX], env_key[HS_TEST_PATH_MAX + 32];
  snprintf(env_db, sizeof env_db, "HANDSEL_DB=%s", db);
  snprintf(env_key, sizeof env_key, "HANDSEL_SIGNING_KEY=%s", g_key_path);
  const char *env[] = {env_db,  "HANDSEL_DEV_AUTH=1", "HANDSEL_WORKERS=2",
                       env_key, "HANDSEL_SEAL_MS=50", "HANDSEL_LOG_LEVEL=warn",
                       NULL};
  hs_test_server_opts_t o = {.env = env};
  if (hs_test_server_start(s, &o) != 0 || hs_test_server_wait_ready(s, 15000) != 0) {
    hs_test_server_dump_stderr(s, 4000);
    return -1;
  }
  return 0;
}

static int group_setup(void **state) {
  const char *db = hs_test_db_must();
  snprintf(g_key_path, sizeof g_key_path, "%s/signing-key-%d.pem", hs_test_tmpdir(), (int)getpid());
  unlink(g_key_path);
  char cmd[HS_TEST_PATH_MAX * 2];
  snprintf(cmd, sizeof cmd, "\"%s\" key generate \"%s\" > /dev/null", getenv("HANDSEL_BIN"),
           g_key_path);
  if (system(cmd) != 0) {
    fprintf(stderr, "handsel key generate failed\n");
    return -1;
  }
  if (start_server(&g_a, db) != 0 || start_server(&g_b, db) != 0) {
    return -1;
  }
  g_db = hs_test_db_connect(db);
  return g_db != NULL ? 0 : -1;
}

static int group_teardown(void **state) {
  hs_test_server_stop(&g_a);
  hs_test_server_stop(&g_b);
  PQfinish(g_db);
  free(g_full);
  unlink(g_key_path);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_export_verifies),
      cmocka_unit_test(test_brands_seal_in_rounds),
      cmocka_unit_test(test_records_are_append_only),
      cmocka_unit_test(test_tampering_is_caught),
      cmocka_unit_test(test_records_sealed_from_memory),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
