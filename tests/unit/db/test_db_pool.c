/* The worker's PostgreSQL pool against a real PostgreSQL (HANDSEL_DB): pipelined jobs complete
 * in order, a job is one transaction, prepared statements are reused, cancelled jobs never call
 * back, and an unreachable database fails fast with HS_EUNAVAIL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "db/pool.h"

typedef struct run {
  uv_loop_t loop;
  hs_db_pool_t *pool;
  int done;
  int statuses[64];
  char values[64][64];
  char sqlstates[64][8];
} run_t;

typedef struct job_ctx {
  run_t *run;
  int index;
} job_ctx_t;

static void on_done(void *ctx, const hs_db_result_t *res) {
  job_ctx_t *j = ctx;
  run_t *r = j->run;
  r->statuses[j->index] = res->status;
  snprintf(r->sqlstates[j->index], sizeof r->sqlstates[j->index], "%s", res->sqlstate);
  PGresult *last = res->n_results > 0 ? res->results[res->n_results - 1] : NULL;
  if (res->status == HS_OK && last != NULL && PQntuples(last) > 0) {
    snprintf(r->values[j->index], sizeof r->values[j->index], "%s", PQgetvalue(last, 0, 0));
  }
  r->done++;
}

static void wait_ready(run_t *r) {
  for (int i = 0; i < 500 && !hs_db_pool_ready(r->pool); i++) {
    uv_run(&r->loop, UV_RUN_ONCE);
  }
  assert_true(hs_db_pool_ready(r->pool));
}

/* Runs one job to completion and returns its index's status. */
static int exec_sync(run_t *r, int index, const hs_db_stmt_t *stmts, size_t n) {
  static job_ctx_t ctx[64];
  ctx[index] = (job_ctx_t){r, index};
  r->done = 0;
  r->values[index][0] = '\0';
  int rc = hs_db_exec(r->pool, stmts, n, on_done, &ctx[index], NULL);
  if (rc != HS_OK) {
    return rc;
  }
  for (int i = 0; i < 100000 && r->done < 1; i++) {
    uv_run(&r->loop, UV_RUN_ONCE);
  }
  return r->statuses[index];
}

static int setup(void **state) {
  const char *db = getenv("HANDSEL_DB");
  if (db == NULL || *db == '\0') {
    fprintf(stderr, "HANDSEL_DB is not set: scripts/test starts a PostgreSQL and sets it\n");
    return -1;
  }
  run_t *r = calloc(1, sizeof *r);
  uv_loop_init(&r->loop);
  hs_err_t err;
  assert_int_equal(hs_db_pool_new(&r->loop, db, 2, &r->pool, &err), HS_OK);
  wait_ready(r);
  *state = r;
  return 0;
}

static int teardown(void **state) {
  run_t *r = *state;
  hs_db_pool_close(r->pool);
  uv_run(&r->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&r->loop), 0);
  free(r);
  return 0;
}

static void test_pipelined_jobs_all_complete(void **state) {
  run_t *r = *state;
  job_ctx_t ctx[40];
  r->done = 0;
  for (int i = 0; i < 40; i++) {
    char v[16];
    snprintf(v, sizeof v, "%d", i * 7);
    const char *values[] = {v};
    /* A named statement: prepared once per connection, then reused. */
    hs_db_stmt_t s = {.name = "pool_test_double",
                      .sql = "SELECT ($1::int * 2)::text",
                      .n_params = 1,
                      .values = values};
    ctx[i] = (job_ctx_t){r, i};
    assert_int_equal(hs_db_exec(r->pool, &s, 1, on_done, &ctx[i], NULL), HS_OK);
  }
  for (int i = 0; i < 100000 && r->done < 40; i++) {
    uv_run(&r->loop, UV_RUN_ONCE);
  }
  assert_int_equal(r->done, 40);
  for (int i = 0; i < 40; i++) {
    assert_int_equal(r->statuses[i], HS_OK);
    char want[16];
    snprintf(want, sizeof want, "%d", i * 14);
    assert_string_equal(r->values[i], want);
  }
}

static void test_job_is_one_transaction(void **state) {
  run_t *r = *state;
  hs_db_stmt_t prep[] = {{.sql = "CREATE TABLE IF NOT EXISTS pool_test_tx (v int PRIMARY KEY)"},
                         {.sql = "DELETE FROM pool_test_tx"}};
  assert_int_equal(exec_sync(r, 0, prep, 2), HS_OK);

  /* The second insert violates the key, so the first must not stay either. */
  hs_db_stmt_t bad[] = {{.sql = "INSERT INTO pool_test_tx VALUES (1)"},
                        {.sql = "INSERT INTO pool_test_tx VALUES (1)"},
                        {.sql = "INSERT INTO pool_test_tx VALUES (9)"}};
  assert_int_equal(exec_sync(r, 1, bad, 3), HS_EIO);
  assert_string_equal(r->sqlstates[1], "23505");

  hs_db_stmt_t count = {.sql = "SELECT count(*)::text FROM pool_test_tx"};
  assert_int_equal(exec_sync(r, 2, &count, 1), HS_OK);
  assert_string_equal(r->values[2], "0");

  hs_db_stmt_t good[] = {{.sql = "INSERT INTO pool_test_tx VALUES (2)"},
                         {.sql = "INSERT INTO pool_test_tx VALUES (3)"}};
  assert_int_equal(exec_sync(r, 3, good, 2), HS_OK);
  assert_int_equal(exec_sync(r, 4, &count, 1), HS_OK);
  assert_string_equal(r->values[4], "2");
}

