/* Bad input: malformed and abusive requests on every route, each with the status and error code
 * that proto/README.md documents for it, against a real server and PostgreSQL (HANDSEL_DB) with
 * real bearer tokens.
 *
 * Before and after each request the test counts the rows of every table. A refused request must
 * change nothing; the only exception is a completion whose data fails the step's rules, which is
 * recorded once in validation_records by design (SPEC §6), so there exactly one row is added.
 *
 * The row counts are of whole tables, so this test must not share the database with another
 * test running at the same time (scripts/test runs one test at a time by default). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "codec/value.h"
#include "core/buf.h"
#include "core/ids.h"
#include "hs_test_api.h"
#include "hs_test_body.h"
#include "hs_test_h2.h"
#include "hs_test_pg.h"
#include "hs_test_server.h"

#define MAX_BODY    (1024 * 1024) /* the server's default HANDSEL_MAX_BODY */
#define MAX_BLOB    65536         /* HANDSEL_MAX_BLOB given to the server */
#define TIMEOUT_MS  15000
#define N_TABLES    9
#define MAX_HEADERS 8

/* Who sends a request. */
typedef enum who {
  W_NONE,        /* no Authorization header */
  W_ADMIN,       /* the brand's admin */
  W_AUTHOR,      /* the brand's author */
  W_CON,         /* contractor sam, who owns the session and the blob */
  W_CON2,        /* contractor kim of the same brand */
  W_COMP,        /* the brand's compliance officer */
  W_OTHER_ADMIN, /* the admin of another brand */
  W_OTHER_CON,   /* a contractor of another brand */
  W_OTHER_AUTH,  /* an author of another brand */
  W_REVOKED,     /* a contractor token that was revoked */
  W_RAW,         /* Authorization: the case's authz text, verbatim (after placeholders) */
  W_DEV,         /* the development headers, which a production server ignores */
  W_COUNT
} who_t;

/* Bodies that are built at run time. */
typedef enum gen {
  G_NONE,
  G_OVER_BODY,    /* HANDSEL_MAX_BODY + 1 bytes */
  G_CL_OVER,      /* a small body announcing content-length 2000000 */
  G_CL_BAD,       /* content-length: abc */
  G_DEEP_JSON,    /* JSON nested 17 levels */
  G_DEEP_MP,      /* msgpack nested 17 levels */
  G_WIDE_MAP_MP,  /* a msgpack map of 4097 members */
  G_WIDE_ARR,     /* a JSON array of 4097 elements */
  G_MANY_VALUES,  /* 17 JSON arrays of 4000 integers: 68,000 values */
  G_LONG_STR,     /* a JSON string of 256 KiB + 1 */
  G_OVER_BLOB,    /* HANDSEL_MAX_BLOB + 1 bytes under their own hash */
  G_OVER_LUA,     /* a Lua source of HANDSEL_MAX_BODY + 1 bytes */
  G_MANY_HEADERS, /* 100 extra header fields */
  G_BIG_HEADER,   /* one 20,000-byte header field */
  G_HTTP11,       /* an HTTP/1.1 request on the h2c port */
  G_HTTP10,       /* an HTTP/1.0 request */
} gen_t;

/* The request may be refused by resetting its stream (or with 431) rather than answered. */
#define F_RESET          0x1u
/* The known answer (known_status) lacks the error.fields entry the document promises. */
#define F_KNOWN_NO_FIELD 0x2u

typedef struct bad_case {
  const char *name;
  const char *method;
  const char *path; /* placeholders: see expand() */
  who_t who;
  const char *authz; /* for W_RAW */
  const char *ctype; /* Content-Type, NULL for none */
  const char *body;  /* NULL for none; text with placeholders unless len > 0 */
  size_t len;        /* > 0: body holds exactly len raw bytes, sent verbatim */
  gen_t gen;
  int status;        /* the expected status */
  const char *code;  /* the expected error.code; NULL when the answer has no error body */
  const char *field; /* a key that error.fields must hold, or NULL */
  int records;       /* validation_records rows the request adds (0 or 1) */
  unsigned flags;
  /* A known difference between this server and proto/README.md: the answer it gives today
   * (status, and error.code or "-" for none). It is accepted, and reported as such, so that
   * the suite passes while the difference is open; remove it once the server or the document
   * is fixed. */
  int known_status;
  const char *known_code;
} bad_case_t;

#define J      "application/json"
#define M      "application/msgpack"
/* A raw byte body: the bytes of a string literal without its terminating NUL. */
#define RAW(s) s, sizeof(s) - 1

/* ---- the world the cases run in ---- */

static hs_test_server_t g_srv;
static PGconn *g_db;
static hs_h2_conn_t *g_conn;
static char g_brand[65], g_other[65];
static char g_token[W_COUNT][72];
static char g_comp_id[40];
static char g_session[40];
static char g_blob[65];
static char g_version[65];
static char g_unknown[40];

static const char *const k_tables[N_TABLES] = {
    "brands", "process_versions", "processes",          "sessions", "step_completions",
    "blobs",  "feedback",         "validation_records", "tokens",
};
enum { T_VALIDATION_RECORDS = 7 };

/* ---- the cases ---- */

