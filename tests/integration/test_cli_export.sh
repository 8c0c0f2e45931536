#!/usr/bin/env bash
# `handsel export`:
#   - against the real server and PostgreSQL: the export equals what the server sends; an error
#     answer (a bad token) is printed as "handsel: <status> <code>: <message>", exit 1, and no
#     file (and no temporary file) is left; a server that stops answering times out, an interrupted
#     export leaves nothing, and an existing file is kept when an export fails;
#   - against nghttpd (nghttp2's own HTTP/2 server) serving a stored export at /v1/audit: the
#     body is streamed whole to -o FILE and to stdout, the filters travel percent-encoded in
#     the query, and a terminal on stderr gets a progress line.
#
# Needs HANDSEL_BIN and HANDSEL_DB (a migrated database; scripts/test provides both).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${HANDSEL_BIN:?HANDSEL_BIN must name the handsel binary (run through ctest)}"
: "${HANDSEL_DB:?HANDSEL_DB must be a migrated database (scripts/test sets it)}"
tmp_root="${HANDSEL_TEST_TMP:-/tmp/handsel-test}"
mkdir -p "$tmp_root"
work="$(mktemp -d "$tmp_root/export.XXXXXX")"
server_pid=""
nghttpd_pid=""
export_pid=""
unset HANDSEL_SERVER HANDSEL_TOKEN HANDSEL_CA

cleanup() {
  local pid
  for pid in "$export_pid" "$nghttpd_pid" "$server_pid"; do
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      kill -CONT "$pid" 2>/dev/null || true
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
}
trap cleanup EXIT

show() { # FILE
  sed 's/^/    | /' "$1" | head -n 20 >&2
}
# True when DIR holds nothing but what is listed (no file, no temporary file).
only_in() { # DIR NAME...
  local dir=$1
  shift
  local got want
  got=$(ls -A "$dir" | sort | tr '\n' ' ')
  want=$(printf '%s\n' "$@" | sed '/^$/d' | sort | tr '\n' ' ')
  [[ $got == "$want" ]]
}

brand="export-$$-$RANDOM"
"$HANDSEL_BIN" brand create "$brand" >/dev/null
compliance=$("$HANDSEL_BIN" token create --brand "$brand" --role compliance --subject audit |
  tail -n 1)
export HANDSEL_TOKEN=$compliance

hs_start_server /readyz HANDSEL_WORKERS=1
url="http://127.0.0.1:$port"
mkdir -p "$work/out"

# --- the real server: an error answer --------------------------------------------------------
# Whatever the route answers, an error must be reported and leave nothing; when it streams,
# the file must match what the server sends.
status=$(curl -s -o "$work/direct" -w '%{http_code}' --max-time 30 --http2-prior-knowledge \
  -H "Authorization: Bearer $compliance" -H 'Accept: application/json' \
  "$url/v1/audit?format=ndjson")
rc=0
"$HANDSEL_BIN" export --server "$url" --format ndjson -o "$work/out/audit.ndjson" \
  >"$work/e1.out" 2>"$work/e1.err" || rc=$?
if [[ $status == 200 ]]; then
  # The header line carries the time of the export; every other line must be the same.
  if [[ $rc == 0 ]] && cmp -s <(tail -n +2 "$work/direct") <(tail -n +2 "$work/out/audit.ndjson") &&
    head -n 1 "$work/out/audit.ndjson" | grep -q '"type":"export"' &&
    only_in "$work/out" audit.ndjson; then
    pass "/v1/audit: the export equals the server's answer"
  else
    fail "/v1/audit answered 200 but the export failed or differs: exit $rc"
    show "$work/e1.err"
  fi
  rm -f "$work/out/audit.ndjson"
else
  code=$(grep -oE '"code":"[a-z_]+"' "$work/direct" | cut -d'"' -f4)
  if [[ $rc == 1 ]] && grep -q "^handsel: $status $code: ." "$work/e1.err" &&
    only_in "$work/out" && [[ ! -s "$work/e1.out" ]]; then
    pass "/v1/audit answers $status: 'handsel: $status $code: …', exit 1, no file left"
  else
    fail "/v1/audit answers $status: export exit $rc, files: $(ls -A "$work/out")"
    show "$work/e1.err"
  fi
  rc=0
  "$HANDSEL_BIN" export --server "$url" >"$work/e2.out" 2>"$work/e2.err" || rc=$?
  if [[ $rc == 1 && ! -s "$work/e2.out" ]] && grep -q "^handsel: $status $code: " "$work/e2.err"; then
    pass "to stdout: the same error, nothing written"
  else
    fail "to stdout: exit $rc"
    show "$work/e2.err"
  fi
