package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/providers"
)

// execModes are the pgx query exec modes every statement test runs under:
// the default (prepared statements, cached) and the simple protocol used
// behind PgBouncer.
var execModes = []string{"cache_statement", "cache_describe", "describe_exec", "exec", "simple_protocol"}

func forEachMode(t *testing.T, f func(t *testing.T, e *env)) {
	forEachModeOn(t, usersDDL, usersMap, f)
}

// forEachModeOn is forEachMode on other tables.
func forEachModeOn(t *testing.T, ddl, yaml string, f func(t *testing.T, e *env)) {
	for _, mode := range execModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel() // each mode owns its schema
			f(t, newEnv(t, ddl, yaml, "default_query_exec_mode="+mode))
		})
	}
}

// stmtFront is the front end a statement test runs its statements on:
// the database/sql driver (sqlFront) or kmspgx (pgxFront, in
// statements_pgx_test.go).
type stmtFront interface {
	// exec runs a statement; an error fails the test.
	exec(q string, args ...any) interface{ RowsAffected() (int64, error) }
	QueryRow(q string, args ...any) interface{ Scan(dest ...any) error }
	// query runs a query; an error fails the test.
	query(q string, args ...any) stmtRows
	// strings renders a query's rows as "a,b|c,d" (NULL as NULL).
	strings(q string, args ...any) string
}

type stmtRows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// sqlFront is the database/sql driver, e.db.
type sqlFront struct{ e *env }

func (f sqlFront) exec(q string, args ...any) interface{ RowsAffected() (int64, error) } {
	f.e.t.Helper()
	return f.e.exec(q, args...)
}

func (f sqlFront) QueryRow(q string, args ...any) interface{ Scan(dest ...any) error } {
	return f.e.db.QueryRow(q, args...)
}

func (f sqlFront) query(q string, args ...any) stmtRows {
	f.e.t.Helper()
	rows, err := f.e.db.Query(q, args...)
	if err != nil {
		f.e.t.Fatalf("%s: %v", q, err)
	}
	return sqlRows{rows}
}

func (f sqlFront) strings(q string, args ...any) string {
	f.e.t.Helper()
	return f.e.strings(q, args...)
}

type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { r.Rows.Close() }

type user struct {
	id    int64
	name  string
	email sql.NullString
	phone []byte
}

