# shellcheck shell=bash
# Shared by the shell tests (tests/integration/test_*.sh); sourced, not run.

# A test goes on past a failed check, so one run names every one that fails: fail counts it
# in failures, which the test looks at before it exits; pass notes a check that held.
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
pass() {
  echo "ok: $*"
}

# hs_start_server READY_PATH [VAR=VALUE...]: starts "$HANDSEL_BIN serve" on a random loopback
# port with the given environment, its output in $work/server.log, and waits until READY_PATH
# (/healthz, or /readyz when the database must be up) answers 200. Sets port and server_pid. A
# port taken between the pick and the bind is retried; a server that never answers has its log
# printed and ends the test (exit 1).
hs_start_server() {
  local ready=$1 log=${work:?the test sets work, its scratch directory}/server.log
  shift
  for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    env HANDSEL_LISTEN="127.0.0.1:$port" "$@" "$HANDSEL_BIN" serve >"$log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 150); do
      kill -0 "$server_pid" 2>/dev/null || break
      if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --http2-prior-knowledge \
        "http://127.0.0.1:$port$ready") == 200 ]]; then
        return 0
      fi
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  done
  cat "$log" >&2
  echo "FAIL: the server did not answer $ready within 15 s" >&2
  exit 1
}
