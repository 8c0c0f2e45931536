/* `handsel report --process NAME`: the content stats of GET /v1/content/stats, read straight
 * from the database (blocking libpq: a command, not the server), as a table on stdout and, with
 * --svg, a bar chart a person reads at a glance: one bar per item with its 95% interval as a
 * whisker, the likely best item of each slot marked. */
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "api/common.h"
#include "cli/commands.h"
#include "codec/value.h"
#include "core/str.h"
#include "store/content.h"

void hs_cmd_report_help(FILE *out) {
  fputs("usage: handsel report --process NAME [--brand B] [--svg FILE] [--db CONNINFO]\n"
        "\n"
        "Shows what the brand's visits taught about the content that visit:suggest picks for\n"
        "the process NAME, per slot and item:\n"
        "  SHOWN      how many visits the item was suggested in\n"
        "  SUCCESSES  how many of those visits succeeded: reached one of the process's goals,\n"
        "             or got a customer rating of 4 or 5 (a visit counts once)\n"
        "  RATE       SUCCESSES / SHOWN, with its 95% interval: the true rate lies in it 19\n"
        "             times out of 20; a wide interval means too few visits to tell yet\n"
        "  P(BEST)    the chance that this item has the highest rate of its slot\n"
        "The item marked best is the one most likely to be; suggestions already favour it\n"
        "while still trying the others now and then.\n"
        "\n"
        "--brand B   the brand (needed when several brands have a process NAME)\n"
        "--svg FILE  also write the numbers as an SVG bar chart to FILE\n"
        "Reads HANDSEL_DB (or --db) like `handsel token`.\n",
        out);
}

/* ------------------------------------------------------------ reading */

static PGresult *query(PGconn *pg, const char *sql, int n, const char *const *v) {
  PGresult *r = PQexecParams(pg, sql, n, NULL, v, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    fprintf(stderr, "handsel report: %s", PQresultErrorMessage(r));
    PQclear(r);
    return NULL;
  }
  return r;
}

/* The brand's id and name: the one given, or the only brand with the process. */
static int find_brand(PGconn *pg, const char *brand, const char *process, char id[24],
                      char name[65]) {
  const char *v[] = {process, brand};
  PGresult *r = query(pg,
                      "SELECT b.id, b.name FROM processes p JOIN brands b ON b.id = p.brand_id"
                      " WHERE p.name = $1 AND ($2::text IS NULL OR b.name = $2) ORDER BY b.name",
                      2, v);
  if (r == NULL) {
    return 1;
  }
  int n = PQntuples(r);
  if (n == 1) {
    hs_strlcpy(id, PQgetvalue(r, 0, 0), 24);
    hs_strlcpy(name, PQgetvalue(r, 0, 1), 65);
  } else if (n == 0 && brand != NULL) {
    fprintf(stderr, "handsel report: the brand %s has no process %s\n", brand, process);
  } else if (n == 0) {
    fprintf(stderr, "handsel report: no brand has a process %s\n", process);
  } else {
    fprintf(stderr, "handsel report: %d brands have a process %s; choose one with --brand (%s", n,
            process, PQgetvalue(r, 0, 1));
    for (int i = 1; i < n; i++) {
      fprintf(stderr, ", %s", PQgetvalue(r, i, 1));
    }
    fputs(")\n", stderr);
  }
  PQclear(r);
  return n == 1 ? 0 : 1;
}

/* ------------------------------------------------------------ the table */

static double num(const hs_value_t *item, const char *key) {
  const hs_value_t *v = hs_map_get(item, key);
  return v == NULL               ? 0.0
         : v->type == HS_V_FLOAT ? v->as.f
         : v->type == HS_V_INT   ? (double)v->as.i
                                 : 0.0;
}

static const char *str(const hs_value_t *v, const char *key) {
  const hs_value_t *s = hs_map_get(v, key);
  return s != NULL && s->type == HS_V_STR ? s->as.str.ptr : "";
}

static void bounds(const hs_value_t *item, double *lo, double *hi) {
  const hs_value_t *iv = hs_map_get(item, "interval");
  *lo = 0;
  *hi = 1;
  if (iv != NULL && iv->type == HS_V_ARRAY && iv->as.arr.len == 2) {
    *lo = iv->as.arr.items[0].as.f;
    *hi = iv->as.arr.items[1].as.f;
  }
}

/* The index of the item most likely best (the first of equals), or -1 for an empty slot. */
static long best_of(const hs_value_t *items) {
  long best = -1;
  for (size_t i = 0; i < items->as.arr.len; i++) {
    if (best < 0 ||
        num(&items->as.arr.items[i], "p_best") > num(&items->as.arr.items[best], "p_best")) {
      best = (long)i;
    }
  }
  return best;
}

