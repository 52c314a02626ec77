#!/usr/bin/env bash
# Start a throw-away PostgreSQL on loopback for the store tests; print its SQLAlchemy URL.
# Installs Debian's postgresql when missing. Usage: export ASSAY_TEST_POSTGRES_URL="$(.ci/postgres.sh)"
set -euo pipefail
PGPORT="${ASSAY_PG_PORT:-55432}"
PGDATA="${ASSAY_PG_DATA:-/tmp/assay-ci-pg}"
bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
if [ -z "$(bindir)" ]; then
  (apt-get update && apt-get install -y postgresql) >&2
fi
BIN="$(bindir)"
RUN=(); [ "$(id -u)" = 0 ] && RUN=(runuser -u postgres --)
if ! "${RUN[@]}" "$BIN/pg_isready" -h 127.0.0.1 -p "$PGPORT" -q; then
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"; [ "$(id -u)" = 0 ] && chown postgres "$PGDATA"
    "${RUN[@]}" "$BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 >&2
  fi
  "${RUN[@]}" "$BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k /tmp -c max_connections=200 -c fsync=off" start >&2
fi
echo "postgresql+psycopg://postgres@127.0.0.1:$PGPORT/postgres"
