/* The process engine: runs brands' Lua processes (SPEC §3) as one coroutine per session inside
 * one sandboxed Lua state per brand, validates every completion in C, and rebuilds sessions
 * from their recorded events.
 *
 * The shape of a call, as the HTTP and database layers use it:
 *
 *   hs_vm_new(brand)                          one per brand per worker thread
 *   hs_process_load(vm, source)               a version: name, title, goals, SHA-256
 *   hs_session_start(process, start)          -> first step (or end) + events to persist
 *   hs_session_complete(session, seq, data)   -> accepted: events + next step or end
 *                                             -> rejected: per-field messages, same step
 *   hs_session_replay(process, events)        -> the same session, at its current step
 *   hs_session_free(session)
 *
 * Threads: a VM and everything made from it belong to one thread at a time. Nothing here
 * blocks; a call runs the script until its next step and returns.
 *
 * Limits: every resume of a script and every call of a step's `validate` runs under an
 * instruction budget, the VM under a memory cap, and a session under a maximum number of
 * steps. Exhausting one fails that call for that session only (HS_ELIMIT with a sentence for
 * the brand author); every other session of the VM keeps working.
 *
 * Events: each call that moves a session returns the events it produced as an array of maps
 * in the caller's arena. They are plain values (codec/value.h), so they can be stored as they
 * are and handed back to hs_session_replay in the same order. The kinds are
 *
 *   {type="start", session, process, version, seed, at, customer, contractor}
 *   {type="complete", seq, step, data, at, device_at?, rng, documents?}
 *   {type="suggest", seq, slot, picks=[content ids], propensities=[floats], context?}
 *   {type="outcome", seq, name, value?}
 *   {type="end", seq, at}
 *
 * `at` and `device_at` are milliseconds since the Unix epoch. `rng` is the state of the
 * session's math.random just before the script was resumed (validate functions may draw from
 * it, so a replay restores it instead of re-deriving it). A suggestion records the ids picked,
 * the probability each had of being picked (what an offline evaluation of another policy
 * weighs outcomes by) and the context key the script gave; a replay returns the recorded picks
 * without consulting any posterior. Outcome and end events are outputs: a replay recomputes
 * them and ignores the recorded ones. */
#ifndef HS_ENGINE_ENGINE_H
#define HS_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "codec/value.h"
#include "core/arena.h"
#include "core/error.h"

typedef struct hs_engine_limits {
  size_t mem_cap;        /* bytes one brand's Lua state may hold */
  uint64_t instr_budget; /* VM instructions for one resume of a session or one validate call */
  uint32_t max_steps;    /* steps one session may yield before it is stopped */
} hs_engine_limits_t;

/* 64 MiB, 10 million instructions (tens of milliseconds), 1000 steps. */
extern const hs_engine_limits_t hs_engine_default_limits;

typedef struct hs_vm hs_vm_t;
typedef struct hs_process hs_process_t;
typedef struct hs_session hs_session_t;

/* ---- brand VMs ---- */

/* Creates a brand's Lua state with the sandbox of SPEC §3. brand is copied (used in messages).
 * lim may be NULL for the defaults. On success *out is owned by the caller: free it with
 * hs_vm_free. */
int hs_vm_new(const char *brand, const hs_engine_limits_t *lim, hs_vm_t **out, hs_err_t *err);

/* Frees the VM with every process and session made from it; their handles become invalid. */
void hs_vm_free(hs_vm_t *vm);

/* Bytes the Lua state holds now (what the memory cap is compared with). */
size_t hs_vm_memory(const hs_vm_t *vm);

/* Where a script's print() writes: out is borrowed and must outlive the VM; NULL (the
 * default, for the server) discards. `handsel test` sets stderr so authors can debug. */
void hs_vm_set_print(hs_vm_t *vm, FILE *out);

/* What a brand's sessions have learned about one content item in one slot: how often it was
 * shown and how many of those visits succeeded (reached a goal or got a rating of 4 or more). */
typedef struct hs_content_counts {
  uint64_t shown;
  uint64_t successes;
} hs_content_counts_t;

