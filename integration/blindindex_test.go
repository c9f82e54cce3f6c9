package integration

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/lib/pq"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/blindindex"
	"github.com/kmspostgres/kmspostgres/providers/testkey"
)

const bidxDDL = `
CREATE TABLE users (
	id bigserial PRIMARY KEY,
	name text,
	email text,
	ssn text,
	encrypted_kms_key text,
	email_bidx text,
	ssn_lookup bytea
);
CREATE UNIQUE INDEX users_email_bidx ON users (email_bidx);
`

const bidxMap = `
key_id: insecure-test-key
tables:
  users:
    columns:
      email:
        blind_index: {expression: lower_trim, algorithm: hmac_sha256}
      ssn:
        blind_index: {column: ssn_lookup, algorithm: hmac_sha256}
`

// testMasterKey is a blind-index master key for tests only.
var testMasterKey = strings.Repeat("0123456789abcdef", 4)

func newBlindEnv(t *testing.T, mode string) *env {
	t.Helper()
	t.Setenv(blindindex.EnvMasterKey, testMasterKey)
	e := newEnv(t, bidxDDL, bidxMap, "default_query_exec_mode="+mode)
	e.exec(`INSERT INTO users (name, email, ssn) VALUES ($1, $2, $3), ('bob', 'bob@example.com', '222-22-2222'), ('cy', NULL, NULL)`,
		"alice", "Alice@Example.com", "111-11-1111")
	return e
}

// names runs a query through the driver and returns the first column of
// every row, sorted.
func (e *env) names(query string, args ...any) []string {
	e.t.Helper()
	rows, err := e.db.Query(query, args...)
	if err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	slices.Sort(out)
	return out
}

