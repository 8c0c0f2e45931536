/* handsel test FILE…: runs each process file's `tests` scenarios offline (SPEC §3). */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "engine/engine.h"

void hs_cmd_test_help(FILE *out) {
  fputs("usage: handsel test FILE...\n"
        "\n"
        "Runs the scenarios in each process file's `tests` table with the server's own\n"
        "validation, offline: for each scenario it prints ok or FAIL with the file:line, the\n"
        "step, the field, what was expected and what happened. Each scenario's recorded events\n"
        "are replayed too, so a script that is not deterministic fails. print() in a script\n"
        "writes to stderr here. Exits 0 when everything passes, 1 otherwise, 2 on a usage\n"
        "error.\n",
        out);
}

int hs_cmd_test_main(int argc, char **argv) {
  int first = hs_cli_first_file(argc, argv, hs_cmd_test_help);
  if (first <= 0) {
    return -first;
  }
  int passed = 0, failed = 0, broken = 0;
  for (int i = first; i < argc; i++) {
    if (hs_process_file_is_meta(argv[i])) {
      printf("skip  %s: editor annotations (---@meta), not a process\n", argv[i]);
      continue;
    }
    hs_err_t err;
    hs_err_clear(&err);
    hs_vm_t *vm = NULL;
    hs_process_t *p = NULL;
    int rc = hs_vm_new("test", NULL, &vm, &err);
    if (rc == HS_OK) {
      hs_vm_set_print(vm, stderr);
      rc = hs_process_load_file(vm, argv[i], &p, &err);
    }
    int ok = 0, bad = 0;
    if (rc == HS_OK) {
      rc = hs_process_test(p, stdout, &ok, &bad, &err);
    }
    if (rc != HS_OK) {
      printf("FAIL  %s\n      %s\n", argv[i], err.msg);
      broken++;
    } else if (ok + bad == 0) {
      broken++; /* a process without scenarios is untested: say so with the exit status */
    }
    passed += ok;
    failed += bad;
    fflush(stdout);
    hs_vm_free(vm);
  }
  printf("%d passed, %d failed", passed, failed);
  if (broken > 0) {
    printf(", %d file%s could not be tested", broken, broken == 1 ? "" : "s");
  }
  printf("\n");
  return failed > 0 || broken > 0 ? 1 : 0;
}