static const bad_case_t k_cases[] = {
    /* Routing: unknown paths and wrong methods, answered before any token is looked at. */
    {"unknown path", "GET", "/nope", W_ADMIN, .status = 404, .code = "not_found"},
    {"unknown path under /v1", "GET", "/v1/sessionz", W_CON, .status = 404, .code = "not_found"},
    {"unknown path without a token", "GET", "/v1/nothing", W_NONE, .status = 404,
     .code = "not_found"},
    {"trailing slash", "GET", "/v1/sessions/{S}/", W_CON, .status = 404, .code = "not_found"},
    {"double slash", "GET", "//v1/sessions", W_CON, .status = 404, .code = "not_found"},
    {"129-byte session id segment", "GET", "/v1/sessions/{A129}", W_CON, .status = 404,
     .code = "not_found"},
    {"129-byte process name segment", "GET", "/v1/processes/{A129}", W_AUTHOR, .status = 404,
     .code = "not_found"},
    {"129-byte blob segment", "GET", "/v1/blobs/{A129}", W_CON, .status = 404, .code = "not_found"},
    {"129-byte seq segment", "POST", "/v1/sessions/{S}/steps/{N129}", W_CON, .ctype = J,
     .body = "{\"data\": {}}", .status = 404, .code = "not_found"},
    {"DELETE /v1/sessions", "DELETE", "/v1/sessions", W_CON, .status = 405,
     .code = "method_not_allowed"},
    {"GET /v1/sessions", "GET", "/v1/sessions", W_CON, .status = 405, .code = "method_not_allowed"},
    {"PATCH a process", "PATCH", "/v1/processes/solar-consult", W_AUTHOR, .status = 405,
     .code = "method_not_allowed"},
    {"PUT /healthz", "PUT", "/healthz", W_NONE, .ctype = J, .body = "{}", .status = 405,
     .code = "method_not_allowed"},
    {"GET a step", "GET", "/v1/sessions/{S}/steps/1", W_CON, .status = 405,
     .code = "method_not_allowed"},
    {"DELETE a blob", "DELETE", "/v1/blobs/{H}", W_ADMIN, .status = 405,
     .code = "method_not_allowed"},
    {"GET /v1/tokens", "GET", "/v1/tokens", W_ADMIN, .status = 405, .code = "method_not_allowed"},

    /* Credentials. */
    {"no token", "GET", "/v1/processes", W_NONE, .status = 401, .code = "unauthorized"},
    {"no token on a write", "POST", "/v1/sessions", W_NONE, .ctype = J,
     .body = "{\"process\": \"solar-consult\"}", .status = 401, .code = "unauthorized"},
    {"bearer token too short", "GET", "/v1/processes", W_RAW, .authz = "Bearer hst_abc",
     .status = 401, .code = "unauthorized"},
    {"bearer token not hex", "GET", "/v1/processes", W_RAW, .authz = "Bearer hst_{G64}",
     .status = 401, .code = "unauthorized"},
    {"bearer token upper-case hex", "GET", "/v1/processes", W_RAW, .authz = "Bearer hst_{F64}",
     .status = 401, .code = "unauthorized"},
    {"bearer token without prefix", "GET", "/v1/processes", W_RAW, .authz = "Bearer {a64}",
     .status = 401, .code = "unauthorized"},
    {"unknown well-formed token", "GET", "/v1/processes", W_RAW, .authz = "Bearer hst_{a64}",
     .status = 401, .code = "unauthorized"},
    {"token with a trailing byte", "GET", "/v1/sessions/{S}", W_RAW, .authz = "Bearer {TOK}0",
     .status = 401, .code = "unauthorized"},
    {"scheme without a token", "GET", "/v1/processes", W_RAW, .authz = "Bearer", .status = 401,
     .code = "unauthorized"},
    {"basic auth", "GET", "/v1/processes", W_RAW, .authz = "Basic dXNlcjpwYXNz", .status = 401,
     .code = "unauthorized"},
    {"bare token without scheme", "GET", "/v1/sessions/{S}", W_RAW, .authz = "{TOK}", .status = 401,
     .code = "unauthorized"},
    {"revoked token", "GET", "/v1/sessions/{S}", W_REVOKED, .status = 401, .code = "unauthorized"},
    {"revoked token completes a step", "POST", "/v1/sessions/{S}/steps/1", W_REVOKED, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": true}}", .status = 401, .code = "unauthorized"},
    {"development headers on a production server", "GET", "/v1/processes", W_DEV, .status = 401,
     .code = "unauthorized"},

    /* Another brand's things look like nothing. */
    {"other brand reads the session", "GET", "/v1/sessions/{S}", W_OTHER_ADMIN, .status = 404,
     .code = "not_found"},
    {"other brand completes the step", "POST", "/v1/sessions/{S}/steps/1", W_OTHER_CON, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": true}}", .status = 404, .code = "not_found"},
    {"other brand gives feedback", "POST", "/v1/sessions/{S}/feedback", W_OTHER_CON, .ctype = J,
     .body = "{\"rating\": 5, \"from\": \"customer\"}", .status = 404, .code = "not_found"},
    {"other brand streams the session", "GET", "/v1/sessions/{S}/stream", W_OTHER_ADMIN,
     .status = 404, .code = "not_found"},
    {"other brand reads the blob", "GET", "/v1/blobs/{H}", W_OTHER_ADMIN, .status = 404,
     .code = "not_found"},
    {"other brand reads the process", "GET", "/v1/processes/solar-consult", W_OTHER_AUTH,
     .status = 404, .code = "not_found"},
    {"other brand activates our version", "POST", "/v1/processes/solar-consult/activate",
     W_OTHER_AUTH, .ctype = J, .body = "{\"version\": \"{V}\"}", .status = 404,
     .code = "not_found"},
    {"other brand revokes our token", "DELETE", "/v1/tokens/{T}", W_OTHER_ADMIN, .status = 404,
     .code = "not_found"},
    {"another contractor reads the session", "GET", "/v1/sessions/{S}", W_CON2, .status = 404,
     .code = "not_found"},
    {"another contractor completes the step", "POST", "/v1/sessions/{S}/steps/1", W_CON2,
     .ctype = J, .body = "{\"data\": {\"badge_shown\": true}}", .status = 404, .code = "not_found"},
    {"another contractor gives feedback", "POST", "/v1/sessions/{S}/feedback", W_CON2, .ctype = J,
     .body = "{\"rating\": 5, \"from\": \"customer\"}", .status = 404, .code = "not_found"},
    {"another contractor reads the blob", "GET", "/v1/blobs/{H}", W_CON2, .status = 404,
     .code = "not_found"},

    /* Roles. */
    {"author starts a session", "POST", "/v1/sessions", W_AUTHOR, .ctype = J,
     .body = "{\"process\": \"solar-consult\"}", .status = 403, .code = "forbidden"},
    {"admin completes a step", "POST", "/v1/sessions/{S}/steps/1", W_ADMIN, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": true}}", .status = 403, .code = "forbidden"},
    {"compliance completes a step", "POST", "/v1/sessions/{S}/steps/1", W_COMP, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": true}}", .status = 403, .code = "forbidden"},
    {"compliance gives feedback", "POST", "/v1/sessions/{S}/feedback", W_COMP, .ctype = J,
     .body = "{\"rating\": 5, \"from\": \"customer\"}", .status = 403, .code = "forbidden"},
    {"author reads a session", "GET", "/v1/sessions/{S}", W_AUTHOR, .status = 403,
     .code = "forbidden"},
    {"author streams a session", "GET", "/v1/sessions/{S}/stream", W_AUTHOR, .status = 403,
     .code = "forbidden"},
    {"contractor deploys a process", "PUT", "/v1/processes/solar-consult", W_CON,
     .ctype = "text/x-lua", .body = "return 1", .status = 403, .code = "forbidden"},
    {"contractor lists processes", "GET", "/v1/processes", W_CON, .status = 403,
     .code = "forbidden"},
    {"compliance reads a process", "GET", "/v1/processes/solar-consult", W_COMP, .status = 403,
     .code = "forbidden"},
    {"contractor activates a version", "POST", "/v1/processes/solar-consult/activate", W_CON,
     .ctype = J, .body = "{\"version\": \"{V}\"}", .status = 403, .code = "forbidden"},
    {"contractor makes a token", "POST", "/v1/tokens", W_CON, .ctype = J,
     .body = "{\"role\": \"admin\"}", .status = 403, .code = "forbidden"},
    {"author makes a token", "POST", "/v1/tokens", W_AUTHOR, .ctype = J,
     .body = "{\"role\": \"admin\"}", .status = 403, .code = "forbidden"},
    {"author revokes a token", "DELETE", "/v1/tokens/{T}", W_AUTHOR, .status = 403,
     .code = "forbidden"},
    {"compliance uploads a blob", "PUT", "/v1/blobs/{H}", W_COMP, .ctype = "image/jpeg",
     .body = "bad input evidence", .status = 403, .code = "forbidden"},
    {"author reads a blob", "GET", "/v1/blobs/{H}", W_AUTHOR, .status = 403, .code = "forbidden"},

    /* Content types of map bodies. */
    {"text/plain start", "POST", "/v1/sessions", W_CON, .ctype = "text/plain",
     .body = "{\"process\": \"solar-consult\"}", .status = 415, .code = "unsupported"},
    {"XML start", "POST", "/v1/sessions", W_CON, .ctype = "application/xml",
     .body = "<process>solar-consult</process>", .status = 415, .code = "unsupported"},
    {"form-encoded token", "POST", "/v1/tokens", W_ADMIN,
     .ctype = "application/x-www-form-urlencoded", .body = "role=admin", .status = 415,
     .code = "unsupported"},
    {"Lua type on activate", "POST", "/v1/processes/solar-consult/activate", W_AUTHOR,
     .ctype = "text/x-lua", .body = "{\"version\": \"{V}\"}", .status = 415, .code = "unsupported"},
    {"multipart feedback", "POST", "/v1/sessions/{S}/feedback", W_CON,
     .ctype = "multipart/form-data; boundary=x", .body = "--x--", .status = 415,
     .code = "unsupported"},
    {"octet-stream completion", "POST", "/v1/sessions/{S}/steps/1", W_CON,
     .ctype = "application/octet-stream", .body = "{\"data\": {\"badge_shown\": true}}",
     .status = 415, .code = "unsupported"},
    {"application/json-seq is not JSON", "POST", "/v1/tokens", W_ADMIN,
     .ctype = "application/json-seq", .body = "{\"role\": \"nope\"}", .status = 415,
     .code = "unsupported", .known_status = 400, .known_code = "malformed"},

    /* Malformed msgpack (POST /v1/sessions unless said otherwise). */
    {"msgpack truncated string", "POST", "/v1/sessions", W_CON, .ctype = M,
     .body = RAW("\x81\xa7process\xad"
                 "solar"),
     .status = 400, .code = "malformed"},
    {"msgpack truncated map", "POST", "/v1/sessions", W_CON, .ctype = M,
     .body = RAW("\x82\xa7process\xadsolar-consult"), .status = 400, .code = "malformed"},
    {"msgpack invalid byte 0xc1", "POST", "/v1/sessions", W_CON, .ctype = M, .body = RAW("\xc1"),
     .status = 400, .code = "malformed"},
    {"msgpack 0xc1 as a value", "POST", "/v1/sessions", W_CON, .ctype = M,
     .body = RAW("\x81\xa7process\xc1"), .status = 400, .code = "malformed"},
    {"msgpack trailing bytes", "POST", "/v1/sessions", W_CON, .ctype = M,
     .body = RAW("\x81\xa7process\xadsolar-consult\x00"), .status = 400, .code = "malformed"},
    {"msgpack array32 bomb", "POST", "/v1/sessions", W_CON, .ctype = M,
     .body = RAW("\xdd\x00\xff\xff\xff"), .status = 400, .code = "malformed"},
    {"msgpack map32 bomb", "POST", "/v1/sessions", W_CON, .ctype = M,
     .body = RAW("\xdf\xff\xff\xff\xff\xa1k"), .status = 400, .code = "malformed"},
    {"msgpack str32 length bomb", "POST", "/v1/sessions", W_CON, .ctype = M,
     .body = RAW("\x81\xa7process\xdb\x7f\xff\xff\xffsolar"), .status = 400, .code = "malformed",
     .known_status = 413, .known_code = "too_large"},
    {"msgpack bin32 length bomb", "POST", "/v1/sessions/{S}/steps/1", W_CON, .ctype = M,
     .body = RAW("\x81\xa4\x64\x61ta\xc6\xff\xff\xff\xff"), .status = 400, .code = "malformed",
     .known_status = 413, .known_code = "too_large"},
    {"msgpack fixext at the top", "POST", "/v1/sessions", W_CON, .ctype = M,
     .body = RAW("\xd4\x01\x00"), .status = 400, .code = "unsupported", .known_status = 400,
     .known_code = "malformed"},
    {"msgpack timestamp ext as a value", "POST", "/v1/sessions", W_CON, .ctype = M,
     .body = RAW("\x81\xa7process\xd6\xff\x00\x00\x00\x01"), .status = 400, .code = "unsupported",
     .known_status = 400, .known_code = "malformed"},
    {"msgpack ext8 in completion data", "POST", "/v1/sessions/{S}/steps/1", W_CON, .ctype = M,
     .body = RAW("\x81\xa4\x64\x61ta\x81\xab\x62\x61\x64ge_shown\xc7\x01\x05\x00"), .status = 400,
     .code = "unsupported", .known_status = 400, .known_code = "malformed"},
    {"msgpack integer key", "POST", "/v1/sessions", W_CON, .ctype = M,
     .body = RAW("\x81\x01\xadsolar-consult"), .status = 400, .code = "unsupported",
     .known_status = 400, .known_code = "malformed"},
    {"msgpack nil key", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = M,
     .body = RAW("\x81\xc0\x05"), .status = 400, .code = "unsupported", .known_status = 400,
     .known_code = "malformed"},
    {"msgpack array key", "POST", "/v1/tokens", W_ADMIN, .ctype = M,
     .body = RAW("\x81\x90\xa5\x61\x64min"), .status = 400, .code = "unsupported",
     .known_status = 400, .known_code = "malformed"},
    {"msgpack invalid UTF-8 value", "POST", "/v1/sessions", W_CON, .ctype = M,
     .body = RAW("\x81\xa7process\xa2\xff\xfe"), .status = 400, .code = "malformed"},
    {"msgpack invalid UTF-8 key", "POST", "/v1/sessions", W_CON, .ctype = M,
     .body = RAW("\x81\xa2\xc3\x28\xa1x"), .status = 400, .code = "malformed"},
    {"msgpack overlong UTF-8", "POST", "/v1/sessions", W_CON, .ctype = M,
     .body = RAW("\x81\xa7process\xa2\xc0\xaf"), .status = 400, .code = "malformed"},
    {"msgpack UTF-16 surrogate", "POST", "/v1/sessions", W_CON, .ctype = M,
     .body = RAW("\x81\xa7process\xa3\xed\xa0\x80"), .status = 400, .code = "malformed"},
    {"msgpack NUL in a string", "POST", "/v1/sessions", W_CON, .ctype = M,
     .body = RAW("\x81\xa7process\xa3\x61\x00\x62"), .status = 400, .code = "malformed"},
    {"msgpack repeated key", "POST", "/v1/sessions", W_CON, .ctype = M,
     .body = RAW("\x82\xa7process\xa1\x61\xa7process\xa1\x62"), .status = 400, .code = "malformed"},
    {"msgpack empty body", "POST", "/v1/sessions", W_CON, .ctype = M, .status = 400,
     .code = "malformed"},
    {"msgpack array body", "POST", "/v1/sessions", W_CON, .ctype = M, .body = RAW("\x92\x01\x02"),
     .status = 400, .code = "malformed"},
    {"msgpack nil body", "POST", "/v1/sessions/{S}/steps/1", W_CON, .ctype = M, .body = RAW("\xc0"),
     .status = 400, .code = "malformed"},
    {"msgpack binary process name", "POST", "/v1/sessions", W_CON, .ctype = M,
     .body = RAW("\x81\xa7process\xc4\x0dsolar-consult"), .status = 400, .code = "malformed"},
    {"msgpack nesting of 17", "POST", "/v1/sessions", W_CON, .ctype = M, .gen = G_DEEP_MP,
     .status = 413, .code = "too_large"},
    {"msgpack map of 4097 members", "POST", "/v1/sessions", W_CON, .ctype = M, .gen = G_WIDE_MAP_MP,
     .status = 413, .code = "too_large"},
    {"msgpack with no Content-Type", "POST", "/v1/sessions", W_CON, .body = RAW("\xc1"),
     .status = 400, .code = "malformed"},

    /* Malformed JSON. */
    {"JSON truncated", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = "{\"process\": ", .status = 400, .code = "malformed"},
    {"JSON unquoted key", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = "{process: \"solar-consult\"}", .status = 400, .code = "malformed"},
    {"JSON trailing comma", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = "{\"process\": \"solar-consult\",}", .status = 400, .code = "malformed"},
    {"JSON trailing garbage", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = "{\"process\": \"solar-consult\"} x", .status = 400, .code = "malformed"},
    {"JSON two documents", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"rating\": 5, \"from\": \"customer\"}{}", .status = 400, .code = "malformed"},
    {"JSON single quotes", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = "{'process': 'solar-consult'}", .status = 400, .code = "malformed"},
    {"JSON escaped NUL", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = "{\"process\": \"solar\\u0000consult\"}", .status = 400, .code = "malformed"},
    {"JSON lone surrogate", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = "{\"process\": \"\\ud800\"}", .status = 400, .code = "malformed"},
    {"JSON invalid UTF-8", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = RAW("{\"process\": \"\xff\xfe\"}"), .status = 400, .code = "malformed"},
    {"JSON repeated key", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = "{\"process\": \"a\", \"process\": \"b\"}", .status = 400, .code = "malformed"},
    {"JSON NaN", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"rating\": NaN, \"from\": \"customer\"}", .status = 400, .code = "malformed"},
    {"JSON integer over int64", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"rating\": 99999999999999999999, \"from\": \"customer\"}", .status = 413,
     .code = "too_large"},
    {"JSON empty body", "POST", "/v1/sessions", W_CON, .ctype = J, .body = "", .status = 400,
     .code = "malformed"},
    {"JSON whitespace body", "POST", "/v1/tokens", W_ADMIN, .ctype = J, .body = "  \n ",
     .status = 400, .code = "malformed"},
    {"JSON array body", "POST", "/v1/sessions", W_CON, .ctype = J, .body = "[]", .status = 400,
     .code = "malformed"},
    {"JSON null body", "POST", "/v1/sessions/{S}/steps/1", W_CON, .ctype = J, .body = "null",
     .status = 400, .code = "malformed"},
    {"JSON string body", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "\"great\"", .status = 400, .code = "malformed"},
    {"JSON number body", "POST", "/v1/processes/solar-consult/activate", W_AUTHOR, .ctype = J,
     .body = "42", .status = 400, .code = "malformed"},
    {"JSON with a byte-order mark", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = "\xef\xbb\xbf{\"process\": \"solar-consult\"}", .status = 400, .code = "malformed"},
    {"JSON nesting of 17", "POST", "/v1/sessions", W_CON, .ctype = J, .gen = G_DEEP_JSON,
     .status = 413, .code = "too_large"},
    {"JSON array of 4097", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .gen = G_WIDE_ARR, .status = 413, .code = "too_large"},
    {"JSON of 68,000 values", "POST", "/v1/sessions", W_CON, .ctype = J, .gen = G_MANY_VALUES,
     .status = 413, .code = "too_large"},
    {"JSON string of 256 KiB + 1", "POST", "/v1/sessions", W_CON, .ctype = J, .gen = G_LONG_STR,
     .status = 413, .code = "too_large"},

    /* POST /v1/sessions: members. */
    {"start without process", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = "{\"customer\": {\"name\": \"Ada\"}}", .status = 400, .code = "malformed"},
    {"start with process 7", "POST", "/v1/sessions", W_CON, .ctype = J, .body = "{\"process\": 7}",
     .status = 400, .code = "malformed"},
    {"start with process null", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = "{\"process\": null}", .status = 400, .code = "malformed"},
    {"start with process list", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = "{\"process\": [\"solar-consult\"]}", .status = 400, .code = "malformed"},
    {"start with an upper-case process", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = "{\"process\": \"Solar_Consult\"}", .status = 400, .code = "malformed"},
    {"start with a 65-byte process", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = "{\"process\": \"{a65}\"}", .status = 400, .code = "malformed"},
    {"start with customer text", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = "{\"process\": \"solar-consult\", \"customer\": \"Ada\"}", .status = 400,
     .code = "malformed"},
    {"start with customer list", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = "{\"process\": \"solar-consult\", \"customer\": [\"Ada\"]}", .status = 400,
     .code = "malformed"},
    {"start with an empty ref", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = "{\"process\": \"solar-consult\", \"ref\": \"\"}", .status = 400, .code = "malformed"},
    {"start with a 129-byte ref", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = "{\"process\": \"solar-consult\", \"ref\": \"{a129}\"}", .status = 400,
     .code = "malformed"},
    {"start with a numeric ref", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = "{\"process\": \"solar-consult\", \"ref\": 12}", .status = 400, .code = "malformed"},
    {"start with an unknown member", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = "{\"process\": \"solar-consult\", \"mood\": \"happy\"}", .status = 400,
     .code = "malformed"},
    {"start an unknown process", "POST", "/v1/sessions", W_CON, .ctype = J,
     .body = "{\"process\": \"no-such-process\"}", .status = 404, .code = "not_found"},

    /* GET /v1/sessions/{id} and its stream: path parameters. */
    {"session id not a UUID", "GET", "/v1/sessions/not-a-uuid", W_CON, .status = 400,
     .code = "malformed", .known_status = 404, .known_code = "not_found"},
    {"session id upper-case UUID", "GET", "/v1/sessions/{SU}", W_CON, .status = 400,
     .code = "malformed", .known_status = 404, .known_code = "not_found"},
    {"session id with a quote", "GET", "/v1/sessions/'%3B--", W_CON, .status = 400,
     .code = "malformed", .known_status = 404, .known_code = "not_found"},
    {"unknown session", "GET", "/v1/sessions/{U}", W_CON, .status = 404, .code = "not_found"},
    {"stream of a non-UUID", "GET", "/v1/sessions/x/stream", W_CON, .status = 400,
     .code = "malformed", .known_status = 404, .known_code = "not_found"},
    {"stream of an unknown session", "GET", "/v1/sessions/{U}/stream", W_CON, .status = 404,
     .code = "not_found"},

    /* POST /v1/sessions/{id}/steps/{seq}. */
    {"seq 0", "POST", "/v1/sessions/{S}/steps/0", W_CON, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": true}}", .status = 400, .code = "malformed"},
    {"seq -1", "POST", "/v1/sessions/{S}/steps/-1", W_CON, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": true}}", .status = 400, .code = "malformed"},
    {"seq 2^31", "POST", "/v1/sessions/{S}/steps/2147483648", W_CON, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": true}}", .status = 400, .code = "malformed"},
    {"seq 2^64", "POST", "/v1/sessions/{S}/steps/18446744073709551616", W_CON, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": true}}", .status = 400, .code = "malformed"},
    {"seq not a number", "POST", "/v1/sessions/{S}/steps/one", W_CON, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": true}}", .status = 400, .code = "malformed"},
    {"seq 1.0", "POST", "/v1/sessions/{S}/steps/1.0", W_CON, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": true}}", .status = 400, .code = "malformed"},
    {"seq 0x1", "POST", "/v1/sessions/{S}/steps/0x1", W_CON, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": true}}", .status = 400, .code = "malformed"},
    {"seq of a future step", "POST", "/v1/sessions/{S}/steps/2", W_CON, .ctype = J,
     .body = "{\"data\": {\"roof_age\": 3}}", .status = 409, .code = "conflict"},
    {"seq far ahead", "POST", "/v1/sessions/{S}/steps/999999", W_CON, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": true}}", .status = 409, .code = "conflict"},
    {"completion of a non-UUID session", "POST", "/v1/sessions/abc/steps/1", W_CON, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": true}}", .status = 400, .code = "malformed",
     .known_status = 404, .known_code = "not_found"},
    {"completion of an unknown session", "POST", "/v1/sessions/{U}/steps/1", W_CON, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": true}}", .status = 404, .code = "not_found"},
    {"completion without data", "POST", "/v1/sessions/{S}/steps/1", W_CON, .ctype = J, .body = "{}",
     .status = 400, .code = "malformed"},
    {"completion data text", "POST", "/v1/sessions/{S}/steps/1", W_CON, .ctype = J,
     .body = "{\"data\": \"badge shown\"}", .status = 400, .code = "malformed"},
    {"completion data list", "POST", "/v1/sessions/{S}/steps/1", W_CON, .ctype = J,
     .body = "{\"data\": [true]}", .status = 400, .code = "malformed"},
    {"completion data null", "POST", "/v1/sessions/{S}/steps/1", W_CON, .ctype = J,
     .body = "{\"data\": null}", .status = 400, .code = "malformed"},
    {"completion at a number", "POST", "/v1/sessions/{S}/steps/1", W_CON, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": true}, \"at\": 1714817703}", .status = 400,
     .code = "malformed"},
    {"completion at not a time", "POST", "/v1/sessions/{S}/steps/1", W_CON, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": true}, \"at\": \"yesterday\"}", .status = 400,
     .code = "malformed"},
    {"completion at out of range", "POST", "/v1/sessions/{S}/steps/1", W_CON, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": true}, \"at\": \"2026-13-45T99:99:99Z\"}", .status = 400,
     .code = "malformed"},
    {"completion at too long", "POST", "/v1/sessions/{S}/steps/1", W_CON, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": true}, \"at\": \"2026-05-04T10:15:03Z{a40}\"}",
     .status = 400, .code = "malformed"},
    {"completion unknown member", "POST", "/v1/sessions/{S}/steps/1", W_CON, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": true}, \"device\": \"x\"}", .status = 400,
     .code = "malformed"},
    {"completion field of the wrong type", "POST", "/v1/sessions/{S}/steps/1", W_CON, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": \"yes\"}}", .status = 422, .code = "validation_failed",
     .field = "badge_shown", .records = 1},
    {"completion field as an integer", "POST", "/v1/sessions/{S}/steps/1", W_CON, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": 1}}", .status = 422, .code = "validation_failed",
     .field = "badge_shown", .records = 1},
    {"completion missing a required field", "POST", "/v1/sessions/{S}/steps/1", W_CON, .ctype = J,
     .body = "{\"data\": {}}", .status = 422, .code = "validation_failed", .field = "badge_shown",
     .records = 1},
    {"completion required field null", "POST", "/v1/sessions/{S}/steps/1", W_CON, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": null}}", .status = 422, .code = "validation_failed",
     .field = "badge_shown", .records = 1},
    {"completion refused by validate", "POST", "/v1/sessions/{S}/steps/1", W_CON, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": false}}", .status = 422, .code = "validation_failed",
     .field = "badge_shown", .records = 1},
    {"completion with an unknown field", "POST", "/v1/sessions/{S}/steps/1", W_CON, .ctype = J,
     .body = "{\"data\": {\"badge_shown\": true, \"roof_age\": 3}}", .status = 422,
     .code = "validation_failed", .field = "roof_age", .records = 1},
    {"completion in msgpack, wrong type", "POST", "/v1/sessions/{S}/steps/1", W_CON, .ctype = M,
     .body = RAW("\x81\xa4\x64\x61ta\x81\xab\x62\x61\x64ge_shown\xa3yes"), .status = 422,
     .code = "validation_failed", .field = "badge_shown", .records = 1},
    {"completion with 200 KB of text for a boolean", "POST", "/v1/sessions/{S}/steps/1", W_CON,
     .ctype = J, .body = "{\"data\": {\"badge_shown\": \"{a200000}\"}}", .status = 422,
     .code = "validation_failed", .field = "badge_shown", .records = 1},

    /* POST /v1/sessions/{id}/feedback. */
    {"feedback rating 6", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"rating\": 6, \"from\": \"customer\"}", .status = 400, .code = "malformed"},
    {"feedback rating 0", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"rating\": 0, \"from\": \"customer\"}", .status = 400, .code = "malformed"},
    {"feedback rating -2^63", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"rating\": -9223372036854775808, \"from\": \"customer\"}", .status = 400,
     .code = "malformed"},
    {"feedback rating text", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"rating\": \"5\", \"from\": \"customer\"}", .status = 400, .code = "malformed"},
    {"feedback rating float", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"rating\": 4.5, \"from\": \"customer\"}", .status = 400, .code = "malformed"},
    {"feedback rating bool", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"rating\": true, \"from\": \"customer\"}", .status = 400, .code = "malformed"},
    {"feedback msgpack uint64 rating", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = M,
     .body = RAW("\x82\xa6rating\xcf\xff\xff\xff\xff\xff\xff\xff\xff\xa4\x66rom\xa8\x63ustomer"),
     .status = 400, .code = "malformed"},
    {"feedback from a neighbour", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"rating\": 5, \"from\": \"neighbour\"}", .status = 400, .code = "malformed"},
    {"feedback from 1", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"rating\": 5, \"from\": 1}", .status = 400, .code = "malformed"},
    {"feedback without from", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"rating\": 5}", .status = 400, .code = "malformed"},
    {"feedback with nothing to say", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"from\": \"customer\"}", .status = 400, .code = "malformed"},
    {"feedback with only empty tags", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"from\": \"customer\", \"tags\": []}", .status = 400, .code = "malformed"},
    {"feedback with 33 tags", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"rating\": 5, \"from\": \"customer\", \"tags\": [{TAGS33}]}", .status = 400,
     .code = "malformed"},
    {"feedback with an empty tag", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"rating\": 5, \"from\": \"customer\", \"tags\": [\"\"]}", .status = 400,
     .code = "malformed"},
    {"feedback with a 65-byte tag", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"rating\": 5, \"from\": \"customer\", \"tags\": [\"{a65}\"]}", .status = 400,
     .code = "malformed"},
    {"feedback with a numeric tag", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"rating\": 5, \"from\": \"customer\", \"tags\": [7]}", .status = 400,
     .code = "malformed"},
    {"feedback tags as text", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"rating\": 5, \"from\": \"customer\", \"tags\": \"friendly\"}", .status = 400,
     .code = "malformed"},
    {"feedback comment of 4001 bytes", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"from\": \"customer\", \"comment\": \"{a4001}\"}", .status = 400,
     .code = "malformed"},
    {"feedback comment a number", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"from\": \"customer\", \"comment\": 12}", .status = 400, .code = "malformed"},
    {"feedback unknown member", "POST", "/v1/sessions/{S}/feedback", W_CON, .ctype = J,
     .body = "{\"rating\": 5, \"from\": \"customer\", \"mood\": \"happy\"}", .status = 400,
     .code = "malformed"},
    {"feedback on a non-UUID session", "POST", "/v1/sessions/1/feedback", W_CON, .ctype = J,
     .body = "{\"rating\": 5, \"from\": \"customer\"}", .status = 400, .code = "malformed",
     .known_status = 404, .known_code = "not_found"},
    {"feedback on an unknown session", "POST", "/v1/sessions/{U}/feedback", W_CON, .ctype = J,
     .body = "{\"rating\": 5, \"from\": \"customer\"}", .status = 404, .code = "not_found"},

    /* Blobs. */
    {"blob hash too short", "PUT", "/v1/blobs/abcdef", W_CON, .ctype = "image/jpeg", .body = "x",
     .status = 400, .code = "malformed"},
    {"blob hash of 63 digits", "PUT", "/v1/blobs/{a63}", W_CON, .ctype = "image/jpeg", .body = "x",
     .status = 400, .code = "malformed"},
    {"blob hash of 65 digits", "PUT", "/v1/blobs/{a65}", W_CON, .ctype = "image/jpeg", .body = "x",
     .status = 400, .code = "malformed"},
    {"blob hash not hex", "PUT", "/v1/blobs/{G64}", W_CON, .ctype = "image/jpeg", .body = "x",
     .status = 400, .code = "malformed"},
    {"blob hash in upper case", "PUT", "/v1/blobs/{HU}", W_CON, .ctype = "image/jpeg",
     .body = "bad input evidence", .status = 400, .code = "malformed"},
    {"blob named sha256:<hex>", "PUT", "/v1/blobs/sha256:{H}", W_CON, .ctype = "image/jpeg",
     .body = "bad input evidence", .status = 400, .code = "malformed"},
    {"blob hash mismatch", "PUT", "/v1/blobs/{a64}", W_CON, .ctype = "image/jpeg",
     .body = "bad input evidence", .status = 422, .code = "validation_failed"},
    {"blob one byte short of its hash", "PUT", "/v1/blobs/{H}", W_CON, .ctype = "image/jpeg",
     .body = "bad input evidenc", .status = 422, .code = "validation_failed"},
    {"blob empty body", "PUT", "/v1/blobs/{H}", W_CON, .ctype = "image/jpeg", .body = "",
     .status = 422, .code = "validation_failed"},
    {"blob over HANDSEL_MAX_BLOB", "PUT", "/v1/blobs/{BIG}", W_CON, .ctype = "image/jpeg",
     .gen = G_OVER_BLOB, .status = 413, .code = "too_large"},
    {"blob GET with a bad hash", "GET", "/v1/blobs/xyz", W_CON, .status = 400, .code = "malformed"},
    {"blob GET unknown", "GET", "/v1/blobs/{a64}", W_ADMIN, .status = 404, .code = "not_found"},

    /* Processes. */
    {"deploy under a bad name", "PUT", "/v1/processes/Bad_Name", W_AUTHOR, .ctype = "text/x-lua",
     .body = "return 1", .status = 400, .code = "malformed"},
    {"deploy under a 65-byte name", "PUT", "/v1/processes/{a65}", W_AUTHOR, .ctype = "text/x-lua",
     .body = "return 1", .status = 400, .code = "malformed"},
    {"deploy under a name with a leading dash", "PUT", "/v1/processes/-x", W_AUTHOR,
     .ctype = "text/x-lua", .body = "return 1", .status = 400, .code = "malformed"},
    {"deploy an empty source", "PUT", "/v1/processes/solar-consult", W_AUTHOR,
     .ctype = "text/x-lua", .body = "", .status = 400, .code = "malformed"},
    {"deploy a syntax error", "PUT", "/v1/processes/broken", W_AUTHOR, .ctype = "text/x-lua",
     .body = "return process {\n  name = \"broken\",\n  run = function(visit)\n    local x = = 1\n"
             "  end,\n}\n",
     .status = 422, .code = "validation_failed", .field = "4"},
    {"deploy a script that raises", "PUT", "/v1/processes/broken", W_AUTHOR, .ctype = "text/x-lua",
     .body = "\nerror(\"boom\")\n", .status = 422, .code = "validation_failed", .field = "2",
     .known_status = 422, .known_code = "validation_failed", .flags = F_KNOWN_NO_FIELD},
    {"deploy a script that returns no process", "PUT", "/v1/processes/broken", W_AUTHOR,
     .ctype = "text/plain", .body = "return 42\n", .status = 422, .code = "validation_failed"},
    {"deploy under another name", "PUT", "/v1/processes/other", W_AUTHOR, .ctype = "text/x-lua",
     .body = "return process { name = \"broken\", run = function(visit) end }\n", .status = 422,
     .code = "validation_failed"},
    {"deploy Lua bytecode", "PUT", "/v1/processes/broken", W_AUTHOR, .ctype = "text/x-lua",
     .body = RAW("\x1bLuaT\x00\x19\x93\r\n\x1a\n\x04\x08\x08"), .status = 422,
     .code = "validation_failed"},
    {"deploy a script that loops forever", "PUT", "/v1/processes/broken", W_AUTHOR,
     .ctype = "text/x-lua", .body = "while true do end\n", .status = 422,
     .code = "validation_failed"},
    {"deploy a script that reads files", "PUT", "/v1/processes/broken", W_AUTHOR,
     .ctype = "text/x-lua", .body = "return io.open(\"/etc/passwd\"):read(\"a\")\n", .status = 422,
     .code = "validation_failed"},
    {"deploy a source over HANDSEL_MAX_BODY", "PUT", "/v1/processes/broken", W_AUTHOR,
     .ctype = "text/x-lua", .gen = G_OVER_LUA, .status = 413, .code = "too_large"},
    {"activate without version", "POST", "/v1/processes/solar-consult/activate", W_AUTHOR,
     .ctype = J, .body = "{}", .status = 400, .code = "malformed"},
    {"activate version v1", "POST", "/v1/processes/solar-consult/activate", W_AUTHOR, .ctype = J,
     .body = "{\"version\": \"v1\"}", .status = 400, .code = "malformed"},
    {"activate version as a number", "POST", "/v1/processes/solar-consult/activate", W_AUTHOR,
     .ctype = J, .body = "{\"version\": 1}", .status = 400, .code = "malformed"},
    {"activate version in upper case", "POST", "/v1/processes/solar-consult/activate", W_AUTHOR,
     .ctype = J, .body = "{\"version\": \"{F64}\"}", .status = 400, .code = "malformed"},
    {"activate an unknown version", "POST", "/v1/processes/solar-consult/activate", W_AUTHOR,
     .ctype = J, .body = "{\"version\": \"{a64}\"}", .status = 409, .code = "conflict"},
    {"activate for a process not deployed", "POST", "/v1/processes/other/activate", W_AUTHOR,
     .ctype = J, .body = "{\"version\": \"{V}\"}", .status = 404, .code = "not_found"},
    {"activate with an unknown member", "POST", "/v1/processes/solar-consult/activate", W_AUTHOR,
     .ctype = J, .body = "{\"version\": \"{V}\", \"force\": true}", .status = 400,
     .code = "malformed", .known_status = 200, .known_code = "-"},
    {"activate under a bad name", "POST", "/v1/processes/Bad_Name/activate", W_AUTHOR, .ctype = J,
     .body = "{\"version\": \"{V}\"}", .status = 400, .code = "malformed", .known_status = 404,
     .known_code = "not_found"},
    {"GET a process with a bad name", "GET", "/v1/processes/Bad_Name", W_AUTHOR, .status = 400,
     .code = "malformed", .known_status = 404, .known_code = "not_found"},
    {"GET an unknown process", "GET", "/v1/processes/no-such-process", W_AUTHOR, .status = 404,
     .code = "not_found"},

    /* Tokens. */
    {"token with role root", "POST", "/v1/tokens", W_ADMIN, .ctype = J,
     .body = "{\"role\": \"root\"}", .status = 400, .code = "malformed"},
    {"token with role Admin", "POST", "/v1/tokens", W_ADMIN, .ctype = J,
     .body = "{\"role\": \"Admin\"}", .status = 400, .code = "malformed"},
    {"token without role", "POST", "/v1/tokens", W_ADMIN, .ctype = J, .body = "{\"name\": \"Sam\"}",
     .status = 400, .code = "malformed"},
    {"token with role 7", "POST", "/v1/tokens", W_ADMIN, .ctype = J, .body = "{\"role\": 7}",
     .status = 400, .code = "malformed"},
    {"token with a 129-byte name", "POST", "/v1/tokens", W_ADMIN, .ctype = J,
     .body = "{\"role\": \"contractor\", \"name\": \"{a129}\"}", .status = 400,
     .code = "malformed"},
    {"token with a numeric name", "POST", "/v1/tokens", W_ADMIN, .ctype = J,
     .body = "{\"role\": \"contractor\", \"name\": 5}", .status = 400, .code = "malformed"},
    {"token with an empty subject", "POST", "/v1/tokens", W_ADMIN, .ctype = J,
     .body = "{\"role\": \"contractor\", \"subject\": \"\"}", .status = 400, .code = "malformed"},
    {"token body a list", "POST", "/v1/tokens", W_ADMIN, .ctype = J, .body = "[\"admin\"]",
     .status = 400, .code = "malformed"},
    {"revoke a non-UUID token", "DELETE", "/v1/tokens/abc", W_ADMIN, .status = 400,
     .code = "malformed", .known_status = 404, .known_code = "not_found"},
    {"revoke an unknown token", "DELETE", "/v1/tokens/{U}", W_ADMIN, .status = 404,
     .code = "not_found"},

    /* Limits of the connection. */
    {"body over HANDSEL_MAX_BODY", "POST", "/v1/sessions", W_CON, .ctype = J, .gen = G_OVER_BODY,
     .status = 413, .code = "too_large"},
    {"content-length over HANDSEL_MAX_BODY", "POST", "/v1/sessions", W_CON, .ctype = J,
     .gen = G_CL_OVER, .status = 413, .code = "too_large", .flags = F_RESET},
    {"content-length not a number", "POST", "/v1/sessions", W_CON, .ctype = J, .gen = G_CL_BAD,
     .flags = F_RESET},
    {"too many header fields", "GET", "/v1/processes", W_AUTHOR, .gen = G_MANY_HEADERS,
     .flags = F_RESET},
    {"header list too large", "GET", "/v1/processes", W_AUTHOR, .gen = G_BIG_HEADER,
     .flags = F_RESET},
    {"HTTP/1.1 on the port", "GET", "/healthz", W_NONE, .gen = G_HTTP11, .status = 505},
    {"HTTP/1.0 on the port", "POST", "/v1/sessions", W_NONE, .gen = G_HTTP10, .status = 505},

    /* The audit export's filters. */
    {"audit export, misspelt filter", "GET", "/v1/audit?sesion=x", W_COMP, .status = 400,
     .code = "malformed"},
    {"audit export, unknown format", "GET", "/v1/audit?format=xml", W_COMP, .status = 400,
     .code = "malformed"},
    {"audit export, not a time", "GET", "/v1/audit?from=yesterday", W_COMP, .status = 400,
     .code = "malformed"},
    {"audit export, from after to", "GET",
     "/v1/audit?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", W_COMP, .status = 400,
     .code = "malformed"},
    {"audit export, not a session id", "GET", "/v1/audit?session=abc", W_COMP, .status = 400,
     .code = "malformed"},
    {"audit export, unknown result", "GET", "/v1/audit?result=maybe", W_COMP, .status = 400,
     .code = "malformed"},

    /* Content stats. */
    {"content stats without a process", "GET", "/v1/content/stats", W_AUTHOR, .status = 400,
     .code = "malformed"},
    {"content stats of a bad process name", "GET", "/v1/content/stats?process=Solar_Consult",
     W_AUTHOR, .status = 400, .code = "malformed"},
    {"content stats of a 65-byte process name", "GET", "/v1/content/stats?process={a65}", W_AUTHOR,
     .status = 400, .code = "malformed"},
    {"content stats of an unknown process", "GET", "/v1/content/stats?process=no-such-process",
     W_AUTHOR, .status = 404, .code = "not_found"},
    {"content stats for a contractor", "GET", "/v1/content/stats?process=solar-consult", W_CON,
     .status = 403, .code = "forbidden"},
};

