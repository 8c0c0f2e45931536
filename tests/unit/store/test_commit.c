/* Group commit against a real PostgreSQL (HANDSEL_DB, migrated): writes that arrive while a
 * transaction is in flight share the next one; every callback runs after its commit; a write
 * whose key exists is reported as not inserted without failing the others in its batch (for
 * completions, through the batch's second, careful attempt); values arrive exactly as given;
 * a batch announces each of its completions once; the next transaction leaves before the
 * callbacks of the one that finished run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/ids.h"
#include "db/pool.h"
#include "store/commit.h"

typedef struct fixture {
  uv_loop_t loop;
  hs_db_pool_t *pool;
  hs_committer_t *c;
  long long brand_id;
  int done;
  int ok;
  int inserted;
} fixture_t;

typedef struct sql_result {
  int status; /* 1 while running */
  char value[64];
} sql_result_t;

static void on_write(void *ctx, int status, bool inserted) {
  fixture_t *f = ctx;
  f->done++;
  f->ok += status == HS_OK;
  f->inserted += inserted;
}

static void on_sql(void *ctx, const hs_db_result_t *res) {
  sql_result_t *r = ctx;
  r->status = res->status;
  PGresult *pr = res->results[0];
  if (res->status == HS_OK && pr != NULL && PQntuples(pr) > 0) {
    snprintf(r->value, sizeof r->value, "%s", PQgetvalue(pr, 0, 0));
  }
}

/* Runs one statement to completion; returns the first column of its first row. */
static const char *run_sql(fixture_t *f, const char *sql, sql_result_t *r) {
  memset(r, 0, sizeof *r);
  r->status = 1;
  hs_db_stmt_t s = {.sql = sql};
  assert_int_equal(hs_db_exec(f->pool, &s, 1, on_sql, r, NULL), HS_OK);
  while (r->status == 1) {
    uv_run(&f->loop, UV_RUN_ONCE);
  }
  assert_int_equal(r->status, HS_OK);
  return r->value;
}

static int setup(void **state) {
  const char *db = getenv("HANDSEL_DB");
  if (db == NULL || *db == '\0') {
    fprintf(stderr, "HANDSEL_DB is not set: scripts/test starts a PostgreSQL and sets it\n");
    return -1;
  }
  fixture_t *f = calloc(1, sizeof *f);
  uv_loop_init(&f->loop);
  hs_err_t err;
  assert_int_equal(hs_db_pool_new(&f->loop, db, 1, &f->pool, &err), HS_OK);
  for (int i = 0; i < 500 && !hs_db_pool_ready(f->pool); i++) {
    uv_run(&f->loop, UV_RUN_ONCE);
  }
  assert_true(hs_db_pool_ready(f->pool));
  assert_int_equal(hs_committer_new(&f->loop, f->pool, NULL, &f->c), HS_OK);
  sql_result_t r;
  run_sql(f, "INSERT INTO brands (name) VALUES ('commit-test') ON CONFLICT DO NOTHING", &r);
  f->brand_id = atoll(run_sql(f, "SELECT id FROM brands WHERE name = 'commit-test'", &r));
  run_sql(f,
          "INSERT INTO process_versions (brand_id, name, version, source) SELECT id, 'p', "
          "repeat('a', 64), '' FROM brands WHERE name = 'commit-test' ON CONFLICT DO NOTHING",
          &r);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  hs_committer_close(f->c);
  hs_db_pool_close(f->pool);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  free(f);
  return 0;
}

