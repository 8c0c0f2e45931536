/* handsel export: streams GET /v1/audit into a file (or stdout) in constant memory. A file is
 * written under a temporary name next to it, synced and renamed only once the whole answer
 * arrived, so a failed or interrupted export never leaves a partial file under its name. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/client.h"
#include "cli/commands.h"

enum {
  QUERY_MAX = 4096,          /* the query string we build */
  FILTER_MAX = 512,          /* one filter value */
  PROGRESS_INTERVAL_MS = 100 /* redraw the progress line at most ten times a second */
};

static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig) {
  g_interrupted = 1;
}

void hs_cmd_export_help(FILE *out) {
  fputs("usage: handsel export [--server URL] [--token T] [--from TIME] [--to TIME]\n"
        "                [--process NAME] [--contractor ID] [--session ID]\n"
        "                [--result accepted|rejected] [--format ndjson|csv] [-o FILE]\n"
        "                [--ca FILE] [--timeout SECONDS]\n"
        "\n"
        "Exports the validation records that match the filters (GET /v1/audit), oldest\n"
        "first, one record per line: NDJSON (the default; what `handsel verify` checks) or\n"
        "CSV (for spreadsheets). The records stream through in constant memory, however\n"
        "many there are.\n"
        "\n"
        "  --from, --to TIME  only records from / before this time, in RFC 3339:\n"
        "                     2026-05-04T10:00:00Z\n"
        "  --process NAME     only this process\n"
        "  --contractor ID    only this contractor\n"
        "  --session ID       only this session\n"
        "  --result R         only accepted or only rejected completion attempts\n"
        "  --format F         ndjson or csv\n"
        "  -o, --output FILE  write to FILE instead of standard output. FILE appears only\n"
        "                     when the export is complete: it is written under a temporary\n"
        "                     name in the same directory, synced, then renamed\n"
        "  --server URL       the server: http://HOST:PORT (h2c) or https://HOST[:PORT] (TLS);\n"
        "                     default $HANDSEL_SERVER\n"
        "  --token T          a compliance or admin token; default $HANDSEL_TOKEN (prefer the\n"
        "                     variable: arguments are visible to other users of the machine)\n"
        "  --ca FILE          PEM certificates to trust for https; default $HANDSEL_CA\n"
        "  --timeout S        give up when the server is silent for S seconds (default 30)\n"
        "\n"
        "When standard error is a terminal, a progress line shows the records written (out\n"
        "of the total, when the server announces it), bytes and records per second; at the\n"
        "end one line says what was written. Exits 0 when the export is complete, 1 when it\n"
        "is not (nothing is left under FILE's name), 2 on a usage error.\n",
        out);
}

/* ------------------------------------------------------------------------------ the query */

/* Appends name=value with value percent-encoded (RFC 3986: all but unreserved characters). */
static int query_add(char *q, size_t cap, const char *name, const char *value) {
  if (value == NULL) {
    return HS_OK;
  }
  size_t len = strlen(q);
  int n = snprintf(q + len, cap - len, "%c%s=", len == 0 ? '?' : '&', name);
  if (n < 0 || (size_t)n >= cap - len) {
    return HS_ELIMIT;
  }
  len += (size_t)n;
  static const char hex[] = "0123456789ABCDEF";
  for (const unsigned char *p = (const unsigned char *)value; *p != '\0'; p++) {
    bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                 *p == '-' || *p == '.' || *p == '_' || *p == '~';
    if (len + (plain ? 1 : 3) >= cap) {
      return HS_ELIMIT;
    }
    if (plain) {
      q[len++] = (char)*p;
    } else {
      q[len++] = '%';
      q[len++] = hex[*p >> 4];
      q[len++] = hex[*p & 15];
    }
  }
  q[len] = '\0';
  return HS_OK;
}

/* ----------------------------------------------------------------------- the running export */

