package integration

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/providers"
)

func TestTamperFailsClosed(t *testing.T) {
	e := newEnv(t, usersDDL+`CREATE TABLE admins (id bigserial PRIMARY KEY, email text, encrypted_kms_key text);`, usersMap+`
  admins:
    columns:
      email: {}
`)
	e.exec("INSERT INTO users (id, name, email, dob) VALUES (1, 'a', 'a@x', '2000-01-01'), (2, 'b', 'b@x', '2000-02-02')")
	e.exec("INSERT INTO admins (id, email) VALUES (1, 'admin@x')")
	ctx := context.Background()
	reset := func() {
		e.raw.Exec(ctx, "DELETE FROM users")
		e.raw.Exec(ctx, "DELETE FROM admins")
		e.exec("INSERT INTO users (id, name, email, dob) VALUES (1, 'a', 'a@x', '2000-01-01'), (2, 'b', 'b@x', '2000-02-02')")
		e.exec("INSERT INTO admins (id, email) VALUES (1, 'admin@x')")
	}
	tampers := map[string]string{
		"cell moved to another row":    "UPDATE users SET email = (SELECT email FROM users WHERE id = 2) WHERE id = 1",
		"cell moved to another column": "UPDATE users SET email = dob WHERE id = 1",
		"cell moved to another table":  "UPDATE users SET email = (SELECT email FROM admins WHERE id = 1) WHERE id = 1",
		"key moved to another row":     "UPDATE users SET encrypted_kms_key = (SELECT encrypted_kms_key FROM users WHERE id = 2) WHERE id = 1",
		"key moved to another table":   "UPDATE users SET encrypted_kms_key = (SELECT encrypted_kms_key FROM admins WHERE id = 1) WHERE id = 1",
		"primary key changed":          "UPDATE users SET id = 3 WHERE id = 1",
		"cell bit flipped":             "UPDATE users SET email = overlay(email placing (CASE WHEN substr(email, 20, 1) = 'A' THEN 'B' ELSE 'A' END) from 20 for 1) WHERE id = 1",
		"key bit flipped":              "UPDATE users SET encrypted_kms_key = overlay(encrypted_kms_key placing (CASE WHEN substr(encrypted_kms_key, 30, 1) = 'A' THEN 'B' ELSE 'A' END) from 30 for 1) WHERE id = 1",
	}
	for name, sql := range tampers {
		t.Run(name, func(t *testing.T) {
			reset()
			if _, err := e.raw.Exec(ctx, sql); err != nil {
				t.Fatal(err)
			}
			rows, err := e.db.Query("SELECT id, email, dob FROM users ORDER BY id")
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var leaked []string
			for rows.Next() {
				var id int
				var email, dob any
				if err := rows.Scan(&id, &email, &dob); err == nil {
					if s, ok := email.(string); ok && s != "a@x" && s != "b@x" {
						leaked = append(leaked, s)
					}
				}
			}
			err = rows.Err()
			if !errors.Is(err, kmspostgres.ErrDecrypt) {
				t.Fatalf("err = %v, want ErrDecrypt", err)
			}
			if len(leaked) > 0 {
				t.Fatalf("handed out ciphertext as plaintext: %q", leaked)
			}
			if !strings.Contains(err.Error(), "users.") || !strings.Contains(err.Error(), "id=") {
				t.Fatalf("error does not name table, column and row: %v", err)
			}
		})
	}
	t.Run("malformed key column", func(t *testing.T) {
		reset()
		e.raw.Exec(ctx, "UPDATE users SET encrypted_kms_key = 'not a key' WHERE id = 1")
		_, err := e.db.Query("SELECT email FROM users")
		if err == nil {
			var s string
			err = e.db.QueryRow("SELECT email FROM users WHERE id = 1").Scan(&s)
		}
		mustErrIs(t, err, kmspostgres.ErrFormat)
	})
	t.Run("unknown key version", func(t *testing.T) {
		reset()
		e.raw.Exec(ctx, "UPDATE users SET encrypted_kms_key = 'v3:' || substr(encrypted_kms_key, 4) WHERE id = 1")
		var s string
		err := e.db.QueryRow("SELECT email FROM users WHERE id = 1").Scan(&s)
		mustErrIs(t, err, kmspostgres.ErrVersion)
		if !strings.Contains(err.Error(), "not active: 3") {
			t.Fatalf("error does not name the version: %v", err)
		}
	})
	t.Run("cell without key", func(t *testing.T) {
		reset()
		e.raw.Exec(ctx, "UPDATE users SET encrypted_kms_key = NULL WHERE id = 1")
		var s string
		mustErrIs(t, e.db.QueryRow("SELECT email FROM users WHERE id = 1").Scan(&s), kmspostgres.ErrDecrypt)
	})
	t.Run("connection stays usable", func(t *testing.T) {
		reset()
		e.raw.Exec(ctx, "UPDATE users SET encrypted_kms_key = NULL WHERE id = 1")
		conn, err := e.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var s string
		if err := conn.QueryRowContext(ctx, "SELECT email FROM users WHERE id = 1").Scan(&s); err == nil {
			t.Fatal("no error")
		}
		if err := conn.QueryRowContext(ctx, "SELECT email FROM users WHERE id = 2").Scan(&s); err != nil || s != "b@x" {
			t.Fatalf("after a failure: %q %v", s, err)
		}
	})
}

