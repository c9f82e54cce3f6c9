package integration

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/providers/testkey"
)

// readAll reads every row of query through db and fails on any error:
// property (3), no successful write leaves an unreadable row.
func attack2ReadAll(t *testing.T, db *sql.DB, query string) string {
	t.Helper()
	return stringsOf(t, db, query)
}

// Primary keys of odd Go types and literal shapes: each write either
// fails or the row reads back under the same key.
func TestAttack2PKShapes(t *testing.T) {
	e := newEnv(t, `
CREATE TABLE pi (id bigint PRIMARY KEY, s text, encrypted_kms_key text);
CREATE TABLE pv (k varchar(5) PRIMARY KEY, s text, encrypted_kms_key text);
CREATE TABLE pu (k uuid PRIMARY KEY, s text, encrypted_kms_key text);
CREATE TABLE pc (a text, b varchar, c int, PRIMARY KEY (a, b, c), s text, encrypted_kms_key text);`,
		"key_id: insecure-test-key\ntables:\n  pi: {columns: {s: {}}}\n  pv: {primary_key: k, columns: {s: {}}}\n  pu: {primary_key: k, columns: {s: {}}}\n  pc: {primary_key: [a, b, c], columns: {s: {}}}\n")
	n := int64(46)
	pn := &n
	ppn := &pn
	intKeys := []any{" 42 ", "+43", float64(44), sql.NullInt64{Int64: 45, Valid: true}, ppn, json.RawMessage("47"), []byte("48"), "0049", time.Unix(50, 0)}
	ok := 0
	for i, k := range intKeys {
		secret := fmt.Sprintf("pi-secret-%d", i)
		_, err := e.db.Exec("INSERT INTO pi (id, s) VALUES ($1, $2)", k, secret)
		t.Logf("pi %T %v: %v", k, k, err)
		if err == nil {
			ok++
		}
	}
	for _, lit := range []string{"'051'", "'  52'::int8", "'+53'::bigint", "54::int4", "DEFAULT"} {
		_, err := e.db.Exec("INSERT INTO pi (id, s) VALUES (" + lit + ", 'pi-lit')")
		t.Logf("pi literal %s: %v", lit, err)
	}
	attack2ReadAll(t, e.db, "SELECT id, s FROM pi ORDER BY id")
	e.assertNoPlaintext("pi", "pi-secret", "pi-lit")

	for i, k := range []any{"ab   ", []byte("cd"), json.RawMessage(`"x"`), "é\u0301", "a\u00a0", "ab\t", "abcde ", "abcde   "} {
		_, err := e.db.Exec("INSERT INTO pv (k, s) VALUES ($1, $2)", k, fmt.Sprintf("pv-secret-%d", i))
		t.Logf("pv %q: %v", k, err)
	}
	for _, lit := range []string{"'ef'::varchar", "'gh  '::text", "E'ij\\n'", "U&'k\\00e9'", "$$lm $$"} {
		_, err := e.db.Exec("INSERT INTO pv (k, s) VALUES (" + lit + ", 'pv-lit')")
		t.Logf("pv literal %s: %v", lit, err)
	}
	attack2ReadAll(t, e.db, "SELECT k, s FROM pv ORDER BY k")
	e.assertNoPlaintext("pv", "pv-secret", "pv-lit")

	for i, k := range []any{"A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12}", "a0eebc999c0b4ef8bb6d6bb9bd380a13", []byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x14}, [16]byte{1, 2, 3}} {
		_, err := e.db.Exec("INSERT INTO pu (k, s) VALUES ($1, $2)", k, fmt.Sprintf("pu-secret-%d", i))
		t.Logf("pu %v: %v", k, err)
	}
	for _, lit := range []string{"'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A15'", "'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a16}'::uuid", "'a0eebc999c0b4ef8bb6d6bb9bd380a17'"} {
		_, err := e.db.Exec("INSERT INTO pu (k, s) VALUES (" + lit + ", 'pu-lit')")
		t.Logf("pu literal %s: %v", lit, err)
	}
	attack2ReadAll(t, e.db, "SELECT k, s FROM pu ORDER BY k")
	e.assertNoPlaintext("pu", "pu-secret", "pu-lit")

	// Composite keys whose parts join to the same string.
	rows := [][3]any{{"a,b", "c", 1}, {"a", "b,c", 1}, {"a|", "b", 1}, {"a", "|b", 1}, {"a=b", "", 1}, {"a", "=b", 1}, {"x", "y", "1"}, {"x ", "y", 2}}
	for i, r := range rows {
		_, err := e.db.Exec("INSERT INTO pc (a, b, c, s) VALUES ($1, $2, $3, $4)", r[0], r[1], r[2], fmt.Sprintf("pc-secret-%d", i))
		if err != nil {
			t.Logf("pc %v: %v", r, err)
		}
	}
	attack2ReadAll(t, e.db, "SELECT a, b, c, s FROM pc ORDER BY a, b, c")
	// Swap the cells (and key columns) of two rows whose parts join the same
	// way: each must now fail to decrypt rather than read the other's value.
	ctx := context.Background()
	if _, err := e.raw.Exec(ctx, `UPDATE pc SET (s, encrypted_kms_key) = (SELECT s, encrypted_kms_key FROM pc WHERE a = 'a,b' AND b = 'c') WHERE a = 'a' AND b = 'b,c'`); err != nil {
		t.Fatal(err)
	}
	var s string
	err := e.db.QueryRow("SELECT s FROM pc WHERE a = 'a' AND b = 'b,c'").Scan(&s)
	if err == nil {
		t.Fatalf("pc: a row moved to a key that joins to the same string decrypts: %q", s)
	}
	if _, err := e.db.Exec("SELECT 1"); err != nil {
		t.Fatalf("connection unusable: %v", err)
	}
}

