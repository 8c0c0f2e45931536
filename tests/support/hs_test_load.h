/* A load of completions for durability tests: client threads loop completions on many "loop"
 * sessions (see hs_api_loop_source) while a test kills the server or stops PostgreSQL, and
 * remember exactly which completions were acknowledged (a 200, with its bytes) and which were
 * in flight without an answer. Afterwards hs_test_load_verify checks the database and the
 * server against that record.
 *
 * Each thread owns its sessions and keeps one completion of each in flight at a time, all of
 * them pipelined on one connection, so a group commit usually holds several. The data of a
 * completion depends only on (session, seq), so a retry after a lost answer is the same
 * request. A session stops advancing at HS_TEST_LOAD_MAX_SEQ (the engine caps steps). */
#ifndef HS_TEST_LOAD_H
#define HS_TEST_LOAD_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "hs_test_api.h"

#define HS_TEST_LOAD_MAX_SEQ     900
#define HS_TEST_LOAD_MAX_THREADS 16

typedef struct hs_test_load_session {
  hs_api_loop_t loop; /* loop.seq is the step to complete next */
  size_t index;       /* its place in the load, which seeds its data */
  hs_buf_t *answers;  /* answers[seq] holds the bytes of seq's 200 (len 0: none); owned */
  size_t n_answers;   /* entries allocated */
  bool pending;       /* loop.seq was sent and no 200 came back (no answer, or a 503) */
} hs_test_load_session_t;

typedef struct hs_test_load hs_test_load_t;

/* The sessions one thread owns: [first, first + count). */
typedef struct hs_test_load_part {
  hs_test_load_t *load;
  size_t first, count;
} hs_test_load_part_t;

struct hs_test_load {
  atomic_int port; /* the server the threads talk to */
  char brand[65];
  hs_test_load_session_t *sessions; /* owned */
  size_t n_sessions;
  pthread_t threads[HS_TEST_LOAD_MAX_THREADS];
  hs_test_load_part_t parts[HS_TEST_LOAD_MAX_THREADS];
  size_t n_threads;
  atomic_bool stop;
  /* What the threads saw. */
  atomic_int ok;             /* 200s */
  atomic_int unavailable;    /* 503s */
  atomic_int no_retry_after; /* 503s without Retry-After */
  atomic_int no_answer;      /* requests that got no answer (connection refused or cut) */
  atomic_int unexpected;     /* any other status, or a 200 with the wrong next step */
  atomic_llong last_ok_ms;   /* hs_test_now_ms() of the latest 200 */
  pthread_mutex_t mu;
  char first_error[512]; /* the first unexpected answer, for the failure message */
};

/* The JSON body of a session's completion of seq. out has room for 64 bytes. */
void hs_test_load_body(const hs_test_load_session_t *s, int64_t seq, char out[64]);

/* Deploys the loop process for brand on the server at port, starts n_sessions sessions, and
 * starts n_threads threads that loop completions until hs_test_load_stop. Returns 0, or a
 * negative code with the reason printed. */
int hs_test_load_start(hs_test_load_t *l, int port, const char *brand, size_t n_sessions,
                       size_t n_threads);

/* Starts the threads again on the same sessions, after hs_test_load_stop (and perhaps a
 * verification). */
int hs_test_load_resume(hs_test_load_t *l, size_t n_threads);

/* Stops and joins the threads (each finishes the batch it is waiting for, at most ~10 s). */
void hs_test_load_stop(hs_test_load_t *l);

/* Frees what the load owns. */
void hs_test_load_free(hs_test_load_t *l);

/* After the load stopped, with a server up at l->port:
 *   - every acknowledged completion is in step_completions exactly once and has one accepted
 *     validation record;
 *   - nothing past a session's last answer is stored, except its pending completion;
 *   - retrying every acknowledged completion answers 200 with the bytes the client got the
 *     first time, and retrying a pending one that committed answers 200 with the right next
 *     step;
 *   - then each session continues with one more step, with the right next step.
 * Returns true, or false with why (cap bytes). *acked and *pending_stored (may be NULL) count
 * what was checked. */
bool hs_test_load_verify(hs_test_load_t *l, PGconn *db, char *why, size_t cap, long long *acked,
                         int *pending_stored);

#endif