/* ---- building requests ---- */

/* Expands the placeholders of a case's path, authorization or body into out:
 *   {S} the session, {SU} it in upper case, {U} an unknown session id, {H} the uploaded blob's
 *   hash, {HU} it in upper case, {BIG} the hash of the over-size blob, {V} the deployed version,
 *   {T} the compliance token's id, {TOK} sam's secret, {TAGS33} 33 JSON tags, and {aN}, {AN},
 *   {FN}, {GN}, {NN}: N times 'a', 'A', 'F', 'g' or '9'. */
static void expand(hs_buf_t *out, const char *s, const char *big_hash) {
  while (*s != '\0') {
    const char *close = s[0] == '{' ? strchr(s, '}') : NULL;
    char key[32];
    size_t klen = close != NULL ? (size_t)(close - s - 1) : 0;
    if (close == NULL || klen == 0 || klen >= sizeof key) {
      hs_buf_append(out, s, 1);
      s++;
      continue;
    }
    memcpy(key, s + 1, klen);
    key[klen] = '\0';
    const char *sub = NULL;
    char upper[65];
    if (strcmp(key, "S") == 0) {
      sub = g_session;
    } else if (strcmp(key, "SU") == 0 || strcmp(key, "HU") == 0) {
      const char *src = key[0] == 'S' ? g_session : g_blob;
      size_t i = 0;
      for (; src[i] != '\0' && i < sizeof upper - 1; i++) {
        upper[i] = (char)toupper((unsigned char)src[i]);
      }
      upper[i] = '\0';
      sub = upper;
    } else if (strcmp(key, "U") == 0) {
      sub = g_unknown;
    } else if (strcmp(key, "H") == 0) {
      sub = g_blob;
    } else if (strcmp(key, "BIG") == 0) {
      sub = big_hash;
    } else if (strcmp(key, "V") == 0) {
      sub = g_version;
    } else if (strcmp(key, "T") == 0) {
      sub = g_comp_id;
    } else if (strcmp(key, "TOK") == 0) {
      sub = g_token[W_CON];
    } else if (strcmp(key, "TAGS33") == 0) {
      for (int i = 0; i < 33; i++) {
        hs_buf_printf(out, "%s\"t%d\"", i > 0 ? ", " : "", i);
      }
      sub = "";
    } else if (strchr("aAFGN", key[0]) != NULL && isdigit((unsigned char)key[1])) {
      char c = key[0] == 'G' ? 'g' : key[0] == 'N' ? '9' : key[0];
      for (long n = strtol(key + 1, NULL, 10); n > 0; n--) {
        hs_buf_append(out, &c, 1);
      }
      sub = "";
    }
    if (sub == NULL) {
      hs_buf_append(out, s, 1);
      s++;
      continue;
    }
    hs_buf_puts(out, sub);
    s = close + 1;
  }
}