typedef struct export {
  const char *target; /* borrowed: FILE, or NULL for stdout */
  char *tmp_path;     /* owned: the temporary file next to FILE, NULL for stdout */
  FILE *out;          /* stdout (borrowed) or the temporary file (owned) */
  bool csv;           /* the format is CSV: quoted cells may hold line breaks */
  bool in_quotes;     /* inside a quoted CSV cell */
  uint64_t lines;     /* record lines written so far (for CSV, the header row too) */
  uint64_t bytes;     /* bytes written */
  bool total_known;   /* the server announced x-handsel-records */
  uint64_t total;     /* that announcement */
  bool progress;      /* stderr is a terminal: draw the progress line */
  bool drawn;         /* a progress line is on the screen */
  int64_t started_ms; /* when the request was sent */
  int64_t drawn_ms;   /* when the progress line was last drawn */
}
export_t;

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Records among the lines: a CSV export starts with a header row. */
static uint64_t records_of(const export_t *x) {
  if (x->csv) {
    return x->lines > 0 ? x->lines - 1 : 0;
  }
  return x->lines;
}

static void draw_progress(export_t *x, int64_t now) {
  double secs = (double)(now - x->started_ms) / 1000.0;
  uint64_t recs = records_of(x);
  double rate = secs > 0 ? (double)recs / secs : 0;
  char of[64] = "";
  if (x->total_known) {
    double pct = x->total > 0 ? 100.0 * (double)recs / (double)x->total : 100.0;
    snprintf(of, sizeof of, " of %" PRIu64 " (%.0f%%)", x->total, pct > 100 ? 100 : pct);
  }
  fprintf(stderr, "\r%" PRIu64 " records%s, %.1f MB, %.0f records/s\033[K", recs, of,
          (double)x->bytes / 1e6, rate);
  fflush(stderr);
  x->drawn = true;
  x->drawn_ms = now;
}

static void clear_progress(export_t *x) {
  if (x->drawn) {
    fputs("\r\033[K", stderr);
    x->drawn = false;
  }
}

static int on_head(void *ctx, const hs_client_response_t *resp, hs_err_t *err) {
  export_t *x = ctx;
  const char *n = hs_client_header(resp, "x-handsel-records");
  if (n != NULL) {
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(n, &end, 10);
    /* A value that is not a plain count is ignored: it only feeds the progress line. */
    if (end != n && *end == '\0' && errno == 0 && n[0] != '-') {
      x->total_known = true;
      x->total = v;
    }
  }
  return HS_OK;
}

static int on_body(void *ctx, const uint8_t *data, size_t len, hs_err_t *err) {
  export_t *x = ctx;
  if (fwrite(data, 1, len, x->out) != len) {
    return hs_err_set(err, HS_EIO, "Cannot write to %s: %s",
                      x->target != NULL ? x->target : "standard output", strerror(errno));
  }
  x->bytes += len;
  for (size_t i = 0; i < len; i++) {
    if (x->csv && data[i] == '"') {
      x->in_quotes = !x->in_quotes; /* "" inside a cell toggles twice */
    } else if (data[i] == '\n' && !x->in_quotes) {
      x->lines++;
    }
  }
  if (x->progress) {
    int64_t now = mono_ms();
    if (now - x->drawn_ms >= PROGRESS_INTERVAL_MS) {
      draw_progress(x, now);
    }
  }
  return HS_OK;
}

/* Opens the temporary file next to target, readable as a file made by the shell would be. */
static int open_tmp(export_t *x, hs_err_t *err) {
  char *a = strdup(x->target), *b = strdup(x->target);
  int rc = HS_OK;
  if (a == NULL || b == NULL) {
    rc = hs_err_set(err, HS_ENOMEM, "Out of memory");
  } else {
    const char *dir = dirname(a), *base = basename(b);
    size_t n = strlen(dir) + strlen(base) + 32;
    x->tmp_path = malloc(n);
    if (x->tmp_path == NULL) {
      rc = hs_err_set(err, HS_ENOMEM, "Out of memory");
    } else {
      snprintf(x->tmp_path, n, "%s/.%s.partial.XXXXXX", dir, base);
      int fd = mkstemp(x->tmp_path);
      if (fd < 0) {
        rc = hs_err_set(err, HS_EIO, "Cannot create a file in %s: %s", dir, strerror(errno));
        free(x->tmp_path);
        x->tmp_path = NULL;
      } else {
        mode_t mask = umask(0);
        umask(mask);
        (void)fchmod(fd, 0666 & ~mask);
        x->out = fdopen(fd, "wb");
        if (x->out == NULL) {
          rc = hs_err_set(err, HS_EIO, "Cannot open %s: %s", x->tmp_path, strerror(errno));
          close(fd);
        }
      }
    }
  }
  free(a);
  free(b);
  return rc;
}

