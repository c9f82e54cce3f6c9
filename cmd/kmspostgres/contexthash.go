package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"github.com/kmspostgres/kmspostgres/providers/vault"
)

const contextHashHelp = `Usage: kmspostgres context-hash [-dsn DSN] [-key NAME] [-device PATH] TABLE PK

Prints the HMAC that Vault's audit device logs for the encryption context of
a row (kms_encrypted's context_hash), so that an auditor can find the row's
decryptions in a Vault audit log: grep the log for the printed value and
keep the transit/decrypt/<key> entries (Vault also logs this command's own
sys/audit-hash requests with the same HMAC). The
context is built from the schema map (the current version of the key) and
the primary key as PostgreSQL prints it; a composite primary key is given
as its values comma-separated, in primary-key order. Vault is reached
through its usual environment (VAULT_ADDR, VAULT_TOKEN, …); the token needs
read access to sys/audit-hash. The database is not contacted.

Exit codes: 0 printed, 1 failed (Vault, schema map), 2 usage error.

Examples:
  kmspostgres context-hash users 42                  # DSN from DATABASE_URL
  kmspostgres context-hash -device file notes acme,7 # audit device "file"
`

func contextHashFlags(fs *flag.FlagSet) func(context.Context, *cmdEnv) int {
	key := fs.String("key", "", "key name in the schema map (default: the table's only key)")
	device := fs.String("device", "file", "path of the Vault audit device whose HMAC to print")
	return func(ctx context.Context, e *cmdEnv) int {
		if len(e.args) != 2 {
			return e.usageErr("give a table and a primary key, got %d arguments", len(e.args))
		}
		c, code := e.connector()
		if c == nil {
			return code
		}
		if code := checkTables(e, c, e.args[:1]); code != exitOK {
			return code
		}
		keyID, rowCtx, err := c.RowContext(e.args[0], *key, strings.Split(e.args[1], ","))
		if err != nil {
			return e.usageErr("%v", err)
		}
		if !strings.HasPrefix(keyID, "vault/") {
			return e.fail(fmt.Errorf("kmspostgres context-hash: %s wraps its keys under %s, not a Vault key (vault/<name>); only Vault audit logs hash contexts", e.args[0], keyID))
		}
		p, err := vault.New()
		if err != nil {
			return e.fail(err)
		}
		h, err := p.ContextHash(ctx, rowCtx, *device)
		if err != nil {
			return e.fail(fmt.Errorf("kmspostgres context-hash: %w", err))
		}
		fmt.Fprintln(e.stdout, h)
		return exitOK
	}
}