// usersOf runs a query of users' (id, name, email, phone) through f.
func usersOf(t testing.TB, f stmtFront, query string, args ...any) []user {
	t.Helper()
	rows := f.query(query, args...)
	defer rows.Close()
	var out []user
	for rows.Next() {
		var u user
		if err := rows.Scan(&u.id, &u.name, &u.email, &u.phone); err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return out
}

func TestInsertSelectUpdateDelete(t *testing.T) {
	forEachMode(t, func(t *testing.T, e *env) { insertSelectUpdateDelete(t, e, sqlFront{e}) })
}

// insertSelectUpdateDelete is TestInsertSelectUpdateDelete on a front end
// (database/sql or kmspgx).
func insertSelectUpdateDelete(t *testing.T, e *env, f stmtFront) {
	// Multi-row insert with parameters, literals, NULL and DEFAULT.
	res := f.exec(`INSERT INTO users (name, email, phone) VALUES ($1, $2, $3), ('bob', 'bob@example.com', NULL), ($4, DEFAULT, $5)`,
		"ada", "ada@example.com", []byte("phone-one-one"), "cy", []byte("phone-three-three"))
	if n, _ := res.RowsAffected(); n != 3 {
		t.Fatalf("rows affected %d", n)
	}
	got := usersOf(t, f, "SELECT id, name, email, phone FROM users ORDER BY id")
	if len(got) != 3 || got[0].email.String != "ada@example.com" || string(got[0].phone) != "phone-one-one" ||
		got[1].email.String != "bob@example.com" || got[1].phone != nil || got[2].email.Valid || string(got[2].phone) != "phone-three-three" {
		t.Fatalf("after insert: %+v", got)
	}
	e.assertNoPlaintext("users", "ada@example.com", "bob@example.com", "phone-one-one", "phone-three-three")
	// Row keys: one per row and key with a value, NULL otherwise.
	keys := e.rawValues("SELECT coalesce(encrypted_kms_key, 'NULL') || ' ' || coalesce(encrypted_kms_key_phone, 'NULL') FROM users ORDER BY id")
	if !strings.HasPrefix(keys[0], "v1:") || !strings.Contains(keys[0], " v1:") || !strings.HasSuffix(keys[1], " NULL") || !strings.HasPrefix(keys[2], "NULL v1:") {
		t.Fatalf("key columns: %q", keys)
	}

	// UPDATE that sets every column of a key: a fresh key, no unwrap.
	e.events.Reset()
	f.exec("UPDATE users SET email = $1, name = $2, dob = $3, balance = NULL WHERE id = $4", "ada@new.example", "Ada", "1815-12-10", got[0].id)
	if e.events.Count(providers.OpUnwrap) != 0 || e.events.Count(providers.OpWrap) != 1 {
		t.Fatalf("fresh-key update: %d wraps %d unwraps", e.events.Count(providers.OpWrap), e.events.Count(providers.OpUnwrap))
	}
	// Set-based update over many rows, each under its own key.
	res = f.exec("UPDATE users SET phone = $1 WHERE id > $2", []byte("phone-nine-nine"), int64(0))
	if n, _ := res.RowsAffected(); n != 3 {
		t.Fatalf("set-based update affected %d", n)
	}
	got = usersOf(t, f, "SELECT id, name, email, phone FROM users ORDER BY id")
	for _, u := range got {
		if string(u.phone) != "phone-nine-nine" {
			t.Fatalf("set-based update: %+v", got)
		}
	}
	if got[0].email.String != "ada@new.example" || got[0].name != "Ada" {
		t.Fatalf("update: %+v", got[0])
	}
	e.assertNoPlaintext("users", "ada@new.example", "phone-nine-nine")

	// RETURNING decrypts, in INSERT, UPDATE and DELETE.
	var id int64
	var email string
	if err := f.QueryRow("INSERT INTO users (name, email) VALUES ($1, $2) RETURNING id, email", "dee", "dee@example.com").Scan(&id, &email); err != nil || email != "dee@example.com" {
		t.Fatalf("insert returning: %v %q", err, email)
	}
	if err := f.QueryRow("UPDATE users SET email = $1 WHERE id = $2 RETURNING email", "dee@new.example", id).Scan(&email); err != nil || email != "dee@new.example" {
		t.Fatalf("update returning: %v %q", err, email)
	}
	if err := f.QueryRow("UPDATE users SET name = $1 WHERE id = $2 RETURNING email", "Dee", id).Scan(&email); err != nil || email != "dee@new.example" {
		t.Fatalf("plain update returning encrypted: %v %q", err, email)
	}
	if err := f.QueryRow("DELETE FROM users WHERE id = $1 RETURNING email", id).Scan(&email); err != nil || email != "dee@new.example" {
		t.Fatalf("delete returning: %v %q", err, email)
	}
	var star user
	var rest []any
	_ = rest
	row := f.QueryRow("INSERT INTO users (name, email) VALUES ('eve', 'eve@example.com') RETURNING *")
	var org sql.NullInt64
	var dob, bal sql.NullString
	if err := row.Scan(&star.id, &org, &star.name, &star.email, &star.phone, &dob, &bal); err != nil || star.email.String != "eve@example.com" {
		t.Fatalf("returning *: %v %+v", err, star)
	}
	var k1 string
	if err := f.QueryRow("SELECT encrypted_kms_key FROM users WHERE id = $1", star.id).Scan(&k1); err != nil || !strings.HasPrefix(k1, "v1:") {
		t.Fatalf("key column by name: %q %v", k1, err)
	}
	// IS NULL works on ciphertext.
	var n int
	if err := f.QueryRow("SELECT count(*) FROM users WHERE email IS NULL").Scan(&n); err != nil || n != 1 {
		t.Fatalf("IS NULL: %d %v", n, err)
	}
	res = f.exec("DELETE FROM users WHERE email IS NULL")
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("delete affected %d", n)
	}
}

