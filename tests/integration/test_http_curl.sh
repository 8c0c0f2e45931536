#!/usr/bin/env bash
# Off-the-shelf HTTP/2 clients against the real binary: curl over h2c with prior knowledge and
# over TLS with ALPN (a certificate made with the openssl CLI), and nghttp over both.
#
# Needs HANDSEL_BIN (ctest sets it); HANDSEL_TEST_TMP is where files go.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${HANDSEL_BIN:?HANDSEL_BIN must name the handsel binary (run through ctest)}"
tmp_root="${HANDSEL_TEST_TMP:-/tmp/handsel-test}"
mkdir -p "$tmp_root"
work="$(mktemp -d "$tmp_root/curl.XXXXXX")"
server_pid=""

cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT


for tool in curl nghttp openssl; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed" >&2; exit 1; }
done
if ! curl --version | grep -qi 'HTTP2'; then
  echo "FAIL: this curl has no HTTP/2 support" >&2
  exit 1
fi

# A self-signed certificate for localhost and 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>"$work/openssl.log" \
  || { cat "$work/openssl.log" >&2; exit 1; }

hs_start_server /healthz HANDSEL_WORKERS=1 HANDSEL_TLS_CERT="$work/cert.pem" \
  HANDSEL_TLS_KEY="$work/key.pem"
PORT=$port

# curl, h2c with prior knowledge.
out="$(curl -sS --max-time 10 --http2-prior-knowledge -o "$work/body1" \
  -w '%{http_code} %{http_version}' "http://127.0.0.1:$PORT/healthz")" || true
if [[ "$out" == "200 2" ]]; then pass "curl --http2-prior-knowledge /healthz: $out"
else fail "curl --http2-prior-knowledge /healthz: got '$out', expected '200 2'"; fi

# curl, TLS with ALPN h2 on the same port.
out="$(curl -sS --max-time 10 -k --http2 -o "$work/body2" \
  -w '%{http_code} %{http_version}' "https://127.0.0.1:$PORT/healthz")" || true
if [[ "$out" == "200 2" ]]; then pass "curl -k --http2 https /healthz: $out"
else fail "curl -k --http2 https /healthz: got '$out', expected '200 2'"; fi

# The certificate verifies against itself too (no -k), by name.
out="$(curl -sS --max-time 10 --cacert "$work/cert.pem" --http2 -o /dev/null \
  --resolve "localhost:$PORT:127.0.0.1" -w '%{http_code} %{http_version}' \
  "https://localhost:$PORT/healthz")" || true
if [[ "$out" == "200 2" ]]; then pass "curl --cacert https://localhost /healthz: $out"
else fail "curl --cacert https://localhost /healthz: got '$out', expected '200 2'"; fi

# JSON on request.
body="$(curl -sS --max-time 10 --http2-prior-knowledge -H 'Accept: application/json' \
  "http://127.0.0.1:$PORT/healthz")" || true
if [[ "$(tr -d ' \n' <<<"$body")" == '{"status":"ok"}' ]]; then pass "JSON body: $body"
else fail "Accept: application/json /healthz: body '$body', expected {\"status\":\"ok\"}"; fi

# An HTTP/1.1 client is told to use HTTP/2, and is not left hanging.
out="$(curl -sS --max-time 10 --http1.1 -o "$work/body505" -w '%{http_code}' \
  "http://127.0.0.1:$PORT/healthz")" || true
if [[ "$out" == "505" ]] && grep -q 'HTTP/2' "$work/body505"; then
  pass "curl --http1.1: 505 naming HTTP/2"
else fail "curl --http1.1: got '$out' and body '$(head -c 200 "$work/body505" 2>/dev/null)'"; fi

# /metrics is Prometheus text.
out="$(curl -sS --max-time 10 --http2-prior-knowledge -D "$work/mh" -o "$work/metrics" \
  -w '%{http_code}' "http://127.0.0.1:$PORT/metrics")" || true
if [[ "$out" == "200" ]] && grep -qi '^content-type: text/plain' "$work/mh" \
  && grep -q '^handsel_http_requests_total{' "$work/metrics"; then
  pass "/metrics: Prometheus text"
else fail "/metrics: status '$out' or content not Prometheus text"; fi

# nghttp, h2c and TLS.
if nghttp -v "http://127.0.0.1:$PORT/healthz" >"$work/nghttp1" 2>&1 \
  && grep -q ':status: 200' "$work/nghttp1"; then
  pass "nghttp -v http:// /healthz"
else fail "nghttp -v http:// /healthz:"; tail -20 "$work/nghttp1" >&2; fi
if nghttp -v "https://127.0.0.1:$PORT/healthz" >"$work/nghttp2" 2>&1 \
  && grep -q ':status: 200' "$work/nghttp2" && grep -qi 'negotiated protocol: h2' "$work/nghttp2"; then
  pass "nghttp -v https:// /healthz (ALPN h2)"
else fail "nghttp -v https:// /healthz:"; tail -20 "$work/nghttp2" >&2; fi

# The server announces its limit on concurrent streams.
if grep -q 'SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100' "$work/nghttp1"; then
  pass "SETTINGS_MAX_CONCURRENT_STREAMS 100"
else fail "the server's SETTINGS lack MAX_CONCURRENT_STREAMS 100"; fi

# SIGTERM: a clean exit 0.
kill -TERM "$server_pid"
status=0
for _ in $(seq 1 150); do
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$server_pid" 2>/dev/null; then
  fail "the server did not exit within 15 s of SIGTERM"
else
  wait "$server_pid" || status=$?
  server_pid=""
  if [[ $status -eq 0 ]]; then pass "SIGTERM: exit 0"; else fail "SIGTERM: exit status $status"; fi
fi

if [[ $failures -gt 0 ]]; then
  echo "server output:" >&2
  tail -40 "$work/server.log" >&2
  exit 1
fi
rm -rf "$work"
echo "all curl/nghttp checks passed"