/* Makes the export durable under its name: flush, fsync, rename, fsync the directory. */
static int commit_file(export_t *x, hs_err_t *err) {
  if (fflush(x->out) != 0 || fsync(fileno(x->out)) != 0) {
    return hs_err_set(err, HS_EIO, "Cannot write %s: %s", x->target, strerror(errno));
  }
  int rc = fclose(x->out);
  x->out = NULL;
  if (rc != 0) {
    return hs_err_set(err, HS_EIO, "Cannot write %s: %s", x->target, strerror(errno));
  }
  if (rename(x->tmp_path, x->target) != 0) {
    return hs_err_set(err, HS_EIO, "Cannot rename the export to %s: %s", x->target,
                      strerror(errno));
  }
  free(x->tmp_path);
  x->tmp_path = NULL;
  char *d = strdup(x->target);
  if (d != NULL) {
    int fd = open(dirname(d), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
      (void)fsync(fd); /* the rename itself survives a crash */
      close(fd);
    }
    free(d);
  }
  return HS_OK;
}

/* Removes what a failed export left behind. */
static void discard(export_t *x) {
  if (x->out != NULL && x->out != stdout) {
    fclose(x->out);
  }
  x->out = NULL;
  if (x->tmp_path != NULL) {
    unlink(x->tmp_path);
    free(x->tmp_path);
    x->tmp_path = NULL;
  }
}

typedef struct filters {
  const char *from, *to, *process, *contractor, *session, *result, *format;
} filters_t;

/* Parses argv. Returns 0 to go on, 1 when help was shown (exit 0), 2 on a usage error. */
static int parse_args(int argc, char **argv, hs_cli_remote_t *r, filters_t *f,
                      const char **output) {
  struct {
    const char *flag;
    const char **value;
  } named[] = {
      {"--from", &f->from},       {"--to", &f->to},
      {"--process", &f->process}, {"--contractor", &f->contractor},
      {"--session", &f->session}, {"--result", &f->result},
      {"--format", &f->format},   {"-o", output},
      {"--output", output},
  };
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      hs_cmd_export_help(stdout);
      return 1;
    }
    int rc = hs_cli_remote_option(r, "export", argc, argv, &i);
    for (size_t k = 0; rc == 0 && k < sizeof named / sizeof named[0]; k++) {
      rc = hs_cli_option_value("export", named[k].flag, argc, argv, &i, named[k].value);
    }
    if (rc < 0) {
      return 2;
    }
    if (rc == 0) {
      fprintf(stderr, "handsel export: unexpected argument '%s' (see handsel export --help)\n", a);
      return 2;
    }
  }
  if (f->result != NULL && strcmp(f->result, "accepted") != 0 &&
      strcmp(f->result, "rejected") != 0) {
    fprintf(stderr, "handsel export: --result is accepted or rejected\n");
    return 2;
  }
  if (f->format != NULL && strcmp(f->format, "ndjson") != 0 && strcmp(f->format, "csv") != 0) {
    fprintf(stderr, "handsel export: --format is ndjson or csv\n");
    return 2;
  }
  const char *values[] = {f->from, f->to, f->process, f->contractor, f->session};
  for (size_t k = 0; k < sizeof values / sizeof values[0]; k++) {
    if (values[k] != NULL && (values[k][0] == '\0' || strlen(values[k]) > FILTER_MAX)) {
      fprintf(stderr, "handsel export: a filter value is empty or longer than %d bytes\n",
              FILTER_MAX);
      return 2;
    }
  }
  if (*output != NULL && (**output == '\0' || strcmp(*output, "-") == 0)) {
    *output = NULL; /* "-o -": standard output */
  }
  return hs_cli_remote_check(r, "export") != 0 ? 2 : 0;
}

