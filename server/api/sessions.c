/* The contractor API of SPEC §4: start a visit, read it, stream it, complete its steps, and
 * leave feedback. Durability is SPEC §5: an answer that acknowledges a write is sent only from
 * the group commit's callback, after PostgreSQL committed it.
 *
 * Every handler here follows one shape: an op (heap, owned by the handler) carries the request
 * across asynchronous steps. While a read (a database job or a session load) is in flight, a
 * stream reset cancels it and frees the op. While a write is in flight, a reset only detaches
 * the request: the write's callback still runs, keeps the session's books straight, and frees
 * the op. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/auth.h"
#include "api/common.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/str.h"
#include "http/worker.h"
#include "store/content.h"
#include "store/store.h"

enum {
  MAX_REF = 128,
  MAX_FEEDBACK_COMMENT = 4000,
  MAX_TAGS = 32,
  MAX_TAG = 64,
  /* A retry of an older completion replays the session's record up to it, which costs about
   * one ordinary request per this many steps: that much is charged to the caller's rate limit,
   * so retrying old steps cannot buy more of a worker than ordinary requests do. */
  REPLAYED_STEPS_PER_REQUEST = 10,
};

typedef struct sop sop_t;
typedef void (*sop_fn)(sop_t *op, hs_live_t *live);

struct sop {
  hs_req_t *req; /* NULL once the client went away */
  hs_store_t *store;
  hs_principal_t who;
  char id[40];
  uint32_t seq;
  const hs_value_t *data;   /* completion data, in the request's arena */
  const hs_value_t *answer; /* the prepared answer of a completion, in the request's arena */
  char at[40];              /* device time as sent (RFC 3339), "" when absent */
  int64_t at_ms;
  hs_load_t *load;  /* a session load in flight */
  hs_db_job_t *job; /* a read in flight */
  bool writing;     /* a commit in flight: never cancelled */
  hs_waiter_t waiter;
  hs_live_t *waiting_on; /* the live session whose queue holds waiter */
  hs_watcher_t watcher;
  hs_live_t *watching;
  sop_fn next;
  /* Session start. */
  hs_session_t *new_session;
  hs_live_t *new_live;
  char process[65];
  char ref[MAX_REF + 1];
  /* Completion. */
  hs_live_t *live;
  bool holding;        /* op holds live->busy while it checks the evidence blobs */
  hs_value_t *missing; /* evidence fields whose blob is not stored: name -> message */
  bool reloaded;       /* the session was read again because the step was ahead of the copy */
  uint8_t digest[32];  /* the completion's request digest (completion_digest) */
};

static hs_store_t *store_of(hs_req_t *req) {
  return req->worker->app;
}

static void sop_free(sop_t *op) {
  if (op->new_session != NULL) {
    hs_session_free(op->new_session);
  }
  free(op->new_live);
  free(op);
}

static void sop_cancel(hs_req_t *req) {
  sop_t *op = req->data;
  op->req = NULL;
  if (op->load != NULL) {
    hs_load_cancel(op->load);
    op->load = NULL;
  }
  if (op->job != NULL) {
    hs_db_job_cancel(op->job);
    op->job = NULL;
  }
  if (op->waiting_on != NULL) {
    hs_store_live_unwait(op->waiting_on, &op->waiter);
    op->waiting_on = NULL;
  }
  if (op->watching != NULL) {
    hs_store_live_unwatch(op->watching, &op->watcher);
    op->watching = NULL;
  }
  if (op->holding) {
    op->holding = false;
    hs_store_live_release(op->store, op->live);
  }
  if (!op->writing) {
    sop_free(op);
  }
}

static sop_t *sop_new(hs_req_t *req, const hs_principal_t *who) {
  sop_t *op = calloc(1, sizeof *op);
  if (op == NULL) {
    hs_api_unavailable(req, "out of memory");
    return NULL;
  }
  op->req = req;
  op->store = store_of(req);
  op->who = *who;
  req->data = op;
  req->on_cancel = sop_cancel;
  return op;
}

/* The request is answered: nothing is in flight for it any more. */
static void sop_done(sop_t *op) {
  if (op->req != NULL) {
    op->req->on_cancel = NULL;
    op->req->data = NULL;
  }
  sop_free(op);
}

/* ------------------------------------------------------------ values */

static hs_value_t *session_value(hs_arena_t *a, const hs_live_t *live) {
  hs_value_t *s = hs_value_new_map(a, 8);
  if (s == NULL) {
    return NULL;
  }
  hs_session_state_t st = hs_session_status(live->session);
  char started[40];
  hs_time_format(live->started_ms, started, sizeof started);
  int rc = hs_map_add_str(a, s, "id", live->id);
  rc |= hs_map_add_str(a, s, "process", live->process);
  rc |= hs_map_add_str(a, s, "version", live->version);
  rc |= hs_map_add_str(a, s, "status",
                       st == HS_SESSION_WAITING ? "active"
                       : st == HS_SESSION_ENDED ? "ended"
                                                : "failed");
  rc |= live->ref[0] != '\0' ? hs_map_add_str(a, s, "ref", live->ref) : hs_map_add_nil(a, s, "ref");
  rc |= hs_map_add_str(a, s, "started_at", started);
  if (st != HS_SESSION_WAITING) {
    rc |= live->outcome[0] != '\0' ? hs_map_add_str(a, s, "outcome", live->outcome)
                                   : hs_map_add_nil(a, s, "outcome");
  }
  return rc == HS_OK ? s : NULL;
}

/* The live copy's current step as sent to a device, nil once the session is over; NULL when
 * it cannot be built, and then the request has been answered. */
static const hs_value_t *current_step(sop_t *op, hs_live_t *live) {
  static const hs_value_t k_nil = {.type = HS_V_NIL};
  if (hs_session_status(live->session) != HS_SESSION_WAITING) {
    return &k_nil;
  }
  hs_value_t *step = NULL;
  hs_err_t err;
  hs_err_clear(&err);
  if (hs_session_step(live->session, &op->req->arena, &step, &err) != HS_OK) {
    hs_api_fail(op->req, err.code, err.msg);
    sop_done(op);
    return NULL;
  }
  return step;
}

/* {session, step}: the answer of start and get. */
static void respond_session(sop_t *op, hs_live_t *live, int status) {
  hs_req_t *req = op->req;
  hs_arena_t *a = &req->arena;
  const hs_value_t *step = current_step(op, live);
  if (step == NULL) {
    return;
  }
  hs_value_t *root = hs_value_new_map(a, 2);
  hs_value_t *s = session_value(a, live);
  if (root == NULL || s == NULL || hs_map_add(a, root, "session", s) == NULL ||
      hs_map_add(a, root, "step", step) == NULL) {
    hs_api_unavailable(req, "out of memory");
    sop_done(op);
    return;
  }
  hs_req_respond(req, status, root);
  sop_done(op);
}