const notesDDL = `CREATE TABLE notes (id bigserial PRIMARY KEY, owner bigint, title text, body text, encrypted_kms_key text)`

const notesMap = "key_id: insecure-test-key\ntables:\n  notes:\n    columns:\n      title: {}\n      body: {}\n"

func TestUpdateUnderExistingKey(t *testing.T) {
	e := newEnv(t, notesDDL, notesMap)
	updateUnderExistingKey(t, e, sqlFront{e})
}

// updateUnderExistingKey is TestUpdateUnderExistingKey on a front end.
func updateUnderExistingKey(t *testing.T, e *env, f stmtFront) {
	for i := range 5 {
		f.exec("INSERT INTO notes (owner, title, body) VALUES ($1, $2, $3)", i%2, fmt.Sprintf("title %d", i), fmt.Sprintf("body %d", i))
	}
	before := e.rawValues("SELECT encrypted_kms_key FROM notes ORDER BY id")
	e.events.Reset()
	// Setting one of two columns keeps each row's key: one unwrap per row, no wrap.
	res := f.exec("UPDATE notes SET body = $1 WHERE owner = $2", "new body", 0)
	if n, _ := res.RowsAffected(); n != 3 {
		t.Fatalf("affected %d", n)
	}
	if w, u := e.events.Count(providers.OpWrap), e.events.Count(providers.OpUnwrap); w != 0 || u != 3 {
		t.Fatalf("partial update: %d wraps, %d unwraps", w, u)
	}
	after := e.rawValues("SELECT encrypted_kms_key FROM notes ORDER BY id")
	for i := range before {
		if before[i] != after[i] {
			t.Fatalf("row %d key changed on a partial update", i)
		}
	}
	rows := f.query("SELECT owner, title, body FROM notes ORDER BY id")
	defer rows.Close()
	i := 0
	for rows.Next() {
		var owner int
		var title, body string
		if err := rows.Scan(&owner, &title, &body); err != nil {
			t.Fatal(err)
		}
		wantBody := fmt.Sprintf("body %d", i)
		if owner == 0 {
			wantBody = "new body"
		}
		if title != fmt.Sprintf("title %d", i) || body != wantBody {
			t.Fatalf("row %d: %q %q", i, title, body)
		}
		i++
	}
	if err := rows.Err(); err != nil || i != 5 {
		t.Fatalf("rows: %d %v", i, err)
	}
	// An UPDATE that matches nothing changes nothing.
	if n, _ := f.exec("UPDATE notes SET body = 'x' WHERE owner = 42").RowsAffected(); n != 0 {
		t.Fatalf("affected %d", n)
	}
}

const selectShapesDDL = usersDDL + `
		CREATE TABLE notes (org_id bigint, id bigint, user_id bigint, body text, encrypted_kms_key text, PRIMARY KEY (org_id, id));`

const selectShapesMap = usersMap + `
  notes:
    primary_key: [org_id, id]
    columns:
      body: {}
`

// selectShapesSeed are TestSelectShapes' rows.
var selectShapesSeed = []string{
	"INSERT INTO orgs (id, name) VALUES (1, 'acme'), (2, 'globex')",
	"INSERT INTO users (id, org_id, name, email) VALUES (1, 1, 'ada', 'ada@x'), (2, 1, 'bob', 'bob@x'), (3, 2, 'cy', 'cy@x')",
	"INSERT INTO notes (org_id, id, user_id, body) VALUES (1, 1, 1, 'note one'), (1, 2, 2, 'note two')",
}