int hs_cmd_export_main(int argc, char **argv) {
  hs_cli_remote_t remote;
  hs_cli_remote_init(&remote);
  filters_t f = {0};
  const char *output = NULL;
  int st = parse_args(argc, argv, &remote, &f, &output);
  if (st != 0) {
    return st == 1 ? 0 : st;
  }
  char query[QUERY_MAX] = "";
  if (query_add(query, sizeof query, "from", f.from) != HS_OK ||
      query_add(query, sizeof query, "to", f.to) != HS_OK ||
      query_add(query, sizeof query, "process", f.process) != HS_OK ||
      query_add(query, sizeof query, "contractor", f.contractor) != HS_OK ||
      query_add(query, sizeof query, "session", f.session) != HS_OK ||
      query_add(query, sizeof query, "result", f.result) != HS_OK ||
      query_add(query, sizeof query, "format", f.format) != HS_OK) {
    fprintf(stderr, "handsel export: the filters are too long\n");
    return 2;
  }
  char path[QUERY_MAX + 16];
  snprintf(path, sizeof path, "/v1/audit%s", query);

  export_t x = {.target = output,
                .out = stdout,
                .csv = f.format != NULL && strcmp(f.format, "csv") == 0,
                .progress = isatty(STDERR_FILENO) == 1};
  hs_err_t err;
  hs_err_clear(&err);
  /* Signals are caught before the temporary file exists, so an interrupt at any moment
   * removes it. */
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: poll() wakes up */
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int, old_term;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  /* The file's directory is tried before the server: a typo in -o fails at once. */
  if (output != NULL && open_tmp(&x, &err) != HS_OK) {
    fprintf(stderr, "handsel: %s\n", err.msg);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return 1;
  }

  hs_client_opts_t opts = {.url = remote.server,
                           .ca_file = remote.ca,
                           .timeout_ms = remote.timeout_ms,
                           .cancel = &g_interrupted};
  hs_client_t *c = NULL;
  int rc = hs_client_connect(&opts, &c, &err);
  if (rc == HS_OK) {
    hs_client_request_t req = {.method = "GET",
                               .path = path,
                               .token = remote.token,
                               .on_head = on_head,
                               .on_body = on_body,
                               .ctx = &x};
    hs_client_response_t resp;
    x.started_ms = mono_ms();
    x.drawn_ms = x.started_ms - PROGRESS_INTERVAL_MS; /* the first piece draws at once */
    rc = hs_client_request(c, &req, &resp, &err);
    hs_client_response_free(&resp);
  }
  hs_client_close(c);
  if (rc == HS_OK) {
    rc = output != NULL ? commit_file(&x, &err) : HS_OK;
    if (rc == HS_OK && output == NULL && fflush(stdout) != 0) {
      rc = hs_err_set(&err, HS_EIO, "Cannot write to standard output: %s", strerror(errno));
    }
  }
  clear_progress(&x);
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  if (rc != HS_OK) {
    discard(&x);
    fprintf(stderr, "handsel: %s\n", err.msg);
    if (output != NULL) {
      fprintf(stderr, "handsel export: %s was not written\n", output);
    }
    return 1;
  }
  /* The stream ended normally, so nothing was cut off; a count that differs from the
   * announcement (records added while the export ran, or a CSV cell the count misread) is
   * worth a word, not a failure. */
  if (x.total_known && records_of(&x) != x.total) {
    fprintf(stderr,
            "handsel export: the server announced %" PRIu64 " records; %" PRIu64 " were counted\n",
            x.total, records_of(&x));
  }
  double secs = (double)(mono_ms() - x.started_ms) / 1000.0;
  fprintf(stderr, "wrote %" PRIu64 " records (%.1f MB) to %s in %.1f s\n", records_of(&x),
          (double)x.bytes / 1e6, output != NULL ? output : "standard output", secs);
  return 0;
}
