/* Untrusted Lua source into the process loader, in a fresh sandboxed VM each time with a small
 * memory cap and instruction budget. A script that loads is also described and started, with an
 * empty answer offered to its first step, so what `process {…}` returned is exercised as the
 * server would use it. Any error is fine; a crash, undefined behaviour, a leak or a hang past
 * the budget is not. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "codec/codec.h"
#include "engine/engine.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Small enough that a memory or instruction bomb ends in milliseconds. */
static const hs_engine_limits_t k_limits = {
    .mem_cap = 2 * 1024 * 1024,
    .instr_budget = 200000,
    .max_steps = 20,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hs_err_t err = {0};
  hs_vm_t *vm = NULL;
  if (hs_vm_new("fuzz", &k_limits, &vm, &err) != HS_OK) {
    fprintf(stderr, "fuzz_process_load: cannot create a VM: %s\n", err.msg);
    abort();
  }
  hs_process_t *p = NULL;
  int rc = hs_process_load(vm, "fuzz.lua", (const char *)data, size, &p, &err);
  if (rc == HS_OK) {
    hs_arena_t arena;
    hs_arena_init(&arena, 0);
    hs_value_t *desc = NULL;
    hs_buf_t out;
    hs_buf_init(&out, 0);
    if (hs_process_describe(p, &arena, &desc, &err) == HS_OK) {
      /* What the API sends for GET /v1/processes/{name} must be encodable. */
      if (hs_json_encode(desc, &out) != HS_OK) {
        fprintf(stderr, "fuzz_process_load: a description does not encode as JSON\n");
        abort();
      }
    }
    hs_buf_free(&out);
    hs_session_start_t start = {.session_id = "s-fuzz", .seed = 7, .at_ms = 1700000000000};
    hs_session_t *s = NULL;
    hs_step_result_t res;
    if (hs_session_start(p, &start, &arena, &s, &res, &err) == HS_OK) {
      if (res.status == HS_STEP_WAITING) {
        /* The step goes to a device in either format: it must encode in both. */
        hs_buf_init(&out, 0);
        if (hs_msgpack_encode(res.step, &out) != HS_OK) {
          fprintf(stderr, "fuzz_process_load: a step does not encode as msgpack\n");
          abort();
        }
        hs_buf_free(&out);
        if (hs_json_encode(res.step, &out) != HS_OK) {
          fprintf(stderr, "fuzz_process_load: a step does not encode as JSON\n");
          abort();
        }
        hs_buf_free(&out);
        hs_value_t *empty = hs_value_new_map(&arena, 0);
        if (empty != NULL) {
          (void)hs_session_complete(s, hs_session_seq(s), empty, 1700000001000, 0, &arena, &res,
                                    &err);
        }
      }
      hs_session_free(s);
    }
    hs_process_release(p);
    hs_arena_reset(&arena);
  } else if (rc != HS_ESCRIPT && rc != HS_ELIMIT && rc != HS_ENOMEM && rc != HS_EINVAL) {
    fprintf(stderr, "fuzz_process_load: unexpected error code %d: %s\n", rc, err.msg);
    abort();
  }
  hs_vm_free(vm);
  return 0;
}