/* Appends a msgpack str header and the bytes of s. */
static void mp_str(hs_buf_t *b, const char *s) {
  size_t n = strlen(s);
  uint8_t h = (uint8_t)(0xa0 | n);
  hs_buf_append(b, &h, 1);
  hs_buf_append(b, s, n);
}

/* The body of a generated case. */
static void build_body(const bad_case_t *k, hs_buf_t *b, const void *blob) {
  switch (k->gen) {
    case G_OVER_BODY:
      hs_buf_puts(b, "{\"process\": \"solar-consult\", \"customer\": {\"name\": \"");
      while (b->len < MAX_BODY - 1) {
        hs_buf_puts(b, "aaaaaaaaaaaaaaaa");
      }
      hs_buf_puts(b, "\"}}");
      return;
    case G_CL_OVER:
    case G_CL_BAD:
      hs_buf_puts(b, "{\"process\": \"solar-consult\"}");
      return;
    case G_DEEP_JSON:
      hs_buf_puts(b, "{\"process\": \"solar-consult\", \"customer\": ");
      for (int i = 0; i < 16; i++) {
        hs_buf_puts(b, "{\"a\": ");
      }
      hs_buf_puts(b, "1");
      for (int i = 0; i < 16; i++) {
        hs_buf_puts(b, "}");
      }
      hs_buf_puts(b, "}");
      return;
    case G_DEEP_MP:
      hs_buf_append(b, "\x82", 1);
      mp_str(b, "process");
      mp_str(b, "solar-consult");
      mp_str(b, "customer");
      for (int i = 0; i < 16; i++) {
        hs_buf_append(b, "\x81", 1);
        mp_str(b, "a");
      }
      hs_buf_append(b, "\x01", 1);
      return;
    case G_WIDE_MAP_MP:
      hs_buf_append(b, "\x82", 1);
      mp_str(b, "process");
      mp_str(b, "solar-consult");
      mp_str(b, "customer");
      hs_buf_append(b, "\xde\x10\x01", 3); /* map 16 of 4097 */
      for (int i = 0; i < 4097; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%04d", i);
        mp_str(b, key);
        hs_buf_append(b, "\xc0", 1);
      }
      return;
    case G_WIDE_ARR:
      hs_buf_puts(b, "{\"from\": \"customer\", \"tags\": [");
      for (int i = 0; i < 4097; i++) {
        hs_buf_puts(b, i > 0 ? ",\"t\"" : "\"t\"");
      }
      hs_buf_puts(b, "]}");
      return;
    case G_MANY_VALUES:
      hs_buf_puts(b, "{\"process\": \"solar-consult\", \"customer\": {");
      for (int a = 0; a < 17; a++) {
        hs_buf_printf(b, "%s\"k%d\": [", a > 0 ? ", " : "", a);
        for (int i = 0; i < 4000; i++) {
          hs_buf_puts(b, i > 0 ? ",1" : "1");
        }
        hs_buf_puts(b, "]");
      }
      hs_buf_puts(b, "}}");
      return;
    case G_LONG_STR:
      hs_buf_puts(b, "{\"process\": \"solar-consult\", \"customer\": {\"name\": \"");
      for (int i = 0; i < 256 * 1024 + 1; i++) {
        hs_buf_append(b, "a", 1);
      }
      hs_buf_puts(b, "\"}}");
      return;
    case G_OVER_BLOB:
      hs_buf_append(b, blob, MAX_BLOB + 1);
      return;
    case G_OVER_LUA:
      hs_buf_puts(b, "return process { name = \"broken\", run = function(visit) end }\n");
      while (b->len <= MAX_BODY) {
        hs_buf_puts(b, "-- padding padding padding padding padding padding padding padding\n");
      }
      return;
    default:
      if (k->len > 0) {
        hs_buf_append(b, k->body, k->len);
      } else if (k->body != NULL) {
        expand(b, k->body, "");
      }
      return;
  }
}