// Concurrent upserts on one key: every row must decrypt afterwards.
func TestAttack2ConcurrentUpsert(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap)
	known := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	stmts := []string{
		"INSERT INTO users (id, name, email, dob) VALUES (1, 'n', $1, '2020-01-01') ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email",
		"INSERT INTO users (id, name, email) VALUES (1, 'n', $1) ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, dob = EXCLUDED.dob",
		"INSERT INTO users (id, name, email) VALUES (1, 'n', $1) ON CONFLICT (id) DO NOTHING",
		"INSERT INTO users (id, name, email) VALUES (1, 'n', $1) ON CONFLICT (id) DO UPDATE SET name = 'm'",
	}
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 6 {
				v := fmt.Sprintf("ups-%d-%d@x", g, i)
				mu.Lock()
				known[v] = true
				mu.Unlock()
				q := stmts[(g+i)%len(stmts)]
				if _, err := e.db.Exec(q, v); err != nil {
					t.Logf("%s: %v", q, err)
				}
			}
		}()
	}
	wg.Wait()
	var email sql.NullString
	var dob sql.NullString
	if err := e.db.QueryRow("SELECT email, dob FROM users WHERE id = 1").Scan(&email, &dob); err != nil {
		t.Fatalf("row unreadable after concurrent upserts: %v", err)
	}
	if !known[email.String] {
		t.Fatalf("read %q, not a written value", email.String)
	}
	e.assertNoPlaintext("users", "ups-")
}