// selectShapes are the query shapes TestSelectShapes reads, with their
// answer over selectShapesSeed.
var selectShapes = []struct {
	sql  string
	want string
}{
	{"SELECT email FROM users ORDER BY id", "ada@x|bob@x|cy@x"},
	{"SELECT u.email AS e FROM users u WHERE u.id = $1", "ada@x"},
	{"SELECT u.email, o.name FROM users u JOIN orgs o ON o.id = u.org_id ORDER BY u.id LIMIT 2 OFFSET 1", "bob@x,acme|cy@x,globex"},
	{"SELECT a.email, b.email FROM users a JOIN users b ON a.org_id = b.org_id AND a.id < b.id", "ada@x,bob@x"},
	{"SELECT u.email, n.body FROM users u JOIN notes n ON n.user_id = u.id ORDER BY n.id", "ada@x,note one|bob@x,note two"},
	{"SELECT x.e FROM (SELECT id, email AS e FROM users) x WHERE x.id = 2", "bob@x"},
	{"WITH c AS (SELECT id, email FROM users WHERE org_id = 1) SELECT email FROM c ORDER BY id", "ada@x|bob@x"},
	{"SELECT email FROM users WHERE id = 1 UNION ALL SELECT email FROM users WHERE id = 3", "ada@x|cy@x"},
	{"SELECT id, email IS NULL FROM users WHERE id = ANY($1::bigint[]) ORDER BY id", "1,false|3,false"},
	{"SELECT u.id FROM users u WHERE EXISTS (SELECT 1 FROM notes n WHERE n.user_id = u.id) ORDER BY 1", "1|2"},
	{"SELECT count(*) FROM users", "3"},
}

// selectShapeArgs are the arguments of a selectShapes query.
func selectShapeArgs(q string) []any {
	if strings.Contains(q, "$1::bigint[]") {
		return []any{[]int64{1, 3}}
	} else if strings.Contains(q, "$1") {
		return []any{1}
	}
	return nil
}

// selectStarColumns are the columns SELECT * FROM users shows: key
// columns are the driver's, left out of *, selectable by name.
const selectStarColumns = "id,org_id,name,email,phone,dob,balance"

func TestSelectShapes(t *testing.T) {
	e := newEnv(t, selectShapesDDL, selectShapesMap)
	for _, q := range selectShapesSeed {
		e.exec(q)
	}
	for _, c := range selectShapes {
		got := e.strings(c.sql, selectShapeArgs(c.sql)...)
		if got != c.want {
			t.Errorf("%s\n got %s\nwant %s", c.sql, got, c.want)
		}
	}
	// SELECT * shows exactly the table's columns, decrypted.
	rows, err := e.db.Query("SELECT * FROM users WHERE id = 1")
	if err != nil {
		t.Fatal(err)
	}
	cols, _ := rows.Columns()
	if strings.Join(cols, ",") != selectStarColumns {
		t.Fatalf("columns %v", cols)
	}
	rows.Close()
	if got := e.strings("SELECT u.name, u.email FROM users u WHERE id = 2"); got != "bob,bob@x" {
		t.Fatalf("t.col: %s", got)
	}
}

// strings runs a query and renders its rows as "a,b|c,d".
func (e *env) strings(query string, args ...any) string {
	e.t.Helper()
	return queryStrings(e.t, e.db, query, args...)
}

// stringsOf is strings on another *sql.DB.
func stringsOf(t testing.TB, db *sql.DB, query string, args ...any) string {
	t.Helper()
	return queryStrings(t, db, query, args...)
}

