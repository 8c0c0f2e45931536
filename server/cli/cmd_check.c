/* handsel check FILE…: does each process file load in the sandbox? Offline, no database. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "engine/engine.h"

void hs_cmd_check_help(FILE *out) {
  fputs("usage: handsel check FILE...\n"
        "\n"
        "Loads each process file in the same sandbox the server uses and prints its name and\n"
        "version (the SHA-256 of the file), or the file:line of what to fix. Works offline.\n"
        "Exits 0 when every file loads, 1 when one does not, 2 on a usage error.\n",
        out);
}

int hs_cli_first_file(int argc, char **argv, void (*help)(FILE *out)) {
  int first = 1;
  if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
    help(stdout);
    return 0;
  }
  if (argc > 1 && strcmp(argv[1], "--") == 0) {
    first = 2;
  }
  if (argc <= first) {
    help(stderr);
    return -2;
  }
  return first;
}

int hs_cmd_check_main(int argc, char **argv) {
  int first = hs_cli_first_file(argc, argv, hs_cmd_check_help);
  if (first <= 0) {
    return -first;
  }
  int bad = 0;
  for (int i = first; i < argc; i++) {
    if (hs_process_file_is_meta(argv[i])) {
      printf("skip  %s: editor annotations (---@meta), not a process\n", argv[i]);
      continue;
    }
    hs_err_t err;
    hs_err_clear(&err);
    hs_vm_t *vm = NULL;
    hs_process_t *p = NULL;
    /* One state per file, as the server keeps brands apart: files cannot affect each other. */
    int rc = hs_vm_new("check", NULL, &vm, &err);
    if (rc == HS_OK) {
      rc = hs_process_load_file(vm, argv[i], &p, &err);
    }
    if (rc == HS_OK) {
      printf("ok    %s: %s \"%s\", version %.12s\n", argv[i], hs_process_name(p),
             hs_process_title(p), hs_process_version(p));
    } else {
      printf("FAIL  %s\n      %s\n", argv[i], err.msg);
      bad++;
    }
    hs_vm_free(vm);
  }
  if (bad > 0) {
    printf("%d of %d file%s failed\n", bad, argc - first, argc - first == 1 ? "" : "s");
  }
  return bad > 0 ? 1 : 0;
}