static void print_table(const hs_value_t *stats, const char *brand, FILE *out) {
  const hs_value_t *slots = hs_map_get(stats, "slots");
  fprintf(out, "content stats of %s (brand %s)\n\n", str(stats, "process"), brand);
  if (slots == NULL || slots->as.arr.len == 0) {
    fputs("no suggestion of this process has been shown yet\n", out);
  } else {
    fprintf(out, "%-16s  %-24s  %7s  %9s  %6s  %-16s  %7s\n", "SLOT", "ITEM", "SHOWN", "SUCCESSES",
            "RATE", "95% INTERVAL", "P(BEST)");
  }
  for (size_t s = 0; slots != NULL && s < slots->as.arr.len; s++) {
    const hs_value_t *slot = &slots->as.arr.items[s];
    const hs_value_t *items = hs_map_get(slot, "items");
    long best = best_of(items);
    for (size_t i = 0; i < items->as.arr.len; i++) {
      const hs_value_t *it = &items->as.arr.items[i];
      double lo, hi;
      bounds(it, &lo, &hi);
      fprintf(out, "%-16s  %-24s  %7.0f  %9.0f  %5.1f%%  [%5.1f%%, %5.1f%%]  %6.1f%%%s\n",
              i == 0 ? str(slot, "slot") : "", str(it, "id"), num(it, "shown"),
              num(it, "successes"), 100 * num(it, "rate"), 100 * lo, 100 * hi,
              100 * num(it, "p_best"), (long)i == best ? "  <- best" : "");
    }
  }
  const hs_value_t *fb = hs_map_get(stats, "feedback");
  fprintf(out, "\nfeedback: %.0f (with a rating: %.0f; customers' 4 or 5: %.0f)\n",
          num(fb, "count"), num(fb, "rated"), num(fb, "positive"));
}

/* ------------------------------------------------------------ the chart */

static void xml_text(FILE *f, const char *s) {
  for (; *s != '\0'; s++) {
    switch (*s) {
      case '&':
        fputs("&amp;", f);
        break;
      case '<':
        fputs("&lt;", f);
        break;
      case '>':
        fputs("&gt;", f);
        break;
      case '"':
        fputs("&quot;", f);
        break;
      default:
        fputc(*s, f);
    }
  }
}

enum {
  SVG_W = 980,
  LABEL_W = 200, /* item names */
  PLOT_W = 440,  /* 0% .. 100% */
  ROW_H = 34,
  TOP = 70,
};

static int write_svg(const hs_value_t *stats, const char *brand, const char *path) {
  const hs_value_t *slots = hs_map_get(stats, "slots");
  size_t rows = 0;
  for (size_t s = 0; slots != NULL && s < slots->as.arr.len; s++) {
    rows += 1 + hs_map_get(&slots->as.arr.items[s], "items")->as.arr.len;
  }
  int height = TOP + (int)rows * ROW_H + 70;
  FILE *f = fopen(path, "w");
  if (f == NULL) {
    fprintf(stderr, "handsel report: cannot write %s\n", path);
    return 1;
  }
  fprintf(f,
          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d "
          "%d\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"13\">\n"
          "<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n",
          SVG_W, height, SVG_W, height);
  fputs("<text x=\"20\" y=\"30\" font-size=\"18\" font-weight=\"bold\">Which content works: ", f);
  xml_text(f, str(stats, "process"));
  fputs("</text>\n<text x=\"20\" y=\"50\" fill=\"#555\">Brand ", f);
  xml_text(f, brand);
  fputs(". Bar: success rate of visits that showed the item; whisker: 95% interval; "
        "green: most likely best.</text>\n",
        f);
  int x0 = 20 + LABEL_W;
  int y = TOP;
  for (size_t s = 0; slots != NULL && s < slots->as.arr.len; s++) {
    const hs_value_t *slot = &slots->as.arr.items[s];
    const hs_value_t *items = hs_map_get(slot, "items");
    long best = best_of(items);
    fputs("<text x=\"20\" y=\"", f);
    fprintf(f, "%d\" font-weight=\"bold\">Slot ", y + 20);
    xml_text(f, str(slot, "slot"));
    fputs("</text>\n", f);
    /* The 0..100% grid of this slot. */
    for (int t = 0; t <= 4; t++) {
      int x = x0 + PLOT_W * t / 4;
      fprintf(f,
              "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#ddd\"/>\n"
              "<text x=\"%d\" y=\"%d\" fill=\"#777\" font-size=\"11\" "
              "text-anchor=\"middle\">%d%%</text>\n",
              x, y + 26, x, y + ROW_H * (int)(items->as.arr.len + 1), x, y + 20, t * 25);
    }
    y += ROW_H;
    for (size_t i = 0; i < items->as.arr.len; i++) {
      const hs_value_t *it = &items->as.arr.items[i];
      double lo, hi;
      bounds(it, &lo, &hi);
      bool is_best = (long)i == best;
      int w = (int)(PLOT_W * num(it, "rate") + 0.5);
      int cy = y + ROW_H / 2;
      fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\"%s>", x0 - 10, cy + 4,
              is_best ? " font-weight=\"bold\"" : "");
      xml_text(f, str(it, "id"));
      fputs("</text>\n", f);
      fprintf(
          f,
          "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\"/>\n"
          "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#222\" "
          "stroke-width=\"2\"/>\n"
          "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#222\" stroke-width=\"2\"/>\n"
          "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#222\" "
          "stroke-width=\"2\"/>\n",
          x0, cy - 9, w, 18, is_best ? "#2e9e5b" : "#8fa8c8", x0 + PLOT_W * lo, cy,
          x0 + PLOT_W * hi, cy, x0 + PLOT_W * lo, cy - 6, x0 + PLOT_W * lo, cy + 6,
          x0 + PLOT_W * hi, cy - 6, x0 + PLOT_W * hi, cy + 6);
      fprintf(f, "<text x=\"%d\" y=\"%d\">%.1f%% of %.0f shown, P(best) %.0f%%%s</text>\n",
              x0 + PLOT_W + 12, cy + 4, 100 * num(it, "rate"), num(it, "shown"),
              100 * num(it, "p_best"), is_best ? "  \xe2\x98\x85 best" : "");
      y += ROW_H;
    }
  }
  const hs_value_t *fb = hs_map_get(stats, "feedback");
  fprintf(f,
          "<text x=\"20\" y=\"%d\" fill=\"#555\">Feedback: %.0f (with a rating: %.0f; "
          "customers' 4 or 5: %.0f)</text>\n</svg>\n",
          y + 30, num(fb, "count"), num(fb, "rated"), num(fb, "positive"));
  bool bad = ferror(f) != 0;
  if (fclose(f) != 0 || bad) {
    fprintf(stderr, "handsel report: cannot write %s\n", path);
    return 1;
  }
  return 0;
}