/* ------------------------------------------------------------ getting the live session */

static void with_live(sop_t *op, sop_fn fn);

static bool owns(const sop_t *op, const hs_live_t *live) {
  if (live->brand_id != op->who.brand_id) {
    return false;
  }
  return op->who.role != HS_ROLE_CONTRACTOR || strcmp(live->contractor_id, op->who.subject) == 0;
}

static void on_waited(hs_waiter_t *w, hs_live_t *live) {
  sop_t *op = (sop_t *)((char *)w - offsetof(sop_t, waiter));
  op->waiting_on = NULL;
  if (live == NULL || live->stale) {
    with_live(op, op->next); /* the copy we waited on was dropped: load it again */
    return;
  }
  op->next(op, live);
}

static void on_loaded(void *ctx, int status, hs_live_t *live, const hs_err_t *err) {
  sop_t *op = ctx;
  op->load = NULL;
  if (status == HS_OK) {
    if (!owns(op, live)) {
      hs_req_respond_error(op->req, 404, "not_found", "There is no session %s", op->id);
      sop_done(op);
      return;
    }
    op->waiting_on = live;
    hs_store_live_wait(op->store, live, &op->waiter);
    return;
  }
  if (status == HS_ENOTFOUND) {
    hs_req_respond_error(op->req, 404, "not_found", "There is no session %s", op->id);
  } else if (status == HS_EUNAVAIL) {
    hs_api_unavailable(op->req, err->msg);
  } else {
    hs_log(HS_LOG_ERROR, "session_replay_failed", "{s:s, s:s}", "session", op->id, "error",
           err->msg);
    hs_req_respond_error(op->req, 500, "script_error",
                         "The session cannot be rebuilt from its record: %s", err->msg);
  }
  sop_done(op);
}

/* Runs fn with the session once it is in memory and no commit of it is in flight. */
static void with_live(sop_t *op, sop_fn fn) {
  op->next = fn;
  op->waiter.run = on_waited;
  hs_live_t *live = hs_store_live_get(op->store, op->id);
  if (live != NULL && !live->stale) {
    if (!owns(op, live)) {
      hs_req_respond_error(op->req, 404, "not_found", "There is no session %s", op->id);
      sop_done(op);
      return;
    }
    op->waiting_on = live;
    hs_store_live_wait(op->store, live, &op->waiter);
    return;
  }
  int rc = hs_store_load(op->store, op->who.brand_id, op->id, on_loaded, op, &op->load);
  if (rc != HS_OK) {
    hs_api_unavailable(op->req, "the database is unavailable");
    sop_done(op);
  }
}

static bool take_session_id(hs_req_t *req, sop_t *op) {
  const char *id = hs_route_param(&req->match, "id");
  if (id == NULL || !hs_uuid_valid(id)) {
    hs_req_respond_error(req, 400, "malformed",
                         "A session id is a UUID such as 3f1c9b52-8d4e-4b7a-9c61-2f0e5d7a8b90");
    return false;
  }
  hs_strlcpy(op->id, id, sizeof op->id);
  return true;
}

/* An op for the session named by {id} in the path; NULL when the request has been answered. */
static sop_t *sop_for_session(hs_req_t *req, const hs_principal_t *who) {
  sop_t *op = sop_new(req, who);
  if (op != NULL && !take_session_id(req, op)) {
    sop_done(op);
    return NULL;
  }
  return op;
}

/* ------------------------------------------------------------ GET /v1/sessions/{id} */

static void get_with_live(sop_t *op, hs_live_t *live) {
  respond_session(op, live, 200);
}

/* The start of every handler that addresses one session by the {id} in its path. */
static void on_session(hs_req_t *req, const hs_principal_t *who, sop_fn fn) {
  sop_t *op = sop_for_session(req, who);
  if (op == NULL) {
    return;
  }
  with_live(op, fn);
}

static void get_authorized(hs_req_t *req, const hs_principal_t *who) {
  on_session(req, who, get_with_live);
}

void hs_api_session_get(hs_req_t *req) {
  hs_auth_resolve(req, HS_ROLE_CONTRACTOR | HS_ROLE_ADMIN | HS_ROLE_COMPLIANCE, get_authorized);
}

/* ------------------------------------------------------------ POST /v1/sessions */

static void start_lookup_ref(sop_t *op);

static void on_session_committed(void *ctx, int status, bool inserted) {
  sop_t *op = ctx;
  op->writing = false;
  if (op->req == NULL) {
    sop_free(op); /* the client left; the session exists and a retry with its ref finds it */
    return;
  }
  if (status != HS_OK) {
    hs_api_unavailable(op->req, "the session could not be stored");
    sop_done(op);
    return;
  }
  if (!inserted) {
    /* Another request with the same ref won the race: answer with its session. */
    start_lookup_ref(op);
    return;
  }
  hs_live_t *live = op->new_live;
  live->session = op->new_session;
  op->new_live = NULL;
  op->new_session = NULL;
  if (hs_store_live_add(op->store, &live) != HS_OK) {
    hs_api_unavailable(op->req, "out of memory");
    sop_done(op);
    return;
  }
  respond_session(op, live, 201);
}

