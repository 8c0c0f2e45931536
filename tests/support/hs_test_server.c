#include "hs_test_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/error.h"
#include "hs_test_h2.h"

extern char **environ;

#define STARTUP_TIMEOUT_MS 15000
#define START_ATTEMPTS     4

long long hs_test_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void hs_test_sleep_ms(int ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

void hs_test_say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("    checked: ");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  fflush(stdout);
}

/* ---- the registry of running servers, killed at exit whatever happened ---- */

#define MAX_LIVE 64
static pid_t live[MAX_LIVE];
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static bool atexit_done;

static void kill_all_live(void) {
  for (size_t i = 0; i < MAX_LIVE; i++) {
    if (live[i] > 0) {
      kill(live[i], SIGKILL);
      waitpid(live[i], NULL, 0);
      live[i] = 0;
    }
  }
}

static void live_add(pid_t pid) {
  pthread_mutex_lock(&live_mu);
  if (!atexit_done) {
    atexit(kill_all_live);
    atexit_done = true;
  }
  for (size_t i = 0; i < MAX_LIVE; i++) {
    if (live[i] == 0) {
      live[i] = pid;
      break;
    }
  }
  pthread_mutex_unlock(&live_mu);
}

static void live_remove(pid_t pid) {
  pthread_mutex_lock(&live_mu);
  for (size_t i = 0; i < MAX_LIVE; i++) {
    if (live[i] == pid) {
      live[i] = 0;
    }
  }
  pthread_mutex_unlock(&live_mu);
}

/* ---- files ---- */

static int mkdir_p(const char *path) {
  char tmp[HS_TEST_PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s", path);
  for (char *p = tmp + 1; *p; p++) {
    if (*p == '/') {
      *p = '\0';
      mkdir(tmp, 0755);
      *p = '/';
    }
  }
  if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
    return HS_EIO;
  }
  return HS_OK;
}

const char *hs_test_tmpdir(void) {
  /* Shorter than the paths built from it, so they always fit. */
  static char dir[HS_TEST_PATH_MAX - 128];
  if (dir[0] == '\0') {
    const char *t = getenv("HANDSEL_TEST_TMP");
    snprintf(dir, sizeof dir, "%s", t != NULL && t[0] != '\0' ? t : "/tmp/handsel-test");
    mkdir_p(dir);
  }
  return dir;
}

static int write_pem_files(EVP_PKEY *key, X509 *crt, const char *cert_path, const char *key_path) {
  char tmp[HS_TEST_PATH_MAX + 8];
  snprintf(tmp, sizeof tmp, "%s.tmp", key_path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (f == NULL) {
    return HS_EIO;
  }
  int ok = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
  fclose(f);
  if (!ok || rename(tmp, key_path) != 0) {
    return HS_EIO;
  }
  snprintf(tmp, sizeof tmp, "%s.tmp", cert_path);
  f = fopen(tmp, "w");
  if (f == NULL) {
    return HS_EIO;
  }
  ok = PEM_write_X509(f, crt);
  fclose(f);
  if (!ok || rename(tmp, cert_path) != 0) {
    return HS_EIO;
  }
  return HS_OK;
}

int hs_test_tls_files(const char **cert_path, const char **key_path) {
  static char cert[HS_TEST_PATH_MAX], key[HS_TEST_PATH_MAX];
  static bool made;
  if (made) {
    *cert_path = cert;
    *key_path = key;
    return HS_OK;
  }
  /* One pair per test process, so tests that run in parallel never read a half-written file. */
  snprintf(cert, sizeof cert, "%s/tls-%d-cert.pem", hs_test_tmpdir(), (int)getpid());
  snprintf(key, sizeof key, "%s/tls-%d-key.pem", hs_test_tmpdir(), (int)getpid());

  int rc = HS_EIO;
  EVP_PKEY *pkey = EVP_EC_gen("P-256");
  X509 *crt = X509_new();
  if (pkey == NULL || crt == NULL) {
    goto done;
  }
  X509_set_version(crt, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(crt), (long)time(NULL));
  X509_gmtime_adj(X509_getm_notBefore(crt), -3600);
  X509_gmtime_adj(X509_getm_notAfter(crt), 7L * 24 * 3600);
  X509_set_pubkey(crt, pkey);
  X509_NAME *name = X509_get_subject_name(crt);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1,
                             0);
  X509_set_issuer_name(crt, name);
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, crt, crt, NULL, NULL, 0);
  X509_EXTENSION *ext =
      X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
  if (ext == NULL) {
    goto done;
  }
  X509_add_ext(crt, ext, -1);
  X509_EXTENSION_free(ext);
  if (X509_sign(crt, pkey, EVP_sha256()) == 0) {
    goto done;
  }
  rc = write_pem_files(pkey, crt, cert, key);
done:
  X509_free(crt);
  EVP_PKEY_free(pkey);
  if (rc == HS_OK) {
    made = true;
    *cert_path = cert;
    *key_path = key;
  }
  return rc;
}