fi

expected="401 unauthorized"
rc=0
"$HANDSEL_BIN" export --server "$url" --token "hst_$(printf '%064d' 0)" -o "$work/out/x" \
  2>"$work/e3.err" || rc=$?
if [[ $rc == 1 ]] && grep -q "^handsel: $expected: ." "$work/e3.err" && only_in "$work/out"; then
  pass "a bad token: the $expected message, exit 1, no file"
else
  fail "bad token: exit $rc"
  show "$work/e3.err"
fi

# --- usage and local errors: before any network traffic ----------------------------------------
usage_case() { # DESCRIPTION ARGS...
  local what=$1 rc=0
  shift
  "$HANDSEL_BIN" export "$@" >"$work/ou" 2>&1 || rc=$?
  if [[ $rc == 2 ]]; then pass "usage: $what (exit 2)"; else
    fail "usage: $what: exit $rc"
    show "$work/ou"
  fi
}
usage_case "a --result that is neither accepted nor rejected" --server "$url" --result maybe
usage_case "a --format that is neither ndjson nor csv" --server "$url" --format xml
usage_case "an unexpected argument" --server "$url" stray
usage_case "no server" --format csv
HANDSEL_TOKEN="" usage_case "no token" --server "$url"
rc=0
"$HANDSEL_BIN" export --server "$url" -o "$work/no/such/dir/a.ndjson" 2>"$work/e4.err" || rc=$?
if [[ $rc == 1 ]] && grep -q "Cannot create a file in $work/no/such/dir" "$work/e4.err"; then
  pass "-o into a missing directory: a clear error, exit 1"
else
  fail "-o into a missing directory: exit $rc"
  show "$work/e4.err"
fi
rc=0
"$HANDSEL_BIN" help export >"$work/oh" 2>&1 || rc=$?
[[ $rc == 0 ]] && grep -q -- '--contractor' "$work/oh" && pass "handsel help export" ||
  fail "handsel help export"

# --- a server that stops answering; an interrupted export; an existing file is kept --------------
echo "the previous export" >"$work/out/keep.ndjson"
kill -STOP "$server_pid"
rc=0
"$HANDSEL_BIN" export --server "$url" --timeout 1 -o "$work/out/keep.ndjson" 2>"$work/e5.err" ||
  rc=$?
if [[ $rc == 1 ]] && grep -q "sent nothing for 1 s" "$work/e5.err" &&
  [[ $(cat "$work/out/keep.ndjson") == "the previous export" ]] && only_in "$work/out" keep.ndjson; then
  pass "a silent server times out; the existing file is untouched, no temporary file left"
else
  fail "silent server: exit $rc, files: $(ls -A "$work/out")"
  show "$work/e5.err"
fi
"$HANDSEL_BIN" export --server "$url" --timeout 60 -o "$work/out/int.ndjson" 2>"$work/e6.err" &
export_pid=$!
# The temporary file exists once the export catches signals; from then on an interrupt must
# remove it, whether it lands while connecting or while waiting for the answer.
for _ in $(seq 1 200); do
  compgen -G "$work/out/.int.ndjson.partial.*" >/dev/null && break
  sleep 0.05
done
kill -INT "$export_pid"
rc=0
wait "$export_pid" || rc=$?
export_pid=""
if [[ $rc == 1 ]] && grep -q "Interrupted" "$work/e6.err" && grep -q "int.ndjson was not written" \
  "$work/e6.err" && only_in "$work/out" keep.ndjson; then
  pass "an interrupted export exits 1 and leaves no file"
else
  fail "interrupted export: exit $rc, files: $(ls -A "$work/out")"
  show "$work/e6.err"
fi
kill -CONT "$server_pid"