static void start_new(sop_t *op, const char *version, const char *source, size_t source_len) {
  hs_req_t *req = op->req;
  hs_err_t err;
  hs_err_clear(&err);
  hs_process_t *p =
      hs_store_process(op->store, op->who.brand_id, op->process, version, source, source_len, &err);
  if (p == NULL) {
    hs_log(HS_LOG_ERROR, "process_load_failed", "{s:s, s:s}", "process", op->process, "error",
           err.msg);
    hs_req_respond_error(req, 500, "script_error", "The process %s cannot be loaded: %s",
                         op->process, err.msg);
    sop_done(op);
    return;
  }
  hs_arena_t *a = &req->arena;
  const hs_value_t *customer = op->data;
  hs_value_t *contractor = hs_value_new_map(a, 2);
  if (contractor == NULL || hs_map_add_str(a, contractor, "id", op->who.subject) != HS_OK ||
      hs_map_add_str(a, contractor, "name",
                     op->who.name[0] != '\0' ? op->who.name : op->who.subject) != HS_OK) {
    hs_api_unavailable(req, "out of memory");
    sop_done(op);
    return;
  }
  uint64_t seed = 0;
  if (hs_uuid_v4(op->id) != HS_OK || hs_random_u64(&seed) != HS_OK) {
    hs_api_unavailable(req, "no randomness available");
    sop_done(op);
    return;
  }
  seed &= INT64_MAX; /* stored in a bigint */
  int64_t now = hs_time_now_ms();
  hs_session_start_t start = {.session_id = op->id,
                              .customer = customer,
                              .contractor = contractor,
                              .seed = seed,
                              .at_ms = now};
  hs_step_result_t res;
  int rc = hs_session_start(p, &start, a, &op->new_session, &res, &err);
  if (rc != HS_OK) {
    hs_api_fail(req, rc == HS_ELIMIT || rc == HS_ESCRIPT ? HS_ESCRIPT : rc, err.msg);
    sop_done(op);
    return;
  }
  op->new_live = calloc(1, sizeof *op->new_live);
  if (op->new_live == NULL) {
    hs_api_unavailable(req, "out of memory");
    sop_done(op);
    return;
  }
  hs_live_t *live = op->new_live;
  hs_strlcpy(live->id, op->id, sizeof live->id);
  live->brand_id = op->who.brand_id;
  hs_strlcpy(live->contractor_id, op->who.subject, sizeof live->contractor_id);
  hs_strlcpy(live->process, op->process, sizeof live->process);
  hs_strlcpy(live->version, version, sizeof live->version);
  hs_strlcpy(live->ref, op->ref, sizeof live->ref);
  if (res.outcome != NULL) {
    hs_strlcpy(live->outcome, res.outcome, sizeof live->outcome);
  }
  live->started_ms = now;
  live->proc = p;
  live->evidence = hs_step_needs_evidence(res.step);

  hs_row_t row;
  hs_row_init(&row, HS_WRITE_SESSION);
  hs_row_str(&row, "id", op->id);
  hs_row_int(&row, "brand_id", op->who.brand_id);
  hs_row_str(&row, "process", op->process);
  hs_row_str(&row, "version", version);
  hs_row_str(&row, "contractor_id", op->who.subject);
  hs_row_str(&row, "ref", op->ref[0] != '\0' ? op->ref : NULL);
  hs_row_msgpack(&row, "customer", customer);
  hs_row_msgpack(&row, "contractor", contractor);
  hs_row_int(&row, "seed", (int64_t)seed);
  hs_row_msgpack(&row, "events", res.events);
  /* The row's start time is the engine's, so every copy of the session, replayed or not, says
   * the same started_at. */
  hs_row_int(&row, "started_ms", now);
  rc = hs_commit_submit(hs_store_committer(op->store), &row, on_session_committed, op, NULL);
  hs_row_free(&row);
  if (rc != HS_OK) {
    hs_api_unavailable(req, rc == HS_ELIMIT ? "too many writes are waiting" : "not connected");
    sop_done(op);
    return;
  }
  op->writing = true;
  /* What the start's suggestions showed, in the same batch: it counts only if the session row
   * commits. */
  hs_content_record(hs_store_committer(op->store), p, op->who.brand_id, op->id, 0, NULL, res.events,
                    0);
}

static void on_start_read(void *ctx, const hs_db_result_t *res) {
  sop_t *op = ctx;
  op->job = NULL;
  hs_req_t *req = op->req;
  if (res->status != HS_OK) {
    hs_api_unavailable(req, res->error);
    sop_done(op);
    return;
  }
  PGresult *existing = res->n_results > 1 ? res->results[1] : NULL;
  if (existing != NULL && PQntuples(existing) == 1) {
    hs_strlcpy(op->id, PQgetvalue(existing, 0, 0), sizeof op->id);
    op->next = get_with_live;
    with_live(op, get_with_live);
    return;
  }
  PGresult *proc = res->results[0];
  if (PQntuples(proc) != 1) {
    hs_req_respond_error(req, 404, "not_found",
                         "There is no process named %s: deploy it with PUT /v1/processes/%s",
                         op->process, op->process);
    sop_done(op);
    return;
  }
  start_new(op, PQgetvalue(proc, 0, 0), PQgetvalue(proc, 0, 1), (size_t)PQgetlength(proc, 0, 1));
}

static const char k_active_sql[] =
    "SELECT p.active_version, pv.source FROM processes p JOIN process_versions pv"
    " ON pv.brand_id = p.brand_id AND pv.name = p.name AND pv.version = p.active_version"
    " WHERE p.brand_id = $1 AND p.name = $2";
static const char k_by_ref_sql[] =
    "SELECT id FROM sessions WHERE brand_id = $1 AND contractor_id = $2 AND ref = $3";

static void on_ref_found(void *ctx, const hs_db_result_t *res) {
  sop_t *op = ctx;
  op->job = NULL;
  if (res->status != HS_OK || PQntuples(res->results[0]) != 1) {
    hs_api_unavailable(op->req, res->status != HS_OK ? res->error : "the session vanished");
    sop_done(op);
    return;
  }
  hs_strlcpy(op->id, PQgetvalue(res->results[0], 0, 0), sizeof op->id);
  with_live(op, get_with_live);
}

static void start_lookup_ref(sop_t *op) {
  char brand[24];
  snprintf(brand, sizeof brand, "%" PRId64, op->who.brand_id);
  const char *params[] = {brand, op->who.subject, op->ref};
  hs_db_stmt_t s = {
      .name = "hs_session_by_ref", .sql = k_by_ref_sql, .n_params = 3, .values = params};
  if (hs_db_exec(hs_store_pool(op->store), &s, 1, on_ref_found, op, &op->job) != HS_OK) {
    hs_api_unavailable(op->req, "the database is unavailable");
    sop_done(op);
  }
}

