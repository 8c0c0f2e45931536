#!/usr/bin/env bash
# `handsel migrate` on a database that already holds data: a schema at version 7 (the
# completions' event log in its own table, step_completions) with completions and records
# written the way the server wrote them is moved to version 8 (the log in the accepted
# validation record) and on to the latest:
#   - every completion reads back the same through step_completions, now a view;
#   - the rejected records carry no log, and no record's sealed columns changed;
#   - the compliance log is append-only again afterwards;
#   - a completion without its accepted record stops the migration with a message naming the
#     problem, and the database stays at version 7 with nothing changed.
#
# Needs HANDSEL_BIN and HANDSEL_DB (a database whose role may create databases; scripts/test
# provides both).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${HANDSEL_BIN:?HANDSEL_BIN must name the handsel binary (run through ctest)}"
: "${HANDSEL_DB:?HANDSEL_DB must be a database (scripts/test sets it)}"
migrations="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../server/db/migrations" && pwd)"
dbs=()

cleanup() {
  local db
  for db in "${dbs[@]}"; do
    psql -X -q "$HANDSEL_DB" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT

expect_eq() { # WHAT GOT WANT
  if [[ $2 == "$3" ]]; then
    pass "$1"
  else
    fail "$1: got '$2', want '$3'"
  fi
}

# new_db_at_7 NAME: a database with migrations 001 to 007 applied and recorded as
# `handsel migrate` records them; sets conn to its conninfo (libpq takes the last dbname).
new_db_at_7() {
  local db="$1_$$"
  dbs+=("$db")
  psql -X -q -v ON_ERROR_STOP=1 "$HANDSEL_DB" -c "CREATE DATABASE $db" >/dev/null
  conn="$HANDSEL_DB dbname=$db"
  psql -X -q -v ON_ERROR_STOP=1 "$conn" -c "SET client_min_messages = warning" \
    -c "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now())" >/dev/null
  local f name
  for f in "$migrations"/00[1-7]_*.sql; do
    name=$(basename "$f" .sql)
    { echo "SET client_min_messages = warning;"; cat "$f"
      echo "INSERT INTO schema_migrations (version, name) VALUES (${name%%_*}, '$name');"; } |
      psql -X -q -1 -v ON_ERROR_STOP=1 "$conn" >/dev/null
  done
}

q() { psql -X -qAt -v ON_ERROR_STOP=1 "$conn" -c "$1"; }

# Two sessions' completions as the server wrote them at version 7: each accepted completion is
# a step_completions row and an accepted record in one transaction; a rejected attempt is a
# record alone.
seed_sql="
INSERT INTO brands (name) VALUES ('acme');
INSERT INTO step_completions (session_id, seq, digest, events, ended, device_time)
  SELECT 's' || s, n, sha256(('req ' || s || ' ' || n)::bytea), ('\\x91' || lpad(to_hex(n), 2, '0'))::bytea,
         n = 3, '2026-11-23 10:00:00+00'::timestamptz + n * interval '1 s'
  FROM generate_series(1, 2) s, generate_series(1, 3) n;
INSERT INTO validation_records (brand_id, session_id, process, version, step_id, seq,
  contractor_id, device_time, result, errors, data_digest, data)
  SELECT 1, 's1', 'visit', 'v1', 'step', 2, 'alice', NULL, 'rejected', '\\x80'::bytea,
         sha256('\\x80'::bytea), '\\x80'::bytea;
INSERT INTO validation_records (brand_id, session_id, process, version, step_id, seq,
  contractor_id, device_time, result, data_digest, data)
  SELECT 1, session_id, 'visit', 'v1', 'step', seq, 'alice', device_time, 'accepted',
         sha256('\\x80'::bytea), '\\x80'::bytea FROM step_completions ORDER BY session_id, seq;"

log_sql="SELECT string_agg(session_id || ' ' || seq || ' ' || encode(digest, 'hex') || ' ' ||
  encode(events, 'hex') || ' ' || ended || ' ' || coalesce(device_time::text, '-'), E'\n'
  ORDER BY session_id, seq) FROM step_completions"