func queryStrings(t testing.TB, db *sql.DB, query string, args ...any) string {
	t.Helper()
	rows, err := db.Query(query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		parts := make([]string, len(cols))
		for i, v := range vals {
			parts[i] = v.String
			if !v.Valid {
				parts[i] = "NULL"
			}
		}
		out = append(out, strings.Join(parts, ","))
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return strings.Join(out, "|")
}

const refusalsDDL = usersDDL + "CREATE VIEW user_emails AS SELECT id, email FROM users;"

// refusedStatements are refused with ErrUnsupported, naming the table
// users, by every way of running them.
var refusedStatements = []string{
	"SELECT id FROM users WHERE email = $1",
	"SELECT id FROM users ORDER BY email",
	"SELECT email, count(*) FROM users GROUP BY email",
	"SELECT DISTINCT email FROM users",
	"SELECT lower(email) FROM users",
	"SELECT max(email) FROM users",
	"SELECT u.id FROM users u JOIN users v ON u.email = v.email",
	"SELECT * FROM user_emails",
	"COPY users TO STDOUT",
	"SELECT 1; SELECT email FROM users",
	"INSERT INTO users (name, email) SELECT name, email FROM users",
	"INSERT INTO users (name, email) VALUES ('x', upper('y'))",
	"UPDATE users SET email = email || 'x'",
	"UPDATE users SET id = id + 1",
	"DELETE FROM users WHERE email LIKE '%x'",
	"SELECT email FROM users UNION SELECT email FROM users",
}

// refusalArgs are the arguments of a refusedStatements statement.
func refusalArgs(q string) []any {
	if strings.Contains(q, "$1") {
		return []any{"a@x"}
	}
	return nil
}

func TestRefusals(t *testing.T) {
	e := newEnv(t, refusalsDDL, usersMap)
	e.exec("INSERT INTO users (name, email) VALUES ('a', 'a@x')")
	for _, q := range refusedStatements {
		args := refusalArgs(q)
		_, err := e.db.Exec(q, args...)
		if !errors.Is(err, kmspostgres.ErrUnsupported) {
			t.Errorf("%s: err = %v, want ErrUnsupported", q, err)
			continue
		}
		if !strings.Contains(err.Error(), "users") {
			t.Errorf("%s: error does not name the table: %v", q, err)
		}
		if _, err := e.db.Query(q, args...); !errors.Is(err, kmspostgres.ErrUnsupported) {
			t.Errorf("%s: Query err = %v", q, err)
		}
		if _, err := e.db.Prepare(q); !errors.Is(err, kmspostgres.ErrUnsupported) {
			t.Errorf("%s: Prepare err = %v", q, err)
		}
	}
	// Nothing was written by any refused statement.
	if got := e.strings("SELECT id, name, email FROM users"); got != "1,a,a@x" {
		t.Fatalf("table changed: %s", got)
	}
	var re *kmspostgres.RefusalError
	_, err := e.db.Exec("SELECT id FROM users WHERE email = 'a@x'")
	if !errors.As(err, &re) || re.Table != "users" || re.Column != "email" {
		t.Fatalf("RefusalError: %#v", err)
	}
}

func TestPlainTablesPassThrough(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap)
	plainTablesPassThrough(t, e, sqlFront{e})
}

// plainTablesPassThrough is TestPlainTablesPassThrough on a front end.
func plainTablesPassThrough(t *testing.T, e *env, f stmtFront) {
	f.exec("INSERT INTO orgs (id, name) VALUES ($1, $2)", 7, "plain")
	var name string
	if err := f.QueryRow("SELECT name FROM orgs WHERE name = $1 ORDER BY name", "plain").Scan(&name); err != nil || name != "plain" {
		t.Fatalf("%q %v", name, err)
	}
	if got := e.rawValues("SELECT name FROM orgs"); got[0] != "plain" {
		t.Fatalf("plain table stored %q", got)
	}
	// A plain table with a column that has an encrypted column's name.
	f.exec("CREATE TABLE contacts (id int PRIMARY KEY, email text)")
	f.exec("INSERT INTO contacts VALUES (1, 'c@x')")
	if got := f.strings("SELECT email FROM contacts WHERE email = 'c@x' ORDER BY email"); got != "c@x" {
		t.Fatalf("contacts: %s", got)
	}
	// DDL through the driver resets the catalog: a new column shows up in *.
	f.exec("ALTER TABLE users ADD COLUMN nickname text")
	f.exec("INSERT INTO users (name, email, nickname) VALUES ('n', 'n@x', 'nick')")
	if got := f.strings("SELECT * FROM users"); !strings.Contains(got, "n@x") || !strings.Contains(got, "nick") {
		t.Fatalf("after ALTER: %s", got)
	}
}