static void start_authorized(hs_req_t *req, const hs_principal_t *who) {
  static const char *const allowed[] = {"process", "customer", "ref", NULL};
  hs_value_t *body = hs_api_decode_map(req, allowed, "{process, customer, ref}");
  if (body == NULL) {
    return;
  }
  const hs_value_t *process = hs_map_get(body, "process");
  const hs_value_t *customer = hs_map_get(body, "customer");
  const hs_value_t *ref = hs_map_get(body, "ref");
  if (process == NULL || process->type != HS_V_STR || !hs_api_valid_name(process->as.str.ptr)) {
    hs_req_respond_error(req, 400, "malformed",
                         "\"process\" must be a process name: lower-case letters, digits and "
                         "dashes, at most 64");
    return;
  }
  if (customer != NULL && customer->type != HS_V_MAP && customer->type != HS_V_NIL) {
    hs_req_respond_error(req, 400, "malformed", "\"customer\" must be a map, such as {name = …}");
    return;
  }
  if (ref != NULL && ref->type != HS_V_NIL &&
      (ref->type != HS_V_STR || ref->as.str.len == 0 || ref->as.str.len > MAX_REF)) {
    hs_req_respond_error(req, 400, "malformed", "\"ref\" must be a string of 1 to %d bytes",
                         MAX_REF);
    return;
  }
  sop_t *op = sop_new(req, who);
  if (op == NULL) {
    return;
  }
  hs_strlcpy(op->process, process->as.str.ptr, sizeof op->process);
  if (ref != NULL && ref->type == HS_V_STR) {
    hs_strlcpy(op->ref, ref->as.str.ptr, sizeof op->ref);
  }
  if (customer == NULL || customer->type == HS_V_NIL) {
    customer = hs_value_new_map(&req->arena, 0);
  }
  op->data = customer;
  char brand[24];
  snprintf(brand, sizeof brand, "%" PRId64, who->brand_id);
  const char *p1[] = {brand, op->process};
  const char *p2[] = {brand, who->subject, op->ref};
  hs_db_stmt_t stmts[] = {
      {.name = "hs_active_process", .sql = k_active_sql, .n_params = 2, .values = p1},
      {.name = "hs_session_by_ref", .sql = k_by_ref_sql, .n_params = 3, .values = p2},
  };
  if (customer == NULL || hs_db_exec(hs_store_pool(op->store), stmts, op->ref[0] != '\0' ? 2 : 1,
                                     on_start_read, op, &op->job) != HS_OK) {
    hs_api_unavailable(req, "the database is unavailable");
    sop_done(op);
  }
}

void hs_api_session_start(hs_req_t *req) {
  hs_auth_resolve(req, HS_ROLE_CONTRACTOR, start_authorized);
}

/* ------------------------------------------------------------ POST …/steps/{seq} */

static void complete_stored(sop_t *op);

/* The digest that tells a retry of a completion from a different one: the data as msgpack,
 * then the device time as sent. */
static int completion_digest(sop_t *op, hs_buf_t *data_mp, uint8_t out[32]) {
  int rc = hs_msgpack_encode(op->data, data_mp);
  if (rc == HS_OK) {
    hs_sha256_2(data_mp->data, data_mp->len, op->at, strlen(op->at), out);
  }
  return rc;
}

static void on_rejection_committed(void *ctx, int status, bool inserted) {
  sop_t *op = ctx;
  op->writing = false;
  (void)inserted;
  if (op->req == NULL) {
    sop_free(op);
    return;
  }
  if (status != HS_OK) {
    hs_api_unavailable(op->req, "the attempt could not be recorded");
    sop_done(op);
    return;
  }
  /* The answer was prepared before the commit; it is in op->req->data's arena. */
  hs_req_t *req = op->req;
  const hs_value_t *answer = op->answer;
  sop_done(op);
  hs_req_respond(req, 422, answer);
}

static void on_completion_committed(void *ctx, int status, bool inserted) {
  sop_t *op = ctx;
  op->writing = false;
  hs_live_t *live = op->live;
  if (status == HS_OK && inserted) {
    live->answered_seq = op->seq;
    memcpy(live->answered_digest, op->digest, sizeof op->digest);
    hs_store_live_release(op->store, live);
    hs_store_live_changed(live);
    if (op->req != NULL) {
      hs_req_t *req = op->req;
      const hs_value_t *answer = op->answer; /* in the request's arena */
      sop_done(op);
      hs_req_respond(req, 200, answer);
    } else {
      sop_free(op);
    }
    return;
  }
  /* Not committed (database) or committed elsewhere first (another node): this copy of the
   * session ran ahead of the record, so it goes; the next request rebuilds it. */
  live->busy = false;
  hs_store_live_drop(op->store, live);
  if (op->req == NULL) {
    sop_free(op);
    return;
  }
  if (status != HS_OK) {
    hs_api_unavailable(op->req, "the completion could not be stored; retrying it is safe");
    sop_done(op);
    return;
  }
  complete_stored(op);
}

/* A retry names a seq before the copy's current step that the record has no completion for. */
static void not_accepted(sop_t *op) {
  hs_req_respond_error(op->req, 409, "conflict",
                       "Step %u is not the current step of this session; read the session for "
                       "the current one",
                       op->seq);
  sop_done(op);
}

/* Whether the request repeats the completion accepted for its seq, whose request digest is
 * stored (32 bytes) or else stored_hex (64 hex digits). When it does not, or the digest cannot
 * be made, the request has been answered (409 or 503). */
static bool same_completion(sop_t *op, const uint8_t *stored, const char *stored_hex) {
  uint8_t digest[32];
  char hex[65];
  hs_buf_t data_mp;
  hs_buf_init(&data_mp, 0);
  int rc = completion_digest(op, &data_mp, digest);
  hs_buf_free(&data_mp);
  if (rc != HS_OK) {
    hs_api_unavailable(op->req, "out of memory");
    sop_done(op);
    return false;
  }
  hs_hex(digest, sizeof digest, hex);
  if (stored != NULL ? memcmp(digest, stored, sizeof digest) != 0 : strcmp(hex, stored_hex) != 0) {
    hs_req_respond_error(op->req, 409, "conflict",
                         "Step %u was already completed with different data; read the session "
                         "for the current step",
                         op->seq);
    sop_done(op);
    return false;
  }
  return true;
}

/* {status: "accepted", next}: the answer to an accepted completion, next being the step it
 * led to (NULL: the completion ended the session). NULL when out of memory. */
static hs_value_t *accepted_answer(hs_arena_t *a, const hs_value_t *next) {
  static const hs_value_t k_nil = {.type = HS_V_NIL};
  hs_value_t *answer = hs_value_new_map(a, 2);
  if (answer == NULL || hs_map_add_str(a, answer, "status", "accepted") != HS_OK ||
      hs_map_add(a, answer, "next", next != NULL ? next : &k_nil) == NULL) {
    return NULL;
  }
  return answer;
}

/* Answers a retry with 200 and the answer of its accepted completion, which led to next. */
static void respond_accepted(sop_t *op, const hs_value_t *next) {
  hs_req_t *req = op->req;
  hs_value_t *answer = accepted_answer(&req->arena, next);
  if (answer == NULL) {
    hs_api_unavailable(req, "out of memory");
    sop_done(op);
    return;
  }
  sop_done(op);
  hs_req_respond(req, 200, answer);
}

/* A retry of an accepted completion (or a different request for its seq): the record says
 * which, and the answer it got is rebuilt from the record (hs_store_answer). */