# --- streaming, against nghttpd serving a stored export at /v1/audit ----------------------------
mkdir -p "$work/doc/v1"
records=200000
awk -v n=$records 'BEGIN { for (i = 1; i <= n; i++)
  printf "{\"seq\":%d,\"session\":\"s-%d\",\"result\":\"accepted\",\"data\":{\"note\":\"line %d\"}}\n", i, i % 97, i }' \
  >"$work/doc/v1/audit"
for _ in 1 2 3 4 5; do
  nport=$((20000 + RANDOM % 40000))
  nghttpd -v --no-tls -d "$work/doc" "$nport" >"$work/nghttpd.log" 2>&1 &
  nghttpd_pid=$!
  for _ in $(seq 1 100); do
    kill -0 "$nghttpd_pid" 2>/dev/null || break
    curl -s -o /dev/null --max-time 2 --http2-prior-knowledge "http://127.0.0.1:$nport/v1/audit" &&
      break 2
    sleep 0.05
  done
  kill -KILL "$nghttpd_pid" 2>/dev/null || true
  wait "$nghttpd_pid" 2>/dev/null || true
  nghttpd_pid=""
done
[[ -n $nghttpd_pid ]] || { echo "FAIL: nghttpd did not start" >&2; cat "$work/nghttpd.log" >&2; exit 1; }
nurl="http://127.0.0.1:$nport"

rc=0
"$HANDSEL_BIN" export --server "$nurl" --from 2026-05-04T10:00:00+02:00 --process solar-consult \
  --contractor 'ann & bob/1' --result accepted -o "$work/out/big.ndjson" >"$work/s1.out" \
  2>"$work/s1.err" || rc=$?
if [[ $rc == 0 ]] && cmp -s "$work/doc/v1/audit" "$work/out/big.ndjson" &&
  only_in "$work/out" keep.ndjson big.ndjson && [[ ! -s "$work/s1.out" ]]; then
  pass "-o FILE: $(wc -c <"$work/out/big.ndjson") bytes streamed, identical to the server's"
else
  fail "-o FILE: exit $rc, files: $(ls -A "$work/out")"
  show "$work/s1.err"
fi
if [[ $(cat "$work/s1.err") =~ ^wrote\ $records\ records\ \([0-9.]+\ MB\)\ to\ $work/out/big.ndjson\ in\ [0-9.]+\ s$ ]]; then
  pass "not a terminal: only the final line on stderr"
else
  fail "the final line: '$(cat "$work/s1.err")'"
fi
want='/v1/audit?from=2026-05-04T10%3A00%3A00%2B02%3A00&process=solar-consult&contractor=ann%20%26%20bob%2F1&result=accepted'
if grep -qF ":path: $want" "$work/nghttpd.log"; then
  pass "filters travel percent-encoded; those not given are left out"
else
  fail "the request path: $(grep -oE ':path: /v1/audit[^ ]*' "$work/nghttpd.log" | head -n 1)"
fi

rc=0
"$HANDSEL_BIN" export --server "$nurl" >"$work/stdout.ndjson" 2>"$work/s2.err" || rc=$?
if [[ $rc == 0 ]] && cmp -s "$work/doc/v1/audit" "$work/stdout.ndjson" &&
  grep -q "^wrote $records records .* to standard output in" "$work/s2.err"; then
  pass "to stdout: identical"
else
  fail "to stdout: exit $rc"
  show "$work/s2.err"
fi

# stderr on a terminal: script(1) gives the command one.
rc=0
script -q -e -c "'$HANDSEL_BIN' export --server '$nurl' -o '$work/out/tty.ndjson'" /dev/null \
  >"$work/s3.tty" 2>&1 </dev/null || rc=$?
if [[ $rc == 0 ]] && grep -q $'\r'"[0-9]* records, [0-9.]* MB, [0-9]* records/s" "$work/s3.tty" &&
  grep -q "wrote $records records" "$work/s3.tty" && cmp -s "$work/doc/v1/audit" "$work/out/tty.ndjson"; then
  pass "a terminal gets a progress line, then the final line"
else
  fail "progress on a terminal: exit $rc"
  show "$work/s3.tty"
fi

if ((failures > 0)); then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "all export checks passed"