/* ---- the process ---- */

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -1;
  }
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  int port = -1;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
      getsockname(fd, (struct sockaddr *)&sa, &len) == 0) {
    port = ntohs(sa.sin_port);
  }
  close(fd);
  return port;
}

static void add_env(hs_test_server_t *s, const char *fmt, ...) {
  if (s->n_env >= HS_TEST_MAX_ENV) {
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->env[s->n_env], sizeof s->env[0], fmt, ap);
  va_end(ap);
  s->n_env++;
}

static bool env_overridden(const hs_test_server_t *s, const char *entry) {
  const char *eq = strchr(entry, '=');
  size_t n = eq != NULL ? (size_t)(eq - entry) + 1 : strlen(entry);
  for (size_t i = 0; i < s->n_env; i++) {
    if (strncmp(s->env[i], entry, n) == 0) {
      return true;
    }
  }
  return false;
}

static int spawn(hs_test_server_t *s) {
  const char *bin = getenv("HANDSEL_BIN");
  if (bin == NULL || bin[0] == '\0') {
    fprintf(stderr, "HANDSEL_BIN is not set: run the integration tests through ctest\n");
    return HS_EINVAL;
  }
  /* The environment is built before fork: the child only calls async-signal-safe functions. */
  size_t n_parent = 0;
  while (environ[n_parent] != NULL) {
    n_parent++;
  }
  char **envp = calloc(n_parent + s->n_env + 1, sizeof *envp);
  if (envp == NULL) {
    return HS_ENOMEM;
  }
  size_t k = 0;
  for (size_t i = 0; i < n_parent; i++) {
    if (!env_overridden(s, environ[i])) {
      envp[k++] = environ[i];
    }
  }
  for (size_t i = 0; i < s->n_env; i++) {
    envp[k++] = s->env[i];
  }
  envp[k] = NULL;

  int out = open(s->stderr_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) {
    free(envp);
    return HS_EIO;
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    close(out);
    free(envp);
    return HS_EIO;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) {
      _exit(127);
    }
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) {
      dup2(devnull, 0);
    }
    dup2(out, 1);
    dup2(out, 2);
    signal(SIGPIPE, SIG_DFL);
    char *const argv[] = {(char *)bin, "serve", NULL};
    execve(bin, argv, envp);
    _exit(127);
  }
  close(out);
  free(envp);
  s->pid = pid;
  s->exited = false;
  live_add(pid);
  return HS_OK;
}

static int wait_healthy(hs_test_server_t *s) {
  long long deadline = hs_test_now_ms() + STARTUP_TIMEOUT_MS;
  while (hs_test_now_ms() < deadline) {
    if (!hs_test_server_running(s)) {
      return HS_EIO;
    }
    int status = 0;
    hs_h2_get(s->port, s->tls, "/healthz", NULL, 0, 2000, &status, NULL);
    if (status == 200) {
      return HS_OK;
    }
    hs_test_sleep_ms(50);
  }
  return HS_EUNAVAIL;
}

int hs_test_server_wait_ready(hs_test_server_t *s, int timeout_ms) {
  long long deadline = hs_test_now_ms() + timeout_ms;
  for (;;) {
    if (!hs_test_server_running(s)) {
      return HS_EIO;
    }
    int status = 0;
    hs_h2_get(s->port, s->tls, "/readyz", NULL, 0, 2000, &status, NULL);
    if (status == 200) {
      return HS_OK;
    }
    if (hs_test_now_ms() >= deadline) {
      return HS_EUNAVAIL;
    }
    hs_test_sleep_ms(20);
  }
}

int hs_test_server_start(hs_test_server_t *s, const hs_test_server_opts_t *opts) {
  static int serial;
  signal(SIGPIPE, SIG_IGN);
  hs_test_server_opts_t o = {0};
  if (opts != NULL) {
    o = *opts;
  }
  int rc = HS_EIO;
  for (int attempt = 0; attempt < START_ATTEMPTS; attempt++) {
    memset(s, 0, sizeof *s);
    s->tls = o.tls;
    s->port = free_port();
    if (s->port <= 0) {
      return HS_EIO;
    }
    snprintf(s->stderr_path, sizeof s->stderr_path, "%s/server-%d-%d.log", hs_test_tmpdir(),
             (int)getpid(), ++serial);
    add_env(s, "HANDSEL_LISTEN=127.0.0.1:%d", s->port);
    /* A small ASan quarantine keeps freed memory reusable, so RSS measures what the server
     * holds, not what the sanitizer delays; leaks are still reported at exit. */
    const char *asan = getenv("ASAN_OPTIONS");
    add_env(s, "ASAN_OPTIONS=%s%squarantine_size_mb=8:malloc_context_size=10",
            asan != NULL ? asan : "", asan != NULL && asan[0] != '\0' ? ":" : "");
    /* Load tests drive one token far past a real client's rate; a test about rate limits sets
     * its own (a caller's entry overrides these). */
    add_env(s, "HANDSEL_RATE_PER_S=10000000");
    add_env(s, "HANDSEL_RATE_BURST=10000000");
    if (o.tls) {
      const char *cert, *key;
      if (hs_test_tls_files(&cert, &key) != HS_OK) {
        return HS_EIO;
      }
      add_env(s, "HANDSEL_TLS_CERT=%s", cert);
      add_env(s, "HANDSEL_TLS_KEY=%s", key);
    }
    for (size_t i = 0; o.env != NULL && o.env[i] != NULL; i++) {
      /* A later entry with the same name wins, as the caller expects of an override. */
      const char *eq = strchr(o.env[i], '=');
      size_t n = eq != NULL ? (size_t)(eq - o.env[i]) + 1 : strlen(o.env[i]);
      for (size_t j = 0; j < s->n_env;) {
        if (strncmp(s->env[j], o.env[i], n) == 0) {
          memmove(s->env[j], s->env[j + 1], (s->n_env - j - 1) * sizeof s->env[0]);
          s->n_env--;
        } else {
          j++;
        }
      }
      add_env(s, "%s", o.env[i]);
    }
    rc = spawn(s);
    if (rc != HS_OK) {
      return rc;
    }
    if (o.no_wait) {
      return HS_OK;
    }
    rc = wait_healthy(s);
    if (rc == HS_OK) {
      return HS_OK;
    }
    bool died = !hs_test_server_running(s);
    hs_test_server_stop(s);
    if (!died) {
      break; /* alive but not answering: another port will not help */
    }
  }
  return rc;
}

