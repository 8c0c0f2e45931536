#!/usr/bin/env bash
# `handsel deploy` against the real server and PostgreSQL: over h2c and over TLS with a CA file
# (a certificate made here with the openssl command), new versions and --activate, a script
# error caught before anything is sent, a bad token, a role that may not deploy, a server that
# is not there, and a certificate that is not trusted.
#
# Needs HANDSEL_BIN and HANDSEL_DB (a migrated database; scripts/test provides both).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${HANDSEL_BIN:?HANDSEL_BIN must name the handsel binary (run through ctest)}"
: "${HANDSEL_DB:?HANDSEL_DB must be a migrated database (scripts/test sets it)}"
: "${HANDSEL_SOURCE_DIR:?HANDSEL_SOURCE_DIR must name the source tree (run through ctest)}"
tmp_root="${HANDSEL_TEST_TMP:-/tmp/handsel-test}"
mkdir -p "$tmp_root"
work="$(mktemp -d "$tmp_root/deploy.XXXXXX")"
server_pid=""
unset HANDSEL_SERVER HANDSEL_TOKEN HANDSEL_CA

cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

show() { # FILE: what the command printed, for a failure's context
  sed 's/^/    | /' "$1" >&2
}

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>"$work/openssl.log" ||
  { cat "$work/openssl.log" >&2; exit 1; }

# A brand of our own (unique per run) and its tokens, made as an operator would.
brand="deploy-$$-$RANDOM"
"$HANDSEL_BIN" brand create "$brand" >/dev/null
token() { # ROLE
  "$HANDSEL_BIN" token create --brand "$brand" --role "$1" --subject "t-$1" | tail -n 1
}
author=$(token author)
contractor=$(token contractor)

hs_start_server /readyz HANDSEL_WORKERS=1 HANDSEL_TLS_CERT="$work/cert.pem" \
  HANDSEL_TLS_KEY="$work/key.pem"
url="http://127.0.0.1:$port"

# The server's view, through the API: the active version of a process ("" when none).
active_of() { # NAME
  curl -s --max-time 10 --http2-prior-knowledge -H "Authorization: Bearer $author" \
    -H 'Accept: application/json' "$url/v1/processes" >"$work/list.json"
  grep -oE "\"name\":\"$1\",\"title\":\"[^\"]*\",\"active\":\"[0-9a-f]{64}\"" \
    "$work/list.json" | grep -oE '[0-9a-f]{64}' || true
}
# Requests the server answered on /v1/processes/{name}, by its own metrics (this test sends
# only deploys there: PUT).
puts_seen() {
  curl -s --max-time 10 --http2-prior-knowledge "$url/metrics" |
    awk '/^handsel_http_requests_total[{]route="\/v1\/processes\/[{]name[}]"/ { n += $NF }
         END { print n + 0 }'
}
version_in() { # OUTPUT-FILE: the first 64-hex version printed
  grep -oE 'version [0-9a-f]{64}' "$1" | head -n 1 | cut -d' ' -f2
}

# A process of our own, and a second version of it (a different title).
sed 's/^  title = .*/  title = "Solar consultation",/' \
  "$HANDSEL_SOURCE_DIR/processes/solar-consult.lua" >"$work/v2.lua"
cp "$HANDSEL_SOURCE_DIR/processes/solar-consult.lua" "$work/v1.lua"
if cmp -s "$work/v1.lua" "$work/v2.lua"; then
  echo "FAIL: could not make a second version of solar-consult.lua" >&2
  exit 1
fi

# --- h2c: the first version is active at once ---------------------------------------------------
rc=0
HANDSEL_TOKEN=$author "$HANDSEL_BIN" deploy --server "$url" "$work/v1.lua" >"$work/o1" 2>&1 || rc=$?
v1=$(version_in "$work/o1")
if [[ $rc == 0 && -n $v1 ]] && grep -q "solar-consult version $v1, new, active" "$work/o1" &&
  [[ $(active_of solar-consult) == "$v1" ]]; then
  pass "deploy over h2c: version ${v1:0:12} is listed and active"
else
  fail "deploy over h2c: exit $rc, active '$(active_of solar-consult)'"
  show "$work/o1"
fi
if [[ $v1 == $(sha256sum "$work/v1.lua" | cut -d' ' -f1) ]]; then
  pass "the version printed is the file's SHA-256"
else
  fail "version '$v1' is not the file's SHA-256"
fi
if grep -qF "$author" "$work/o1"; then fail "the token was printed"; else pass "the token is not printed"; fi