/* A session row as the sessions API writes it (payloads are tiny msgpack). */
static void session_row(fixture_t *f, hs_row_t *row, const char *id, const char *ref) {
  static const uint8_t empty_map = 0x80, empty_array = 0x90;
  hs_row_init(row, HS_WRITE_SESSION);
  hs_row_str(row, "id", id);
  hs_row_int(row, "brand_id", f->brand_id);
  hs_row_str(row, "process", "p");
  hs_row_str(row, "version", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
  hs_row_str(row, "contractor_id", "sam");
  hs_row_str(row, "ref", ref);
  hs_row_bytes(row, "customer", &empty_map, 1);
  hs_row_bytes(row, "contractor", &empty_map, 1);
  hs_row_int(row, "seed", 1);
  hs_row_bytes(row, "events", &empty_array, 1);
}

static int submit_session(fixture_t *f, const char *id, const char *ref) {
  hs_row_t row;
  session_row(f, &row, id, ref);
  int rc = hs_commit_submit(f->c, &row, on_write, f, NULL);
  hs_row_free(&row);
  return rc;
}

static void test_writes_during_a_commit_share_the_next(void **state) {
  fixture_t *f = *state;
  char ids[51][37];
  for (int i = 0; i < 51; i++) {
    assert_int_equal(hs_uuid_v4(ids[i]), HS_OK);
  }
  hs_commit_stats_t before, after;
  hs_committer_stats(f->c, &before);
  f->done = f->ok = f->inserted = 0;
  /* One write goes out at the end of this loop iteration... */
  assert_int_equal(submit_session(f, ids[0], NULL), HS_OK);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(f->done, 0); /* not before its commit */
  /* ...and fifty more arrive while it is in flight. */
  for (int i = 1; i < 51; i++) {
    assert_int_equal(submit_session(f, ids[i], NULL), HS_OK);
  }
  while (f->done < 51) {
    uv_run(&f->loop, UV_RUN_ONCE);
  }
  hs_committer_stats(f->c, &after);
  assert_int_equal(f->ok, 51);
  assert_int_equal(f->inserted, 51);
  assert_int_equal(after.writes - before.writes, 51);
  assert_int_equal(after.batches - before.batches, 2);
  /* Every acknowledged write is really there. */
  char sql[200];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM sessions WHERE id IN ('%s', '%s')", ids[0],
           ids[50]);
  sql_result_t r;
  assert_string_equal(run_sql(f, sql, &r), "2");
}

/* What the first write's callback saw. */
typedef struct first_seen {
  fixture_t *f;
  hs_commit_stats_t stats;
  int calls;
} first_seen_t;

static void on_first_write(void *ctx, int status, bool inserted) {
  first_seen_t *seen = ctx;
  seen->calls++;
  hs_committer_stats(seen->f->c, &seen->stats);
  on_write(seen->f, status, inserted);
}

static void test_the_next_transaction_leaves_before_answers(void **state) {
  fixture_t *f = *state;
  char ids[11][37];
  for (int i = 0; i < 11; i++) {
    assert_int_equal(hs_uuid_v4(ids[i]), HS_OK);
  }
  hs_commit_stats_t before;
  hs_committer_stats(f->c, &before);
  f->done = f->ok = f->inserted = 0;
  first_seen_t seen = {.f = f};
  hs_row_t row;
  session_row(f, &row, ids[0], NULL);
  assert_int_equal(hs_commit_submit(f->c, &row, on_first_write, &seen, NULL), HS_OK);
  hs_row_free(&row);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  for (int i = 1; i < 11; i++) {
    assert_int_equal(submit_session(f, ids[i], NULL), HS_OK);
  }
  while (f->done < 11) {
    uv_run(&f->loop, UV_RUN_ONCE);
  }
  assert_int_equal(seen.calls, 1);
  assert_int_equal(f->ok, 11);
  /* When the first write heard of its commit, the ten that queued behind it were already on
     their way, and its own transaction was the only one finished. */
  assert_int_equal(seen.stats.sent - before.sent, 2);
  assert_int_equal(seen.stats.batches - before.batches, 1);
}

static void test_a_conflict_does_not_fail_its_batch(void **state) {
  fixture_t *f = *state;
  char a[37], b[37], c[37];
  assert_int_equal(hs_uuid_v4(a), HS_OK);
  assert_int_equal(hs_uuid_v4(b), HS_OK);
  assert_int_equal(hs_uuid_v4(c), HS_OK);
  f->done = f->ok = f->inserted = 0;
  /* b repeats a's ref for the same contractor: the unique ref index skips it. */
  char ref[48];
  snprintf(ref, sizeof ref, "ref-%s", a);
  assert_int_equal(submit_session(f, a, ref), HS_OK);
  assert_int_equal(submit_session(f, b, ref), HS_OK);
  assert_int_equal(submit_session(f, c, NULL), HS_OK);
  while (f->done < 3) {
    uv_run(&f->loop, UV_RUN_ONCE);
  }
  assert_int_equal(f->ok, 3);
  assert_int_equal(f->inserted, 2);
}

