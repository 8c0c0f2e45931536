/* handsel deploy FILE…: check each process file locally with the engine (so script errors are
 * reported with file:line before anything is sent), then upload it with
 * PUT /v1/processes/{name} and, when asked, activate the new version. */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cli/client.h"
#include "cli/commands.h"
#include "core/str.h"
#include "engine/engine.h"

enum { SOURCE_MAX = 1024 * 1024 }; /* as the engine's own file limit */

typedef enum activate_mode { ACTIVATE_SERVER, ACTIVATE_YES } activate_mode_t;

/* One file to deploy. */
typedef struct item {
  const char *path; /* borrowed from argv */
  char *source;     /* owned */
  size_t len;
  char name[65];
  char version[65];
  bool skip; /* an editor annotation file (---@meta) */
} item_t;

void hs_cmd_deploy_help(FILE *out) {
  fputs("usage: handsel deploy FILE... [--server URL] [--token T] [--activate|--no-activate]\n"
        "                [--ca FILE] [--timeout SECONDS]\n"
        "\n"
        "Checks each process file as `handsel check` does, then uploads it to a running\n"
        "server as a new version (PUT /v1/processes/NAME) and prints its name, its version\n"
        "(the SHA-256 of the file) and whether that version is active. When any file fails\n"
        "its check, nothing is uploaded: the file:line to fix is printed instead.\n"
        "\n"
        "Which version runs: the first version of a process becomes active at once. A later\n"
        "version is stored but not active, and new sessions keep starting on the active one,\n"
        "unless --activate is given: then each uploaded version is made the active one\n"
        "(POST /v1/processes/NAME/activate). Sessions already running always stay on the\n"
        "version they started on. --no-activate (the default) leaves the choice to the\n"
        "server as described. Deploying an older file again with --activate rolls back.\n"
        "\n"
        "  --server URL     the server: http://HOST:PORT (h2c) or https://HOST[:PORT] (TLS);\n"
        "                   default $HANDSEL_SERVER\n"
        "  --token T        an author or admin token; default $HANDSEL_TOKEN (prefer the\n"
        "                   variable: arguments are visible to other users of the machine)\n"
        "  --ca FILE        PEM certificates to trust for https instead of the system's;\n"
        "                   default $HANDSEL_CA\n"
        "  --timeout S      give up when the server is silent for S seconds (default 30)\n"
        "\n"
        "Exits 0 when every file was deployed, 1 when one was not, 2 on a usage error.\n",
        out);
}

/* Reads the file into it->source (at most SOURCE_MAX bytes). */
static int read_source(item_t *it, hs_err_t *err) {
  FILE *f = fopen(it->path, "rb");
  if (f == NULL) {
    return hs_err_set(err, HS_EIO, "%s: cannot open: %s", it->path, strerror(errno));
  }
  it->source = malloc(SOURCE_MAX + 1);
  if (it->source == NULL) {
    fclose(f);
    return hs_err_set(err, HS_ENOMEM, "out of memory reading %s", it->path);
  }
  it->len = fread(it->source, 1, SOURCE_MAX + 1, f);
  bool bad = ferror(f) != 0;
  fclose(f);
  if (bad) {
    return hs_err_set(err, HS_EIO, "%s: cannot read the file", it->path);
  }
  if (it->len > SOURCE_MAX) {
    return hs_err_set(err, HS_ELIMIT, "%s: a process file may be at most 1 MiB", it->path);
  }
  return HS_OK;
}

/* Loads the source in a throwaway sandbox, as the server will: its name and version, or
 * file:line of what to fix. The bytes checked are the bytes sent. */
