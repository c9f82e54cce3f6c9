#!/usr/bin/env bash
# with-postgres.sh CMD [ARGS…]: runs CMD with KMSPG_TEST_DATABASE_URL pointing
# at a PostgreSQL server. If the variable is already set, that server is used
# as is. Otherwise a throwaway cluster is made in a temporary directory, on a
# free loopback port, from the machine's PostgreSQL binaries (run as the
# postgres user when we are root, since the server refuses root), and torn
# down when CMD exits.
set -euo pipefail

if [[ -n "${KMSPG_TEST_DATABASE_URL:-}" ]]; then
  exec "$@"
fi

pgbin=""
for d in /usr/lib/postgresql/*/bin; do
  [[ -x "$d/initdb" ]] && pgbin="$d"
done
if [[ -z "$pgbin" ]]; then
  pgbin=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
fi
if [[ ! -x "$pgbin/initdb" ]]; then
  echo "with-postgres: no PostgreSQL server binaries found; install postgresql (apt-get install postgresql) or set KMSPG_TEST_DATABASE_URL" >&2
  exit 1
fi

as_pg=()
if [[ $(id -u) -eq 0 ]]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  as_pg=(runuser -u postgres --)
fi

dir=$(mktemp -d /tmp/kmspg-pg.XXXXXX)
chmod 700 "$dir"
[[ ${#as_pg[@]} -gt 0 ]] && chown postgres "$dir"

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
  else
    echo $((20000 + RANDOM % 20000))
  fi
}

cleanup() {
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

"${as_pg[@]}" "$pgbin/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 || {
  cat "$dir/initdb.log" >&2; exit 1; }

started=""
for _ in 1 2 3 4 5; do
  port=$(free_port)
  if "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >/dev/null; then
    started=1
    break
  fi
done
if [[ -z "$started" ]]; then
  echo "with-postgres: PostgreSQL did not start" >&2
  cat "$dir/server.log" >&2 || true
  exit 1
fi

"${as_pg[@]}" "$pgbin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qAt -c "CREATE DATABASE kmspg" >/dev/null
export KMSPG_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/kmspg?sslmode=disable"
echo "with-postgres: PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (throwaway)" >&2

set +e
"$@"
rc=$?
set -e
exit $rc