static void test_rows_escape_and_refuse_bad_text(void **state) {
  fixture_t *f = *state;
  char a[37];
  assert_int_equal(hs_uuid_v4(a), HS_OK);
  /* Quotes, backslashes, control characters and non-ASCII text arrive exactly as sent. */
  char ref[80];
  snprintf(ref, sizeof ref, "q\"b\\n\n\x01 \xc3\xa9 %s", a);
  f->done = f->ok = f->inserted = 0;
  assert_int_equal(submit_session(f, a, ref), HS_OK);
  /* Text that is not UTF-8 is refused before it can join (and fail) a batch. */
  char b[37];
  assert_int_equal(hs_uuid_v4(b), HS_OK);
  assert_int_equal(submit_session(f, b, "bad \xff byte"), HS_EINVAL);
  while (f->done < 1) {
    uv_run(&f->loop, UV_RUN_ONCE);
  }
  assert_int_equal(f->inserted, 1);
  char sql[200];
  snprintf(sql, sizeof sql,
           "SELECT ref = E'q\"b\\\\n\\n\\x01 \u00e9 %s' FROM sessions WHERE id = '%s'", a, a);
  sql_result_t r;
  assert_string_equal(run_sql(f, sql, &r), "t");
}

/* An accepted completion as the sessions API writes it; its validation record goes with it. */
static int submit_completion(fixture_t *f, const char *session, int seq, uint8_t body,
                             const char *const *pii, size_t n_pii) {
  static const uint8_t events = 0x90;
  uint8_t digest[32], data = 0x80;
  memset(digest, body, sizeof digest);
  hs_row_t row;
  hs_row_init(&row, HS_WRITE_COMPLETION);
  hs_row_str(&row, "session_id", session);
  hs_row_int(&row, "seq", seq);
  hs_row_bytes(&row, "digest", digest, sizeof digest);
  hs_row_bytes(&row, "events", &events, 1);
  hs_row_bool(&row, "ended", false);
  hs_row_str(&row, "device_time", "2026-11-23T10:00:00.123456Z");
  hs_row_int(&row, "brand_id", f->brand_id);
  hs_row_str(&row, "process", "p");
  hs_row_str(&row, "version", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
  hs_row_str(&row, "step_id", "s");
  hs_row_str(&row, "contractor_id", "sam");
  hs_row_bytes(&row, "data_digest", digest, sizeof digest);
  hs_row_bytes(&row, "data", &data, 1);
  /* documents left out: NULL */
  hs_row_strs(&row, "pii", pii, n_pii);
  int rc = hs_commit_submit(f->c, &row, on_write, f, NULL);
  hs_row_free(&row);
  return rc;
}

static void test_a_completion_that_exists_is_skipped_alone(void **state) {
  fixture_t *f = *state;
  char s1[37], s2[37];
  assert_int_equal(hs_uuid_v4(s1), HS_OK);
  assert_int_equal(hs_uuid_v4(s2), HS_OK);
  f->done = f->ok = f->inserted = 0;
  static const char *const pii[] = {"phone", "a \"quoted\" \\ name"};
  assert_int_equal(submit_completion(f, s1, 1, 1, pii, 2), HS_OK);
  while (f->done < 1) {
    uv_run(&f->loop, UV_RUN_ONCE);
  }
  assert_int_equal(f->inserted, 1);
  /* One batch: s1's seq 1 again (as another node's stale copy would send it), and two new
   * ones. The first attempt conflicts; the batch goes again and only the new two land. */
  f->done = f->ok = f->inserted = 0;
  hs_commit_stats_t before, after;
  hs_committer_stats(f->c, &before);
  assert_int_equal(submit_completion(f, s1, 2, 3, NULL, 0), HS_OK);
  assert_int_equal(submit_completion(f, s1, 1, 2, NULL, 0), HS_OK);
  assert_int_equal(submit_completion(f, s2, 1, 4, NULL, 0), HS_OK);
  while (f->done < 3) {
    uv_run(&f->loop, UV_RUN_ONCE);
  }
  hs_committer_stats(f->c, &after);
  assert_int_equal(after.batches - before.batches, 1);
  assert_int_equal(f->ok, 3);
  assert_int_equal(f->inserted, 2);
  char sql[400];
  sql_result_t r;
  /* The first completion of s1 is the one kept, with one validation record per completion. */
  snprintf(sql, sizeof sql,
           "SELECT string_agg(seq || ':' || get_byte(digest, 0), ',' ORDER BY seq) FROM "
           "step_completions WHERE session_id = '%s'",
           s1);
  assert_string_equal(run_sql(f, sql, &r), "1:1,2:3");
  snprintf(sql, sizeof sql,
           "SELECT count(*) || ' ' || count(documents) || ' ' || max(device_time) || ' ' || "
           "max(array_to_string(pii, '|')) FROM validation_records WHERE session_id IN "
           "('%s', '%s')",
           s1, s2);
  assert_string_equal(run_sql(f, sql, &r),
                      "3 0 2026-11-23 10:00:00.123456+00 phone|a \"quoted\" \\ name");
}

/* Other workers and nodes learn of completions through notifications: one per 100 of a batch,
 * "id seq,id seq,...", every completion exactly once. */
static void test_a_batch_announces_every_completion(void **state) {
  fixture_t *f = *state;
  PGconn *listener = PQconnectdb(getenv("HANDSEL_DB"));
  assert_int_equal(PQstatus(listener), CONNECTION_OK);
  PQclear(PQexec(listener, "LISTEN handsel_session"));
  enum { N = 250 };
  static char ids[N][37];
  f->done = f->ok = f->inserted = 0;
  hs_commit_stats_t before, after;
  hs_committer_stats(f->c, &before);
  for (int i = 0; i < N; i++) {
    assert_int_equal(hs_uuid_v4(ids[i]), HS_OK);
    assert_int_equal(submit_completion(f, ids[i], i + 1, 1, NULL, 0), HS_OK);
  }
  while (f->done < N) {
    uv_run(&f->loop, UV_RUN_ONCE);
  }
  hs_committer_stats(f->c, &after);
  assert_int_equal(after.batches - before.batches, 1);
  assert_int_equal(f->inserted, N);
  /* The notifications were sent at commit, before the callbacks ran. */
  PQclear(PQexec(listener, "SELECT 1"));
  int seen[N] = {0};
  int payloads = 0;
  PGnotify *n;
  while ((n = PQnotifies(listener)) != NULL) {
    payloads++;
    char *save = NULL;
    for (char *item = strtok_r(n->extra, ",", &save); item != NULL;
         item = strtok_r(NULL, ",", &save)) {
      char id[37];
      int seq = 0;
      assert_int_equal(sscanf(item, "%36s %d", id, &seq), 2);
      assert_true(seq >= 1 && seq <= N);
      assert_string_equal(id, ids[seq - 1]);
      seen[seq - 1]++;
    }
    PQfreemem(n);
  }
  PQfinish(listener);
  assert_int_equal(payloads, 3);
  for (int i = 0; i < N; i++) {
    assert_int_equal(seen[i], 1);
  }
}

static void test_values_must_fit_their_columns(void **state) {
  (void)state;
  hs_row_t row;
  hs_row_init(&row, HS_WRITE_FEEDBACK);
  hs_row_int(&row, "brand_id", 1);
  hs_row_str(&row, "session_id", "x");
  hs_row_int(&row, "rating", 70000); /* an int2 column */
  assert_int_equal(row.rc, HS_EINVAL);
  hs_row_free(&row);
  hs_row_init(&row, HS_WRITE_COMPLETION);
  hs_row_int(&row, "seq", INT64_C(1) << 31); /* an int4 column */
  assert_int_equal(row.rc, HS_EINVAL);
  hs_row_free(&row);
  hs_row_init(&row, HS_WRITE_COMPLETION);
  static const char *const bad[] = {"ok", "not \xff utf-8"};
  hs_row_strs(&row, "pii", bad, 2);
  assert_int_equal(row.rc, HS_EINVAL);
  hs_row_free(&row);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_writes_during_a_commit_share_the_next),
      cmocka_unit_test(test_the_next_transaction_leaves_before_answers),
      cmocka_unit_test(test_a_conflict_does_not_fail_its_batch),
      cmocka_unit_test(test_rows_escape_and_refuse_bad_text),
      cmocka_unit_test(test_a_completion_that_exists_is_skipped_alone),
      cmocka_unit_test(test_values_must_fit_their_columns),
      cmocka_unit_test(test_a_batch_announces_every_completion),
  };
  return cmocka_run_group_tests_name("store/commit", tests, setup, teardown);
}