/* ---- the database ---- */

static void snapshot(long long out[N_TABLES]) {
  static const char sql[] =
      "SELECT (SELECT count(*) FROM brands), (SELECT count(*) FROM process_versions),"
      " (SELECT count(*) FROM processes), (SELECT count(*) FROM sessions),"
      " (SELECT count(*) FROM step_completions), (SELECT count(*) FROM blobs),"
      " (SELECT count(*) FROM feedback), (SELECT count(*) FROM validation_records),"
      " (SELECT count(*) FROM tokens)";
  PGresult *r = hs_test_db_query(g_db, sql, 0, NULL);
  if (r == NULL || PQntuples(r) != 1 || PQnfields(r) != N_TABLES) {
    fail_msg("counting the rows of every table failed");
  }
  for (int i = 0; i < N_TABLES; i++) {
    out[i] = strtoll(PQgetvalue(r, 0, i), NULL, 10);
  }
  PQclear(r);
}

/* ---- the command line and the set-up ---- */

/* Runs `HANDSEL_BIN args` through the shell (the arguments are names this test made) and
 * returns its exit code; out gets stdout and stderr. */
static int cli(char *out, size_t cap, const char *fmt, ...) {
  char args[512], cmd[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  const char *bin = getenv("HANDSEL_BIN");
  snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", bin != NULL ? bin : "handsel", args);
  FILE *p = popen(cmd, "r");
  if (p == NULL) {
    return -1;
  }
  size_t n = fread(out, 1, cap - 1, p);
  out[n] = '\0';
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* `handsel token create`: the secret is the last line, the id the second word of the first. */
static void make_token(char secret[72], char *id, const char *brand, const char *role,
                       const char *subject) {
  char out[2048];
  int rc =
      cli(out, sizeof out, "token create --brand %s --role %s --subject %s", brand, role, subject);
  size_t n = strlen(out);
  while (n > 0 && out[n - 1] == '\n') {
    out[--n] = '\0';
  }
  const char *last = strrchr(out, '\n');
  last = last != NULL ? last + 1 : out;
  if (rc != 0 || strncmp(last, "hst_", 4) != 0 || strlen(last) != 68) {
    fail_msg("handsel token create --brand %s --role %s failed (%d): %s", brand, role, rc, out);
  }
  snprintf(secret, 72, "%.68s", last);
  if (id != NULL && sscanf(out, "token %36s", id) != 1) {
    fail_msg("no token id in: %s", out);
  }
}

static int connect_again(void) {
  hs_h2_close(g_conn);
  g_conn = NULL;
  return hs_h2_connect(&g_conn, g_srv.port, NULL);
}

/* One request on the shared connection (reconnecting when it is gone). The response is owned
 * by the connection. */
static hs_h2_response_t *send_request(const char *method, const char *path, who_t who,
                                      const char *authz, const char *ctype,
                                      const hs_h2_header_t *extra, size_t n_extra, const void *body,
                                      size_t len, bool has_body) {
  if ((g_conn == NULL || hs_h2_closed(g_conn)) && connect_again() != 0) {
    fail_msg("cannot connect to the server on port %d", g_srv.port);
  }
  hs_h2_header_t h[MAX_HEADERS + 128];
  size_t n = 0;
  char bearer[128];
  if (who == W_RAW) {
    h[n++] = (hs_h2_header_t){"authorization", authz};
  } else if (who == W_DEV) {
    h[n++] = (hs_h2_header_t){"x-handsel-dev-brand", g_brand};
    h[n++] = (hs_h2_header_t){"x-handsel-dev-role", "admin"};
    h[n++] = (hs_h2_header_t){"x-handsel-dev-subject", "sam"};
  } else if (who != W_NONE) {
    snprintf(bearer, sizeof bearer, "Bearer %s", g_token[who]);
    h[n++] = (hs_h2_header_t){"authorization", bearer};
  }
  if (ctype != NULL) {
    h[n++] = (hs_h2_header_t){"content-type", ctype};
  }
  for (size_t i = 0; i < n_extra && n < sizeof h / sizeof h[0]; i++) {
    h[n++] = extra[i];
  }
  hs_h2_response_t *r = NULL;
  hs_h2_request(g_conn, method, path, h, n, has_body ? (body != NULL ? body : "") : NULL,
                has_body ? len : 0, TIMEOUT_MS, &r);
  return r;
}

static void read_source(const char *rel, hs_buf_t *out) {
  const char *root = getenv("HANDSEL_SOURCE_DIR");
  char path[HS_TEST_PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", root != NULL ? root : ".", rel);
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    fail_msg("cannot read %s (is HANDSEL_SOURCE_DIR set?)", path);
  }
  char chunk[4096];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
    hs_buf_append(out, chunk, n);
  }
  fclose(f);
}

/* The decoded body of a response, or NULL. */
static hs_value_t *decode(const hs_h2_response_t *r, hs_arena_t *a) {
  hs_value_t *v = NULL;
  hs_err_t err;
  if (r == NULL || r->body.len == 0 || hs_test_decode_body(r, a, &v, &err) != HS_OK) {
    return NULL;
  }
  return v;
}

static const char *body_text(const hs_h2_response_t *r) {
  static char text[400];
  size_t n = r != NULL ? r->body.len : 0;
  if (n >= sizeof text) {
    n = sizeof text - 1;
  }
  for (size_t i = 0; i < n; i++) {
    unsigned char c = r->body.data[i];
    text[i] = c >= 0x20 && c < 0x7f ? (char)c : '.';
  }
  text[n] = '\0';
  return text;
}

static int group_setup(void **state) {
  (void)state;
  const char *db = hs_test_db_must();
  g_db = hs_test_db_connect(db);
  if (g_db == NULL) {
    return -1;
  }
  hs_api_unique_name(g_brand, "bad");
  hs_api_unique_name(g_other, "bado");
  char out[2048];
  if (cli(out, sizeof out, "brand create %s", g_brand) != 0 ||
      cli(out, sizeof out, "brand create %s", g_other) != 0) {
    fprintf(stderr, "handsel brand create failed: %s\n", out);
    return -1;
  }
  make_token(g_token[W_ADMIN], NULL, g_brand, "admin", "ann");
  make_token(g_token[W_AUTHOR], NULL, g_brand, "author", "pat");
  make_token(g_token[W_CON], NULL, g_brand, "contractor", "sam");
  make_token(g_token[W_CON2], NULL, g_brand, "contractor", "kim");
  make_token(g_token[W_COMP], g_comp_id, g_brand, "compliance", "cory");
  make_token(g_token[W_OTHER_ADMIN], NULL, g_other, "admin", "ann");
  make_token(g_token[W_OTHER_CON], NULL, g_other, "contractor", "sam");
  make_token(g_token[W_OTHER_AUTH], NULL, g_other, "author", "pat");
  char revoked_id[40];
  make_token(g_token[W_REVOKED], revoked_id, g_brand, "contractor", "sam");
  if (cli(out, sizeof out, "token revoke %s", revoked_id) != 0) {
    fprintf(stderr, "handsel token revoke failed: %s\n", out);
    return -1;
  }
  hs_uuid_v4(g_unknown);

  char env_db[HS_TEST_PATH_MAX];
  snprintf(env_db, sizeof env_db, "HANDSEL_DB=%s", db);
  /* A production server: the development headers must not be accepted. */
  const char *env[] = {env_db,
                       "HANDSEL_DEV_AUTH=0",
                       "HANDSEL_WORKERS=2",
                       "HANDSEL_MAX_BLOB=65536",
                       "HANDSEL_RATE_PER_S=100000",
                       "HANDSEL_RATE_BURST=100000",
                       "HANDSEL_LOG_LEVEL=warn",
                       NULL};
  hs_test_server_opts_t o = {.env = env};
  if (hs_test_server_start(&g_srv, &o) != 0 || hs_test_server_wait_ready(&g_srv, 15000) != 0) {
    hs_test_server_dump_stderr(&g_srv, 4000);
    fprintf(stderr, "the server did not come up, or /readyz did not answer 200 within 15 s\n");
    return -1;
  }

  /* The world: a deployed process, a started session, an uploaded blob. */
  hs_buf_t src;
  hs_buf_init(&src, 0);
  read_source("processes/solar-consult.lua", &src);
  hs_arena_t a;
  hs_arena_init(&a, 0);
  hs_h2_response_t *r = send_request("PUT", "/v1/processes/solar-consult", W_AUTHOR, NULL,
                                     "text/x-lua", NULL, 0, src.data, src.len, true);
  hs_value_t *v = decode(r, &a);
  const char *s = hs_test_str_at(v, "version");
  if (r == NULL || r->status != 201 || s == NULL) {
    fprintf(stderr, "deploying solar-consult: %d %s\n", r != NULL ? r->status : 0, body_text(r));
    return -1;
  }
  snprintf(g_version, sizeof g_version, "%s", s);
  hs_buf_free(&src);

  static const char start[] = "{\"process\": \"solar-consult\", \"customer\": {\"name\": \"Ada\"}}";
  r = send_request("POST", "/v1/sessions", W_CON, NULL, J, NULL, 0, start, strlen(start), true);
  v = decode(r, &a);
  s = hs_test_str_at(v, "session.id");
  if (r == NULL || r->status != 201 || s == NULL) {
    fprintf(stderr, "starting a session: %d %s\n", r != NULL ? r->status : 0, body_text(r));
    return -1;
  }
  snprintf(g_session, sizeof g_session, "%s", s);

  static const char evidence[] = "bad input evidence";
  hs_api_sha256_hex(evidence, strlen(evidence), g_blob);
  char path[128];
  snprintf(path, sizeof path, "/v1/blobs/%s", g_blob);
  r = send_request("PUT", path, W_CON, NULL, "image/jpeg", NULL, 0, evidence, strlen(evidence),
                   true);
  if (r == NULL || r->status != 201) {
    fprintf(stderr, "uploading a blob: %d %s\n", r != NULL ? r->status : 0, body_text(r));
    return -1;
  }
  hs_arena_reset(&a);
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  hs_h2_close(g_conn);
  hs_test_server_stop(&g_srv);
  PQfinish(g_db);
  return 0;
}

/* ---- HTTP/1 on the port ---- */

/* Sends an HTTP/1.x request on a plain socket and returns the status of the answer, 0 for
 * none. */
static int http1_status(const char *method, const char *path, const char *version) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_srv.port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    if (fd >= 0) {
      close(fd);
    }
    return 0;
  }
  char req[256];
  int n = snprintf(req, sizeof req, "%s %s %s\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
                   method, path, version);
  if (write(fd, req, (size_t)n) != n) {
    close(fd);
    return 0;
  }
  char buf[1024];
  size_t got = 0;
  long long deadline = hs_test_now_ms() + 5000;
  while (got < sizeof buf - 1 && hs_test_now_ms() < deadline) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 200) <= 0) {
      continue;
    }
    ssize_t k = read(fd, buf + got, sizeof buf - 1 - got);
    if (k <= 0) {
      break;
    }
    got += (size_t)k;
  }
  close(fd);
  buf[got] = '\0';
  int status = 0;
  if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
    return 0;
  }
  return status;
}