/* Reads the counts of item in slot under context ("" when the script gave none) for process,
 * in the VM's brand (the brand string given to hs_vm_new). It must not block and must not call
 * back into the VM: it answers from what the caller has at hand (zeros when it knows nothing
 * yet). */
typedef void (*hs_vm_counts_fn)(void *ctx, const char *brand, const char *process, const char *slot,
                                const char *context, const char *item, hs_content_counts_t *out);

/* Where visit:suggest reads the counts its posteriors add to the items' priors. fn NULL (the
 * default, as in `handsel test`) uses the priors alone. ctx is borrowed and must outlive the
 * VM. */
void hs_vm_set_counts(hs_vm_t *vm, hs_vm_counts_fn fn, void *ctx);

/* ---- processes (versions) ---- */

/* Loads one version of a process: runs the chunk in the sandbox and checks what `process {…}`
 * returned. chunkname names the source in messages ("solar-consult.lua"); it and src are
 * copied. On failure err says file:line and what to change. On success *out belongs to the
 * VM; call hs_process_release when no new sessions will start on it (it is freed when its
 * last session is freed too) or let hs_vm_free free it. */
int hs_process_load(hs_vm_t *vm, const char *chunkname, const char *src, size_t len,
                    hs_process_t **out, hs_err_t *err);

/* Reads the file at path (at most 1 MiB) and loads it as hs_process_load does, named by the
 * path in messages. HS_EIO when the file cannot be read. */
int hs_process_load_file(hs_vm_t *vm, const char *path, hs_process_t **out, hs_err_t *err);

/* True when the file at path starts with `---@meta`: a language-server annotation file (such
 * as processes/handsel.lua), which `handsel check` and `handsel test` skip. */
bool hs_process_file_is_meta(const char *path);

/* Drops the loader's reference. The process stays usable by sessions still running on it. */
void hs_process_release(hs_process_t *p);

/* Strings owned by the process, valid while it lives. version is 64 lower-case hex digits. */
const char *hs_process_name(const hs_process_t *p);
const char *hs_process_title(const hs_process_t *p);
const char *hs_process_version(const hs_process_t *p);
const char *hs_process_chunkname(const hs_process_t *p);

/* True when outcome is named in the process's `goals` (a success for content learning). */
bool hs_process_is_goal(hs_process_t *p, const char *outcome);

/* The definition as a value {name, title, version, goals={outcome=text}, content={id={kind,
 * title, uri, version?}}, tests=[scenario names]}, allocated in a. */
int hs_process_describe(hs_process_t *p, hs_arena_t *a, hs_value_t **out, hs_err_t *err);

/* Runs the process's `tests` scenarios offline (SPEC §3) and writes a report a person reads
 * to out (borrowed): per scenario "ok" or "FAIL" with file:line, step, field, expected and got.
 * Every scenario is also replayed from its events, so a script that is not deterministic
 * fails here. Counts go to *passed and *failed. Returns HS_OK when the scenarios could be run
 * (look at *failed), or an error when the tests table itself cannot be read. */
int hs_process_test(hs_process_t *p, FILE *out, int *passed, int *failed, hs_err_t *err);

/* ---- sessions ---- */

typedef struct hs_session_start {
  const char *session_id;       /* borrowed, copied: visit.session */
  const hs_value_t *customer;   /* borrowed map or NULL: visit.customer */
  const hs_value_t *contractor; /* borrowed map or NULL: visit.contractor ({id, name}) */
  uint64_t seed;                /* seeds the session's math.random; recorded in the start event */
  int64_t at_ms;                /* server time of the start: visit:now() until the first step */
} hs_session_start_t;

typedef enum hs_step_status {
  HS_STEP_WAITING = 1,  /* the session waits for the completion of `step` */
  HS_STEP_ENDED = 2,    /* the script returned: no step */
  HS_STEP_REJECTED = 3, /* the completion failed validation; `step` is the same step again */
} hs_step_status_t;

/* What a call that moves a session produced. Every pointer is allocated in the arena passed to
 * that call and lives as long as it. */