static int check_item(item_t *it, hs_err_t *err) {
  int rc = read_source(it, err);
  if (rc != HS_OK) {
    return rc;
  }
  hs_vm_t *vm = NULL;
  hs_process_t *p = NULL;
  rc = hs_vm_new("deploy", NULL, &vm, err);
  if (rc == HS_OK) {
    rc = hs_process_load(vm, it->path, it->source, it->len, &p, err);
  }
  if (rc == HS_OK) {
    hs_strlcpy(it->name, hs_process_name(p), sizeof it->name);
    hs_strlcpy(it->version, hs_process_version(p), sizeof it->version);
  }
  hs_vm_free(vm);
  return rc;
}

/* Reads {name, version, active} from a JSON answer. */
static int read_answer(const hs_client_response_t *resp, char *version, size_t cap, bool *active,
                       hs_err_t *err) {
  json_t *root = json_loadb((const char *)resp->body.data, resp->body.len, 0, NULL);
  const char *v = json_string_value(json_object_get(root, "version"));
  json_t *a = json_object_get(root, "active");
  int rc = HS_OK;
  if (v == NULL || !json_is_boolean(a)) {
    rc = hs_err_set(err, HS_EINVAL,
                    "The server's answer has no version or active member: is it a handsel "
                    "server?");
  } else {
    hs_strlcpy(version, v, cap);
    *active = json_is_true(a);
  }
  json_decref(root);
  return rc;
}

static int activate(hs_client_t *c, const hs_cli_remote_t *r, const item_t *it, int *status,
                    hs_err_t *err) {
  char path[128], body[96];
  snprintf(path, sizeof path, "/v1/processes/%s/activate", it->name);
  snprintf(body, sizeof body, "{\"version\":\"%s\"}", it->version);
  hs_client_request_t req = {.method = "POST",
                             .path = path,
                             .token = r->token,
                             .content_type = "application/json",
                             .body = body,
                             .body_len = strlen(body)};
  hs_client_response_t resp;
  int rc = hs_client_request(c, &req, &resp, err);
  *status = resp.status;
  hs_client_response_free(&resp);
  return rc;
}

/* Uploads one checked file. Returns HS_OK, or the failure with err filled; *status is the
 * HTTP status of the last answer (0 when none came). */
static int deploy_item(hs_client_t *c, const hs_cli_remote_t *r, const item_t *it,
                       activate_mode_t mode, int *status, hs_err_t *err) {
  char path[96];
  snprintf(path, sizeof path, "/v1/processes/%s", it->name);
  hs_client_request_t req = {.method = "PUT",
                             .path = path,
                             .token = r->token,
                             .content_type = "text/x-lua",
                             .body = it->source,
                             .body_len = it->len};
  hs_client_response_t resp;
  int rc = hs_client_request(c, &req, &resp, err);
  char version[65] = "";
  bool active = false;
  bool created = resp.status == 201;
  *status = resp.status;
  if (rc == HS_OK) {
    rc = read_answer(&resp, version, sizeof version, &active, err);
  }
  hs_client_response_free(&resp);
  if (rc != HS_OK) {
    return rc;
  }
  if (strcmp(version, it->version) != 0) {
    return hs_err_set(err, HS_ECONFLICT,
                      "The server stored version %.12s but the file's version is %.12s: are "
                      "client and server the same release?",
                      version, it->version);
  }
  bool switched = false;
  if (mode == ACTIVATE_YES && !active) {
    rc = activate(c, r, it, status, err);
    if (rc != HS_OK) {
      return rc;
    }
    active = switched = true;
  }
  printf("ok    %s: %s version %s, %s, %s\n", it->path, it->name, it->version,
         created ? "new" : "already deployed",
         switched ? "now active"
         : active ? "active"
                  : "not active (new sessions stay on the active version; --activate "
                    "switches)");
  return HS_OK;
}

/* Failures that will be the same for every file: no use trying the next. */
static bool fatal_for_all(int rc, int status) {
  return rc == HS_EIO || rc == HS_EUNAVAIL || rc == HS_ECANCELED || status == 401 || status == 403;
}