static void on_stored_answer(void *ctx, int status, const char *digest_hex, const hs_value_t *next,
                             const hs_err_t *err) {
  sop_t *op = ctx;
  op->load = NULL;
  hs_req_t *req = op->req;
  if (status == HS_EUNAVAIL) {
    hs_api_unavailable(req, err->msg);
    sop_done(op);
    return;
  }
  if (status == HS_ENOTFOUND) {
    not_accepted(op);
    return;
  }
  if (status != HS_OK) {
    hs_log(HS_LOG_ERROR, "answer_replay_failed", "{s:s, s:i, s:s}", "session", op->id, "seq",
           (int)op->seq, "error", err->msg);
    hs_req_respond_error(req, 500, "script_error",
                         "The answer to step %u cannot be rebuilt from the session's record: %s",
                         op->seq, err->msg);
    sop_done(op);
    return;
  }
  hs_auth_charge(req, &op->who, (double)op->seq / REPLAYED_STEPS_PER_REQUEST);
  if (!same_completion(op, NULL, digest_hex)) {
    return;
  }
  respond_accepted(op, next); /* the same completion again: the same answer */
}

static void complete_stored(sop_t *op) {
  int rc = hs_store_answer(op->store, op->who.brand_id, op->id, op->seq, on_stored_answer, op,
                           &op->load);
  if (rc == HS_ENOTFOUND) {
    not_accepted(op);
  } else if (rc != HS_OK) {
    hs_api_unavailable(op->req, "the database is unavailable");
    sop_done(op);
  }
}

/* A retry of the completion the live copy committed last (live->answered_seq): its answer is
 * the copy's current step, or nil if it ended the session, whatever happened elsewhere since. */
static void complete_answered(sop_t *op, hs_live_t *live) {
  if (!same_completion(op, live->answered_digest, NULL)) {
    return;
  }
  const hs_value_t *step = current_step(op, live);
  if (step != NULL) {
    respond_accepted(op, step);
  }
}

static const char *time_or_null(const char *at) {
  return at[0] != '\0' ? at : NULL;
}

static void complete_checked(sop_t *op, hs_live_t *live);

static void on_blobs_checked(void *ctx, const hs_db_result_t *res) {
  sop_t *op = ctx;
  op->job = NULL;
  op->holding = false;
  hs_live_t *live = op->live;
  live->busy = false;
  if (res->status != HS_OK) {
    hs_store_live_release(op->store, live);
    hs_api_unavailable(op->req, res->error);
    sop_done(op);
    return;
  }
  /* Every hash the database knows is removed from the missing list. */
  PGresult *r = res->results[0];
  hs_value_t *missing = op->missing;
  for (int i = 0; i < PQntuples(r); i++) {
    char want[80];
    snprintf(want, sizeof want, "sha256:%s", PQgetvalue(r, i, 0));
    for (size_t k = 0; k < missing->as.map.len; k++) {
      const hs_value_t *v = hs_map_get(op->data, missing->as.map.items[k].key);
      if (v != NULL && v->type == HS_V_STR && strcmp(v->as.str.ptr, want) == 0) {
        missing->as.map.items[k] = missing->as.map.items[--missing->as.map.len];
        k--;
      }
    }
  }
  if (missing->as.map.len == 0) {
    op->missing = NULL;
  }
  hs_store_t *store = op->store; /* op may be freed by complete_checked */
  complete_checked(op, live);
  /* Requests that queued behind the check run now, after this one took its turn. */
  if (!live->busy) {
    hs_store_live_release(store, live);
  }
}

/* A photo or signature must name evidence this brand uploaded: collect those fields and ask
 * the database before the engine sees the data. */
static void complete_with_live(sop_t *op, hs_live_t *live) {
  hs_req_t *req = op->req;
  hs_arena_t *a = &req->arena;
  hs_session_state_t st = hs_session_status(live->session);
  uint32_t cur = hs_session_seq(live->session);
  if (op->seq < cur || (st == HS_SESSION_ENDED && op->seq <= cur)) {
    if (op->seq == live->answered_seq && ((st == HS_SESSION_WAITING && op->seq == cur - 1) ||
                                          (st == HS_SESSION_ENDED && op->seq == cur))) {
      complete_answered(op, live); /* a retry of the latest: no replay needed */
    } else {
      complete_stored(op); /* a retry, or a late duplicate */
    }
    return;
  }
  if (st == HS_SESSION_FAILED) {
    hs_req_respond_error(req, 500, "script_error",
                         "The process script failed at this step; the brand must fix it");
    sop_done(op);
    return;
  }
  if (st == HS_SESSION_WAITING && op->seq > cur && !op->reloaded) {
    /* Ahead of this copy: another node may have moved the session a moment ago, before its
     * notification arrived here. The record decides, once. */
    op->reloaded = true;
    hs_store_live_drop(op->store, live);
    with_live(op, complete_with_live);
    return;
  }
  if (st != HS_SESSION_WAITING || op->seq != cur) {
    hs_req_respond_error(req, 409, "conflict",
                         "Step %u is not the current step: the session is at step %u", op->seq,
                         cur);
    sop_done(op);
    return;
  }
  if (!live->evidence) {
    complete_checked(op, live);
    return;
  }
  hs_value_t *step = NULL;
  hs_err_t err;
  if (hs_session_step(live->session, a, &step, &err) != HS_OK) {
    hs_api_fail(req, err.code, err.msg);
    sop_done(op);
    return;
  }
  const hs_value_t *fields = hs_map_get(step, "fields");
  hs_value_t *missing = hs_value_new_map(a, 2);
  hs_buf_t list;
  hs_buf_init(&list, 0);
  int rc = missing != NULL ? hs_buf_puts(&list, "{") : HS_ENOMEM;
  for (size_t i = 0; rc == HS_OK && fields != NULL && i < fields->as.arr.len; i++) {
    const hs_value_t *f = &fields->as.arr.items[i];
    const hs_value_t *type = hs_map_get(f, "type");
    const hs_value_t *name = hs_map_get(f, "name");
    if (type == NULL || name == NULL || type->type != HS_V_STR || name->type != HS_V_STR ||
        (strcmp(type->as.str.ptr, "photo") != 0 && strcmp(type->as.str.ptr, "signature") != 0)) {
      continue;
    }
    const hs_value_t *v = hs_map_get(op->data, name->as.str.ptr);
    if (v == NULL || v->type != HS_V_STR || strncmp(v->as.str.ptr, "sha256:", 7) != 0 ||
        !hs_is_hex(v->as.str.ptr + 7, 64)) {
      continue; /* absent or malformed: the engine's own check says so */
    }
    char msg[200];
    hs_evidence_missing_message(msg, sizeof msg, type->as.str.ptr, v->as.str.ptr);
    rc = hs_map_add_str(a, missing, name->as.str.ptr, msg);
    if (rc == HS_OK) {
      rc = hs_buf_printf(&list, "%s%s", list.len > 1 ? "," : "", v->as.str.ptr + 7);
    }
  }
  rc = rc == HS_OK ? hs_buf_append(&list, "}", 2) : rc;
  if (rc != HS_OK) {
    hs_buf_free(&list);
    hs_api_unavailable(req, "out of memory");
    sop_done(op);
    return;
  }
  if (missing->as.map.len == 0) {
    hs_buf_free(&list);
    complete_checked(op, live);
    return;
  }
  op->missing = missing;
  op->live = live;
  char brand[24];
  snprintf(brand, sizeof brand, "%" PRId64, op->who.brand_id);
  const char *params[] = {brand, (const char *)list.data};
  hs_db_stmt_t q = {.name = "hs_blobs_present",
                    .sql = "SELECT hash FROM blobs WHERE brand_id = $1 AND hash = ANY($2::text[])",
                    .n_params = 2,
                    .values = params};
  rc = hs_db_exec(hs_store_pool(op->store), &q, 1, on_blobs_checked, op, &op->job);
  hs_buf_free(&list);
  if (rc != HS_OK) {
    hs_api_unavailable(req, "the database is unavailable");
    sop_done(op);
    return;
  }
  live->busy = true; /* hold the session: nobody completes it while we look */
  op->holding = true;
}

