package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/providers"
	"github.com/kmspostgres/kmspostgres/providers/awskms"
	"github.com/kmspostgres/kmspostgres/providers/vault"
)

// oneByOne hides a provider's batch support, to compare request counts.
type oneByOne struct{ providers.Provider }

// TestSwitchKMSWithPreviousVersions writes under AWS KMS, switches the key
// to Vault as version 2 with version 1 still readable, and re-keys rows.
func TestSwitchKMSWithPreviousVersions(t *testing.T) {
	l := startLocalKMS(t)
	v := startVault(t)
	awsEnv(t, l.url())
	t.Setenv("VAULT_ADDR", v.addr)
	t.Setenv("VAULT_TOKEN", "root")
	aws, err := awskms.New(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	vp, err := vault.New()
	if err != nil {
		t.Fatal(err)
	}
	useProvider(t, providers.KindAWS, aws)
	useProvider(t, providers.KindVault, vp)

	v1 := strings.Replace(usersMap, "key_id: insecure-test-key", "key_id: alias/kmspg", 1)
	e := newEnv(t, usersDDL, v1)
	db1 := e.openBare()
	defer db1.Close()
	for i := 1; i <= 3; i++ {
		if _, err := db1.Exec("INSERT INTO users (id, name, email) VALUES ($1, 'n', $2)", i, fmt.Sprintf("u%d@x", i)); err != nil {
			t.Fatal(err)
		}
	}
	v2 := strings.Replace(usersMap, "      kms_key: {}", `      kms_key:
        key_id: vault/kp
        version: 2
        previous_versions:
          1: {key_id: alias/kmspg}`, 1)
	if err := os.WriteFile(e.schema, []byte(v2), 0o644); err != nil {
		t.Fatal(err)
	}
	db2 := e.openBare()
	defer db2.Close()
	if _, err := db2.Exec("INSERT INTO users (id, name, email) VALUES (4, 'n', 'u4@x')"); err != nil {
		t.Fatal(err)
	}
	if got := stringsOf(t, db2, "SELECT email FROM users ORDER BY id"); got != "u1@x|u2@x|u3@x|u4@x" {
		t.Fatalf("mixed versions: %s", got)
	}
	// Re-key one v1 row with an UPDATE of every column under the key...
	if _, err := db2.Exec("UPDATE users SET email = $1, dob = NULL, balance = NULL WHERE id = 1", "u1@x"); err != nil {
		t.Fatal(err)
	}
	keys := e.rawValues("SELECT left(encrypted_kms_key, 3) FROM users ORDER BY id")
	if strings.Join(keys, ",") != "v2:,v1:,v1:,v2:" {
		t.Fatalf("key versions: %v", keys)
	}
	// ...and re-wrap the others from AWS to Vault without touching cells.
	st, err := e.connector().Rewrap(context.Background(), "users", kmspostgres.RewrapOptions{})
	if err != nil || st.Rewrapped != 2 {
		t.Fatalf("rewrap: %+v %v", st, err)
	}
	keys = e.rawValues("SELECT left(encrypted_kms_key, 3) FROM users ORDER BY id")
	if strings.Join(keys, ",") != "v2:,v2:,v2:,v2:" {
		t.Fatalf("key versions after rewrap: %v", keys)
	}
	if got := stringsOf(t, db2, "SELECT email FROM users ORDER BY id"); got != "u1@x|u2@x|u3@x|u4@x" {
		t.Fatalf("after re-keying: %s", got)
	}
	// The old schema cannot read the new version.
	var s string
	mustErrIs(t, db1.QueryRow("SELECT email FROM users WHERE id = 4").Scan(&s), kmspostgres.ErrVersion)
}

func TestVaultSpecifics(t *testing.T) {
	v := startVault(t)
	ctx := context.Background()
	px := newProxy(t, v.addr)
	p := vault.NewFromClient(v.client(t, px.srv.URL, "root"))
	dk, _ := envelope.NewDataKey()

	t.Run("non-derived key refused", func(t *testing.T) {
		_, err := p.Wrap(ctx, "vault/notderived", dk, envelope.Context{"id": "1"})
		if !errors.Is(err, vault.ErrNotDerived) || !strings.Contains(err.Error(), "derived=true") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("decrypt-only token cannot wrap", func(t *testing.T) {
		dp := vault.NewFromClient(v.client(t, v.addr, v.decToken))
		_, err := dp.Wrap(ctx, "vault/kp", dk, envelope.Context{"id": "1"})
		mustErrIs(t, err, providers.ErrPermission)
	})
	t.Run("context hash matches the audit log", func(t *testing.T) {
		rowCtx := map[string]string{"table": "users", "id": "77"}
		if _, err := p.Wrap(ctx, "vault/kp", dk, rowCtx); err != nil {
			t.Fatal(err)
		}
		h, err := p.ContextHash(ctx, rowCtx, "file")
		if err != nil {
			t.Fatal(err)
		}
		logData, err := os.ReadFile(v.auditLog)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(h, "hmac-sha256:") || !strings.Contains(string(logData), h) {
			t.Fatalf("hash %s not found in the audit log", h)
		}
		if strings.Contains(string(logData), "\"id\":\"77\"") {
			t.Fatal("the audit log shows the context in clear")
		}
	})
	t.Run("batched unwraps", func(t *testing.T) {
		useProvider(t, providers.KindVault, p)
		e := newEnv(t, `CREATE TABLE items (id bigint PRIMARY KEY, secret text, encrypted_kms_key text)`,
			"key_id: vault/kp\ntables:\n  items:\n    columns:\n      secret: {}\n")
		db := e.openBare()
		defer db.Close()
		values := make([]string, 0, 1000)
		args := make([]any, 0, 2000)
		for i := range 1000 {
			values = append(values, fmt.Sprintf("($%d, $%d)", 2*i+1, 2*i+2))
			args = append(args, i+1, fmt.Sprintf("s%d", i))
		}
		if _, err := db.Exec("INSERT INTO items (id, secret) VALUES "+strings.Join(values, ", "), args...); err != nil {
			t.Fatal(err)
		}
		measure := func(db *sql.DB) (int64, time.Duration) {
			before := px.requests.Load()
			start := time.Now()
			if n := strings.Count(stringsOf(t, db, "SELECT secret FROM items"), "|") + 1; n != 1000 {
				t.Fatalf("%d rows", n)
			}
			return px.requests.Load() - before, time.Since(start)
		}
		batched, tb := measure(db)
		single := e.openBare(kmspostgres.WithProvider(oneByOne{p}))
		defer single.Close()
		unbatched, tu := measure(single)
		t.Logf("vault: 1000-row SELECT: %d requests batched (%v), %d one by one (%v)", batched, tb, unbatched, tu)
		if batched > 8 || unbatched != 1000 {
			t.Fatalf("requests: %d batched, %d one by one", batched, unbatched)
		}
	})
}
