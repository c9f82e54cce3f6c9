#!/usr/bin/env bash
# build-tools.sh: builds the real KMS servers the provider tests run against,
# once per machine, into a cache outside the repository, and prints the
# directory that holds them. Rebuilt only when the pinned versions change.
#
#   local-kms  github.com/nsmithuk/local-kms (AWS KMS API, real AES-GCM)
#   sqlc       github.com/sqlc-dev/sqlc v1.31.1 (cgo), to check generated code
#   vault      HashiCorp Vault v1.21.0, from integration/tools/vault
#              (~5 GB of module downloads and ~11 minutes on 2 cores the
#              first time; seconds afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${KMSPG_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kmspostgres}"
localkms_version="v0.0.0-20260228092603-2a5e92d09ab6"
vault_hash=$(cat integration/tools/vault/go.mod integration/tools/vault/go.sum integration/tools/vault/main.go | sha256sum | cut -c1-16)
bin="$cache/bin"
mkdir -p "$bin"

# install NAME PACKAGE VERSION: go install into the cache, once per version.
install() {
  local name=$1 pkg=$2 version=$3
  if [[ ! -x "$bin/$name-$version" ]]; then
    echo "build-tools: installing $name $version" >&2
    local tmp
    tmp=$(mktemp -d)
    GOBIN="$tmp" GOFLAGS=-mod=mod go install "$pkg@$version" >&2
    mv "$tmp/$name" "$bin/$name-$version"
    rm -rf "$tmp"
  fi
  ln -sf "$name-$version" "$bin/$name"
}

install local-kms github.com/nsmithuk/local-kms "$localkms_version"
install sqlc github.com/sqlc-dev/sqlc/cmd/sqlc v1.31.1

if [[ ! -x "$bin/vault-$vault_hash" ]]; then
  echo "build-tools: building Vault (first time on this machine: about 11 minutes)" >&2
  (cd integration/tools/vault && GONOSUMDB=github.com/hashicorp GOFLAGS=-mod=mod \
    go build -trimpath -o "$bin/vault-$vault_hash.tmp" .) >&2
  mv "$bin/vault-$vault_hash.tmp" "$bin/vault-$vault_hash"
fi
ln -sf "vault-$vault_hash" "$bin/vault"
echo "$bin"