/* The compliance record's documents and pii names (see hs_step_result_t); absent members are
 * NULL columns. */
static void row_record_info(hs_row_t *row, const hs_step_result_t *res, hs_arena_t *a) {
  if (res->documents != NULL) {
    hs_row_msgpack(row, "documents", res->documents);
  }
  const hs_value_t *pii = res->pii;
  if (pii == NULL || pii->type != HS_V_ARRAY || pii->as.arr.len == 0) {
    return;
  }
  const char **names = hs_arena_alloc(a, pii->as.arr.len * sizeof *names);
  if (names == NULL) {
    row->rc = HS_ENOMEM;
    return;
  }
  for (size_t i = 0; i < pii->as.arr.len; i++) {
    names[i] = pii->as.arr.items[i].type == HS_V_STR ? pii->as.arr.items[i].as.str.ptr : "";
  }
  hs_row_strs(row, "pii", names, pii->as.arr.len);
}

static void complete_checked(sop_t *op, hs_live_t *live) {
  hs_req_t *req = op->req;
  hs_arena_t *a = &req->arena;
  char step_id[129];
  hs_strlcpy(step_id, hs_session_step_id(live->session), sizeof step_id);
  uint8_t digest[32];
  hs_buf_t data_mp;
  hs_buf_init(&data_mp, 0);
  if (completion_digest(op, &data_mp, digest) != HS_OK) {
    hs_buf_free(&data_mp);
    hs_api_unavailable(req, "out of memory");
    sop_done(op);
    return;
  }
  memcpy(op->digest, digest, sizeof op->digest);
  uint8_t data_digest[32];
  hs_sha256(data_mp.data, data_mp.len, data_digest);
  hs_err_t err;
  hs_err_clear(&err);
  hs_step_result_t res;
  int rc;
  if (op->missing != NULL) {
    /* The evidence is not there: reject without letting the script see the data. */
    memset(&res, 0, sizeof res);
    res.status = HS_STEP_REJECTED;
    res.errors = op->missing;
    rc = hs_session_record_info(live->session, a, &res.documents, &res.pii, &err);
  } else {
    rc = hs_session_complete(live->session, op->seq, op->data, hs_time_now_ms(), op->at_ms, a, &res,
                             &err);
  }
  hs_row_t row;
  hs_write_kind_t kind;
  if (rc != HS_OK) {
    hs_buf_free(&data_mp);
    if (rc == HS_ECONFLICT) {
      hs_req_respond_error(req, 409, "conflict", "%s", err.msg);
    } else {
      hs_log(HS_LOG_WARN, "script_failed", "{s:s, s:s}", "session", live->id, "error", err.msg);
      hs_req_respond_error(req, 500, "script_error", "The process script failed: %s", err.msg);
      if (hs_session_status(live->session) == HS_SESSION_FAILED) {
        hs_store_live_drop(op->store, live);
      }
    }
    sop_done(op);
    return;
  }
  if (res.status == HS_STEP_REJECTED) {
    /* 422 once the attempt is in the compliance log. */
    hs_value_t *answer = hs_value_new_map(a, 1);
    hs_value_t *e = answer != NULL ? hs_map_add_map(a, answer, "error") : NULL;
    size_t n_fields = res.errors != NULL ? res.errors->as.map.len : 0;
    const hs_value_t *whole = res.errors != NULL ? hs_map_get(res.errors, "") : NULL;
    char msg[512];
    if (whole != NULL && whole->type == HS_V_STR) {
      hs_strlcpy(msg, whole->as.str.ptr, sizeof msg);
    } else {
      snprintf(msg, sizeof msg, "Step \"%s\" (seq %u) has %zu field%s to fix.", step_id, op->seq,
               n_fields, n_fields == 1 ? "" : "s");
    }
    if (e == NULL || hs_map_add_str(a, e, "code", "validation_failed") != HS_OK ||
        hs_map_add_str(a, e, "message", msg) != HS_OK ||
        hs_map_add(a, e, "fields", res.errors != NULL ? res.errors : hs_value_new_map(a, 0)) ==
            NULL) {
      hs_buf_free(&data_mp);
      hs_api_unavailable(req, "out of memory");
      sop_done(op);
      return;
    }
    op->answer = answer;
    kind = HS_WRITE_REJECTION;
    hs_row_init(&row, kind);
    hs_row_str(&row, "session_id", live->id);
    hs_row_int(&row, "seq", op->seq);
    hs_row_str(&row, "device_time", time_or_null(op->at));
    hs_row_int(&row, "brand_id", live->brand_id);
    hs_row_str(&row, "process", live->process);
    hs_row_str(&row, "version", live->version);
    hs_row_str(&row, "step_id", step_id);
    hs_row_str(&row, "contractor_id", live->contractor_id);
    hs_row_msgpack(&row, "errors", res.errors);
    hs_row_bytes(&row, "data_digest", data_digest, 32);
    hs_row_bytes(&row, "data", data_mp.data, data_mp.len);
    row_record_info(&row, &res, a);
  } else {
    hs_value_t *answer = accepted_answer(a, res.step);
    if (answer == NULL) {
      hs_buf_free(&data_mp);
      hs_store_live_drop(op->store, live); /* the engine moved on; the record did not */
      hs_api_unavailable(req, "out of memory");
      sop_done(op);
      return;
    }
    if (res.outcome != NULL) {
      hs_strlcpy(live->outcome, res.outcome, sizeof live->outcome);
    }
    live->evidence = hs_step_needs_evidence(res.step);
    op->answer = answer;
    op->live = live;
    live->busy = true;
    kind = HS_WRITE_COMPLETION;
    hs_row_init(&row, kind);
    hs_row_str(&row, "session_id", live->id);
    hs_row_int(&row, "seq", op->seq);
    hs_row_bytes(&row, "digest", digest, 32);
    hs_row_msgpack(&row, "events", res.events);
    hs_row_bool(&row, "ended", res.status == HS_STEP_ENDED);
    hs_row_str(&row, "device_time", time_or_null(op->at));
    hs_row_int(&row, "brand_id", live->brand_id);
    hs_row_str(&row, "process", live->process);
    hs_row_str(&row, "version", live->version);
    hs_row_str(&row, "step_id", step_id);
    hs_row_str(&row, "contractor_id", live->contractor_id);
    hs_row_bytes(&row, "data_digest", data_digest, 32);
    hs_row_bytes(&row, "data", data_mp.data, data_mp.len);
    row_record_info(&row, &res, a);
  }
  hs_buf_free(&data_mp);
  rc = hs_commit_submit(
      hs_store_committer(op->store), &row,
      kind == HS_WRITE_COMPLETION ? on_completion_committed : on_rejection_committed, op, NULL);
  hs_row_free(&row);
  if (rc != HS_OK) {
    if (kind == HS_WRITE_COMPLETION) {
      live->busy = false;
      hs_store_live_drop(op->store, live); /* the engine moved on; the record did not */
    }
    if (rc == HS_EINVAL) {
      /* Only text that is not UTF-8 gets here (the codec let no such body in). */
      hs_req_respond_error(req, 400, "malformed", "The completion holds text that is not UTF-8");
    } else {
      hs_api_unavailable(req, rc == HS_ELIMIT ? "too many writes are waiting" : "not connected");
    }
    sop_done(op);
    return;
  }
  op->writing = true;
  if (kind == HS_WRITE_COMPLETION) {
    /* Suggestions shown, goals reached and a customer's rating, in the same batch: they count
     * only if this completion (this digest) commits. */
    hs_content_record(hs_store_committer(op->store), live->proc, live->brand_id, live->id, op->seq,
                      digest, res.events, res.customer_rating);
  }
}