func TestPreparedAndTransactions(t *testing.T) {
	forEachMode(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		ins, err := e.db.Prepare("INSERT INTO users (name, email) VALUES ($1, $2) RETURNING id")
		if err != nil {
			t.Fatal(err)
		}
		sel, err := e.db.Prepare("SELECT email FROM users WHERE id = $1")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			var id int64
			if err := ins.QueryRow(fmt.Sprintf("u%d", i), fmt.Sprintf("u%d@x", i)).Scan(&id); err != nil {
				t.Fatal(err)
			}
			var email string
			if err := sel.QueryRow(id).Scan(&email); err != nil || email != fmt.Sprintf("u%d@x", i) {
				t.Fatalf("prepared select: %q %v", email, err)
			}
		}
		ins.Close()
		sel.Close()

		// Rollback leaves nothing; commit keeps it.
		tx, err := e.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelSerializable})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec("INSERT INTO users (name, email) VALUES ('rb', 'rb@x')"); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec("UPDATE users SET email = 'changed@x' WHERE name = 'u0'"); err != nil {
			t.Fatal(err)
		}
		var email string
		if err := tx.QueryRow("SELECT email FROM users WHERE name = 'u0'").Scan(&email); err != nil || email != "changed@x" {
			t.Fatalf("read own write in tx: %q %v", email, err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		if got := e.strings("SELECT email FROM users WHERE name IN ('rb', 'u0')"); got != "u0@x" {
			t.Fatalf("after rollback: %s", got)
		}
		// Savepoints.
		tx, _ = e.db.Begin()
		tx.Exec("SAVEPOINT s1")
		if _, err := tx.Exec("UPDATE users SET email = 'sp@x' WHERE name = 'u1'"); err != nil {
			t.Fatal(err)
		}
		tx.Exec("ROLLBACK TO SAVEPOINT s1")
		if _, err := tx.Exec("UPDATE users SET email = 'kept@x' WHERE name = 'u2'"); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if got := e.strings("SELECT email FROM users WHERE name IN ('u1', 'u2') ORDER BY name"); got != "u1@x|kept@x" {
			t.Fatalf("savepoints: %s", got)
		}
		// Read-only transactions refuse writes (the server says so).
		tx, _ = e.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
		if _, err := tx.Exec("INSERT INTO orgs (id, name) VALUES (99, 'x')"); err == nil {
			t.Fatal("read-only transaction accepted a write")
		}
		tx.Rollback()
	})
}

// TestSchemaChangedOutsideTheDriver: a column dropped by another process
// fails the cached plan once, then the driver plans again.
func TestSchemaChangedOutsideTheDriver(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap)
	e.exec("INSERT INTO users (id, name, email) VALUES (1, 'a', 'a@x')")
	if got := e.strings("SELECT * FROM users"); !strings.Contains(got, "a@x") {
		t.Fatal(got)
	}
	if _, err := e.raw.Exec(context.Background(), "ALTER TABLE users DROP COLUMN org_id"); err != nil {
		t.Fatal(err)
	}
	// The cached plan still names org_id: the server refuses it once.
	if _, err := e.db.Query("SELECT * FROM users"); err == nil || !strings.Contains(err.Error(), "org_id") {
		t.Fatalf("first run after the change: %v", err)
	}
	if got := e.strings("SELECT * FROM users"); got != "1,a,a@x,NULL,NULL,NULL" {
		t.Fatalf("after an outside ALTER: %s", got)
	}
}
