#!/usr/bin/env bash
# PostgreSQL server binaries (initdb, pg_ctl) for the archive's PostgreSQL index test
# (tests/archive/test_postgres.py starts its own throwaway cluster as the postgres user on a unix socket),
# and psycopg 3 in the venv. Root + apt only; run by scripts/install-test-deps.sh.
set -euo pipefail
venv=${1:-.venv}
export DEBIAN_FRONTEND=noninteractive
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || {
  apt-get update -qq
  apt-get install -y -qq postgresql
}
if [ -x "$venv/bin/pip" ]; then "$venv/bin/pip" install -q 'psycopg[binary]>=3.1'; fi