func TestEncryptOnlyServer(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap)
	e.exec("INSERT INTO users (id, name, email) VALUES (1, 'a', 'a@x')")
	// The same schema, but the master key id only encrypts.
	enc := newEnv(t, "", strings.Replace(usersMap, "key_id: insecure-test-key", "key_id: insecure-test-key/encrypt", 1))
	enc.base = e.base
	db := enc.open()
	defer db.Close()
	if _, err := db.Exec("INSERT INTO users (id, name, email, dob) VALUES (2, 'b', 'b@x', '1999-09-09')"); err != nil {
		t.Fatalf("encrypt-only insert: %v", err)
	}
	var s string
	err := db.QueryRow("SELECT email FROM users WHERE id = 2").Scan(&s)
	mustErrIs(t, err, kmspostgres.ErrPermission)
	// An UPDATE that sets every column under the key mints a new key: no decrypt needed.
	if _, err := db.Exec("UPDATE users SET email = $1, dob = NULL, balance = NULL WHERE id = 1", "new@x"); err != nil {
		t.Fatalf("encrypt-only full update: %v", err)
	}
	// A partial update needs the row key: refused by the KMS, with advice.
	_, err = db.Exec("UPDATE users SET email = $1 WHERE id = 1", "newer@x")
	mustErrIs(t, err, kmspostgres.ErrPermission)
	if !strings.Contains(err.Error(), "every column under key kms_key") {
		t.Fatalf("no advice: %v", err)
	}
	// The full-rights server reads everything the encrypt-only one wrote.
	if got := e.strings("SELECT id, email, dob FROM users ORDER BY id"); got != "1,new@x,NULL|2,b@x,1999-09-09T00:00:00Z" {
		t.Fatalf("read back: %s", got)
	}
}

func TestKMSOutage(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap)
	e.exec("INSERT INTO users (id, name, email) VALUES (1, 'a', 'a@x')")
	e.kms.SetUnavailable(true)
	_, err := e.db.Exec("INSERT INTO users (id, name, email) VALUES (2, 'b', 'b@x')")
	mustErrIs(t, err, kmspostgres.ErrUnavailable)
	_, err = e.db.Exec("UPDATE users SET email = 'c@x', dob = NULL, balance = NULL WHERE id = 1")
	mustErrIs(t, err, kmspostgres.ErrUnavailable)
	var s string
	mustErrIs(t, e.db.QueryRow("SELECT email FROM users WHERE id = 1").Scan(&s), kmspostgres.ErrUnavailable)
	// Nothing was written, and no transaction was left open.
	if got := e.rawValues("SELECT count(*)::text FROM users"); got[0] != "1" {
		t.Fatalf("rows: %s", got)
	}
	e.kms.SetUnavailable(false)
	e.exec("INSERT INTO users (id, name, email) VALUES (2, 'b', 'b@x')")
	e.exec("UPDATE users SET email = 'c@x', dob = NULL, balance = NULL WHERE id = 1")
	if got := e.strings("SELECT email FROM users ORDER BY id"); got != "c@x|b@x" {
		t.Fatalf("after recovery: %s", got)
	}
	// Cancellation reaches the KMS call.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = e.db.ExecContext(ctx, "INSERT INTO users (id, name, email) VALUES (3, 'c', 'c@x')")
	if err == nil {
		t.Fatal("cancelled insert succeeded")
	}
}

func TestKeyVersionsAndContexts(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap)
	e.exec("INSERT INTO users (id, name, email) VALUES (1, 'old', 'old@x')")
	// Version 2 switches the context; version 1 stays readable.
	v2 := strings.Replace(usersMap, "      kms_key: {}", `      kms_key:
        version: 2
        context: {model: User, model_id: "{id}"}
        previous_versions:
          1: {key_id: insecure-test-key}`, 1)
	e2 := newEnv(t, "", v2)
	e2.base = e.base
	db := e2.open()
	defer db.Close()
	if _, err := db.Exec("INSERT INTO users (id, name, email) VALUES (2, 'new', 'new@x')"); err != nil {
		t.Fatal(err)
	}
	keys := e.rawValues("SELECT encrypted_kms_key FROM users ORDER BY id")
	if !strings.HasPrefix(keys[0], "v1:") || !strings.HasPrefix(keys[1], "v2:") {
		t.Fatalf("versions: %q", keys)
	}
	var a, b string
	if err := db.QueryRow("SELECT (SELECT 1), email FROM users WHERE id = 1").Scan(new(int), &a); err != nil || a != "old@x" {
		t.Fatalf("v1 under v2 schema: %q %v", a, err)
	}
	if err := db.QueryRow("SELECT email FROM users WHERE id = 2").Scan(&b); err != nil || b != "new@x" {
		t.Fatalf("v2: %q %v", b, err)
	}
	// The old schema cannot read version 2.
	var s string
	mustErrIs(t, e.db.QueryRow("SELECT email FROM users WHERE id = 2").Scan(&s), kmspostgres.ErrVersion)
	// Re-keying a row (every column under the key) moves it to v2.
	if _, err := db.Exec("UPDATE users SET email = $1, dob = NULL, balance = NULL WHERE id = 1", a); err != nil {
		t.Fatal(err)
	}
	if k := e.rawValues("SELECT encrypted_kms_key FROM users WHERE id = 1"); !strings.HasPrefix(k[0], "v2:") {
		t.Fatalf("re-keyed row: %q", k)
	}
	// The context is what the KMS saw.
	e2.events.Reset()
	db.QueryRow("SELECT email FROM users WHERE id = 1").Scan(&s)
	ev := e2.events.Events()
	if len(ev) != 1 || ev[0].Context["model"] != "User" || ev[0].Context["model_id"] != "1" || ev[0].Version != 2 || ev[0].Op != providers.OpUnwrap {
		t.Fatalf("audit event: %+v", ev)
	}
}