void hs_test_server_must_start(hs_test_server_t *s, const char *const *env, bool tls) {
  hs_test_server_opts_t o = {.env = env, .tls = tls};
  int rc = hs_test_server_start(s, &o);
  if (rc != HS_OK) {
    hs_test_server_dump_stderr(s, 4000);
    fail_msg("the server did not come up (rc %d); its output is in %s", rc, s->stderr_path);
  }
}

int hs_test_server_signal(hs_test_server_t *s, int sig) {
  if (s->pid <= 0 || s->exited) {
    return HS_EIO;
  }
  return kill(s->pid, sig) == 0 ? HS_OK : HS_EIO;
}

static bool reap(hs_test_server_t *s, int flags) {
  if (s->pid <= 0) {
    return true;
  }
  if (s->exited) {
    return true;
  }
  int st = 0;
  pid_t r = waitpid(s->pid, &st, flags);
  if (r == s->pid) {
    s->exited = true;
    s->exit_status = st;
    live_remove(s->pid);
    return true;
  }
  if (r < 0 && errno == ECHILD) {
    s->exited = true;
    live_remove(s->pid);
    return true;
  }
  return false;
}

int hs_test_server_wait(hs_test_server_t *s, int timeout_ms, int *status) {
  long long deadline = hs_test_now_ms() + timeout_ms;
  for (;;) {
    if (reap(s, WNOHANG)) {
      if (status != NULL) {
        *status = s->exit_status;
      }
      return HS_OK;
    }
    if (hs_test_now_ms() >= deadline) {
      return HS_EUNAVAIL;
    }
    hs_test_sleep_ms(10);
  }
}

bool hs_test_server_running(hs_test_server_t *s) {
  return s->pid > 0 && !reap(s, WNOHANG);
}

static long proc_status_field(pid_t pid, const char *field) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    return -1;
  }
  char line[256];
  long v = -1;
  size_t n = strlen(field);
  while (fgets(line, sizeof line, f) != NULL) {
    if (strncmp(line, field, n) == 0 && line[n] == ':') {
      v = strtol(line + n + 1, NULL, 10);
      break;
    }
  }
  fclose(f);
  return v;
}

long hs_test_server_rss_kb(const hs_test_server_t *s) {
  return s->pid > 0 && !s->exited ? proc_status_field(s->pid, "VmRSS") : -1;
}

long hs_test_server_threads(const hs_test_server_t *s) {
  return s->pid > 0 && !s->exited ? proc_status_field(s->pid, "Threads") : -1;
}

void hs_test_server_stop(hs_test_server_t *s) {
  if (s->pid > 0 && !s->exited) {
    kill(s->pid, SIGKILL);
    reap(s, 0);
  }
}

char *hs_test_server_stderr(const hs_test_server_t *s) {
  FILE *f = fopen(s->stderr_path, "rb");
  if (f == NULL) {
    return NULL;
  }
  hs_buf_t b;
  hs_buf_init(&b, 0);
  char chunk[8192];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
    if (hs_buf_append(&b, chunk, n) != HS_OK) {
      break;
    }
  }
  fclose(f);
  hs_buf_append(&b, "", 1);
  size_t len;
  return (char *)hs_buf_release(&b, &len);
}

void hs_test_server_dump_stderr(const hs_test_server_t *s, size_t max_bytes) {
  char *text = hs_test_server_stderr(s);
  if (text == NULL) {
    return;
  }
  size_t len = strlen(text);
  const char *p = len > max_bytes ? text + len - max_bytes : text;
  fprintf(stderr, "---- server output (%s) ----\n%s\n---- end ----\n", s->stderr_path, p);
  free(text);
}