static void complete_authorized(hs_req_t *req, const hs_principal_t *who) {
  const char *seq_s = hs_route_param(&req->match, "seq");
  char *end = NULL;
  unsigned long seq = seq_s != NULL ? strtoul(seq_s, &end, 10) : 0;
  if (seq_s == NULL || end == seq_s || *end != '\0' || seq == 0 || seq > INT32_MAX) {
    hs_req_respond_error(req, 400, "malformed", "The step seq in the path must be 1 or more");
    return;
  }
  static const char *const allowed[] = {"data", "at", NULL};
  hs_value_t *body = hs_api_decode_map(req, allowed, "{data, at}");
  if (body == NULL) {
    return;
  }
  const hs_value_t *data = hs_map_get(body, "data");
  const hs_value_t *at = hs_map_get(body, "at");
  if (data == NULL || data->type != HS_V_MAP) {
    hs_req_respond_error(req, 400, "malformed",
                         "\"data\" must be a map of field name to value, e.g. {roof_age = 12}");
    return;
  }
  int64_t at_ms = 0;
  if (at != NULL && at->type != HS_V_NIL &&
      (at->type != HS_V_STR || at->as.str.len >= 40 ||
       hs_time_parse(at->as.str.ptr, &at_ms) != HS_OK)) {
    hs_req_respond_error(req, 400, "malformed",
                         "\"at\" must be an RFC 3339 time such as 2026-05-04T10:15:03Z");
    return;
  }
  sop_t *op = sop_for_session(req, who);
  if (op == NULL) {
    return;
  }
  op->seq = (uint32_t)seq;
  op->data = data;
  op->at_ms = at_ms;
  if (at != NULL && at->type == HS_V_STR) {
    hs_strlcpy(op->at, at->as.str.ptr, sizeof op->at);
  }
  with_live(op, complete_with_live);
}

void hs_api_step_complete(hs_req_t *req) {
  hs_auth_resolve(req, HS_ROLE_CONTRACTOR, complete_authorized);
}

/* ------------------------------------------------------------ GET …/stream */

static int stream_send(sop_t *op, const hs_value_t *event) {
  hs_buf_t b;
  hs_buf_init(&b, 0);
  int rc = hs_codec_encode_frame(op->req->out_format, event, &b);
  if (rc == HS_OK) {
    /* Events are small and rare: a stream this far behind has a reader that stopped reading. */
    rc = hs_req_stream_write(op->req, b.data, b.len);
  }
  hs_buf_free(&b);
  return rc;
}

static void stream_end(sop_t *op) {
  if (op->watching != NULL) {
    hs_store_live_unwatch(op->watching, &op->watcher);
    op->watching = NULL;
  }
  hs_req_t *req = op->req;
  sop_done(op);
  hs_req_stream_end(req);
}

/* Sends what the stream has not sent yet: the current step, or the end. */
static void stream_catch_up(sop_t *op, hs_live_t *live) {
  hs_arena_t scratch;
  hs_arena_init(&scratch, 0);
  hs_session_state_t st = hs_session_status(live->session);
  uint32_t cur = hs_session_seq(live->session);
  hs_err_t err;
  if (st == HS_SESSION_WAITING && cur > op->watcher.sent_seq) {
    hs_value_t *step = NULL;
    hs_value_t *ev = hs_value_new_map(&scratch, 2);
    if (hs_session_step(live->session, &scratch, &step, &err) == HS_OK && ev != NULL &&
        hs_map_add_str(&scratch, ev, "type", "step") == HS_OK &&
        hs_map_add(&scratch, ev, "step", step) != NULL) {
      if (stream_send(op, ev) != HS_OK) {
        /* The reader is far behind (or memory is short): end the stream rather than skip a
         * step; a client that opens it again starts from the current step. */
        hs_arena_reset(&scratch);
        stream_end(op);
        return;
      }
      op->watcher.sent_seq = cur;
    }
  }
  if (st != HS_SESSION_WAITING) {
    hs_value_t *ev = hs_value_new_map(&scratch, 4);
    if (ev != NULL) {
      int rc = hs_map_add_str(&scratch, ev, "type", "ended");
      rc |= hs_map_add_str(&scratch, ev, "session", live->id);
      rc |= hs_map_add_str(&scratch, ev, "status", st == HS_SESSION_ENDED ? "ended" : "failed");
      rc |= live->outcome[0] != '\0' ? hs_map_add_str(&scratch, ev, "outcome", live->outcome)
                                     : hs_map_add_nil(&scratch, ev, "outcome");
      if (rc == HS_OK) {
        stream_send(op, ev);
      }
    }
    hs_arena_reset(&scratch);
    stream_end(op);
    return;
  }
  hs_arena_reset(&scratch);
}