// UPDATE of encrypted columns concurrently with UPDATE/DELETE/re-INSERT of
// the same rows and with changes of which rows match.
func TestAttack2ConcurrentUpdateDelete(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap)
	for i := 1; i <= 10; i++ {
		e.exec("INSERT INTO users (id, org_id, name, email, dob) VALUES ($1, 1, 'n', $2, '2020-01-01')", i, fmt.Sprintf("init-%d@x", i))
	}
	var wg sync.WaitGroup
	work := []func(g, i int) error{
		func(g, i int) error {
			_, err := e.db.Exec("UPDATE users SET email = $1 WHERE org_id = 1", fmt.Sprintf("upd-%d-%d@x", g, i))
			return err
		},
		func(g, i int) error {
			_, err := e.db.Exec("UPDATE users SET org_id = 3 - org_id WHERE id % 2 = $1", i%2)
			return err
		},
		func(g, i int) error {
			id := 1 + (g+i)%10
			if _, err := e.db.Exec("DELETE FROM users WHERE id = $1", id); err != nil {
				return err
			}
			_, err := e.db.Exec("INSERT INTO users (id, org_id, name, email) VALUES ($1, 1, 'n', $2) ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email", id, fmt.Sprintf("re-%d-%d@x", g, i))
			return err
		},
		func(g, i int) error {
			rows, err := e.db.Query("UPDATE users SET dob = $1, email = $2 WHERE org_id = 2 RETURNING id, email, dob", "2021-02-03", fmt.Sprintf("ret-%d-%d@x", g, i))
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var id int
				var em, d sql.NullString
				if err := rows.Scan(&id, &em, &d); err != nil {
					return err
				}
			}
			return rows.Err()
		},
		func(g, i int) error {
			tx, err := e.db.Begin()
			if err != nil {
				return err
			}
			defer tx.Rollback()
			if _, err := tx.Exec("UPDATE users SET email = $1 WHERE id = $2", fmt.Sprintf("tx-%d-%d@x", g, i), 1+i%10); err != nil {
				return err
			}
			_, err = tx.Exec("UPDATE users SET phone = $1 WHERE id = $2", []byte("ph"), 1+i%10)
			if err != nil {
				return err
			}
			return tx.Commit()
		},
	}
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				if err := work[(g+i)%len(work)](g, i); err != nil {
					t.Logf("g%d i%d: %v", g, i, err)
				}
			}
		}()
	}
	wg.Wait()
	got := attack2ReadAll(t, e.db, "SELECT id, email, dob, phone FROM users ORDER BY id")
	t.Logf("final: %s", got)
	e.assertNoPlaintext("users", "upd-", "re-", "ret-", "tx-", "init-")
}

