/* Untrusted completion data against a step's field schemas. One process, whose only step has a
 * field of every type of SPEC §3 with every option that type takes, is loaded once; each input
 * is decoded as msgpack and offered as the completion of a fresh session's step. Any answer
 * (accepted, rejected, refused) is fine; a crash, undefined behaviour or a leak is not. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "codec/codec.h"
#include "engine/engine.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char k_process[] =
    "return process {\n"
    "  name = 'every-field',\n"
    "  title = 'A field of every type',\n"
    "  goals = { done = 'Every field answered' },\n"
    "  content = {\n"
    "    terms = { kind = 'document', title = 'Terms', uri = 'https://cdn.example/t.pdf',\n"
    "              version = '2024-01' },\n"
    "  },\n"
    "  run = function(visit)\n"
    "    local d = visit:step {\n"
    "      id = 'every', title = 'Every field', show = { 'terms' },\n"
    "      fields = {\n"
    "        field.text { name = 'note', label = 'Note', hint = 'a few words', max_length = 40,\n"
    "                     pattern = '^[%w ]*$', required = true, pii = true },\n"
    "        field.text { name = 'free', label = 'Anything' },\n"
    "        field.integer { name = 'count', min = -5, max = 1000, required = true },\n"
    "        field.number { name = 'weight', min = 0.5, max = 250.25 },\n"
    "        field.boolean { name = 'agree', required = true },\n"
    "        field.choice { name = 'colour', options = { 'red', 'green', 'blue' } },\n"
    "        field.multi { name = 'extras', options = { 'a', 'b', 'c', 'd' }, min = 1, max = 3 },\n"
    "        field.date { name = 'when', min = '2020-01-01', max = '2030-12-31' },\n"
    "        field.photo { name = 'photo' },\n"
    "        field.signature { name = 'sig', pii = true },\n"
    "        field.ack { name = 'read_terms', document = 'terms' },\n"
    "        field.location { name = 'where', max = 50 },\n"
    "        field.rating { name = 'stars' },\n"
    "      },\n"
    "      validate = function(d, v)\n"
    "        if d.count and d.weight and d.count > d.weight then\n"
    "          return { count = 'count must not exceed weight' }\n"
    "        end\n"
    "        if d.extras and #d.extras == 2 and d.colour == 'red' then\n"
    "          return 'red goes with one or three extras'\n"
    "        end\n"
    "        if d.where and d.where.lat > 89 then return { where = 'too far north' } end\n"
    "      end,\n"
    "    }\n"
    "    if d.agree then visit:outcome('done', d.count) end\n"
    "  end,\n"
    "}\n";

static hs_vm_t *g_vm;
static hs_process_t *g_process;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  hs_err_t err = {0};
  if (hs_vm_new("fuzz", NULL, &g_vm, &err) != HS_OK ||
      hs_process_load(g_vm, "every-field.lua", k_process, sizeof k_process - 1, &g_process, &err) !=
          HS_OK) {
    fprintf(stderr, "fuzz_validate: the fixed process does not load: %s\n", err.msg);
    abort();
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hs_arena_t arena;
  hs_arena_init(&arena, 0);
  hs_value_t *v = NULL;
  hs_err_t err = {0};
  if (hs_msgpack_decode(data, size, NULL, &arena, &v, &err) != HS_OK) {
    hs_arena_reset(&arena);
    return -1; /* not a completion body: keep it out of the corpus */
  }
  hs_session_start_t start = {.session_id = "s-fuzz", .seed = 42, .at_ms = 1700000000000};
  hs_session_t *s = NULL;
  hs_step_result_t res;
  if (hs_session_start(g_process, &start, &arena, &s, &res, &err) != HS_OK ||
      res.status != HS_STEP_WAITING) {
    fprintf(stderr, "fuzz_validate: the session does not reach its step: %s\n", err.msg);
    abort();
  }
  uint32_t seq = hs_session_seq(s);
  int rc = hs_session_complete(s, seq, v, 1700000001000, 0, &arena, &res, &err);
  if (rc == HS_OK && res.status == HS_STEP_REJECTED) {
    /* A rejected answer leaves the session at the same step, ready for another try. */
    if (hs_session_status(s) != HS_SESSION_WAITING || hs_session_seq(s) != seq ||
        res.errors == NULL || res.errors->type != HS_V_MAP || res.errors->as.map.len == 0) {
      fprintf(stderr, "fuzz_validate: a rejection did not keep the step or name a field\n");
      abort();
    }
    hs_value_t *step = NULL;
    if (hs_session_step(s, &arena, &step, &err) != HS_OK) {
      fprintf(stderr, "fuzz_validate: the step cannot be rebuilt after a rejection: %s\n", err.msg);
      abort();
    }
  }
  hs_session_free(s);
  hs_arena_reset(&arena);
  return 0;
}