typedef struct hs_step_result {
  hs_step_status_t status;
  uint32_t seq;        /* seq of `step` (WAITING, REJECTED), or of the last step (ENDED) */
  hs_value_t *step;    /* the step as sent to a device (SPEC §4), NULL when ENDED */
  hs_value_t *errors;  /* REJECTED: map of field name -> message; a message about the step as
                          a whole is under the key "" */
  hs_value_t *events;  /* array of event maps to persist, in order; empty when REJECTED */
  const char *outcome; /* the latest outcome recorded by this call, or NULL */
  /* hs_session_complete, for the compliance record of the attempt (accepted or rejected):
   * the document each ack field of the step was about, {field = {id, hash = "sha256:…",
   * version?}}, and the names of the step's pii fields (an array); NULL when none. */
  hs_value_t *documents;
  hs_value_t *pii;
  int customer_rating; /* an accepted completion of a step with audience "customer": the value
                          (1-5) of its first answered rating field; else 0 */
} hs_step_result_t;

/* Starts a session of p: runs the script to its first step. On success *out belongs to the
 * caller (hs_session_free) and res describes the first step and the start events. On failure
 * nothing is left to free: HS_ESCRIPT (the script failed: err has file:line), HS_ELIMIT (a
 * budget was exhausted), HS_ENOMEM, HS_EINVAL (customer/contractor not maps). */
int hs_session_start(hs_process_t *p, const hs_session_start_t *start, hs_arena_t *a,
                     hs_session_t **out, hs_step_result_t *res, hs_err_t *err);

/* Completes step seq with data (a map of field name -> value, borrowed). at_ms is the server
 * time, device_ms the device's (0 = not given). Returns HS_OK with res->status REJECTED
 * (per-field messages, nothing to persist) or WAITING/ENDED (events to persist). Other
 * returns: HS_ECONFLICT when seq is not the current step or the session has ended or failed;
 * HS_ESCRIPT when the step's validate function raised an error (the session stays at the
 * same step); HS_ESCRIPT or HS_ELIMIT when the script failed after accepting the data: the
 * session is then failed (hs_session_status says so), its events are unchanged, and it can be
 * rebuilt at the same step with hs_session_replay. */
int hs_session_complete(hs_session_t *s, uint32_t seq, const hs_value_t *data, int64_t at_ms,
                        int64_t device_ms, hs_arena_t *a, hs_step_result_t *res, hs_err_t *err);

/* Rebuilds a session of p from its recorded events (an array, borrowed) to the step it is
 * at, as hs_session_start does: on success *out belongs to the caller and res->step is the
 * current step (res->events is empty). HS_ECONFLICT with a sentence when the script does not
 * follow the record (a different step id, a missing suggestion): the script is not
 * deterministic or the events belong to another version. HS_EINVAL for malformed events. */
int hs_session_replay(hs_process_t *p, const hs_value_t *events, hs_arena_t *a, hs_session_t **out,
                      hs_step_result_t *res, hs_err_t *err);

/* Rebuilds the current step of a waiting session as sent to a device (for GET). */
int hs_session_step(hs_session_t *s, hs_arena_t *a, hs_value_t **out, hs_err_t *err);

/* The documents and pii field names of the current step, as hs_session_complete reports them
 * in hs_step_result_t, for the record of an attempt the engine does not see (the server
 * rejects missing evidence before the script runs). Allocated in a; NULL when none. */
int hs_session_record_info(hs_session_t *s, hs_arena_t *a, hs_value_t **documents, hs_value_t **pii,
                           hs_err_t *err);

typedef enum hs_session_state {
  HS_SESSION_WAITING = 1, /* at a step */
  HS_SESSION_ENDED = 2,   /* the script returned */
  HS_SESSION_FAILED = 3,  /* the script failed; replay its events to retry the step */
} hs_session_state_t;

hs_session_state_t hs_session_status(const hs_session_t *s);
uint32_t hs_session_seq(const hs_session_t *s);
/* The id of the current step (owned by the session, valid until the next call on it). */
const char *hs_session_step_id(const hs_session_t *s);

/* Ends the session's life in the VM; s is invalid afterwards. NULL is ignored. */
void hs_session_free(hs_session_t *s);

#endif