static void stream_reloaded(sop_t *op, hs_live_t *live);

static void stream_on_change(hs_watcher_t *w, hs_live_t *live) {
  sop_t *op = (sop_t *)((char *)w - offsetof(sop_t, watcher));
  if (live == NULL || live->stale) {
    /* This copy is outdated or gone: follow the fresh one. */
    if (op->watching != NULL) {
      hs_store_live_unwatch(op->watching, &op->watcher);
      op->watching = NULL;
    }
    with_live(op, stream_reloaded);
    return;
  }
  stream_catch_up(op, live);
}

static void stream_reloaded(sop_t *op, hs_live_t *live) {
  op->watching = live;
  hs_store_live_watch(live, &op->watcher);
  stream_catch_up(op, live);
}

static void stream_with_live(sop_t *op, hs_live_t *live) {
  const char *mime =
      op->req->out_format == HS_FMT_JSON ? "application/x-ndjson" : "application/msgpack";
  if (hs_req_stream_start(op->req, 200, mime) != HS_OK) {
    hs_req_respond_error(op->req, 500, "internal", "The stream could not start");
    sop_done(op);
    return;
  }
  op->watcher.on_change = stream_on_change;
  op->watcher.sent_seq = 0;
  stream_reloaded(op, live);
}

static void stream_authorized(hs_req_t *req, const hs_principal_t *who) {
  on_session(req, who, stream_with_live);
}

void hs_api_session_stream(hs_req_t *req) {
  hs_auth_resolve(req, HS_ROLE_CONTRACTOR | HS_ROLE_ADMIN | HS_ROLE_COMPLIANCE, stream_authorized);
}

/* ------------------------------------------------------------ POST …/feedback */

static void on_feedback_committed(void *ctx, int status, bool inserted) {
  sop_t *op = ctx;
  op->writing = false;
  hs_req_t *req = op->req;
  if (req == NULL) {
    sop_free(op);
    return;
  }
  sop_done(op);
  if (status != HS_OK) {
    hs_api_unavailable(req, "the feedback could not be stored; retrying it is safe");
  } else if (!inserted) {
    hs_req_respond_error(req, 404, "not_found", "There is no session %s",
                         hs_route_param(&req->match, "id"));
  } else {
    hs_value_t *v = hs_value_new_map(&req->arena, 1);
    if (v == NULL || hs_map_add_str(&req->arena, v, "status", "recorded") != HS_OK) {
      hs_api_unavailable(req, "out of memory");
      return;
    }
    hs_req_respond(req, 201, v);
  }
}

static void feedback_authorized(hs_req_t *req, const hs_principal_t *who) {
  static const char *const allowed[] = {"rating", "comment", "tags", "from", NULL};
  hs_value_t *body = hs_api_decode_map(req, allowed, "{rating?, comment?, tags?, from}");
  if (body == NULL) {
    return;
  }
  const hs_value_t *rating = hs_map_get(body, "rating");
  const hs_value_t *comment = hs_map_get(body, "comment");
  const hs_value_t *tags = hs_map_get(body, "tags");
  const hs_value_t *from = hs_map_get(body, "from");
  if (from == NULL || from->type != HS_V_STR ||
      (strcmp(from->as.str.ptr, "customer") != 0 && strcmp(from->as.str.ptr, "contractor") != 0)) {
    hs_req_respond_error(req, 400, "malformed", "\"from\" must be \"customer\" or \"contractor\"");
    return;
  }
  if (rating != NULL && rating->type != HS_V_NIL &&
      (rating->type != HS_V_INT || rating->as.i < 1 || rating->as.i > 5)) {
    hs_req_respond_error(req, 400, "malformed", "\"rating\" must be a whole number from 1 to 5");
    return;
  }
  if (comment != NULL && comment->type != HS_V_NIL &&
      (comment->type != HS_V_STR || comment->as.str.len > MAX_FEEDBACK_COMMENT)) {
    hs_req_respond_error(req, 400, "malformed", "\"comment\" must be text of at most %d bytes",
                         MAX_FEEDBACK_COMMENT);
    return;
  }
  const char *tag_list[MAX_TAGS];
  size_t n_tags = 0;
  if (tags != NULL && tags->type != HS_V_NIL) {
    bool ok = tags->type == HS_V_ARRAY && tags->as.arr.len <= MAX_TAGS;
    for (size_t i = 0; ok && i < tags->as.arr.len; i++) {
      const hs_value_t *t = &tags->as.arr.items[i];
      ok = t->type == HS_V_STR && t->as.str.len > 0 && t->as.str.len <= MAX_TAG;
      if (ok) {
        tag_list[n_tags++] = t->as.str.ptr;
      }
    }
    if (!ok) {
      hs_req_respond_error(req, 400, "malformed",
                           "\"tags\" must be a list of at most %d words of 1 to %d bytes", MAX_TAGS,
                           MAX_TAG);
      return;
    }
  }
  bool has_rating = rating != NULL && rating->type == HS_V_INT;
  bool has_comment = comment != NULL && comment->type == HS_V_STR;
  if (!has_rating && !has_comment && n_tags == 0) {
    hs_req_respond_error(req, 400, "malformed",
                         "Feedback needs at least one of \"rating\", \"comment\" or \"tags\"");
    return;
  }
  sop_t *op = sop_for_session(req, who);
  if (op == NULL) {
    return;
  }
  hs_row_t row;
  hs_row_init(&row, HS_WRITE_FEEDBACK);
  hs_row_int(&row, "brand_id", who->brand_id);
  hs_row_str(&row, "session_id", op->id);
  hs_row_str(&row, "contractor_id", who->role == HS_ROLE_CONTRACTOR ? who->subject : NULL);
  hs_row_str(&row, "source", from->as.str.ptr);
  if (has_rating) {
    hs_row_int(&row, "rating", rating->as.i);
  }
  hs_row_str(&row, "comment", has_comment ? comment->as.str.ptr : NULL);
  hs_row_strs(&row, "tags", tag_list, n_tags);
  int rc = hs_commit_submit(hs_store_committer(op->store), &row, on_feedback_committed, op, NULL);
  hs_row_free(&row);
  if (rc != HS_OK) {
    hs_api_unavailable(req, "the database is unavailable");
    sop_done(op);
    return;
  }
  op->writing = true;
  if (has_rating && rating->as.i >= 4 && strcmp(from->as.str.ptr, "customer") == 0) {
    hs_content_feedback(hs_store_committer(op->store), who->brand_id, op->id); /* a success */
  }
}

void hs_api_session_feedback(hs_req_t *req) {
  hs_auth_resolve(req, HS_ROLE_CONTRACTOR, feedback_authorized);
}