static void test_failed_statement_leaves_pool_usable(void **state) {
  run_t *r = *state;
  hs_db_stmt_t s = {.sql = "SELECT 1/0"};
  assert_int_equal(exec_sync(r, 5, &s, 1), HS_EIO);
  assert_string_equal(r->sqlstates[5], "22012");
  hs_db_stmt_t t = {.sql = "SELECT 'still fine'"};
  assert_int_equal(exec_sync(r, 6, &t, 1), HS_OK);
  assert_string_equal(r->values[6], "still fine");
}

/* A named statement first used after a failing statement of the same job is never prepared
 * (PostgreSQL skips the rest of the pipeline up to its sync): the next job that uses the name
 * must prepare it, not take it for prepared. */
static void test_prepare_skipped_after_failure_is_sent_again(void **state) {
  run_t *r = *state;
  for (int k = 0; k < 3; k++) {
    hs_db_stmt_t first[] = {{.sql = "SELECT 1/0"},
                            {.name = "pool_test_late", .sql = "SELECT 'late'::text"}};
    assert_int_equal(exec_sync(r, 10, first, 2), HS_EIO);
    assert_string_equal(r->sqlstates[10], "22012");
    hs_db_stmt_t again = {.name = "pool_test_late", .sql = "SELECT 'late'::text"};
    assert_int_equal(exec_sync(r, 11, &again, 1), HS_OK);
    assert_string_equal(r->values[11], "late");
  }
}

static void test_cancelled_job_never_calls_back(void **state) {
  run_t *r = *state;
  job_ctx_t c = {r, 8}, d = {r, 9};
  hs_db_stmt_t s = {.sql = "SELECT pg_sleep(0.05)::text"};
  hs_db_job_t *job = NULL;
  r->done = 0;
  assert_int_equal(hs_db_exec(r->pool, &s, 1, on_done, &c, &job), HS_OK);
  hs_db_job_cancel(job);
  /* A job after it on the same pool still completes. */
  hs_db_stmt_t t = {.sql = "SELECT 'after'"};
  assert_int_equal(hs_db_exec(r->pool, &t, 1, on_done, &d, NULL), HS_OK);
  for (int i = 0; i < 100000 && r->done < 1; i++) {
    uv_run(&r->loop, UV_RUN_ONCE);
  }
  for (int i = 0; i < 20; i++) {
    uv_run(&r->loop, UV_RUN_NOWAIT);
  }
  assert_int_equal(r->done, 1);
  assert_string_equal(r->values[9], "after");
}

static void test_unreachable_database_fails_fast(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  hs_db_pool_t *pool = NULL;
  hs_err_t err;
  unsigned down_before = hs_db_pools_down();
  assert_int_equal(hs_db_pool_new(&loop,
                                  "host=/nonexistent-handsel-socket dbname=x connect_timeout=1", 1,
                                  &pool, &err),
                   HS_OK);
  for (int i = 0; i < 5; i++) {
    uv_run(&loop, UV_RUN_NOWAIT);
  }
  assert_false(hs_db_pool_ready(pool));
  /* /readyz counts it: a server with this pool is not ready. */
  assert_int_equal(hs_db_pools_down(), down_before + 1);
  hs_db_stmt_t s = {.sql = "SELECT 1"};
  job_ctx_t c = {NULL, 0};
  assert_int_equal(hs_db_exec(pool, &s, 1, on_done, &c, NULL), HS_EUNAVAIL);
  hs_db_pool_close(pool);
  assert_int_equal(hs_db_pools_down(), down_before);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_commits_are_synchronous_whatever_the_default(void **state) {
  (void)state;
  /* A connection string (or a database default) that turns synchronous commit off must not
   * weaken what a 200 promises. */
  char conninfo[2048];
  snprintf(conninfo, sizeof conninfo, "%s options='-c synchronous_commit=off'",
           getenv("HANDSEL_DB"));
  run_t r;
  memset(&r, 0, sizeof r);
  uv_loop_init(&r.loop);
  hs_err_t err;
  unsigned down_before = hs_db_pools_down();
  assert_int_equal(hs_db_pool_new(&r.loop, conninfo, 1, &r.pool, &err), HS_OK);
  assert_int_equal(hs_db_pools_down(), down_before + 1); /* connecting: not up yet */
  wait_ready(&r);
  assert_int_equal(hs_db_pools_down(), down_before);
  hs_db_stmt_t s = {.sql = "SELECT current_setting('synchronous_commit')"};
  assert_int_equal(exec_sync(&r, 0, &s, 1), HS_OK);
  assert_string_equal(r.values[0], "on");
  hs_db_pool_close(r.pool);
  uv_run(&r.loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&r.loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pipelined_jobs_all_complete),
      cmocka_unit_test(test_job_is_one_transaction),
      cmocka_unit_test(test_failed_statement_leaves_pool_usable),
      cmocka_unit_test(test_prepare_skipped_after_failure_is_sent_again),
      cmocka_unit_test(test_cancelled_job_never_calls_back),
      cmocka_unit_test(test_unreachable_database_fails_fast),
      cmocka_unit_test(test_commits_are_synchronous_whatever_the_default),
  };
  return cmocka_run_group_tests_name("db/pool", tests, setup, teardown);
}