// The data-key cache: cells and keys moved between rows, columns and
// tables; expiry by age and uses; a failed unwrap does not poison others.
func TestAttack2KeyCache(t *testing.T) {
	e := newEnv(t, usersDDL+"CREATE TABLE users2 (LIKE users INCLUDING ALL);", usersMap+"  users2:\n    keys: {kms_key: {}}\n    columns: {email: {}, dob: {type: date}}\n")
	e.exec("INSERT INTO users (id, name, email, dob) VALUES (1, 'a', 'one@x', '2001-01-01'), (2, 'b', 'two@x', '2002-02-02'), (3, 'c', 'three@x', NULL)")
	e.exec("INSERT INTO users2 (id, name, email) VALUES (1, 'a', 'u2@x')")
	kms := testkey.New()
	db := e.openBare(kmspostgres.WithProvider(kms), kmspostgres.WithKeyCache(&kmspostgres.CacheConfig{MaxAge: 300 * time.Millisecond, MaxUses: 3}))
	defer db.Close()
	unwraps := func() int64 { _, u := kms.Calls(); return u }
	if got := stringsOf(t, db, "SELECT email FROM users ORDER BY id"); got != "one@x|two@x|three@x" {
		t.Fatalf("first read %s", got)
	}
	stringsOf(t, db, "SELECT email FROM users2")
	ctx := context.Background()
	mustRaw := func(q string) {
		t.Helper()
		if _, err := e.raw.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	// Row 1's key and cells copied to row 3 (all cached).
	mustRaw("UPDATE users SET (email, dob, encrypted_kms_key) = (SELECT email, dob, encrypted_kms_key FROM users WHERE id = 1) WHERE id = 3")
	var s sql.NullString
	if err := db.QueryRow("SELECT email FROM users WHERE id = 3").Scan(&s); err == nil {
		t.Fatalf("row 1's key and cells moved to row 3 read %q", s.String)
	}
	// users2 row 1 gets users row 1's key and cells (same pk, other table).
	mustRaw("UPDATE users2 SET (email, encrypted_kms_key) = (SELECT email, encrypted_kms_key FROM users WHERE id = 1) WHERE id = 1")
	if err := db.QueryRow("SELECT email FROM users2 WHERE id = 1").Scan(&s); err == nil {
		t.Fatalf("users' key and cell moved to users2 read %q", s.String)
	}
	// A cell moved to another column of the same row, under the same key.
	mustRaw("UPDATE users SET dob = email WHERE id = 2")
	if err := db.QueryRow("SELECT dob FROM users WHERE id = 2").Scan(&s); err == nil {
		t.Fatalf("email cell read as dob: %q", s.String)
	}
	// A failed unwrap (corrupt key on row 3) does not poison row 1.
	mustRaw("UPDATE users SET encrypted_kms_key = 'v1:AAAA' WHERE id = 3")
	db.QueryRow("SELECT email FROM users WHERE id = 3").Scan(&s)
	if err := db.QueryRow("SELECT email FROM users WHERE id = 1").Scan(&s); err != nil || s.String != "one@x" {
		t.Fatalf("row 1 after a failed unwrap: %q %v", s.String, err)
	}
	// max_uses: after 3 uses the key is unwrapped again.
	before := unwraps()
	for range 5 {
		if err := db.QueryRow("SELECT email FROM users WHERE id = 1").Scan(&s); err != nil {
			t.Fatal(err)
		}
	}
	if unwraps() == before {
		t.Fatalf("max_uses 3: 5 reads made no unwrap")
	}
	// max_age.
	time.Sleep(400 * time.Millisecond)
	before = unwraps()
	if err := db.QueryRow("SELECT email FROM users WHERE id = 1").Scan(&s); err != nil {
		t.Fatal(err)
	}
	if unwraps() == before {
		t.Fatalf("a key was served after max_age")
	}
	// Concurrent readers of a key being swapped in and out.
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				var v sql.NullString
				err := db.QueryRow("SELECT email FROM users WHERE id = $1", 1+g%2).Scan(&v)
				if err == nil && v.String != "one@x" && v.String != "two@x" {
					t.Errorf("concurrent read %q", v.String)
				}
				if err == nil && ((g%2 == 0) != (v.String == "one@x")) {
					t.Errorf("row %d read %q", 1+g%2, v.String)
				}
			}
		}()
	}
	wg.Wait()
}