/* ---- the run ---- */

typedef struct outcome {
  int status;
  char code[64];
  bool reset;    /* the stream was reset or the connection closed without an answer */
  char why[512]; /* what else was wrong with the answer, "" when nothing */
} outcome_t;

/* The server still answers: GET /healthz on the connection, if it is still open, and on a new
 * one. Says what failed in got->why. */
static void check_still_serving(outcome_t *got) {
  if (g_conn != NULL && !hs_h2_closed(g_conn)) {
    hs_h2_response_t *r = NULL;
    hs_h2_request(g_conn, "GET", "/healthz", NULL, 0, NULL, 0, TIMEOUT_MS, &r);
    if (r == NULL || r->status != 200) {
      snprintf(got->why, sizeof got->why,
               "the same connection does not answer /healthz afterwards (%d)",
               r != NULL ? r->status : 0);
      return;
    }
  }
  int status = 0;
  hs_h2_get(g_srv.port, false, "/healthz", NULL, 0, TIMEOUT_MS, &status, NULL);
  if (status != 200 || !hs_test_server_running(&g_srv)) {
    hs_test_server_dump_stderr(&g_srv, 4000);
    snprintf(got->why, sizeof got->why, "the server does not answer /healthz afterwards (%d)",
             status);
  }
}

static void run_case(const bad_case_t *k, const void *blob, const char *big_hash, outcome_t *got) {
  memset(got, 0, sizeof *got);
  if (k->gen == G_HTTP11 || k->gen == G_HTTP10) {
    got->status = http1_status(k->method, k->path, k->gen == G_HTTP11 ? "HTTP/1.1" : "HTTP/1.0");
    check_still_serving(got);
    return;
  }
  hs_buf_t path, authz, body;
  hs_buf_init(&path, 0);
  hs_buf_init(&authz, 0);
  hs_buf_init(&body, 0);
  expand(&path, k->path, big_hash);
  hs_buf_append(&path, "", 1);
  if (k->authz != NULL) {
    expand(&authz, k->authz, big_hash);
  }
  hs_buf_append(&authz, "", 1);
  build_body(k, &body, blob);

  enum { N_MANY = 100 };
  hs_h2_header_t extra[N_MANY];
  char names[N_MANY][16];
  char *big = NULL;
  size_t n_extra = 0;
  if (k->gen == G_CL_OVER) {
    extra[n_extra++] = (hs_h2_header_t){"content-length", "2000000"};
  } else if (k->gen == G_CL_BAD) {
    extra[n_extra++] = (hs_h2_header_t){"content-length", "abc"};
  } else if (k->gen == G_MANY_HEADERS) {
    for (int i = 0; i < N_MANY; i++) {
      snprintf(names[i], sizeof names[i], "x-h%d", i);
      extra[n_extra++] = (hs_h2_header_t){names[i], "v"};
    }
  } else if (k->gen == G_BIG_HEADER) {
    big = malloc(20001);
    if (big == NULL) {
      abort();
    }
    memset(big, 'b', 20000);
    big[20000] = '\0';
    extra[n_extra++] = (hs_h2_header_t){"x-big", big};
  }
  bool has_body = k->body != NULL || k->gen != G_NONE || k->ctype != NULL;
  if (k->flags & F_RESET) {
    connect_again(); /* a reset may take the connection with it: use a fresh one */
  }
  hs_h2_response_t *r =
      send_request(k->method, (const char *)path.data, k->who, (const char *)authz.data, k->ctype,
                   extra, n_extra, body.data, body.len, has_body);
  if (r != NULL && r->status != 0 && r->end_stream) {
    got->status = r->status;
    hs_arena_t a;
    hs_arena_init(&a, 0);
    hs_value_t *v = decode(r, &a);
    const char *code = hs_test_str_at(v, "error.code");
    const char *msg = hs_test_str_at(v, "error.message");
    snprintf(got->code, sizeof got->code, "%s", code != NULL ? code : "-");
    if (k->code != NULL && k->status == r->status && (msg == NULL || msg[0] == '\0')) {
      snprintf(got->why, sizeof got->why, "the error has no message: %s", body_text(r));
    }
    if (k->field != NULL && k->status == r->status) {
      const hs_value_t *fields = hs_api_at(v, "error.fields");
      const hs_value_t *f =
          fields != NULL && fields->type == HS_V_MAP ? hs_map_get(fields, k->field) : NULL;
      if (f == NULL || f->type != HS_V_STR || f->as.str.len == 0) {
        snprintf(got->why, sizeof got->why, "error.fields has no message for \"%s\": %s", k->field,
                 body_text(r));
      }
    }
    hs_arena_reset(&a);
  } else {
    got->reset = true;
    got->status = r != NULL ? r->status : 0;
    snprintf(got->code, sizeof got->code, "%s",
             r != NULL && r->reset_by_peer ? "(stream reset)" : "(no answer)");
  }
  if (got->reset || (k->flags & F_RESET)) {
    check_still_serving(got);
  }
  free(big);
  hs_buf_free(&path);
  hs_buf_free(&authz);
  hs_buf_free(&body);
}