func wantNames(t *testing.T, got []string, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	if got == nil {
		got = []string{}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestBlindIndexReads(t *testing.T) {
	for _, mode := range execModes {
		t.Run(mode, func(t *testing.T) {
			e := newBlindEnv(t, mode)
			for _, tc := range []struct {
				sql  string
				args []any
				want []string
			}{
				{"SELECT name FROM users WHERE email = $1", []any{" ALICE@example.com "}, []string{"alice"}},
				{"SELECT name FROM users WHERE $1 = email", []any{"bob@example.com"}, []string{"bob"}},
				{"SELECT name FROM users WHERE email = 'bob@EXAMPLE.com'", nil, []string{"bob"}},
				{"SELECT name FROM users WHERE email = $1", []any{"nobody@example.com"}, nil},
				{"SELECT name FROM users WHERE email = $1", []any{nil}, nil},
				{"SELECT name FROM users WHERE email IN ($1, 'bob@example.com')", []any{"alice@example.com"}, []string{"alice", "bob"}},
				{"SELECT name FROM users WHERE email = ANY($1)", []any{[]string{"alice@example.com", "Bob@example.com", "x@y"}}, []string{"alice", "bob"}},
				// What sqlc generates for a slice: pq.Array and a cast.
				{"SELECT name FROM users WHERE email = ANY($1::text[])", []any{pq.Array([]string{"ALICE@example.com", "bob@example.com"})}, []string{"alice", "bob"}},
				{"SELECT name FROM users WHERE email IS NULL", nil, []string{"cy"}},
				{"SELECT name FROM users WHERE email IS NOT NULL", nil, []string{"alice", "bob"}},
				{"SELECT name FROM users WHERE email <> $1", []any{"alice@example.com"}, []string{"bob"}},
				{"SELECT name FROM users WHERE email NOT IN ($1)", []any{"bob@example.com"}, []string{"alice"}},
				{"SELECT name FROM users WHERE email = $1 OR name = $2", []any{"alice@example.com", "cy"}, []string{"alice", "cy"}},
				{"SELECT name FROM users WHERE email = $1 AND ssn = $2", []any{"alice@example.com", "111-11-1111"}, []string{"alice"}},
				{"SELECT name FROM users WHERE email = $1 AND ssn = $2", []any{"alice@example.com", "222-22-2222"}, nil},
				{"SELECT email FROM users WHERE ssn = $1", []any{"222-22-2222"}, []string{"bob@example.com"}},
				{"SELECT name FROM users WHERE ssn = ANY($1)", []any{[]string{"222-22-2222", "111-11-1111"}}, []string{"alice", "bob"}},
				{"SELECT name FROM users WHERE id IN (SELECT id FROM users WHERE email = $1)", []any{"bob@example.com"}, []string{"bob"}},
				{"WITH u AS (SELECT id, name FROM users WHERE email = $1) SELECT name FROM u", []any{"alice@example.com"}, []string{"alice"}},
				{"SELECT u.name FROM users u WHERE EXISTS (SELECT 1 FROM users v WHERE v.id = u.id AND v.email = $1)", []any{"bob@example.com"}, []string{"bob"}},
				{"SELECT count(*)::text FROM users WHERE email = $1", []any{"bob@example.com"}, []string{"1"}},
			} {
				wantNames(t, e.names(tc.sql, tc.args...), tc.want...)
			}
			// The sqlc shape: QueryRow with every column.
			var id int64
			var name, email, ssn string
			if err := e.db.QueryRow("SELECT id, name, email, ssn FROM users WHERE email = $1", "alice@example.com").Scan(&id, &name, &email, &ssn); err != nil {
				t.Fatal(err)
			}
			if name != "alice" || email != "Alice@Example.com" || ssn != "111-11-1111" {
				t.Fatalf("got %q %q %q", name, email, ssn)
			}
			// Prepared statements and transactions (sqlc's Prepare, WithTx).
			tx, err := e.db.Begin()
			if err != nil {
				t.Fatal(err)
			}
			st, err := tx.Prepare("SELECT name FROM users WHERE email = $1")
			if err != nil {
				t.Fatal(err)
			}
			for email, want := range map[string]string{"alice@example.com": "alice", "bob@example.com": "bob"} {
				if err := st.QueryRow(email).Scan(&name); err != nil || name != want {
					t.Fatalf("prepared, in a transaction: %q, %v; want %q", name, err, want)
				}
			}
			st.Close()
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestBlindIndexWrites(t *testing.T) {
	for _, mode := range execModes {
		t.Run(mode, func(t *testing.T) {
			e := newBlindEnv(t, mode)
			// NULL stays NULL in both columns.
			if got := e.rawValues("SELECT coalesce(email, 'NULL') || '/' || coalesce(email_bidx, 'NULL') FROM users WHERE name = 'cy'"); got[0] != "NULL/NULL" {
				t.Fatalf("cy stored %q", got)
			}
			// UPDATE of the encrypted column moves its index.
			e.exec("UPDATE users SET email = $1 WHERE email = $2", "alice@new.example", "alice@example.com")
			wantNames(t, e.names("SELECT name FROM users WHERE email = $1", "alice@example.com"))
			wantNames(t, e.names("SELECT name FROM users WHERE email = $1", "ALICE@new.example"), "alice")
			// UPDATE of a plain column by an encrypted one.
			e.exec("UPDATE users SET name = $1 WHERE email = $2", "robert", "bob@example.com")
			wantNames(t, e.names("SELECT name FROM users WHERE email = $1", "bob@example.com"), "robert")
			// Setting it NULL clears the index.
			e.exec("UPDATE users SET email = NULL WHERE name = 'robert'")
			if got := e.rawValues("SELECT coalesce(email_bidx, 'NULL') FROM users WHERE name = 'robert'"); got[0] != "NULL" {
				t.Fatalf("index after NULL: %q", got)
			}
			e.exec("UPDATE users SET email = $1 WHERE name = 'robert'", "bob@example.com")
			// Uniqueness, upserts on the encrypted column.
			e.exec("INSERT INTO users (name, email) VALUES ('dup', $1) ON CONFLICT (email) DO NOTHING", " BOB@example.com")
			wantNames(t, e.names("SELECT name FROM users WHERE email = $1", "bob@example.com"), "robert")
			e.exec("INSERT INTO users (name, email) VALUES ('bobby', $1) ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name", "bob@example.com")
			wantNames(t, e.names("SELECT name FROM users WHERE email = $1", "bob@example.com"), "bobby")
			_, err := e.db.Exec("INSERT INTO users (name, email) VALUES ('dup', $1)", "Bob@Example.com")
			var ue *kmspostgres.UniqueError
			var pe *pgconn.PgError
			if !errorsAs(err, &ue) || ue.Table != "users" || ue.Column != "email" || ue.Index != "users_email_bidx" || !errorsAs(err, &pe) || pe.Code != "23505" {
				t.Fatalf("duplicate email: %v", err)
			}
			if strings.Contains(strings.ToLower(err.Error()), "bob@") {
				t.Fatalf("error quotes the value: %v", err)
			}
			// Upsert on the primary key rewrites the value and its index.
			var bid int64
			if err := e.db.QueryRow("SELECT id FROM users WHERE email = $1", "bob@example.com").Scan(&bid); err != nil {
				t.Fatal(err)
			}
			e.exec("INSERT INTO users (id, name, email, ssn) VALUES ($1, 'bobby', $2, '222-22-2222') ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email, ssn = EXCLUDED.ssn", bid, "bobby@example.com")
			wantNames(t, e.names("SELECT name FROM users WHERE ssn = $1", "222-22-2222"), "bobby")
			wantNames(t, e.names("SELECT name FROM users WHERE email = $1", "bob@example.com"))
			wantNames(t, e.names("SELECT name FROM users WHERE email = $1", "bobby@example.com"), "bobby")
			e.exec("UPDATE users SET email = $1 WHERE id = $2", "bob@example.com", bid)
			// JOIN … ON with a blind-index comparison.
			wantNames(t, e.names("SELECT v.name FROM users u JOIN users v ON v.id = u.id AND v.email = $1", "bob@example.com"), "bobby")
			// DELETE by the encrypted column.
			e.exec("DELETE FROM users WHERE email = $1", "bob@example.com")
			wantNames(t, e.names("SELECT name FROM users WHERE email IS NOT NULL"), "alice")
			// The raw table holds no plaintext and no unkeyed hash of it.
			plain := []string{"alice@new.example", "Alice@Example.com", "alice@example.com", "111-11-1111", "bob@example.com"}
			e.assertNoPlaintext("users", plain...)
			for _, p := range plain {
				h := sha256.Sum256([]byte(p))
				e.assertNoPlaintext("users", hex.EncodeToString(h[:]), base64.StdEncoding.EncodeToString(h[:]), `\x`+hex.EncodeToString(h[:]))
			}
		})
	}
}

func TestBlindIndexRefusals(t *testing.T) {
	t.Setenv(blindindex.EnvMasterKey, testMasterKey)
	e := newEnv(t, bidxDDL, bidxMap)
	for _, q := range []string{
		"SELECT name FROM users WHERE email LIKE $1",
		"SELECT name FROM users WHERE email > $1",
		"SELECT name FROM users ORDER BY email",
		"SELECT name FROM users WHERE lower(email) = $1",
		"INSERT INTO users (name, email, email_bidx) VALUES ('x', $1, 'forged')",
		"UPDATE users SET email_bidx = $1",
	} {
		_, err := e.db.Exec(q, "x")
		var re *kmspostgres.RefusalError
		if !errors.Is(err, kmspostgres.ErrUnsupported) || !errorsAs(err, &re) {
			t.Errorf("%s: %v, want a refusal", q, err)
		}
	}
}

// TestBlindIndexTamper: an index value copied from another row does not
// make the driver return that row for the other row's value.
func TestBlindIndexTamper(t *testing.T) {
	t.Setenv(blindindex.EnvMasterKey, testMasterKey)
	e := newEnv(t, strings.Replace(bidxDDL, "CREATE UNIQUE INDEX", "CREATE INDEX", 1), bidxMap)
	e.exec("INSERT INTO users (name, email) VALUES ('alice', 'alice@example.com'), ('mallory', 'mallory@example.com')")
	ctx := context.Background()
	if _, err := e.raw.Exec(ctx, "UPDATE users SET email_bidx = (SELECT email_bidx FROM users WHERE name = 'alice') WHERE name = 'mallory'"); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"SELECT id, name FROM users WHERE email = $1",
		"SELECT name FROM users WHERE email = $1",
		"SELECT name, email FROM users WHERE email = $1",
		"SELECT name FROM users WHERE email = ANY($1)",
		"SELECT name FROM users WHERE (email = $1 OR email = 'nobody@example.com') AND id > 0",
	} {
		arg := any("alice@example.com")
		if strings.Contains(q, "ANY") {
			arg = []string{"alice@example.com"}
		}
		rows, err := e.db.Query(q, arg)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for rows.Next() {
			var a, b sql.NullString
			dest := []any{&a}
			if strings.Contains(q, ", ") {
				dest = append(dest, &b)
			}
			if err := rows.Scan(dest...); err != nil {
				t.Fatal(err)
			}
			got = append(got, a.String+b.String)
		}
		err = rows.Err()
		rows.Close()
		if !errors.Is(err, kmspostgres.ErrBlindIndexMismatch) || !errors.Is(err, kmspostgres.ErrDecrypt) {
			t.Errorf("%s: rows %q, err %v; want ErrBlindIndexMismatch", q, got, err)
		}
		if err != nil && (strings.Contains(err.Error(), "alice@") || strings.Contains(err.Error(), "mallory@")) {
			t.Errorf("error quotes plaintext: %v", err)
		}
	}
	// RETURNING of a DELETE or UPDATE by the encrypted column: the forged
	// row is not returned in plaintext; the caller's transaction rolls back.
	for _, q := range []string{"DELETE FROM users WHERE email = $1 RETURNING id, email", "UPDATE users SET name = name || '!' WHERE email = $1 RETURNING name, email"} {
		tx, err := e.db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		// The rows are checked before the statement runs (err from Query)
		// and again in RETURNING (err from the rows).
		var got []string
		rows, err := tx.Query(q, "alice@example.com")
		if err == nil {
			for rows.Next() {
				var a, b string
				rows.Scan(&a, &b)
				got = append(got, a+" "+b)
			}
			err = rows.Err()
			rows.Close()
		}
		tx.Rollback()
		if !errors.Is(err, kmspostgres.ErrBlindIndexMismatch) || slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "mallory") }) {
			t.Errorf("%s: rows %q, err %v; want ErrBlindIndexMismatch and no plaintext of mallory's row", q, got, err)
		}
	}
	wantNames(t, e.names("SELECT name FROM users WHERE id > 0"), "alice", "mallory")
	// An UPDATE of encrypted columns by the encrypted column checks each
	// locked row before writing: under the row's own key (email alone) and
	// under a fresh key (email and ssn), which needs an unwrap to check.
	for _, q := range []string{"UPDATE users SET email = $1 WHERE email = $2", "UPDATE users SET email = $1, ssn = NULL WHERE email = $2"} {
		_, err := e.db.Exec(q, "alice@new.example", "alice@example.com")
		if !errors.Is(err, kmspostgres.ErrBlindIndexMismatch) {
			t.Errorf("%s: %v, want ErrBlindIndexMismatch", q, err)
		}
	}
	// So does an UPDATE of plain columns, or a DELETE, by the encrypted
	// column: the rows are read, locked and checked before it runs.
	for _, q := range []string{"UPDATE users SET name = name || ' (verified)' WHERE email = $1", "DELETE FROM users WHERE email = $1"} {
		_, err := e.db.Exec(q, "alice@example.com")
		if !errors.Is(err, kmspostgres.ErrBlindIndexMismatch) {
			t.Errorf("%s: %v, want ErrBlindIndexMismatch", q, err)
		}
	}
	wantNames(t, e.names("SELECT name FROM users WHERE id > 0"), "alice", "mallory")
	// Nothing was written.
	var emails []string
	rows, err := e.db.Query("SELECT email FROM users WHERE id > 0 ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		rows.Scan(&s)
		emails = append(emails, s)
	}
	rows.Close()
	if !slices.Equal(emails, []string{"alice@example.com", "mallory@example.com"}) {
		t.Fatalf("emails after refused updates: %q", emails)
	}
	// Mallory's own lookup no longer finds the row (its index is wrong),
	// and nothing else changed for untouched rows.
	wantNames(t, e.names("SELECT name FROM users WHERE email = $1", "mallory@example.com"))
	if _, err := e.raw.Exec(ctx, "UPDATE users SET email_bidx = NULL WHERE name = 'mallory'"); err != nil {
		t.Fatal(err)
	}
	wantNames(t, e.names("SELECT name FROM users WHERE email = $1", "alice@example.com"), "alice")
}

// TestBlindIndexGemCompatible: an argon2id index written through the
// driver is what the blind_index gem computes (its own vector: master
// key of 64 zeros, users.email_bidx).
func TestBlindIndexGemCompatible(t *testing.T) {
	t.Setenv(blindindex.EnvMasterKey, strings.Repeat("0", 64))
	e := newEnv(t, bidxDDL, "key_id: insecure-test-key\ntables:\n  users:\n    columns:\n      email:\n        blind_index: {expression: lower}\n")
	e.exec("INSERT INTO users (name, email) VALUES ('t', $1)", "Test@Example.org")
	if got := e.rawValues("SELECT email_bidx FROM users"); got[0] != "kSqBXqdAhgnZAvwGcZ/17SUCg+V6t7xnJ8CO/gRDSjU=" {
		t.Fatalf("stored %q", got)
	}
	wantNames(t, e.names("SELECT name FROM users WHERE email = $1", "test@example.org"), "t")
}

func TestBlindIndexCatalog(t *testing.T) {
	t.Setenv(blindindex.EnvMasterKey, testMasterKey)
	for ddl, want := range map[string]string{
		strings.Replace(bidxDDL, "email_bidx text,", "", 1):                "blind-index column email_bidx (of email) does not exist",
		strings.Replace(bidxDDL, "email_bidx text,", "email_bidx int,", 1): "blind-index column email_bidx is integer",
	} {
		ddl = strings.Replace(ddl, "CREATE UNIQUE INDEX users_email_bidx ON users (email_bidx);", "", 1)
		e := newEnv(t, ddl, bidxMap)
		_, err := e.db.Exec("INSERT INTO users (name, email) VALUES ('x', 'y')")
		if !errors.Is(err, kmspostgres.ErrSchema) || !strings.Contains(err.Error(), want) {
			t.Errorf("%v, want ErrSchema with %q", err, want)
		}
		// kmspostgres check says the same.
		c, err := kmspostgres.NewConnector(e.dsn(), kmspostgres.WithProvider(e.kms))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Check(context.Background()); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check: %v, want %q", err, want)
		}
	}
}

// TestBlindIndexStar: SELECT * and RETURNING * leave index columns out, as
// they do key columns, so that generated models do not change.
func TestBlindIndexStar(t *testing.T) {
	e := newBlindEnv(t, "cache_statement")
	for _, q := range []string{"SELECT * FROM users WHERE email = $1", "UPDATE users SET name = name WHERE email = $1 RETURNING *"} {
		rows, err := e.db.Query(q, "bob@example.com")
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		rows.Close()
		if want := []string{"id", "name", "email", "ssn"}; !slices.Equal(cols, want) {
			t.Errorf("%s: columns %v, want %v", q, cols, want)
		}
	}
}

// TestBlindIndexReindex: rows written before the column had a blind index
// get one, and a new master key is rolled out by reindexing every row.
func TestBlindIndexReindex(t *testing.T) {
	t.Setenv(blindindex.EnvMasterKey, testMasterKey)
	// Written under a map without blind indexes: email_bidx stays NULL.
	e := newEnv(t, bidxDDL, "key_id: insecure-test-key\ntables:\n  users:\n    columns:\n      email: {}\n      ssn: {}\n")
	for i := range 7 {
		e.exec("INSERT INTO users (name, email, ssn) VALUES ($1, $2, $3)", fmt.Sprintf("u%d", i), fmt.Sprintf("U%d@example.com", i), fmt.Sprintf("%03d", i))
	}
	e.exec("INSERT INTO users (name) VALUES ('none')")
	if err := os.WriteFile(e.schema, []byte(bidxMap), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := kmspostgres.NewConnector(e.dsn(), kmspostgres.WithProvider(e.kms))
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(c)
	defer db.Close()
	lookup := func(email string) []string {
		t.Helper()
		rows, err := db.Query("SELECT name FROM users WHERE email = $1", email)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var s string
			rows.Scan(&s)
			out = append(out, s)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	wantNames(t, lookup("u3@example.com"))
	var progress []int
	n, err := c.Reindex(context.Background(), "users", kmspostgres.ReindexOptions{BatchSize: 3, Progress: func(d int) { progress = append(progress, d) }})
	if err != nil || n != 7 {
		t.Fatalf("reindex: %d rows, %v", n, err)
	}
	if !slices.Equal(progress, []int{3, 6, 7, 7}) {
		t.Fatalf("progress %v", progress)
	}
	wantNames(t, lookup("u3@example.com"), "u3")
	if got := e.rawValues("SELECT count(*)::text FROM users WHERE email_bidx IS NULL"); got[0] != "1" {
		t.Fatalf("%s rows without index, want 1 (the NULL email)", got[0])
	}
	// Nothing left to do.
	if n, err := c.Reindex(context.Background(), "users", kmspostgres.ReindexOptions{}); err != nil || n != 0 {
		t.Fatalf("second reindex: %d, %v", n, err)
	}
	// A new master key: lookups miss until every row is reindexed.
	t.Setenv(blindindex.EnvMasterKey, strings.Repeat("fedcba9876543210", 4))
	c2, err := kmspostgres.NewConnector(e.dsn(), kmspostgres.WithProvider(e.kms))
	if err != nil {
		t.Fatal(err)
	}
	db = sql.OpenDB(c2)
	defer db.Close()
	wantNames(t, lookup("u5@example.com"))
	if n, err := c2.Reindex(context.Background(), "users", kmspostgres.ReindexOptions{All: true, BatchSize: 5}); err != nil || n != 8 {
		t.Fatalf("reindex all: %d, %v", n, err)
	}
	wantNames(t, lookup("u5@example.com"), "u5")
}

// TestBlindIndexWrappedMasterKey: a master key wrapped by the KMS and
// stored in the map is unwrapped once per connector, audited, and an
// encrypt-only (or cut-off) KMS access refuses new connectors.
func TestBlindIndexWrappedMasterKey(t *testing.T) {
	t.Setenv(blindindex.EnvMasterKey, "")
	ctx := context.Background()
	w, err := kmspostgres.NewWrappedMasterKey(ctx, "insecure-test-key", kmspostgres.WithProvider(testkey.New()))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(w.Wrapped, "v1:") {
		t.Fatalf("wrapped key %q", w.Wrapped)
	}
	yaml := bidxMap + "blind_index_master_key: {wrapped: \"" + w.Wrapped + "\"}\n"
	e := newEnv(t, bidxDDL, yaml)
	e.exec("INSERT INTO users (name, email) VALUES ('a', 'a@example.com'), ('b', 'b@example.com')")
	wantNames(t, e.names("SELECT name FROM users WHERE email = $1", "b@example.com"), "b")
	e.db.SetMaxOpenConns(4)
	for range 8 {
		wantNames(t, e.names("SELECT name FROM users WHERE email = $1", "a@example.com"), "a")
	}
	n := 0
	for _, ev := range e.events.Events() {
		if ev.Context["purpose"] != "" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d unwraps of the master key, want 1 per connector", n)
	}
	// Encrypt-only access to the KMS: no new connector can search.
	yamlEnc := bidxMap + "blind_index_master_key: {wrapped: \"" + w.Wrapped + "\", key_id: " + testkey.EncryptOnlyKeyID + "}\n"
	if err := os.WriteFile(e.schema, []byte(yamlEnc), 0o644); err != nil {
		t.Fatal(err)
	}
	cEnc, err := kmspostgres.NewConnector(e.dsn(), kmspostgres.WithProvider(testkey.New()))
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(cEnc)
	defer db.Close()
	if _, err := db.Exec("SELECT 1"); !errors.Is(err, kmspostgres.ErrPermission) {
		t.Fatalf("encrypt-only master key: %v, want ErrPermission", err)
	}
	// A map with blind indexes and neither key is refused at open.
	if err := os.WriteFile(e.schema, []byte(bidxMap), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := kmspostgres.NewConnector(e.dsn()); !errors.Is(err, kmspostgres.ErrSchema) {
		t.Fatalf("no master key: %v", err)
	}
}

func TestBlindIndexUniqueReport(t *testing.T) {
	t.Setenv(blindindex.EnvMasterKey, testMasterKey)
	e := newEnv(t, bidxDDL, bidxMap)
	c, err := kmspostgres.NewConnector(e.dsn(), kmspostgres.WithProvider(e.kms))
	if err != nil {
		t.Fatal(err)
	}
	infos, err := c.BlindIndexes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []kmspostgres.BlindIndexInfo{
		{Table: "users", Column: "email", IndexColumn: "email_bidx", Algorithm: "hmac_sha256", Unique: true},
		{Table: "users", Column: "ssn", IndexColumn: "ssn_lookup", Algorithm: "hmac_sha256", Unique: false},
	}
	if !slices.Equal(infos, want) {
		t.Fatalf("got %+v\nwant %+v", infos, want)
	}
}

// TestBlindIndexUnderOrAndNot: a blind-index comparison that is not a
// term of the WHERE clause's top-level AND (under OR, under NOT, a <> or
// NOT IN) is checked too: the server's value of the comparison must be
// the value PostgreSQL computes on the decrypted cell. Untampered rows
// answer exactly, NULL operands included; a copied index value fails
// the query, through database/sql and through kmspgx.
func TestBlindIndexUnderOrAndNot(t *testing.T) {
	t.Setenv(blindindex.EnvMasterKey, testMasterKey)
	e := newEnv(t, strings.Replace(bidxDDL, "CREATE UNIQUE INDEX", "CREATE INDEX", 1), bidxMap)
	e.exec("INSERT INTO users (name, email) VALUES ('alice', 'alice@example.com'), ('mallory', 'mallory@example.com'), ('nomail', NULL)")
	ctx := context.Background()
	type q struct {
		sql  string
		args []any
		want []string
	}
	exact := []q{
		{"SELECT name FROM users WHERE email = $1 OR name = 'nomail' ORDER BY id", []any{"alice@example.com"}, []string{"alice", "nomail"}},
		{"SELECT name FROM users WHERE email <> $1 ORDER BY id", []any{"ALICE@example.com "}, []string{"mallory"}},
		{"SELECT name FROM users WHERE NOT (email = $1) ORDER BY id", []any{"alice@example.com"}, []string{"mallory"}},
		{"SELECT name FROM users WHERE email NOT IN ($1, $2) ORDER BY id", []any{"alice@example.com", "x@example.com"}, []string{"mallory"}},
		{"SELECT name FROM users WHERE email NOT IN ($1, NULL) ORDER BY id", []any{"alice@example.com"}, nil},
		{"SELECT name FROM users WHERE (email IN ($1, NULL)) IS NULL ORDER BY id", []any{"alice@example.com"}, []string{"mallory", "nomail"}},
		{"SELECT name FROM users WHERE email = ANY($1) OR id < 0 ORDER BY id", []any{[]*string{nil, ptr("mallory@example.com")}}, []string{"mallory"}},
		{"SELECT name FROM users WHERE email IS NULL OR email = $1 ORDER BY id", []any{"mallory@example.com"}, []string{"mallory", "nomail"}},
		{"SELECT name FROM users WHERE (email = $1) IS NOT TRUE ORDER BY id", []any{"alice@example.com"}, []string{"mallory", "nomail"}},
	}
	for _, c := range exact {
		wantNames(t, e.names(c.sql, c.args...), c.want...)
	}
	pool := newPgxPool(t, e)
	pgxNames := func(sql string, args ...any) ([]string, error) {
		rows, err := pool.Query(ctx, sql, args...)
		if err != nil {
			return nil, err
		}
		return pgx.CollectRows(rows, pgx.RowTo[string])
	}
	for _, c := range exact[:4] {
		got, err := pgxNames(c.sql, c.args...)
		if err != nil {
			t.Fatalf("kmspgx %s: %v", c.sql, err)
		}
		wantNames(t, got, c.want...)
	}

	// Mallory's row takes alice's index value.
	if _, err := e.raw.Exec(ctx, "UPDATE users SET email_bidx = (SELECT email_bidx FROM users WHERE name = 'alice') WHERE name = 'mallory'"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []q{
		{sql: "SELECT name, email FROM users WHERE email = $1 OR name = 'nobody'", args: []any{"alice@example.com"}},
		{sql: "SELECT name, email FROM users WHERE NOT (email <> $1)", args: []any{"alice@example.com"}},
		{sql: "SELECT name FROM users WHERE email <> $1", args: []any{"mallory@example.com"}},
		{sql: "SELECT name FROM users WHERE id > 0 AND (email IN ($1) OR false)", args: []any{"alice@example.com"}},
	} {
		rows, err := e.db.Query(c.sql, c.args...)
		var got []string
		if err == nil {
			for rows.Next() {
				vals := make([]any, 1+strings.Count(c.sql[:strings.Index(c.sql, " FROM")], ","))
				ptrs := make([]any, len(vals))
				for i := range vals {
					ptrs[i] = &vals[i]
				}
				rows.Scan(ptrs...)
				got = append(got, fmt.Sprint(vals...))
			}
			err = rows.Err()
			rows.Close()
		}
		if !errors.Is(err, kmspostgres.ErrBlindIndexMismatch) || slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "mallory@") }) {
			t.Errorf("%s: rows %q, err %v; want ErrBlindIndexMismatch and no plaintext of mallory's row", c.sql, got, err)
		}
		if _, err := pgxNames(strings.Replace(c.sql, "name, email", "name", 1), c.args...); !errors.Is(err, kmspostgres.ErrBlindIndexMismatch) {
			t.Errorf("kmspgx %s: %v, want ErrBlindIndexMismatch", c.sql, err)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestBlindIndexWriteConditionsTampered: an UPDATE or DELETE whose WHERE
// compares a blind-indexed column under OR or NOT (not a top-level AND
// term) checks each row it would change by value, as reads do: a row
// whose index value was copied from another row makes the statement fail,
// and nothing changes.
func TestBlindIndexWriteConditionsTampered(t *testing.T) {
	t.Setenv(blindindex.EnvMasterKey, testMasterKey)
	e := newEnv(t, strings.Replace(bidxDDL, "CREATE UNIQUE INDEX", "CREATE INDEX", 1), bidxMap)
	e.exec("INSERT INTO users (name, email) VALUES ('alice', 'alice@example.com'), ('mallory', 'mallory@example.com'), ('nomail', NULL)")
	ctx := context.Background()
	pool := newPgxPool(t, e)
	// Untampered, they change exactly the rows the values select.
	e.exec("UPDATE users SET name = name || '+' WHERE email = $1 OR name = 'nomail'", "ALICE@example.com")
	e.exec("UPDATE users SET email = $1 WHERE NOT (email <> $2) OR email IS NULL", "nomail@example.com", "nobody@example.com")
	if _, err := pool.Exec(ctx, "UPDATE users SET name = name || '*' WHERE email <> $1", "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	got, _, err := queryAll(e.db, "SELECT name, email FROM users ORDER BY id")
	if err != nil || fmt.Sprint(got) != "[[alice+ alice@example.com] [mallory* mallory@example.com] [nomail+* nomail@example.com]]" {
		t.Fatalf("after the untampered writes: %v %v", got, err)
	}

	// Mallory's row takes alice's index value.
	if _, err := e.raw.Exec(ctx, "UPDATE users SET email_bidx = (SELECT email_bidx FROM users WHERE name = 'alice+') WHERE name = 'mallory*'"); err != nil {
		t.Fatal(err)
	}
	before := e.rawValues("SELECT name || ':' || email || ':' || email_bidx FROM users ORDER BY id")
	for _, c := range []struct {
		sql  string
		args []any
	}{
		{"UPDATE users SET name = 'x' WHERE email = $1 OR id < 0", []any{"alice@example.com"}},
		{"UPDATE users SET name = 'x' WHERE NOT (email <> $1)", []any{"alice@example.com"}},
		{"UPDATE users SET email = $1 WHERE email = $2 OR id < 0", []any{"x@example.com", "alice@example.com"}},
		{"DELETE FROM users WHERE email IN ($1) OR false", []any{"alice@example.com"}},
		{"DELETE FROM users WHERE (email = $1) IS TRUE", []any{"alice@example.com"}},
	} {
		_, err := e.db.Exec(c.sql, c.args...)
		if !errors.Is(err, kmspostgres.ErrBlindIndexMismatch) {
			t.Errorf("%s: %v, want ErrBlindIndexMismatch", c.sql, err)
		}
		if _, err := pool.Exec(ctx, c.sql, c.args...); !errors.Is(err, kmspostgres.ErrBlindIndexMismatch) {
			t.Errorf("kmspgx %s: %v, want ErrBlindIndexMismatch", c.sql, err)
		}
	}
	if after := e.rawValues("SELECT name || ':' || email || ':' || email_bidx FROM users ORDER BY id"); !slices.Equal(before, after) {
		t.Fatalf("a refused statement changed rows:\n%q\n%q", before, after)
	}
}

// TestBlindIndexJoin: two columns whose indexes share one key (key_of)
// can be joined on; others are refused with the fix.
func TestBlindIndexJoin(t *testing.T) {
	t.Setenv(blindindex.EnvMasterKey, testMasterKey)
	e := newEnv(t, `
CREATE TABLE users (id bigserial PRIMARY KEY, name text, email text, email_bidx text, encrypted_kms_key text);
CREATE TABLE invites (id bigserial PRIMARY KEY, code text, email text, email_bidx text, encrypted_kms_key text);
CREATE TABLE leads (id bigserial PRIMARY KEY, email text, email_bidx text, encrypted_kms_key text);`, `
key_id: insecure-test-key
tables:
  users:
    columns:
      email: {blind_index: {expression: lower_trim, algorithm: hmac_sha256}}
  invites:
    columns:
      email: {blind_index: {expression: lower_trim, algorithm: hmac_sha256, key_of: users.email}}
  leads:
    columns:
      email: {blind_index: {expression: lower_trim, algorithm: hmac_sha256}}
`)
	e.exec("INSERT INTO users (name, email) VALUES ('ada', 'ada@example.org'), ('bob', 'bob@example.org')")
	e.exec("INSERT INTO invites (code, email) VALUES ('i1', ' ADA@example.org'), ('i2', 'carol@example.org'), ('i3', 'bob@example.org')")
	e.exec("INSERT INTO leads (email) VALUES ('ada@example.org')")
	for _, q := range []string{
		"SELECT u.name || ':' || i.code FROM users u JOIN invites i ON u.email = i.email ORDER BY i.code",
		"SELECT u.name || ':' || i.code FROM users u, invites i WHERE i.email = u.email ORDER BY i.code",
	} {
		wantNames(t, e.names(q), "ada:i1", "bob:i3")
	}
	// The index of a lookup on either column is the same value.
	wantNames(t, e.names("SELECT code FROM invites WHERE email = $1 ORDER BY code", "ada@example.org"), "i1")
	ctx := context.Background()
	pool := newPgxPool(t, e)
	rows, err := pool.Query(ctx, "SELECT i.code, u.email FROM users u JOIN invites i ON u.email = i.email ORDER BY i.code")
	if err != nil {
		t.Fatal(err)
	}
	type pair struct{ Code, Email string }
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[pair])
	if err != nil || len(got) != 2 || got[0] != (pair{"i1", "ada@example.org"}) || got[1] != (pair{"i3", "bob@example.org"}) {
		t.Fatalf("kmspgx join: %+v %v", got, err)
	}
	// Invite i2 (carol) takes ada's index value: a join would pair it
	// with ada. Every join shape that returns the pair fails instead.
	if _, err := e.raw.Exec(ctx, "UPDATE invites SET email_bidx = (SELECT email_bidx FROM users WHERE name = 'ada') WHERE code = 'i2'"); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"SELECT u.name, i.code FROM users u JOIN invites i ON u.email = i.email",
		"SELECT u.name, i.code FROM users u, invites i WHERE i.email = u.email",
		"SELECT u.name, i.code FROM invites i LEFT JOIN users u ON u.email = i.email",
		"SELECT u.name, i.code FROM users u JOIN invites i ON u.email = i.email OR i.code = 'zz'",
		"SELECT u.name, i.code FROM users u JOIN invites i ON NOT (u.email <> i.email)",
	} {
		_, _, err := queryAll(e.db, q)
		if !errors.Is(err, kmspostgres.ErrBlindIndexMismatch) {
			t.Errorf("%s: %v, want ErrBlindIndexMismatch", q, err)
		}
		rows, err := pool.Query(ctx, q)
		if err == nil {
			_, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (any, error) { return r.Values() })
		}
		if !errors.Is(err, kmspostgres.ErrBlindIndexMismatch) {
			t.Errorf("kmspgx %s: %v, want ErrBlindIndexMismatch", q, err)
		}
	}
	// The honest rows of an outer join that the forged one is not part of
	// still read.
	wantNames(t, e.names("SELECT u.name || ':' || coalesce(i.code, '-') FROM users u LEFT JOIN invites i ON u.email = i.email AND i.code <> 'i2' ORDER BY u.id"), "ada:i1", "bob:i3")

	_, err = e.db.Query("SELECT 1 FROM users u JOIN leads l ON u.email = l.email")
	mustErrIs(t, err, kmspostgres.ErrUnsupported)
	if err == nil || !strings.Contains(err.Error(), "key_of") {
		t.Fatalf("refusal without the fix: %v", err)
	}
	_, err = e.db.Query("SELECT 1 FROM users u JOIN invites i ON u.email < i.email")
	mustErrIs(t, err, kmspostgres.ErrUnsupported)
}

// TestBlindIndexKeyOfValidation: key_of must name another index of the
// map that has its own key and indexes values the same way.
func TestBlindIndexKeyOfValidation(t *testing.T) {
	for _, c := range []struct{ extra, want string }{
		{"key_of: users.nope", "names no blind-indexed column"},
		{"key_of: users.email, expression: lower", "same algorithm and expression"},
		{"key_of: invites.email", "the column itself"},
	} {
		_, err := kmspostgres.ParseSchema("m.yaml", []byte(`
key_id: insecure-test-key
tables:
  users:
    columns:
      email: {blind_index: {algorithm: hmac_sha256}}
  invites:
    columns:
      email: {blind_index: {algorithm: hmac_sha256, `+c.extra+`}}
`))
		if !errors.Is(err, kmspostgres.ErrSchema) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.extra, err, c.want)
		}
	}
}

// queryAll reads every row of a query as values; the error is the query's
// or the first row's.
func queryAll(db *sql.DB, q string, args ...any) ([][]any, int, error) {
	rows, err := db.Query(q, args...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, 0, err
	}
	var out [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return out, len(out), err
		}
		out = append(out, vals)
	}
	return out, len(out), rows.Err()
}
