// Command vault is the real HashiCorp Vault server and CLI, built from the
// Go module proxy for the integration tests (a dev server on loopback).
// It lives in its own module so that Vault's dependency tree stays out of
// kmspostgres's. scripts/vault.sh builds it once per machine into a cache.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