static void test_bad_input(void **state) {
  (void)state;
  size_t n = sizeof k_cases / sizeof k_cases[0];
  assert_true(n >= 100);
  /* The over-size blob, named by its own hash so that only its size is wrong. */
  static uint8_t blob[MAX_BLOB + 1];
  for (size_t i = 0; i < MAX_BLOB + 1; i++) {
    blob[i] = (uint8_t)(i * 7 + 3);
  }
  char big_hash[65];
  hs_api_sha256_hex(blob, MAX_BLOB + 1, big_hash);

  int failures = 0, n_known = 0;
  long long started = hs_test_now_ms();
  for (size_t i = 0; i < n; i++) {
    const bad_case_t *k = &k_cases[i];
    long long before[N_TABLES], after[N_TABLES];
    snapshot(before);
    outcome_t got;
    run_case(k, blob, big_hash, &got);
    snapshot(after);

    bool ok;
    if (k->flags & F_RESET) {
      /* Refused by a reset, by 431, or by the documented error. */
      ok = got.reset || got.status == 431 ||
           (k->status != 0 && got.status == k->status &&
            (k->code == NULL || strcmp(got.code, k->code) == 0));
    } else {
      ok = !got.reset && got.status == k->status &&
           (k->code == NULL || strcmp(got.code, k->code) == 0);
    }
    ok = ok && got.why[0] == '\0';
    bool known = !ok && k->known_status != 0 && got.status == k->known_status &&
                 strcmp(got.code, k->known_code) == 0 &&
                 (got.why[0] == '\0' || (k->flags & F_KNOWN_NO_FIELD));
    char rows[256] = "";
    bool rows_ok = true;
    for (int t = 0; t < N_TABLES; t++) {
      long long want = before[t] + (t == T_VALIDATION_RECORDS ? k->records : 0);
      if (after[t] != want) {
        size_t used = strlen(rows);
        snprintf(rows + used, sizeof rows - used, " %s %+lld (expected %+lld);", k_tables[t],
                 after[t] - before[t], want - before[t]);
        rows_ok = false;
      }
    }
    known = known && rows_ok;
    ok = ok && rows_ok;
    printf("%3zu %-48s %3d %-20s%s%s\n", i + 1, k->name, got.status, got.code,
           ok      ? ""
           : known ? "  KNOWN DIFFERENCE from proto/README.md"
                   : "  MISMATCH",
           rows);
    if (known) {
      printf("    documented: %d %s%s\n", k->status, k->code != NULL ? k->code : "-",
             k->field != NULL ? " with error.fields" : "");
      n_known++;
    } else if (!ok) {
      printf("    expected %d %s%s\n", k->status, k->code != NULL ? k->code : "-",
             (k->flags & F_RESET) ? " (or a reset, or 431)" : "");
      if (got.why[0] != '\0') {
        printf("    %s\n", got.why);
      }
      failures++;
    }
    fflush(stdout);
  }
  printf("%zu cases in %lld ms: %d mismatched, %d known differences from proto/README.md\n", n,
         hs_test_now_ms() - started, failures, n_known);
  assert_true(hs_test_server_running(&g_srv));
  if (failures > 0) {
    fail_msg("%d of %zu bad-input cases did not get the documented answer or changed the "
             "database",
             failures, n);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_input),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
