/* The hand-over of committed records to the sealer (audit/tap.h): what goes in comes out the
 * same, by id and brand, and hashes the same as the row it stands for; sealed records leave and
 * give their memory back; the budget and a closed tap refuse; producers on several threads at
 * once lose nothing. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "audit/tap.h"
#include "core/error.h"

static const uint8_t k_digest[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
static const uint8_t k_docs[] = {0x81, 0xa1, 'a', 0x01}; /* {"a": 1} */

static hs_audit_bytes_t text(const char *s) {
  return (hs_audit_bytes_t){.p = s, .n = strlen(s)};
}

/* Record `id` of brand 7 (even ids) or 8, with a session id that is not NUL-terminated where
 * it lies, as a committer's cell is not. */
static hs_audit_tap_record_t record(int64_t id, char session_buf[32]) {
  snprintf(session_buf, 32, "sess-%lldXXXX", (long long)id);
  return (hs_audit_tap_record_t){
      .brand_id = id % 2 == 0 ? 7 : 8,
      .id = id,
      .seq = 3,
      .server_us = 1700000000000000 + id,
      .has_device = id % 3 == 0,
      .device_us = 1600000000000000,
      .accepted = true,
      .session = {.p = session_buf, .n = strlen(session_buf) - 4},
      .process = text("visit"),
      .version = text("v1"),
      .step = text("who"),
      .contractor = text("alice"),
      .documents = {.p = id % 2 == 0 ? k_docs : NULL, .n = id % 2 == 0 ? sizeof k_docs : 0},
      .data_digest = k_digest,
  };
}

static void test_put_sync_find(void **state) {
  hs_audit_tap_t *t = NULL;
  assert_int_equal(hs_audit_tap_new(1 << 20, &t), HS_OK);
  char bufs[10][32];
  hs_audit_tap_record_t recs[10];
  for (int i = 0; i < 10; i++) {
    recs[i] = record(101 + i, bufs[i]);
  }
  assert_int_equal(hs_audit_tap_put(t, recs, 10), HS_OK);
  /* Nothing is visible before a sync. */
  assert_null(hs_audit_tap_find(t, 8, 101));
  assert_int_equal(hs_audit_tap_sync(t, 100), HS_OK);
  assert_int_equal(hs_audit_tap_holds(t, 100, 110), 10);
  assert_int_equal(hs_audit_tap_holds(t, 104, 106), 2);
  const hs_audit_record_t *r = hs_audit_tap_find(t, 8, 101);
  assert_non_null(r);
  assert_string_equal(r->session, "sess-101");
  assert_string_equal(r->process, "visit");
  assert_string_equal(r->result, "accepted");
  assert_null(r->brand);
  assert_null(r->documents);
  assert_int_equal(r->server_us, 1700000000000101);
  assert_memory_equal(r->data_digest, k_digest, 32);
  r = hs_audit_tap_find(t, 7, 102);
  assert_non_null(r);
  assert_int_equal(r->documents_len, sizeof k_docs);
  assert_memory_equal(r->documents, k_docs, sizeof k_docs);
  assert_false(hs_audit_tap_find(t, 7, 104)->has_device);
  assert_true(hs_audit_tap_find(t, 8, 105)->has_device);
  assert_int_equal(hs_audit_tap_find(t, 8, 105)->device_us, 1600000000000000);
  /* The wrong brand, or an id never handed over, is not there. */
  assert_null(hs_audit_tap_find(t, 7, 101));
  assert_null(hs_audit_tap_find(t, 8, 99));
  assert_null(hs_audit_tap_find(t, 8, INT64_MIN));

  /* The hash of a handed-over record is the hash of the same record read from a row. */
  hs_audit_record_t rec = *hs_audit_tap_find(t, 7, 102), row = rec;
  rec.brand = row.brand = "acme";
  row.session = "sess-102";
  row.documents = k_docs;
  uint8_t h1[32], h2[32];
  hs_buf_t scratch;
  hs_buf_init(&scratch, 0);
  assert_int_equal(hs_audit_record_hash(&rec, &scratch, h1), HS_OK);
  assert_int_equal(hs_audit_record_hash(&row, &scratch, h2), HS_OK);
  assert_memory_equal(h1, h2, 32);
  hs_buf_free(&scratch);

  /* Sealed through 105: those go, the rest stay. */
  hs_audit_tap_stats_t st;
  hs_audit_tap_stats(t, &st);
  assert_int_equal(st.records, 10);
  size_t full = st.bytes;
  assert_int_equal(hs_audit_tap_sync(t, 105), HS_OK);
  assert_null(hs_audit_tap_find(t, 8, 105));
  assert_non_null(hs_audit_tap_find(t, 7, 106));
  assert_int_equal(hs_audit_tap_holds(t, 0, 1000), 5);
  /* One block: its memory returns only once all of it is sealed. */
  hs_audit_tap_stats(t, &st);
  assert_int_equal(st.bytes, full);
  assert_int_equal(hs_audit_tap_sync(t, 110), HS_OK);
  hs_audit_tap_stats(t, &st);
  assert_int_equal(st.records, 0);
  assert_int_equal(st.bytes, 0);
  assert_int_equal(hs_audit_tap_holds(t, 0, 1000), 0);
  hs_audit_tap_free(t);
}