int hs_cmd_report_main(int argc, char **argv) {
  const char *db = getenv("HANDSEL_DB");
  const char *process = NULL, *brand = NULL, *svg = NULL;
  for (int i = 1; i < argc; i += 2) { /* every option takes a value */
    const char *a = argv[i];
    const char *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      hs_cmd_report_help(stdout);
      return 0;
    }
    const char **slot = strcmp(a, "--process") == 0 ? &process
                        : strcmp(a, "--brand") == 0 ? &brand
                        : strcmp(a, "--svg") == 0   ? &svg
                        : strcmp(a, "--db") == 0    ? &db
                                                    : NULL;
    if (slot == NULL) {
      fprintf(stderr, "handsel report: unexpected argument '%s' (see handsel report --help)\n", a);
      return 2;
    }
    if (val == NULL) {
      fprintf(stderr, "handsel report: %s needs a value (see handsel report --help)\n", a);
      return 2;
    }
    *slot = val;
  }
  if (process == NULL || !hs_api_valid_name(process)) {
    fprintf(stderr, "handsel report: needs --process NAME (lower-case letters, digits and "
                    "dashes)\n");
    return 2;
  }
  if (db == NULL || *db == '\0') {
    fputs("handsel report: no database: set HANDSEL_DB or pass --db CONNINFO\n", stderr);
    return 1;
  }
  PGconn *pg = PQconnectdb(db);
  if (PQstatus(pg) != CONNECTION_OK) {
    fprintf(stderr, "handsel report: cannot connect to the database: %s", PQerrorMessage(pg));
    PQfinish(pg);
    return 1;
  }
  char brand_id[24], brand_name[65];
  int rc = find_brand(pg, brand, process, brand_id, brand_name);
  PGresult *totals = NULL, *fb = NULL;
  if (rc == 0) {
    const char *v[] = {brand_id, process};
    totals = query(pg, hs_content_totals_sql, 2, v);
    fb = totals != NULL ? query(pg, hs_content_feedback_sql, 2, v) : NULL;
    rc = fb != NULL ? 0 : 1;
  }
  hs_arena_t a;
  hs_arena_init(&a, 0);
  hs_value_t *stats = NULL;
  if (rc == 0 && hs_content_stats_value(process, totals, fb, &a, &stats) != HS_OK) {
    fputs("handsel report: out of memory\n", stderr);
    rc = 1;
  }
  if (rc == 0) {
    print_table(stats, brand_name, stdout);
    if (svg != NULL) {
      rc = write_svg(stats, brand_name, svg);
      if (rc == 0) {
        printf("chart: %s\n", svg);
      }
    }
  }
  hs_arena_reset(&a);
  PQclear(totals);
  PQclear(fb);
  PQfinish(pg);
  return rc;
}