sealed_sql="SELECT string_agg(concat_ws(' ', id, brand_id, session_id, process, version, step_id,
  seq, contractor_id, server_time, device_time, result, encode(errors, 'hex'),
  encode(data_digest, 'hex'), encode(data, 'hex')), E'\n' ORDER BY id) FROM validation_records"

# ---- an upgrade with data
new_db_at_7 hs_upgrade
q "$seed_sql"
log_before=$(q "$log_sql")
sealed_before=$(q "$sealed_sql")
expect_eq "the seeded log has 6 completions" "$(q "SELECT count(*) FROM step_completions")" 6

if ! out=$("$HANDSEL_BIN" migrate --db "$conn" 2>&1); then
  fail "migrate failed on a database at version 7: $out"
fi
latest=$(find "$migrations" -name '[0-9][0-9][0-9]_*.sql' | wc -l)
expect_eq "the schema is at the latest version" \
  "$(q "SELECT max(version) FROM schema_migrations")" "$latest"
expect_eq "step_completions is a view" \
  "$(q "SELECT relkind FROM pg_class WHERE relname = 'step_completions'")" v
expect_eq "every completion reads back the same" "$(q "$log_sql")" "$log_before"
expect_eq "no sealed column of any record changed" "$(q "$sealed_sql")" "$sealed_before"
expect_eq "a rejected record carries no log" \
  "$(q "SELECT count(*) FROM validation_records WHERE result = 'rejected' AND events IS NULL
        AND digest IS NULL AND ended IS NULL")" 1
expect_eq "the append-only trigger is enabled again" \
  "$(q "SELECT tgenabled FROM pg_trigger WHERE tgname = 'validation_records_no_update'")" O
expect_eq "the role holds no UPDATE on the new columns" \
  "$(q "SELECT NOT rolsuper AND has_column_privilege('validation_records', 'events', 'UPDATE')
        FROM pg_roles WHERE rolname = current_user")" f
if q "UPDATE validation_records SET events = NULL WHERE seq = 1" >/dev/null 2>&1; then
  fail "an UPDATE of the compliance log succeeded after the migration"
else
  pass "the compliance log is append-only again"
fi
if q "INSERT INTO validation_records (brand_id, session_id, process, version, step_id, seq,
      contractor_id, result, data_digest, data) VALUES (1, 's1', 'visit', 'v1', 'step', 4,
      'alice', 'accepted', sha256('\\x80'::bytea), '\\x80'::bytea)" >/dev/null 2>&1; then
  fail "an accepted record without its events was stored"
else
  pass "an accepted record must carry its completion's log"
fi
if q "INSERT INTO validation_records (brand_id, session_id, process, version, step_id, seq,
      contractor_id, result, data_digest, data, digest, events, ended) VALUES (1, 's1', 'visit',
      'v1', 'step', 3, 'alice', 'accepted', sha256('\\x80'::bytea), '\\x80'::bytea,
      sha256('x'::bytea), '\\x90'::bytea, false)" >/dev/null 2>&1; then
  fail "a second accepted completion of s1 seq 3 was stored"
else
  pass "one accepted completion per (session, seq)"
fi

# ---- a completion without its record stops the upgrade, changing nothing
new_db_at_7 hs_upgrade_bad
q "$seed_sql"
q "INSERT INTO step_completions (session_id, seq, digest, events) VALUES ('s9', 1, '\\x00', '\\x90')"
if out=$("$HANDSEL_BIN" migrate --db "$conn" 2>&1); then
  fail "migrate succeeded although a completion has no accepted record"
else
  case $out in
  *"1 stored completions have no accepted validation record"*)
    pass "the migration names the missing records" ;;
  *) fail "the migration's error does not name the problem: $out" ;;
  esac
fi
expect_eq "the failed migration left the schema at version 7" \
  "$(q "SELECT max(version) FROM schema_migrations")" 7
expect_eq "the failed migration left step_completions a table" \
  "$(q "SELECT relkind FROM pg_class WHERE relname = 'step_completions'")" r
expect_eq "the failed migration added no column" \
  "$(q "SELECT count(*) FROM information_schema.columns WHERE table_name = 'validation_records'
        AND column_name = 'events'")" 0

if ((failures > 0)); then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "PASS"
