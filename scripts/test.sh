#!/usr/bin/env bash
# test.sh: the project's test command. Builds (once per machine, cached) the
# real KMS servers the provider tests run against, starts a throwaway
# PostgreSQL unless KMSPG_TEST_DATABASE_URL is set, and runs every test with
# the race detector. Extra arguments go to go test.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${KMSPG_TOOLS:-}" ]]; then
  KMSPG_TOOLS=$(scripts/build-tools.sh)
  export KMSPG_TOOLS
fi
exec scripts/with-postgres.sh go test -race -count=1 -timeout 30m "$@" ./...
