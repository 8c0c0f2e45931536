/* What the engine's files share and nothing outside server/engine/ may use. */
#ifndef HS_ENGINE_INTERNAL_H
#define HS_ENGINE_INTERNAL_H

#include <lauxlib.h>
#include <lua.h>

#include "codec/codec.h"
#include "engine/engine.h"

/* The instruction hook runs every HOOK_EVERY VM instructions and charges that many. */
enum { HS_HOOK_EVERY = 1000 };

/* Registry keys (light userdata addresses would do as well; names read better in a dump). */
#define HS_REG_BASE      "hs.base"      /* the read-only environment every process sees */
#define HS_REG_FROZEN    "hs.frozen"    /* weak set of tables rawset may not touch */
#define HS_REG_PROCESS   "hs.process"   /* metatable marking a `process {…}` definition */
#define HS_REG_VISIT     "hs.visit"     /* metatable of visit userdata */
#define HS_REG_STRINGLIB "hs.stringlib" /* the guarded string table (for pattern checks) */

typedef enum hs_kill {
  HS_KILL_NONE = 0,
  HS_KILL_BUDGET, /* the instruction budget ran out */
  HS_KILL_STEPS,  /* the session passed max_steps */
  HS_KILL_NONDET, /* replay found a step other than the recorded one */
  HS_KILL_ENDED,  /* replay: the record says the session ended but the script goes on */
} hs_kill_t;

struct hs_vm {
  lua_State *L; /* owned */
  char brand[64];
  hs_engine_limits_t lim;
  size_t mem_used;
  bool oom;              /* an allocation was refused since the last metered call began */
  bool metering;         /* a metered call is running: the hook charges the budget */
  uint64_t budget;       /* instructions left in the running call */
  hs_kill_t killed;      /* set once a limit is hit: pcall rethrows, the hook fires each op */
  char kill_msg[512];    /* the sentence for the author when killed */
  hs_session_t *current; /* the session whose code runs now, or NULL */
  bool in_validate;      /* a step's validate function runs now */
  uint64_t load_rng;     /* math.random outside any session (top level of a chunk) */
  FILE *print_out;       /* borrowed; NULL discards */
  hs_process_t *procs;   /* every loaded process, linked through next */

  /* What visit:suggest has learned so far (hs_vm_set_counts); NULL: the priors only. */
  hs_vm_counts_fn counts_fn;
  void *counts_ctx; /* borrowed */
};

struct hs_process {
  hs_vm_t *vm;
  hs_process_t *next;
  int def_ref;     /* registry: the private definition table {name, title, goals, content, run,
                      tests} */
  int content_ref; /* registry: its content table (an empty one when the process has none),
                      which every step looks its `show` ids up in */
  int refs;        /* the loader's reference plus one per live session */
  bool released;   /* the loader let go */
  int line;        /* the line of `process {` */
  char *name;      /* owned (malloc) */
  char *title;     /* owned */
  char *chunkname; /* owned */
  char version[65];
};

/* A session lives inside a Lua full userdata (the `visit` object) so its memory is counted in
 * the brand's cap and a script that keeps a stale `visit` can never reach freed memory. User
 * values: 1 = the coroutine, 2 = the current step spec, 3 = {customer, contractor, session}. */
struct hs_session {
  hs_vm_t *vm;
  hs_process_t *proc;
  lua_State *co; /* the coroutine; anchored by user value 1 */
  int ref;       /* registry reference to the userdata; LUA_NOREF once freed */
  hs_session_state_t state;
  uint32_t seq;        /* the current (or last) step's seq */
  const char *step_id; /* the current step's id, anchored by user value 2 */
  int step_line;       /* the line of the visit:step call that made it */
  /* What the current step's spec holds, noted when the step was made, so that a completion
   * skips the lookups a step without them would need. */
  bool step_has_record_info; /* an ack or a pii field: the record names documents or pii */
  bool step_for_customer;    /* audience "customer": a rating on it counts as feedback */
  bool step_has_validate;    /* a validate function */
  uint64_t rng;              /* math.random state */
  uint64_t pick;  /* visit:suggest's generator: its picks are recorded, never re-derived */
  int64_t now_ms; /* time of the latest event: visit:now() */
  /* Set only while a call on this session runs. */
  hs_arena_t *arena;
  hs_value_t *events;
  const char *outcome;
  const hs_value_t *replay; /* the events being replayed */
  size_t replay_pos;
  bool replaying;
};

