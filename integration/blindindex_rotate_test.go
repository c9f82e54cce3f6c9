package integration

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/blindindex"
	"github.com/kmspostgres/kmspostgres/kmspgx"
)

// The rotation of users.email's index (bidxMap: hmac_sha256, lower_trim,
// text, BLIND_INDEX_MASTER_KEY) to argon2id under a new master key, in a
// bytea column.
const (
	rotateEnv   = "KMSPG_TEST_BIDX_V2"
	rotateDDL   = `ALTER TABLE users ADD COLUMN email_bidx_v2 bytea; CREATE UNIQUE INDEX users_email_bidx_v2 ON users (email_bidx_v2);`
	rotatingMap = `
key_id: insecure-test-key
tables:
  users:
    columns:
      email:
        blind_index:
          expression: lower_trim
          algorithm: hmac_sha256
          rotate: {column: email_bidx_v2, algorithm: argon2id, master_key_env: ` + rotateEnv + `}
      ssn:
        blind_index: {column: ssn_lookup, algorithm: hmac_sha256}
`
	rotatedMap = `
key_id: insecure-test-key
tables:
  users:
    columns:
      email:
        blind_index: {column: email_bidx_v2, expression: lower_trim, algorithm: argon2id, master_key_env: ` + rotateEnv + `}
      ssn:
        blind_index: {column: ssn_lookup, algorithm: hmac_sha256}
`
)

var rotateMasterKey = strings.Repeat("fedcba9876543210", 4)

// indexOf computes, with the blindindex package, what an index of
// users.<column> under master stores for v.
func indexOf(t *testing.T, master, column string, a blindindex.Algorithm, v string) []byte {
	t.Helper()
	m, err := blindindex.ParseMasterKey(master)
	if err != nil {
		t.Fatal(err)
	}
	k, err := m.IndexKey("users", column)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := blindindex.ParseExpression("lower_trim")
	ix, err := blindindex.New(k, a, n)
	if err != nil {
		t.Fatal(err)
	}
	return ix.Sum([]byte(v))
}

// openMap writes the map and opens a new connector on it.
func (e *env) openMap(yaml string) (*kmspostgres.Connector, *sql.DB) {
	e.t.Helper()
	if err := os.WriteFile(e.schema, []byte(yaml), 0o644); err != nil {
		e.t.Fatal(err)
	}
	c, err := kmspostgres.NewConnector(e.dsn(), kmspostgres.WithProvider(e.kms))
	if err != nil {
		e.t.Fatal(err)
	}
	db := sql.OpenDB(c)
	e.t.Cleanup(func() { db.Close() })
	return c, db
}