# --- a later version waits, unless --activate --------------------------------------------------
rc=0
HANDSEL_SERVER=$url HANDSEL_TOKEN=$author "$HANDSEL_BIN" deploy "$work/v2.lua" >"$work/o2" 2>&1 ||
  rc=$?
v2=$(version_in "$work/o2")
if [[ $rc == 0 && -n $v2 && $v2 != "$v1" ]] && grep -q "new, not active" "$work/o2" &&
  [[ $(active_of solar-consult) == "$v1" ]]; then
  pass "a second version is stored but not active (HANDSEL_SERVER, HANDSEL_TOKEN)"
else
  fail "second version: exit $rc, active '$(active_of solar-consult)'"
  show "$work/o2"
fi
rc=0
"$HANDSEL_BIN" deploy --activate --server "$url" --token "$author" "$work/v2.lua" >"$work/o3" 2>&1 ||
  rc=$?
if [[ $rc == 0 ]] && grep -q "version $v2, already deployed, now active" "$work/o3" &&
  [[ $(active_of solar-consult) == "$v2" ]]; then
  pass "--activate switches to the deployed version"
else
  fail "--activate: exit $rc, active '$(active_of solar-consult)'"
  show "$work/o3"
fi
rc=0
"$HANDSEL_BIN" deploy --server="$url" --token="$author" --activate "$work/v1.lua" >"$work/o4" 2>&1 ||
  rc=$?
if [[ $rc == 0 ]] && grep -q "version $v1, already deployed, now active" "$work/o4" &&
  [[ $(active_of solar-consult) == "$v1" ]]; then
  pass "--activate with an older file rolls back"
else
  fail "rollback: exit $rc, active '$(active_of solar-consult)'"
  show "$work/o4"
fi

# --- a script error: reported with file:line, nothing sent -------------------------------------
{
  echo 'return process {'
  echo '  name = "broken-one",'
  echo '  title = "Broken",'
  echo '  run = function(visit) visit:step{ id = "a", title = "A" fields = {} } end,'
  echo '}'
} >"$work/broken.lua"
curl -s --max-time 10 --http2-prior-knowledge -H "Authorization: Bearer $author" \
  -H 'Accept: application/json' "$url/v1/processes" >"$work/before.json"
requests_before=$(puts_seen)
rc=0
"$HANDSEL_BIN" deploy --server "$url" --token "$author" "$work/v2.lua" "$work/broken.lua" \
  >"$work/o5" 2>&1 || rc=$?
curl -s --max-time 10 --http2-prior-knowledge -H "Authorization: Bearer $author" \
  -H 'Accept: application/json' "$url/v1/processes" >"$work/after.json"
if [[ $rc == 1 ]] && grep -q "FAIL  $work/broken.lua" "$work/o5" &&
  grep -q "broken.lua:4:" "$work/o5" && grep -q "nothing was deployed" "$work/o5" &&
  cmp -s "$work/before.json" "$work/after.json"; then
  pass "a script error fails locally with file:line; the server's list is unchanged"
else
  fail "script error: exit $rc, or the list changed"
  show "$work/o5"
fi
requests_after=$(puts_seen)
[[ $requests_before -gt 0 && $requests_before == "$requests_after" ]] &&
  pass "no PUT reached the server ($requests_before before and after)" ||
  fail "PUT requests seen by the server went from $requests_before to $requests_after"

# --- a bad token, a role that may not deploy -----------------------------------------------------
bad="hst_$(printf '%064d' 0)"
rc=0
"$HANDSEL_BIN" deploy --server "$url" --token "$bad" "$work/v1.lua" >"$work/o6" 2>&1 || rc=$?
if [[ $rc == 1 ]] && grep -q '^handsel: 401 unauthorized: .' "$work/o6"; then
  pass "a bad token: the 401 message, exit 1"
else
  fail "bad token: exit $rc"
  show "$work/o6"
fi
rc=0
"$HANDSEL_BIN" deploy --server "$url" --token "$contractor" "$work/v1.lua" >"$work/o7" 2>&1 || rc=$?
if [[ $rc == 1 ]] && grep -q '^handsel: 403 forbidden: .' "$work/o7"; then
  pass "a contractor's token: the 403 message, exit 1"
else
  fail "contractor token: exit $rc"
  show "$work/o7"
fi