// Rewrap concurrently with driver updates: every row reads back.
func TestAttack2RewrapConcurrent(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap)
	for i := 1; i <= 30; i++ {
		e.exec("INSERT INTO users (id, name, email, phone) VALUES ($1, 'n', $2, $3)", i, fmt.Sprintf("rw-%d@x", i), []byte("ph"))
	}
	v2 := strings.Replace(usersMap, "      kms_key: {}", `      kms_key:
        version: 2
        context: {model: User, model_id: "{id}"}
        previous_versions:
          1: {}`, 1)
	if err := os.WriteFile(e.schema, []byte(v2), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := kmspostgres.NewConnector(e.dsn(), kmspostgres.WithProvider(e.kms))
	if err != nil {
		t.Fatal(err)
	}
	db2 := sql.OpenDB(c)
	defer db2.Close()
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { // a new instance (v2) writing too
		defer wg.Done()
		for i := range 30 {
			if _, err := db2.Exec("UPDATE users SET email = $1, phone = NULL WHERE id = $2", fmt.Sprintf("rw3-%d@x", i), 30-i); err != nil {
				t.Logf("v2 update: %v", err)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := range 30 {
			if _, err := e.db.Exec("UPDATE users SET email = $1 WHERE id = $2", fmt.Sprintf("rw2-%d@x", i), 1+i); err != nil {
				t.Logf("update: %v", err)
			}
			if i%5 == 0 {
				e.db.Exec("DELETE FROM users WHERE id = $1", 30-i)
			}
		}
	}()
	go func() {
		defer wg.Done()
		r, err := c.Rewrap(context.Background(), "users", kmspostgres.RewrapOptions{})
		t.Logf("rewrap: %+v %v", r, err)
	}()
	wg.Wait()
	r, err := c.Rewrap(context.Background(), "users", kmspostgres.RewrapOptions{})
	t.Logf("second rewrap: %+v %v", r, err)
	// The v2 instance reads every row (an instance still on v1 cannot read
	// v2 rows by design: deploy the map before rewrapping).
	attack2ReadAll(t, db2, "SELECT id, email, phone FROM users ORDER BY id")
	e.assertNoPlaintext("users", "rw-", "rw2-", "rw3-")
}

// The encrypt-only key: writes never leave rows a full-access reader
// cannot read.
func TestAttack2EncryptOnly(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap)
	enc := filepath.Join(t.TempDir(), "enc.yaml")
	if err := os.WriteFile(enc, []byte("key_id: insecure-test-key/encrypt\n"+usersMap[len("\nkey_id: insecure-test-key\n"):]), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := kmspostgres.NewConnector(e.base+"&kms_schema="+enc, kmspostgres.WithProvider(e.kms))
	if err != nil {
		t.Fatal(err)
	}
	w := sql.OpenDB(c)
	defer w.Close()
	e.exec("INSERT INTO users (id, name, email, dob) VALUES (1, 'a', 'full@x', '2000-01-01')")
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{"INSERT INTO users (id, name, email, dob, phone) VALUES (2, 'b', $1, '2001-01-01', $2)", []any{"eo-2@x", []byte("eo-ph")}},
		{"INSERT INTO users (name, email) VALUES ('c', $1), ('d', NULL)", []any{"eo-3@x"}},
		{"UPDATE users SET email = $1 WHERE id = 1", []any{"eo-upd1@x"}},
		{"UPDATE users SET email = $1, dob = NULL, balance = NULL WHERE id = 1", []any{"eo-upd1b@x"}},
		{"UPDATE users SET email = $1, dob = '1999-09-09', balance = '1.5' WHERE id = 2", []any{"eo-upd2@x"}},
		{"UPDATE users SET phone = $1", []any{[]byte("eo-ph2")}},
		{"INSERT INTO users (id, name, email) VALUES (1, 'x', $1) ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email", []any{"eo-ups@x"}},
		{"INSERT INTO users (id, name, email) VALUES (9, 'x', $1) ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email", []any{"eo-ups9@x"}},
		{"UPDATE users SET name = 'z' WHERE id = 1", nil},
		{"DELETE FROM users WHERE id = 9", nil},
	} {
		_, err := w.Exec(q.sql, q.args...)
		t.Logf("%s: %v", q.sql, err)
		if _, err := w.Exec("SELECT 1"); err != nil {
			t.Fatalf("connection unusable after %s: %v", q.sql, err)
		}
		attack2ReadAll(t, e.db, "SELECT id, email, dob, balance, phone FROM users ORDER BY id")
	}
	t.Logf("final: %s", attack2ReadAll(t, e.db, "SELECT id, email, dob, balance, phone FROM users ORDER BY id"))
	e.assertNoPlaintext("users", "eo-", "full@x")
}

// VIOLATION (property 3): a uuid primary key passed as the []byte of its
// text form. The driver parses the 36 bytes as text (toUUID) and binds the
// context to a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a14, while pgx sends the
// []byte to the uuid column as binary and PostgreSQL stores the first 16
// bytes (61306565-6263-3939-2d39-6330622d3465). The INSERT succeeds and
// the row can never be read back.
func TestAttack2UUIDPKAsTextBytes(t *testing.T) {
	e := newEnv(t, "CREATE TABLE pu (k uuid PRIMARY KEY, s text, encrypted_kms_key text);",
		"key_id: insecure-test-key\ntables:\n  pu: {primary_key: k, columns: {s: {}}}\n")
	_, err := e.db.Exec("INSERT INTO pu (k, s) VALUES ($1, $2)", []byte("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a14"), "pu-bytes-secret")
	if err != nil {
		t.Logf("refused: %v", err)
		if n := e.rawValues("SELECT count(*)::text FROM pu"); n[0] != "0" {
			t.Fatalf("refused write left %s rows", n[0])
		}
		return
	}
	t.Logf("stored keys: %v", e.rawValues("SELECT k::text FROM pu"))
	e.assertNoPlaintext("pu", "pu-bytes-secret")
	var s string
	if err := e.db.QueryRow("SELECT s FROM pu").Scan(&s); err != nil || s != "pu-bytes-secret" {
		t.Fatalf("a successful INSERT left a row that cannot be read back: %q, %v", s, err)
	}
}

// dualKey is an application key type that is a driver.Valuer and also
// implements pgx's TextValuer, as pgtype-aware types may.
type dualKey struct{ a, b string }

func (d dualKey) Value() (driver.Value, error) { return d.a, nil }
func (d dualKey) TextValue() (pgtype.Text, error) {
	return pgtype.Text{String: d.b, Valid: true}, nil
}

// VIOLATION (property 3): a text primary key of a type that is a
// driver.Valuer (→ "val-a") and a pgtype.TextValuer (→ "val-b"). The driver
// binds the context to Value() ("val-a"); pgx encodes the argument with
// TextValue() and PostgreSQL stores "val-b". The INSERT succeeds and the
// row can never be read back.
func TestAttack2DualValuerPK(t *testing.T) {
	e := newEnv(t, "CREATE TABLE pt (k text PRIMARY KEY, s text, encrypted_kms_key text);",
		"key_id: insecure-test-key\ntables:\n  pt: {primary_key: k, columns: {s: {}}}\n")
	_, err := e.db.Exec("INSERT INTO pt (k, s) VALUES ($1, $2)", dualKey{"val-a", "val-b"}, "dual-secret")
	if err != nil {
		t.Logf("refused: %v", err)
		return
	}
	t.Logf("stored keys: %v", e.rawValues("SELECT k FROM pt"))
	e.assertNoPlaintext("pt", "dual-secret")
	var s string
	if err := e.db.QueryRow("SELECT s FROM pt").Scan(&s); err != nil || s != "dual-secret" {
		t.Fatalf("a successful INSERT left a row that cannot be read back: %q, %v", s, err)
	}
}

// dualInt is a driver.Valuer (→ 42) that is also a pgtype.Int64Valuer (→ 43).
type dualInt struct{}

func (dualInt) Value() (driver.Value, error) { return int64(42), nil }
func (dualInt) Int64Value() (pgtype.Int8, error) {
	return pgtype.Int8{Int64: 43, Valid: true}, nil
}

// VIOLATION (property 3), the same class for an integer key: the context
// says id=42, PostgreSQL stores 43.
func TestAttack2DualValuerIntPK(t *testing.T) {
	e := newEnv(t, "CREATE TABLE pi (id bigint PRIMARY KEY, s text, encrypted_kms_key text);",
		"key_id: insecure-test-key\ntables:\n  pi: {columns: {s: {}}}\n")
	_, err := e.db.Exec("INSERT INTO pi (id, s) VALUES ($1, $2)", dualInt{}, "dual-int-secret")
	if err != nil {
		t.Logf("refused: %v", err)
		return
	}
	t.Logf("stored keys: %v", e.rawValues("SELECT id::text FROM pi"))
	e.assertNoPlaintext("pi", "dual-int-secret")
	var s string
	if err := e.db.QueryRow("SELECT s FROM pi").Scan(&s); err != nil || s != "dual-int-secret" {
		t.Fatalf("a successful INSERT left a row that cannot be read back: %q, %v", s, err)
	}
}
