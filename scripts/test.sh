#!/usr/bin/env bash
# test.sh: the project's test command. Starts what the tests need (a
# throwaway PostgreSQL unless KMSPG_TEST_DATABASE_URL is set) and runs every
# test with the race detector. Extra arguments go to go test.
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/with-postgres.sh go test -race -count=1 "$@" ./...