static void test_budget_close_and_bad_text(void **state) {
  hs_audit_tap_t *t = NULL;
  assert_int_equal(hs_audit_tap_new(4096, &t), HS_OK);
  char bufs[64][32];
  hs_audit_tap_record_t recs[64];
  for (int i = 0; i < 64; i++) {
    recs[i] = record(1 + i, bufs[i]);
  }
  /* 64 records do not fit in 4 KiB: refused whole, and counted. */
  assert_int_equal(hs_audit_tap_put(t, recs, 64), HS_ELIMIT);
  hs_audit_tap_stats_t st;
  hs_audit_tap_stats(t, &st);
  assert_int_equal(st.dropped, 64);
  assert_int_equal(st.bytes, 0);
  /* A few do, until the budget is spent; sealing them makes room again. */
  int put = 0;
  while (hs_audit_tap_put(t, &recs[put], 1) == HS_OK) {
    put++;
  }
  assert_true(put > 2 && put < 64);
  assert_int_equal(hs_audit_tap_sync(t, put), HS_OK);
  assert_int_equal(hs_audit_tap_put(t, &recs[put], 1), HS_OK);
  /* Text with a NUL cannot be what PostgreSQL holds. */
  hs_audit_tap_record_t bad = recs[put + 1];
  bad.step = (hs_audit_bytes_t){.p = "a\0b", .n = 3};
  assert_int_equal(hs_audit_tap_put(t, &bad, 1), HS_EINVAL);
  /* Closed: everything is refused. */
  hs_audit_tap_close(t);
  assert_int_equal(hs_audit_tap_put(t, &recs[put + 2], 1), HS_ELIMIT);
  hs_audit_tap_free(t);
}

enum { PRODUCERS = 4, PER_PRODUCER = 2000, PER_PUT = 50 };

typedef struct producer {
  hs_audit_tap_t *t;
  int index;
} producer_t;

/* Producer p hands over ids p+1, p+1+PRODUCERS, ... in puts of PER_PUT. */
static void *produce(void *arg) {
  producer_t *p = arg;
  char bufs[PER_PUT][32];
  hs_audit_tap_record_t recs[PER_PUT];
  for (int done = 0; done < PER_PRODUCER; done += PER_PUT) {
    for (int k = 0; k < PER_PUT; k++) {
      recs[k] = record(1 + p->index + (int64_t)(done + k) * PRODUCERS, bufs[k]);
    }
    if (hs_audit_tap_put(p->t, recs, PER_PUT) != HS_OK) {
      return (void *)1;
    }
  }
  return NULL;
}

static void test_producers_on_threads(void **state) {
  hs_audit_tap_t *t = NULL;
  assert_int_equal(hs_audit_tap_new(64 << 20, &t), HS_OK);
  pthread_t th[PRODUCERS];
  producer_t p[PRODUCERS];
  for (int i = 0; i < PRODUCERS; i++) {
    p[i] = (producer_t){.t = t, .index = i};
    assert_int_equal(pthread_create(&th[i], NULL, produce, &p[i]), 0);
  }
  /* The consumer syncs while they put. */
  int64_t horizon = 0;
  for (int i = 0; i < 50; i++) {
    assert_int_equal(hs_audit_tap_sync(t, horizon), HS_OK);
    horizon += 10;
  }
  for (int i = 0; i < PRODUCERS; i++) {
    void *rc = NULL;
    pthread_join(th[i], &rc);
    assert_null(rc);
  }
  assert_int_equal(hs_audit_tap_sync(t, horizon), HS_OK);
  int64_t last = PRODUCERS * PER_PRODUCER;
  assert_int_equal(hs_audit_tap_holds(t, horizon, last), last - horizon);
  char buf[32];
  for (int64_t id = horizon + 1; id <= last; id++) {
    const hs_audit_record_t *r = hs_audit_tap_find(t, id % 2 == 0 ? 7 : 8, id);
    assert_non_null(r);
    snprintf(buf, sizeof buf, "sess-%lld", (long long)id);
    assert_string_equal(r->session, buf);
  }
  assert_int_equal(hs_audit_tap_sync(t, last), HS_OK);
  hs_audit_tap_stats_t st;
  hs_audit_tap_stats(t, &st);
  assert_int_equal(st.records, 0);
  assert_int_equal(st.bytes, 0);
  assert_int_equal(st.dropped, 0);
  hs_audit_tap_free(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_put_sync_find),
      cmocka_unit_test(test_budget_close_and_bad_text),
      cmocka_unit_test(test_producers_on_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