# --- usage errors: exit 2, nothing sent ----------------------------------------------------------
usage_case() { # DESCRIPTION ARGS...
  local what=$1 rc=0
  shift
  "$HANDSEL_BIN" deploy "$@" >"$work/ou" 2>&1 || rc=$?
  if [[ $rc == 2 ]]; then pass "usage: $what (exit 2)"; else
    fail "usage: $what: exit $rc"
    show "$work/ou"
  fi
}
usage_case "no token" --server "$url" "$work/v1.lua"
usage_case "no server" --token "$author" "$work/v1.lua"
usage_case "no file" --server "$url" --token "$author"
usage_case "unknown option" --server "$url" --token "$author" --frobnicate "$work/v1.lua"
usage_case "a token with a line break" --server "$url" --token "$(printf 'hst_a\nb')" "$work/v1.lua"
rc=0
"$HANDSEL_BIN" deploy --help >"$work/oh" 2>&1 || rc=$?
[[ $rc == 0 ]] && grep -q -- '--activate' "$work/oh" && pass "deploy --help" || fail "deploy --help"
rc=0
"$HANDSEL_BIN" help deploy >"$work/oh" 2>&1 || rc=$?
[[ $rc == 0 ]] && grep -q 'usage: handsel deploy' "$work/oh" && pass "handsel help deploy" ||
  fail "handsel help deploy"

# --- TLS: verified against --ca or HANDSEL_CA; refused without ---------------------------------
rc=0
"$HANDSEL_BIN" deploy --server "https://localhost:$port" --token "$author" --ca "$work/cert.pem" \
  "$work/v2.lua" >"$work/o8" 2>&1 || rc=$?
if [[ $rc == 0 ]] && grep -q "version $v2, already deployed, not active" "$work/o8"; then
  pass "deploy over TLS with --ca"
else
  fail "TLS with --ca: exit $rc"
  show "$work/o8"
fi
rc=0
HANDSEL_CA="$work/cert.pem" "$HANDSEL_BIN" deploy --server "https://127.0.0.1:$port" \
  --token "$author" --activate "$work/v2.lua" >"$work/o9" 2>&1 || rc=$?
if [[ $rc == 0 ]] && grep -q "now active" "$work/o9" && [[ $(active_of solar-consult) == "$v2" ]]; then
  pass "deploy --activate over TLS with HANDSEL_CA, by address"
else
  fail "TLS with HANDSEL_CA: exit $rc"
  show "$work/o9"
fi
rc=0
"$HANDSEL_BIN" deploy --server "https://127.0.0.1:$port" --token "$author" "$work/v1.lua" \
  >"$work/o10" 2>&1 || rc=$?
if [[ $rc == 1 ]] && grep -q "not trusted" "$work/o10" && [[ $(active_of solar-consult) == "$v2" ]]; then
  pass "TLS without the CA: the certificate is not trusted, exit 1"
else
  fail "TLS without the CA: exit $rc"
  show "$work/o10"
fi

# A certificate the CA vouches for, but for another name: the server reloads its pair on SIGHUP.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=elsewhere.example" -addext "subjectAltName=DNS:elsewhere.example" \
  -keyout "$work/other.key" -out "$work/other.crt" 2>"$work/openssl.log" ||
  { cat "$work/openssl.log" >&2; exit 1; }
cp "$work/other.crt" "$work/cert.pem"
cp "$work/other.key" "$work/key.pem"
kill -HUP "$server_pid"
for _ in $(seq 1 100); do
  rc=0
  "$HANDSEL_BIN" deploy --server "https://127.0.0.1:$port" --token "$author" \
    --ca "$work/other.crt" "$work/v2.lua" >"$work/o12" 2>&1 || rc=$?
  grep -q "not trusted for the name 127.0.0.1" "$work/o12" && break
  sleep 0.05
done
if [[ $rc == 1 ]] && grep -q "not trusted for the name 127.0.0.1" "$work/o12"; then
  pass "TLS: a trusted certificate for another name is refused, exit 1"
else
  fail "certificate for another name: exit $rc"
  show "$work/o12"
fi

# --- the server is not there ---------------------------------------------------------------------
kill -TERM "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=""
rc=0
"$HANDSEL_BIN" deploy --server "$url" --token "$author" "$work/v1.lua" >"$work/o11" 2>&1 || rc=$?
if [[ $rc == 1 ]] && grep -q "^handsel: Cannot connect to 127.0.0.1:$port: Connection refused" \
  "$work/o11"; then
  pass "server down: a clear error, exit 1"
else
  fail "server down: exit $rc"
  show "$work/o11"
fi

if ((failures > 0)); then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "all deploy checks passed"