int hs_cmd_deploy_main(int argc, char **argv) {
  hs_cli_remote_t remote;
  hs_cli_remote_init(&remote);
  activate_mode_t mode = ACTIVATE_SERVER;
  item_t *items = calloc((size_t)argc, sizeof *items);
  if (items == NULL) {
    fputs("handsel deploy: out of memory\n", stderr);
    return 1;
  }
  size_t n = 0;
  bool files_only = false;
  int status = 0;
  for (int i = 1; i < argc && status == 0; i++) {
    const char *a = argv[i];
    int rc;
    if (files_only || a[0] != '-' || strcmp(a, "-") == 0) {
      items[n++].path = a;
    } else if (strcmp(a, "--") == 0) {
      files_only = true;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      hs_cmd_deploy_help(stdout);
      free(items);
      return 0;
    } else if (strcmp(a, "--activate") == 0) {
      mode = ACTIVATE_YES;
    } else if (strcmp(a, "--no-activate") == 0) {
      mode = ACTIVATE_SERVER;
    } else if ((rc = hs_cli_remote_option(&remote, "deploy", argc, argv, &i)) != 0) {
      status = rc < 0 ? 2 : 0;
    } else {
      fprintf(stderr, "handsel deploy: unknown option '%s' (see handsel deploy --help)\n", a);
      status = 2;
    }
  }
  if (status == 0 && n == 0) {
    hs_cmd_deploy_help(stderr);
    status = 2;
  }
  if (status == 0 && hs_cli_remote_check(&remote, "deploy") != 0) {
    status = 2;
  }
  if (status != 0) {
    free(items);
    return status;
  }

  /* Every file is checked before anything is sent, so a set of processes that belong
   * together is not left half deployed by a mistake the engine can see here. */
  size_t bad = 0, todo = 0;
  for (size_t i = 0; i < n; i++) {
    item_t *it = &items[i];
    if (hs_process_file_is_meta(it->path)) {
      it->skip = true;
      printf("skip  %s: editor annotations (---@meta), not a process\n", it->path);
      continue;
    }
    hs_err_t err;
    hs_err_clear(&err);
    if (check_item(it, &err) != HS_OK) {
      printf("FAIL  %s\n      %s\n", it->path, err.msg);
      bad++;
    } else {
      todo++;
    }
  }
  if (bad > 0) {
    fprintf(stderr, "handsel deploy: %zu of %zu file%s failed the check; nothing was deployed\n",
            bad, bad + todo, bad + todo == 1 ? "" : "s");
  }
  int result = bad > 0 ? 1 : 0;
  if (bad == 0 && todo > 0) {
    signal(SIGPIPE, SIG_IGN);
    hs_client_opts_t opts = {
        .url = remote.server, .ca_file = remote.ca, .timeout_ms = remote.timeout_ms};
    hs_client_t *c = NULL;
    hs_err_t err;
    hs_err_clear(&err);
    if (hs_client_connect(&opts, &c, &err) != HS_OK) {
      fprintf(stderr, "handsel: %s\n", err.msg);
      result = 1;
    }
    size_t failed = 0, done = 0;
    for (size_t i = 0; c != NULL && i < n; i++) {
      item_t *it = &items[i];
      if (it->skip) {
        continue;
      }
      hs_err_clear(&err);
      int st = 0;
      int rc = deploy_item(c, &remote, it, mode, &st, &err);
      if (rc == HS_OK) {
        done++;
        continue;
      }
      failed++;
      printf("FAIL  %s\n", it->path);
      fprintf(stderr, "handsel: %s\n", err.msg);
      if (fatal_for_all(rc, st)) {
        break;
      }
    }
    if (c != NULL && done + failed < todo) {
      fprintf(stderr, "handsel deploy: stopped after that error; %zu of %zu not tried\n",
              todo - done - failed, todo);
    }
    if (c != NULL && done < todo) {
      result = 1;
    }
    hs_client_close(c);
  }
  for (size_t i = 0; i < n; i++) {
    free(items[i].source);
  }
  free(items);
  return result;
}