/* sandbox.c */
hs_vm_t *hs__vm_of(lua_State *L);
void hs__meter_begin(hs_vm_t *vm);
void hs__meter_end(hs_vm_t *vm);
/* Charges units of work done in C to the running call; raises the budget error (uncatchable
 * by scripts) when it runs out. what names the function in the message. */
void hs__charge(lua_State *L, uint64_t units, const char *what);
/* Marks the running call killed with a message and raises it; pcall cannot catch it. */
int hs__kill(lua_State *L, hs_kill_t why, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Runs f protected on the VM's main state with ctx as its only argument (light userdata).
 * A Lua error becomes HS_ESCRIPT (or HS_ENOMEM / HS_ELIMIT when a limit caused it) in err. */
int hs__protect(hs_vm_t *vm, lua_CFunction f, void *ctx, hs_err_t *err);
/* The sentence for a failed metered call with status st, error object at the top of L. */
int hs__script_error(hs_vm_t *vm, lua_State *L, int st, const char *what, hs_err_t *err);
/* A new environment for one process: reads fall through to the base, writes are refused. */
void hs__push_env(lua_State *L);
uint64_t hs__rng_next(uint64_t *state);

/* luaval.c: conversions between the value model and Lua. */
/* Pushes v (NULL pushes nil). Raises a Lua error past the depth limit. */
void hs__push_value(lua_State *L, const hs_value_t *v);
/* Converts the Lua value at idx; on failure returns NULL and writes a sentence to why
 * (e.g. "customer.name is a function"). path names the value in messages. */
hs_value_t *hs__to_value(lua_State *L, int idx, hs_arena_t *a, const char *path, char *why,
                         size_t whylen);
hs_value_t *hs__value_copy(hs_arena_t *a, const hs_value_t *v);
/* The name of the first member of v whose text is not UTF-8 (name itself for a bare string),
 * or NULL when all of it is. A brand's script can put any bytes in a Lua string; what goes to
 * a device must be text. */
const char *hs__value_non_utf8(const hs_value_t *v, const char *name);

/* validate.c */
/* Checks a completion against the spec table at spec_idx. Pushes the validated data table.
 * Adds a message per failed field to errors (a map in a). Returns HS_OK (look at errors),
 * or HS_ENOMEM. Runs in protected mode (may raise). */
int hs__validate_fields(lua_State *L, int spec_idx, const hs_value_t *data, hs_arena_t *a,
                        hs_value_t *errors);
/* Checks a field constructor's options; raises a Lua error for the author. Pushes the field
 * spec table. */
int hs__field_new(lua_State *L);
/* The type number of a field spec at idx (its hidden metatable says it), or -1 when the
 * value is not a field made by a constructor. Pushes nothing. */
int hs__field_type(lua_State *L, int idx);
/* "Roof age (years)" for a field spec at idx (its label, or its name made readable). */
const char *hs__field_label(lua_State *L, int idx, char *buf, size_t len);
/* The field spec at idx as a device sees it (SPEC §4): name, type, label, required, then the
 * options it has in a fixed order. Allocated in a. NULL when out of memory, or when the value
 * is no longer a field with a name (a script changed it). Pushes nothing. */
hs_value_t *hs__field_describe(lua_State *L, int idx, hs_arena_t *a);

/* process.c */
int hs__process_fn(lua_State *L);
void hs__process_unref(hs_process_t *p);

/* session.c */
void hs__visit_register(lua_State *L);

#endif