// checkRotation reads every row's email through db and both index columns
// raw: the current one must be what the current index computes, and the
// rotation column what the new index computes, or NULL in the rows listed
// in pending (written before the rotation) and for a NULL email. It
// returns the emails, by id.
func checkRotation(t *testing.T, e *env, db *sql.DB, pending map[int64]bool) map[int64]string {
	t.Helper()
	emails := map[int64]string{}
	rows, err := db.Query("SELECT id, email FROM users")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		var email sql.NullString
		if err := rows.Scan(&id, &email); err != nil {
			t.Fatal(err)
		}
		if email.Valid {
			emails[id] = email.String
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	raw, err := e.raw.Query(context.Background(), "SELECT id, email_bidx, email_bidx_v2 FROM users ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	n := 0
	for raw.Next() {
		n++
		var id int64
		var cur *string
		var v2 []byte
		if err := raw.Scan(&id, &cur, &v2); err != nil {
			t.Fatal(err)
		}
		email, ok := emails[id]
		if !ok {
			if cur != nil || v2 != nil {
				t.Errorf("row %d: NULL email, index %v, rotation %x", id, cur, v2)
			}
			continue
		}
		if want := indexOf(t, testMasterKey, "email_bidx", blindindex.HMACSHA256, email); cur == nil || *cur != b64(want) {
			t.Errorf("row %d (%s): index %v, want %s", id, email, cur, b64(want))
		}
		switch want := indexOf(t, rotateMasterKey, "email_bidx_v2", blindindex.Argon2id, email); {
		case pending[id] && v2 != nil:
			t.Errorf("row %d (%s): rotation %x before the backfill", id, email, v2)
		case !pending[id] && string(v2) != string(want):
			t.Errorf("row %d (%s): rotation %x, want %x", id, email, v2, want)
		}
	}
	if err := raw.Err(); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no rows")
	}
	return emails
}

// lookupAll looks every email up through db and fails on a miss.
func lookupAll(t *testing.T, db *sql.DB, emails map[int64]string) {
	t.Helper()
	for id, email := range emails {
		var got int64
		if err := db.QueryRow("SELECT id FROM users WHERE email = $1", strings.ToUpper(email)).Scan(&got); err != nil || got != id {
			t.Errorf("lookup of %s (row %d): %d, %v", email, id, got, err)
		}
	}
}

// TestBlindIndexRotate: a zero-downtime rotation. While the map has
// rotate, every write stores both index values, lookups use the current
// one and never miss, and reindex -rotate fills the older rows; the map
// switched to the new column then finds every row without a reindex, and
// the old column can be dropped.
func TestBlindIndexRotate(t *testing.T) {
	ctx := context.Background()
	e := newBlindEnv(t, "cache_statement") // alice, bob, cy (NULL email)
	t.Setenv(rotateEnv, rotateMasterKey)
	e.exec("INSERT INTO users (name, email) VALUES ('dan', 'dan@example.com'), ('eve', ' Eve@Example.com')")
	if _, err := e.raw.Exec(ctx, rotateDDL); err != nil {
		t.Fatal(err)
	}
	pending := map[int64]bool{}
	for _, id := range e.rawValues("SELECT id::text FROM users WHERE email IS NOT NULL") {
		var n int64
		fmt.Sscan(id, &n)
		pending[n] = true
	}

	// Step 1: the rotating map. Every kind of write writes both columns.
	c, db := e.openMap(rotatingMap)
	lookupAll(t, db, checkRotation(t, e, db, pending))
	mustExec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	mustExec("INSERT INTO users (name, email) VALUES ($1, $2)", "fay", "Fay@example.com")
	mustExec("INSERT INTO users (name, email, ssn) VALUES ($1, $2, $3), ('gus', NULL, 'x'), ('hal', 'hal@example.com', NULL)", "gil", "gil@example.com", "123")
	mustExec("INSERT INTO users (name, email) VALUES ('ivy', $1) ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name", "ivy@example.com")
	mustExec("INSERT INTO users (name, email) VALUES ('ivy2', $1) ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name", "IVY@example.com")
	var fay int64
	if err := db.QueryRow("SELECT id FROM users WHERE email = $1", "fay@example.com").Scan(&fay); err != nil {
		t.Fatal(err)
	}
	mustExec("INSERT INTO users (id, name, email, ssn) VALUES ($1, 'fay', $2, NULL) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email, ssn = EXCLUDED.ssn", fay, "fay@new.example")
	mustExec("UPDATE users SET email = $1 WHERE email = $2", "alice@new.example", "alice@example.com") // an old row: both columns now
	mustExec("UPDATE users SET email = NULL WHERE name = 'hal'")
	mustExec("UPDATE users SET email = $1 WHERE name = 'gus'", "gus@example.com")
	var alice int64
	if err := db.QueryRow("SELECT id FROM users WHERE email = $1", "alice@new.example").Scan(&alice); err != nil {
		t.Fatal(err)
	}
	delete(pending, alice)
	// pgx CopyFrom.
	pc, err := kmspgx.Connect(ctx, e.dsn(), kmspostgres.WithProvider(e.kms))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(ctx)
	if n, err := pc.CopyFrom(ctx, pgx.Identifier{"users"}, []string{"name", "email"},
		pgx.CopyFromRows([][]any{{"jo", "jo@example.com"}, {"kim", nil}, {"lu", " LU@example.com"}})); err != nil || n != 3 {
		t.Fatalf("CopyFrom: %d, %v", n, err)
	}
	// An application instance still on the old map writes the current
	// index only: the backfill fills its rows.
	e.exec("INSERT INTO users (name, email) VALUES ('old', 'old@example.com')")
	var old int64
	if err := db.QueryRow("SELECT id FROM users WHERE email = $1", "old@example.com").Scan(&old); err != nil {
		t.Fatal(err)
	}
	pending[old] = true
	emails := checkRotation(t, e, db, pending)
	lookupAll(t, db, emails)
	if len(emails) != 11 {
		t.Fatalf("%d emails: %v", len(emails), emails)
	}

	// Writing the rotation column is refused, like the index column.
	for _, q := range []string{
		"INSERT INTO users (name, email, email_bidx_v2) VALUES ('x', $1, 'forged')",
		"UPDATE users SET email_bidx_v2 = $1",
		"INSERT INTO users (id, name) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET email_bidx_v2 = EXCLUDED.email_bidx_v2",
	} {
		_, err := db.Exec(q, "x@example.com")
		var re *kmspostgres.RefusalError
		if !errors.Is(err, kmspostgres.ErrUnsupported) || !errorsAs(err, &re) {
			t.Errorf("%s: %v, want a refusal", q, err)
		}
	}
	// A duplicate under the rotation's UNIQUE index names the column.
	if _, err := e.raw.Exec(ctx, "DROP INDEX users_email_bidx"); err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec("INSERT INTO users (name, email) VALUES ('dup', $1)", "jo@example.com")
	if ue := (*kmspostgres.UniqueError)(nil); !errorsAs(err, &ue) || ue.Column != "email" || ue.Index != "users_email_bidx_v2" {
		t.Fatalf("duplicate: %v", err)
	}

	// Step 2: the backfill fills the rotation column of the older rows,
	// in batches, and nothing else.
	var progress []int
	n, err := c.Reindex(ctx, "users", kmspostgres.ReindexOptions{Rotate: true, BatchSize: 2, Progress: func(d int) { progress = append(progress, d) }})
	if err != nil || n != len(pending) {
		t.Fatalf("reindex -rotate: %d rows, %v; want %d", n, err, len(pending))
	}
	if progress[len(progress)-1] != n {
		t.Fatalf("progress %v", progress)
	}
	emails = checkRotation(t, e, db, nil)
	lookupAll(t, db, emails)
	if n, err := c.Reindex(ctx, "users", kmspostgres.ReindexOptions{Rotate: true}); err != nil || n != 0 {
		t.Fatalf("second reindex -rotate: %d, %v", n, err)
	}
	// reindex -all recomputes both columns.
	if n, err := c.Reindex(ctx, "users", kmspostgres.ReindexOptions{All: true, BatchSize: 50}); err != nil || n != 14 {
		t.Fatalf("reindex -all: %d, %v", n, err)
	}
	checkRotation(t, e, db, nil)

	// Step 3: the map switched to the new column finds every row, with no
	// reindex; step 4: the old column is dropped.
	c3, db3 := e.openMap(rotatedMap)
	lookupAll(t, db3, emails)
	if _, err := e.raw.Exec(ctx, "ALTER TABLE users DROP COLUMN email_bidx"); err != nil {
		t.Fatal(err)
	}
	lookupAll(t, db3, emails)
	if n, err := c3.Reindex(ctx, "users", kmspostgres.ReindexOptions{}); err != nil || n != 0 {
		t.Fatalf("reindex after the switch: %d, %v", n, err)
	}
	if _, err := db3.Exec("INSERT INTO users (name, email) VALUES ('new', $1)", "New@example.com"); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := db3.QueryRow("SELECT name FROM users WHERE email = $1", "new@example.com").Scan(&got); err != nil || got != "new" {
		t.Fatalf("after the switch: %q, %v", got, err)
	}
	// Without a rotate in the map, reindex -rotate says what to add.
	if _, err := c3.Reindex(ctx, "users", kmspostgres.ReindexOptions{Rotate: true}); err == nil || !strings.Contains(err.Error(), "no blind index with a rotate") {
		t.Fatalf("reindex -rotate without rotate: %v", err)
	}
}

// TestBlindIndexRotateCatalog: the rotation column is checked against the
// catalog as the index column is.
func TestBlindIndexRotateCatalog(t *testing.T) {
	t.Setenv(blindindex.EnvMasterKey, testMasterKey)
	t.Setenv(rotateEnv, rotateMasterKey)
	for ddl, want := range map[string]string{
		"":                               "blind-index column email_bidx_v2 (of email) does not exist; add it: ALTER TABLE users ADD COLUMN email_bidx_v2 text",
		"email_bidx_v2 int":              "blind-index column email_bidx_v2 is integer; it must be text (base64) or bytea (raw)",
		"email_bidx_v2 text DEFAULT 'x'": "blind-index column email_bidx_v2 has a default or is generated",
	} {
		full := bidxDDL
		if ddl != "" {
			full += "ALTER TABLE users ADD COLUMN " + ddl + ";"
		}
		e := newEnv(t, full, rotatingMap)
		_, err := e.db.Exec("INSERT INTO users (name, email) VALUES ('x', 'y')")
		if !errors.Is(err, kmspostgres.ErrSchema) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want ErrSchema with %q", ddl, err, want)
		}
		c, err := kmspostgres.NewConnector(e.dsn(), kmspostgres.WithProvider(e.kms))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Check(context.Background()); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check: %v, want %q", err, want)
		}
	}
	// An unset master_key_env is refused at open, naming it.
	os.Unsetenv(rotateEnv)
	e := newEnv(t, bidxDDL+"ALTER TABLE users ADD COLUMN email_bidx_v2 bytea;", "key_id: insecure-test-key\ntables: {users: {columns: {email: {}}}}")
	if err := os.WriteFile(e.schema, []byte(rotatingMap), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := kmspostgres.NewConnector(e.dsn(), kmspostgres.WithProvider(e.kms)); !errors.Is(err, kmspostgres.ErrSchema) || !strings.Contains(err.Error(), "master_key_env "+rotateEnv+" is not set") {
		t.Fatalf("unset %s: %v", rotateEnv, err)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
