#!/usr/bin/env bash
# The limits of issue "hardening against hostile clients" that off-the-shelf clients show best:
#   - a per-token rate limit answers 429 with Retry-After, and refills;
#   - connections from one client address are capped, across all workers;
#   - SIGHUP reloads the TLS certificate without dropping a connection in flight.
#
# Needs HANDSEL_BIN and HANDSEL_DB (a migrated database; scripts/test provides both).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${HANDSEL_BIN:?HANDSEL_BIN must name the handsel binary (run through ctest)}"
: "${HANDSEL_DB:?HANDSEL_DB must be a migrated database (scripts/test sets it)}"
tmp_root="${HANDSEL_TEST_TMP:-/tmp/handsel-test}"
mkdir -p "$tmp_root"
work="$(mktemp -d "$tmp_root/limits.XXXXXX")"
server_pid=""
stream_pid=""

cleanup() {
  for pid in "$stream_pid" "$server_pid"; do
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
}
trap cleanup EXIT


make_cert() { # CN FILE-PREFIX
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=$1" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$2.key" -out "$2.crt" 2>"$work/openssl.log" || { cat "$work/openssl.log" >&2; exit 1; }
}
make_cert first "$work/first"
make_cert second "$work/second"
cp "$work/first.crt" "$work/cert.pem"
cp "$work/first.key" "$work/key.pem"

hs_start_server /readyz HANDSEL_WORKERS=2 HANDSEL_DEV_AUTH=1 HANDSEL_DEBUG_ROUTES=1 \
  HANDSEL_RATE_PER_S=2 HANDSEL_RATE_BURST=3 HANDSEL_MAX_CONNS_PER_IP=3 \
  HANDSEL_TLS_CERT="$work/cert.pem" HANDSEL_TLS_KEY="$work/key.pem"
url="http://127.0.0.1:$port"
as=(-H 'x-handsel-dev-brand: limits' -H 'x-handsel-dev-subject: alice' -H 'x-handsel-dev-role: author')

# --- rate limit: a burst of 3, then 2 per second -------------------------------------------------
codes=""
for i in 1 2 3 4 5 6; do
  codes+="$(curl -s -o "$work/r$i" -D "$work/h$i" -w '%{http_code}' --http2-prior-knowledge \
    "${as[@]}" "$url/v1/processes") "
done
if [[ $codes == "200 200 200 "* && $codes == *429* ]]; then
  pass "rate limit: $codes"
else
  fail "rate limit: expected 3 x 200 then 429, got $codes"
fi
limited=$(grep -l '^HTTP/2 429' "$work"/h* | head -n 1)
body="$work/r${limited##*/h}" # the body of the same request
if [[ -n $limited ]] && grep -qi '^retry-after: [1-9]' "$limited" &&
  grep -q 'rate_limited' "$body"; then
  pass "429 carries Retry-After and the code rate_limited"
else
  fail "429 without Retry-After or code rate_limited"
fi
other=$(curl -s -o /dev/null -w '%{http_code}' --http2-prior-knowledge \
  -H 'x-handsel-dev-brand: limits' -H 'x-handsel-dev-subject: bob' -H 'x-handsel-dev-role: author' \
  "$url/v1/processes")
[[ $other == 200 ]] && pass "another caller is not limited by alice's bucket" ||
  fail "another caller got $other"
sleep 1.2
again=$(curl -s -o /dev/null -w '%{http_code}' --http2-prior-knowledge "${as[@]}" "$url/v1/processes")
[[ $again == 200 ]] && pass "the bucket refills" || fail "after a second alice still gets $again"

# --- connections per client address: 3 open at most, whichever worker takes them ---------------
exec 5<>"/dev/tcp/127.0.0.1/$port" 6<>"/dev/tcp/127.0.0.1/$port" 7<>"/dev/tcp/127.0.0.1/$port"
exec 8<>"/dev/tcp/127.0.0.1/$port" 9<>"/dev/tcp/127.0.0.1/$port"
sleep 0.5
open=0
for fd in 5 6 7 8 9; do
  # A refused connection reads end-of-file at once; an open one times out waiting.
  if read -r -t 0.3 -u "$fd" _; then :; else
    rc=$?
    ((rc > 128)) && open=$((open + 1))
  fi
done
exec 5>&- 6>&- 7>&- 8>&- 9>&-
[[ $open == 3 ]] && pass "per address: 3 of 5 connections stay open" ||
  fail "per address: $open of 5 connections stayed open, expected 3"
sleep 0.3
closed=$(curl -s --http2-prior-knowledge "$url/metrics" |
  sed -n 's/^handsel_http_connections_closed_total{reason="per_ip"} //p')
((${closed:-0} >= 2)) && pass "per address: $closed refusals counted in /metrics" ||
  fail "per address: /metrics counts ${closed:-none}"

# --- SIGHUP reloads the certificate; a stream in flight goes on ---------------------------------
subject() {
  echo | openssl s_client -connect "127.0.0.1:$port" -servername localhost -alpn h2 2>/dev/null |
    openssl x509 -noout -subject 2>/dev/null
}
[[ $(subject) == *first* ]] && pass "TLS serves the first certificate" ||
  fail "TLS serves $(subject)"
curl -sk --http2 -o "$work/stream.out" \
  "https://127.0.0.1:$port/debug/stream?chunks=20&size=1000&interval_ms=100" &
stream_pid=$!
sleep 0.5
cp "$work/second.crt" "$work/cert.pem"
cp "$work/second.key" "$work/key.pem"
kill -HUP "$server_pid"
sleep 0.5
[[ $(subject) == *second* ]] && pass "after SIGHUP new connections get the second certificate" ||
  fail "after SIGHUP: $(subject)"
if wait "$stream_pid"; then
  size=$(stat -c %s "$work/stream.out")
  [[ $size == 20000 ]] && pass "the stream begun before the reload finished: $size bytes" ||
    fail "the stream begun before the reload got $size of 20000 bytes"
else
  fail "the stream begun before the reload failed"
fi
stream_pid=""
# A broken pair is refused and the working one stays.
echo "not a certificate" >"$work/cert.pem"
kill -HUP "$server_pid"
sleep 0.5
[[ $(subject) == *second* ]] && grep -q tls_reload_failed "$work/server.log" &&
  pass "a broken certificate is refused and logged; the last good one stays" ||
  fail "a broken certificate changed what is served: $(subject)"
kill -0 "$server_pid" 2>/dev/null && pass "the server is still up" || fail "the server died"

echo
if ((failures > 0)); then
  echo "$failures check(s) failed; server log: $work/server.log" >&2
  exit 1
fi
echo "all checks passed"
