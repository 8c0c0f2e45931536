/* Starts and stops the real `handsel serve` binary for integration tests.
 *
 * The binary is the one named by the HANDSEL_BIN environment variable (ctest sets it). Each
 * server listens on a free loopback port, gets its own stderr file under HANDSEL_TEST_TMP, and
 * is killed when the test tears down, when the test process exits, or when the thread that
 * started it dies (PR_SET_PDEATHSIG), so a failed test never leaves a server running.
 *
 * Return values follow server/core/error.h: 0 or a negative HS_E* code. */
#ifndef HS_TEST_SERVER_H
#define HS_TEST_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define HS_TEST_PATH_MAX 512
#define HS_TEST_MAX_ENV  32

typedef struct hs_test_server {
  pid_t pid;                                   /* 0 when not running (or already reaped) */
  int port;                                    /* the loopback port it listens on */
  bool tls;                                    /* started with HANDSEL_TLS_CERT / HANDSEL_TLS_KEY */
  bool exited;                                 /* reaped; exit_status is valid */
  int exit_status;                             /* raw wait status, see <sys/wait.h> */
  char stderr_path[HS_TEST_PATH_MAX];          /* the file that holds its stderr and stdout */
  char env[HS_TEST_MAX_ENV][HS_TEST_PATH_MAX]; /* the extra "NAME=value" entries it got */
  size_t n_env;
} hs_test_server_t;

/* Options for hs_test_server_start. A zeroed struct starts a plain h2c server with the
 * binary's defaults. */
typedef struct hs_test_server_opts {
  const char *const *env; /* NULL-terminated list of "NAME=value", borrowed; may be NULL */
  bool tls;               /* also pass a self-signed certificate (made once per process) */
  bool no_wait;           /* return as soon as the process is started, without /healthz */
} hs_test_server_opts_t;

/* The directory for test files (HANDSEL_TEST_TMP, else /tmp/handsel-test), created on first
 * use. The returned string is static. */
const char *hs_test_tmpdir(void);

/* Makes (once per process) a self-signed EC P-256 certificate for 127.0.0.1 / localhost with
 * OpenSSL's C API and returns the paths of its PEM files (static strings). */
int hs_test_tls_files(const char **cert_path, const char **key_path);

/* Starts `HANDSEL_BIN serve` with HANDSEL_LISTEN=127.0.0.1:<free port>, the inherited
 * environment and opts->env on top, then polls GET /healthz until it answers 200 (at most
 * ~15 s). If the process exits early (say, the port was taken meanwhile), it retries on
 * another port a few times. On failure the process is killed, *s says why in its stderr file,
 * and the return value is negative. */
int hs_test_server_start(hs_test_server_t *s, const hs_test_server_opts_t *opts);

/* Shorthand: starts with the given NULL-terminated environment list (may be NULL), h2c only,
 * and fails the current cmocka test if the server does not come up. */
void hs_test_server_must_start(hs_test_server_t *s, const char *const *env, bool tls);

/* Polls GET /readyz until it answers 200 (the database is reachable and migrated), at most
 * timeout_ms. Returns 0, HS_EIO when the process exited, or HS_EUNAVAIL at the deadline. Tests
 * that use the database call it after starting a server: until then requests may get 503. */
int hs_test_server_wait_ready(hs_test_server_t *s, int timeout_ms);

/* Sends a signal; HS_EIO if the process is not running. */
int hs_test_server_signal(hs_test_server_t *s, int sig);

/* Waits up to timeout_ms for the process to exit and reaps it. Returns 0 and sets *status
 * (raw wait status, may be NULL) when it exited, HS_EUNAVAIL when it is still running. */
int hs_test_server_wait(hs_test_server_t *s, int timeout_ms, int *status);

/* True while the process has not exited (reaps it if it just did). */
bool hs_test_server_running(hs_test_server_t *s);

/* The resident set size (VmRSS) in KiB, or -1 if it cannot be read. */
long hs_test_server_rss_kb(const hs_test_server_t *s);

/* The number of threads of the process (from /proc/PID/status), or -1. */
long hs_test_server_threads(const hs_test_server_t *s);

/* Kills the process (SIGKILL) if it still runs and reaps it. Safe to call twice. */
void hs_test_server_stop(hs_test_server_t *s);

/* Reads the whole stderr file into a malloc'd NUL-terminated string (the caller frees it), or
 * NULL if it cannot be read. */
char *hs_test_server_stderr(const hs_test_server_t *s);

/* Prints the tail of the stderr file to our stderr, to explain a failure. */
void hs_test_server_dump_stderr(const hs_test_server_t *s, size_t max_bytes);

/* Milliseconds on a monotonic clock. */
long long hs_test_now_ms(void);

/* Sleeps for ms milliseconds. */
void hs_test_sleep_ms(int ms);

/* Prints "    checked: <what>" on its own line, at once: the integration tests' account of each
 * behaviour they proved, readable in ctest's output. */
void hs_test_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
