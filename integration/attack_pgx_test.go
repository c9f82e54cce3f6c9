package integration

// Attacks on the pgx front end (package kmspgx): CopyFrom, SendBatch, query
// options, transactions, pgtype arguments and result decoding. Each test
// asserts the safe outcome (a refusal with nothing written, or an
// encrypted write that reads back exactly), so that it fails when the
// driver misbehaves.

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/kmspgx"
)

// apgxConn opens a single kmspgx connection on the environment.
func apgxConn(t *testing.T, e *env, opts ...kmspgx.Option) *kmspgx.Conn {
	t.Helper()
	c, err := kmspgx.Connect(context.Background(), e.dsn(), append([]kmspgx.Option{kmspostgres.WithProvider(e.kms)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// apgxSchema makes a second namespace next to the environment's, dropped
// at the end of the test.
func apgxSchema(t *testing.T, e *env, suffix string) string {
	t.Helper()
	ns := e.ns + "_" + suffix
	if _, err := e.raw.Exec(context.Background(), "CREATE SCHEMA "+ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := pgx.Connect(context.Background(), databaseURL(t)); err == nil {
			c.Exec(context.Background(), "DROP SCHEMA "+ns+" CASCADE")
			c.Close(context.Background())
		}
	})
	return ns
}

// apgxCount counts rows of a table as stored.
func apgxCount(t *testing.T, e *env, table string) int {
	t.Helper()
	var n int
	if err := e.raw.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// apgxEmails reads people.email through the driver, ordered by id, and
// fails on any error (what was written must read back).
func apgxEmails(t *testing.T, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, sql string) []string {
	t.Helper()
	rows, err := db.Query(context.Background(), sql)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var s *string
		if err := r.Scan(&s); err != nil {
			return "", err
		}
		if s == nil {
			return "<NULL>", nil
		}
		return *s, nil
	})
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return out
}

// --- Transactions -------------------------------------------------------

// A savepoint (nested Begin) that ends tells the engine the transaction
// ended; if that forgets a SET LOCAL of the outer transaction, the
// session's search_path is cached stale once the outer transaction ends,
// and a plan made under one path is cached under another: a passthrough
// INSERT planned against a plain shadow table is then reused where the
// name resolves to the encrypted table, and writes plaintext into it.
func TestAttackPgxSavepointStalePath(t *testing.T) {
	e := newEnv(t, pgxDDL, pgxMap)
	ctx := context.Background()
	sh := apgxSchema(t, e, "sh")
	if _, err := e.raw.Exec(ctx, "CREATE TABLE "+sh+".people (id bigserial PRIMARY KEY, name text, email text)"); err != nil {
		t.Fatal(err)
	}
	c := apgxConn(t, e)
	if _, err := c.Exec(ctx, "SET search_path = "+sh+", "+e.ns); err != nil {
		t.Fatal(err)
	}
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SET LOCAL search_path = "+e.ns); err != nil {
		t.Fatal(err)
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	var one int
	if err := tx.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// The session is back on sh, ns: this INSERT goes to the plain shadow
	// table, and passes through.
	const q = "INSERT INTO people (name, email) VALUES ($1, $2) /* apgx-stale */"
	if _, err := c.Exec(ctx, q, "Shadow", "shadow@example.org"); err != nil {
		t.Fatal(err)
	}
	// Back to the encrypted table: the same text must now be encrypted.
	if _, err := c.Exec(ctx, "SET search_path = "+e.ns); err != nil {
		t.Fatal(err)
	}
	_, err = c.Exec(ctx, q, "Eve", "stale-path-secret@example.org")
	t.Logf("INSERT after the path came back: %v", err)
	e.assertNoPlaintext(e.ns+".people", "stale-path-secret@example.org")
	if err == nil {
		if got := apgxEmails(t, c, "SELECT email FROM people ORDER BY id"); strings.Join(got, ",") != "stale-path-secret@example.org" {
			t.Fatalf("read back %v", got)
		}
	}
}

// The same with a plain SET search_path inside the outer transaction,
// released savepoint (Commit of the nested Tx), then a ROLLBACK of the
// outer one.
func TestAttackPgxReleaseSavepointThenRollback(t *testing.T) {
	e := newEnv(t, pgxDDL, pgxMap)
	ctx := context.Background()
	sh := apgxSchema(t, e, "sh")
	if _, err := e.raw.Exec(ctx, "CREATE TABLE "+sh+".people (id bigserial PRIMARY KEY, name text, email text)"); err != nil {
		t.Fatal(err)
	}
	pool := newPgxPool(t, e)
	// One connection only, so that every statement shares its session.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SET search_path = "+sh+", "+e.ns); err != nil {
		t.Fatal(err)
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// Plans a passthrough INSERT into the shadow table under the path read now.
	const q = "INSERT INTO people (name, email) VALUES ($1, $2) /* apgx-release */"
	if _, err := tx.Exec(ctx, q, "Shadow", "shadow@example.org"); err != nil {
		t.Fatal(err)
	}
	conn := tx.Conn()
	if err := tx.Rollback(ctx); err != nil { // the SET is undone: back to ns
		t.Fatal(err)
	}
	_ = conn
	// The same connection, back in the pool: run the INSERT again on every
	// connection of the pool.
	for i := 0; i < 4; i++ {
		_, err = pool.Exec(ctx, q, "Eve", "release-secret@example.org")
		t.Logf("INSERT %d: %v", i, err)
	}
	e.assertNoPlaintext(e.ns+".people", "release-secret@example.org")
	for _, s := range apgxEmails(t, pool, "SELECT email FROM people ORDER BY id") {
		if s != "release-secret@example.org" {
			t.Fatalf("read back %q", s)
		}
	}
}

// pgx.Tx after Commit or Rollback: pgx answers ErrTxClosed. A statement
// that runs anyway runs outside the transaction (autocommitted, after the
// caller rolled back), on a connection the pool may already have handed
// to someone else.
func TestAttackPgxTxUseAfterEnd(t *testing.T) {
	e := newEnv(t, pgxDDL, pgxMap)
	ctx := context.Background()
	pool := newPgxPool(t, e)
	for _, end := range []string{"rollback", "commit"} {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if end == "rollback" {
			err = tx.Rollback(ctx)
		} else {
			err = tx.Commit(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(ctx, "INSERT INTO people (name, email) VALUES ($1, $2)", "After", "after-"+end+"@example.org")
		if !errors.Is(err, pgx.ErrTxClosed) {
			t.Errorf("Exec after %s: err = %v, want pgx.ErrTxClosed", end, err)
		}
		rows, err := tx.Query(ctx, "SELECT email FROM people")
		if err == nil {
			rows.Close()
			err = rows.Err()
		}
		if !errors.Is(err, pgx.ErrTxClosed) {
			t.Errorf("Query after %s: err = %v, want pgx.ErrTxClosed", end, err)
		}
		_, err = tx.CopyFrom(ctx, pgx.Identifier{"people"}, []string{"name", "email"}, pgx.CopyFromRows([][]any{{"After", "copy-after-" + end + "@example.org"}}))
		if !errors.Is(err, pgx.ErrTxClosed) {
			t.Errorf("CopyFrom after %s: err = %v, want pgx.ErrTxClosed", end, err)
		}
		b := &pgx.Batch{}
		b.Queue("INSERT INTO people (name, email) VALUES ($1, $2)", "After", "batch-after-"+end+"@example.org")
		err = tx.SendBatch(ctx, b).Close()
		if !errors.Is(err, pgx.ErrTxClosed) {
			t.Errorf("SendBatch after %s: err = %v, want pgx.ErrTxClosed", end, err)
		}
	}
	if n := apgxCount(t, e, "people"); n != 0 {
		t.Errorf("%d rows written through transactions that had ended", n)
	}
	// A nested transaction whose savepoint was released.
	c := apgxConn(t, e)
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Exec(ctx, "SELECT 1"); !errors.Is(err, pgx.ErrTxClosed) {
		t.Errorf("Exec on a released savepoint: err = %v, want pgx.ErrTxClosed", err)
	}
	tx.Rollback(ctx)
}

// --- CopyFrom: the table between planning and COPY ----------------------

// copyHook is a CopyFromSource that calls hook before handing out row
// hookAt (0-based).
type copyHook struct {
	rows   [][]any
	i      int
	hookAt int
	hook   func() error
	err    error
}

func (s *copyHook) Next() bool {
	if s.i >= len(s.rows) {
		return false
	}
	if s.i == s.hookAt && s.hook != nil {
		if err := s.hook(); err != nil {
			s.err = err
			return false
		}
	}
	s.i++
	return true
}
func (s *copyHook) Values() ([]any, error) { return s.rows[s.i-1], nil }
func (s *copyHook) Err() error             { return s.err }

func apgxRows(n int, prefix string) [][]any {
	out := make([][]any, n)
	for i := range out {
		out[i] = []any{fmt.Sprintf("n%d", i), fmt.Sprintf("%s%d@example.org", prefix, i)}
	}
	return out
}

const shadowPeople = `(id bigint, name text, email text, dob bytea, born text, balance text, score bytea, ref bytea, ok bytea, tags text[], encrypted_kms_key text)`

// Another process creates a table that shadows the encrypted one on the
// session's search_path after CopyFrom planned: the COPY must still go to
// the table the plan resolved (or fail), never split rows into the shadow.
func TestAttackPgxCopyShadowedMidStream(t *testing.T) {
	for _, at := range []int{0, 1200} { // before the first chunk (of 1,024 rows), and in the second
		t.Run(fmt.Sprint(at), func(t *testing.T) {
			e := newEnv(t, pgxDDL, pgxMap)
			ctx := context.Background()
			sh := apgxSchema(t, e, "sh")
			c := apgxConn(t, e)
			if _, err := c.Exec(ctx, "SET search_path = "+sh+", "+e.ns); err != nil {
				t.Fatal(err)
			}
			src := &copyHook{rows: apgxRows(2400, "shadow"), hookAt: at, hook: func() error {
				_, err := e.raw.Exec(ctx, "CREATE TABLE "+sh+".people "+shadowPeople)
				return err
			}}
			n, err := c.CopyFrom(ctx, pgx.Identifier{"people"}, []string{"name", "email"}, src)
			inShadow, inTable := apgxCount(t, e, sh+".people"), apgxCount(t, e, e.ns+".people")
			t.Logf("CopyFrom: %d, %v; %d rows in the shadow, %d in the encrypted table", n, err, inShadow, inTable)
			if inShadow != 0 {
				t.Errorf("%d rows (ciphertext and wrapped keys) went to %s.people, a table the plan did not resolve", inShadow, sh)
			}
			if err == nil && inTable != 2400 {
				t.Errorf("CopyFrom reported %d rows but the encrypted table has %d", n, inTable)
			}
			if err != nil && inTable != 0 {
				t.Errorf("failed CopyFrom left %d rows", inTable)
			}
		})
	}
}

// The hostile SQL author's version: the source itself moves the session's
// search_path through the driver while CopyFrom reads it.
func TestAttackPgxCopyReentrantSearchPath(t *testing.T) {
	e := newEnv(t, pgxDDL, pgxMap)
	ctx := context.Background()
	sh := apgxSchema(t, e, "sh")
	if _, err := e.raw.Exec(ctx, "CREATE TABLE "+sh+".people "+shadowPeople); err != nil {
		t.Fatal(err)
	}
	c := apgxConn(t, e)
	src := &copyHook{rows: apgxRows(10, "reentrant"), hookAt: 0, hook: func() error {
		_, err := c.Exec(ctx, "SET search_path = "+sh+", "+e.ns)
		return err
	}}
	n, err := c.CopyFrom(ctx, pgx.Identifier{"people"}, []string{"name", "email"}, src)
	inShadow, inTable := apgxCount(t, e, sh+".people"), apgxCount(t, e, e.ns+".people")
	t.Logf("CopyFrom: %d, %v; %d rows in the shadow, %d in the encrypted table", n, err, inShadow, inTable)
	if inShadow != 0 {
		got := apgxEmails(t, c, "SELECT email FROM "+sh+".people LIMIT 1")
		t.Errorf("%d rows went to %s.people; reading it through the driver hands out %q", inShadow, sh, got)
	}
	if err == nil && inTable != 10 {
		t.Errorf("CopyFrom reported %d rows but the encrypted table has %d", n, inTable)
	}
}

// A migration adds a trigger that computes on an encrypted column (which
// the driver refuses on any INSERT) after CopyFrom planned: the COPY must
// not run under it.
func TestAttackPgxCopyTriggerAddedMidStream(t *testing.T) {
	e := newEnv(t, pgxDDL, pgxMap)
	ctx := context.Background()
	c := apgxConn(t, e)
	var ddlErr error
	src := &copyHook{rows: [][]any{{"trigger-leak-name-0", "t0@example.org"}, {"trigger-leak-name-1", "t1@example.org"}}, hookAt: 0, hook: func() error {
		_, ddlErr = e.raw.Exec(ctx, `SET lock_timeout = '3s';
CREATE FUNCTION `+e.ns+`.leak() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.email := NEW.name; RETURN NEW; END $$;
CREATE TRIGGER leak BEFORE INSERT ON `+e.ns+`.people FOR EACH ROW EXECUTE FUNCTION `+e.ns+`.leak();`)
		return nil
	}}
	n, err := c.CopyFrom(ctx, pgx.Identifier{"people"}, []string{"name", "email"}, src)
	t.Logf("migration: %v; CopyFrom: %d, %v", ddlErr, n, err)
	for _, v := range e.rawValues("SELECT coalesce(email, '<NULL>') FROM people") {
		if strings.Contains(v, "trigger-leak-name") {
			t.Errorf("plaintext stored in the encrypted column people.email: %q", v)
		}
	}
	// Whatever was written reads back (once the trigger is gone again).
	if _, err := e.raw.Exec(ctx, "DROP TRIGGER IF EXISTS leak ON "+e.ns+".people"); err != nil {
		t.Fatal(err)
	}
	if err == nil {
		c2 := apgxConn(t, e)
		rows, qerr := c2.Query(ctx, "SELECT email FROM people ORDER BY id")
		if qerr == nil {
			for rows.Next() {
			}
			rows.Close()
			qerr = rows.Err()
		}
		if qerr != nil {
			t.Errorf("CopyFrom succeeded, but its rows do not read back: %v", qerr)
		}
	}
}

// --- CopyFrom: sources --------------------------------------------------

// A source that hands out the same pointers (or buffers) on every row, as
// pgx allows: pgx encodes each row before asking for the next.
func TestAttackPgxCopyReusedValues(t *testing.T) {
	for _, kind := range []string{"pointers", "buffer"} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t, pgxDDL, pgxMap)
			ctx := context.Background()
			pool := newPgxPool(t, e)
			var name, email string
			buf := make([]byte, 0, 64)
			i := 0
			const n = 5
			src := pgx.CopyFromFunc(func() ([]any, error) {
				if i == n {
					return nil, nil
				}
				name, email = fmt.Sprintf("reuse%d", i), fmt.Sprintf("reuse%d@example.org", i)
				buf = append(buf[:0], email...)
				i++
				if kind == "buffer" {
					return []any{name, buf}, nil
				}
				return []any{&name, &email}, nil
			})
			got, err := pool.CopyFrom(ctx, pgx.Identifier{"people"}, []string{"name", "email"}, src)
			if err != nil {
				t.Fatal(err)
			}
			if got != n {
				t.Fatalf("copied %d", got)
			}
			e.assertNoPlaintext("people", "reuse0@example.org", "reuse4@example.org")
			rows, err := pool.Query(ctx, "SELECT name, email FROM people ORDER BY id")
			if err != nil {
				t.Fatal(err)
			}
			k := 0
			for rows.Next() {
				var nm, em string
				if err := rows.Scan(&nm, &em); err != nil {
					t.Fatal(err)
				}
				if nm != fmt.Sprintf("reuse%d", k) || em != fmt.Sprintf("reuse%d@example.org", k) {
					t.Errorf("row %d reads back as (%q, %q)", k, nm, em)
				}
				k++
			}
			if rows.Err() != nil || k != n {
				t.Fatal(k, rows.Err())
			}
		})
	}
}

// --- CopyFrom: what the column list and the table name reach --------------

const copyDDL = `
CREATE TABLE people (id bigserial PRIMARY KEY, name text, email text, email_bidx text, encrypted_kms_key text);
CREATE TABLE "People" (id bigserial PRIMARY KEY, name text, email text);
CREATE TABLE idt (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, secret text, encrypted_kms_key text);
CREATE TABLE ev (id bigint, part int, secret text, encrypted_kms_key text, PRIMARY KEY (id, part)) PARTITION BY LIST (part);
CREATE TABLE ev1 PARTITION OF ev FOR VALUES IN (1);
CREATE TABLE ev2 PARTITION OF ev FOR VALUES IN (2);
CREATE TABLE base (id bigserial PRIMARY KEY, secret text, encrypted_kms_key text);
CREATE TABLE kid (extra text) INHERITS (base);
CREATE VIEW pview AS SELECT id, name, email FROM people;
CREATE VIEW pnames AS SELECT id, name FROM people;
CREATE TABLE inbox (id serial PRIMARY KEY, body text);
CREATE RULE fwd AS ON INSERT TO inbox DO ALSO INSERT INTO people (name, email) VALUES ('rule', NEW.body);
`

const copyMap = `
key_id: insecure-test-key
tables:
  people:
    columns:
      email: {blind_index: {algorithm: hmac_sha256}}
  idt: {columns: {secret: {}}}
  ev: {primary_key: [id, part], columns: {secret: {}}}
  base: {columns: {secret: {}}}
`

// apgxCopyRefused runs a CopyFrom that must fail and checks that none of
// the tables grew and no plaintext is stored.
func apgxCopyRefused(t *testing.T, e *env, pool *kmspgx.Pool, what string, table pgx.Identifier, cols []string, rows [][]any, secret string, tables ...string) {
	t.Helper()
	before := map[string]int{}
	for _, tb := range tables {
		before[tb] = apgxCount(t, e, tb)
	}
	n, err := pool.CopyFrom(context.Background(), table, cols, pgx.CopyFromRows(rows))
	t.Logf("%s: %d, %v", what, n, err)
	if err == nil {
		t.Errorf("%s: copied %d rows, want a refusal", what, n)
	}
	for _, tb := range tables {
		if after := apgxCount(t, e, tb); after != before[tb] {
			t.Errorf("%s: %s has %d rows, had %d", what, tb, after, before[tb])
		}
		e.assertNoPlaintext(tb, secret)
	}
}

func TestAttackPgxCopyColumnLists(t *testing.T) {
	t.Setenv("BLIND_INDEX_MASTER_KEY", testMasterKey)
	e := newEnv(t, copyDDL, copyMap)
	ctx := context.Background()
	pool := newPgxPool(t, e)
	all := []string{"people", `"People"`, "idt", "ev", "base", "inbox"}

	apgxCopyRefused(t, e, pool, "key column", pgx.Identifier{"people"}, []string{"name", "encrypted_kms_key"}, [][]any{{"k", "v1:secret-key"}}, "secret-key", all...)
	apgxCopyRefused(t, e, pool, "key column with email", pgx.Identifier{"people"}, []string{"email", "encrypted_kms_key"}, [][]any{{"kc@example.org", "v1:secret-key"}}, "kc@example.org", all...)
	apgxCopyRefused(t, e, pool, "blind index column", pgx.Identifier{"people"}, []string{"name", "email_bidx"}, [][]any{{"b", "bidx-secret"}}, "bidx-secret", all...)
	apgxCopyRefused(t, e, pool, "duplicate encrypted column", pgx.Identifier{"people"}, []string{"email", "email"}, [][]any{{"dup1@example.org", "dup2@example.org"}}, "dup", all...)
	apgxCopyRefused(t, e, pool, "duplicate plain column", pgx.Identifier{"people"}, []string{"name", "email", "name"}, [][]any{{"dupn", "dupn@example.org", "dupn2"}}, "dupn@example.org", all...)
	apgxCopyRefused(t, e, pool, "quoted EMAIL", pgx.Identifier{"people"}, []string{"EMAIL"}, [][]any{{"upper@example.org"}}, "upper@example.org", all...)
	apgxCopyRefused(t, e, pool, "view over email", pgx.Identifier{"pview"}, []string{"name", "email"}, [][]any{{"v", "view@example.org"}}, "view@example.org", all...)
	apgxCopyRefused(t, e, pool, "no columns", pgx.Identifier{"people"}, nil, [][]any{{}}, "zz", all...)
	apgxCopyRefused(t, e, pool, "system column", pgx.Identifier{"people"}, []string{"ctid", "email"}, [][]any{{"(0,1)", "sys@example.org"}}, "sys@example.org", all...)
	apgxCopyRefused(t, e, pool, "injection in the table name", pgx.Identifier{`people" (email) FROM STDIN; --`}, []string{"email"}, [][]any{{"inj@example.org"}}, "inj@example.org", all...)
	apgxCopyRefused(t, e, pool, "three-part name", pgx.Identifier{"nodb", e.ns, "people"}, []string{"email"}, [][]any{{"db@example.org"}}, "db@example.org", all...)

	// A rule on a plain table that copies into the encrypted one: COPY
	// ignores rules, INSERT would be refused; either way no plaintext.
	n, err := pool.CopyFrom(ctx, pgx.Identifier{"inbox"}, []string{"body"}, pgx.CopyFromRows([][]any{{"rule-secret@example.org"}}))
	t.Logf("inbox with a rule: %d, %v", n, err)
	e.assertNoPlaintext("people", "rule-secret@example.org")

	// NUL bytes in column names: pgx's Identifier.Sanitize drops them (the
	// driver's planned INSERT), its COPY quoting keeps them. Either
	// refused or encrypted; here, always with no plaintext.
	for i, cols := range [][]string{{"ema\x00il"}, {"name\x00", "email"}, {"name\x00"}} {
		vals := make([]any, len(cols))
		for j := range vals {
			vals[j] = fmt.Sprintf("nul%d-%d@example.org", i, j)
		}
		n, err := pool.CopyFrom(ctx, pgx.Identifier{"people"}, cols, pgx.CopyFromRows([][]any{vals}))
		t.Logf("NUL in %q: %d, %v", cols, n, err)
		e.assertNoPlaintext("people", "nul0-0@example.org", "nul1-1@example.org")
	}
	if _, err := pool.Exec(ctx, "DELETE FROM people"); err != nil {
		t.Fatal(err)
	}

	// Case and quoting: "People" is another, plain table; people and
	// ns.people are the encrypted one.
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{"People"}, []string{"name", "email"}, pgx.CopyFromRows([][]any{{"P", "plain-People@example.org"}})); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{e.ns, "people"}, []string{"name", "email"}, pgx.CopyFromRows([][]any{{"Q", "qualified@example.org"}})); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{"people"}, []string{"id", "name", "email"}, pgx.CopyFromRows([][]any{{int64(1000), "I", "explicit-id@example.org"}})); err != nil {
		t.Fatal(err)
	}
	e.assertNoPlaintext("people", "qualified@example.org", "explicit-id@example.org")
	if got := apgxEmails(t, pool, "SELECT email FROM people WHERE email = 'qualified@example.org'"); len(got) != 1 {
		t.Errorf("blind index lookup after CopyFrom: %v", got)
	}
	if got := apgxEmails(t, pool, "SELECT email FROM people ORDER BY id"); strings.Join(got, ",") != "qualified@example.org,explicit-id@example.org" {
		t.Errorf("people reads %v", got)
	}

	// Identity, partitions (through the parent and directly), inheritance.
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{"idt"}, []string{"secret"}, pgx.CopyFromRows([][]any{{"idt-secret-1"}, {"idt-secret-2"}})); err != nil {
		t.Fatal(err)
	}
	n, err = pool.CopyFrom(ctx, pgx.Identifier{"idt"}, []string{"id", "secret"}, pgx.CopyFromRows([][]any{{int64(77), "idt-secret-77"}}))
	t.Logf("explicit id into GENERATED ALWAYS: %d, %v", n, err)
	e.assertNoPlaintext("idt", "idt-secret")
	if got := apgxEmails(t, pool, "SELECT secret FROM idt ORDER BY id"); len(got) < 2 || got[0] != "idt-secret-1" || got[1] != "idt-secret-2" {
		t.Errorf("idt reads %v", got)
	}
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{"ev"}, []string{"id", "part", "secret"}, pgx.CopyFromRows([][]any{{int64(1), int32(1), "ev-secret-1"}, {int64(2), int32(2), "ev-secret-2"}})); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{"ev1"}, []string{"id", "part", "secret"}, pgx.CopyFromRows([][]any{{int64(3), int32(1), "ev-secret-3"}})); err != nil {
		t.Fatal(err)
	}
	apgxCopyRefused(t, e, pool, "a row for another partition", pgx.Identifier{"ev2"}, []string{"id", "part", "secret"}, [][]any{{int64(4), int32(1), "ev-secret-4"}}, "ev-secret-4", "ev")
	e.assertNoPlaintext("ev", "ev-secret")
	if got := apgxEmails(t, pool, "SELECT secret FROM ev ORDER BY id"); strings.Join(got, ",") != "ev-secret-1,ev-secret-2,ev-secret-3" {
		t.Errorf("ev reads %v", got)
	}
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{"kid"}, []string{"secret", "extra"}, pgx.CopyFromRows([][]any{{"kid-secret", "x"}})); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{"base"}, []string{"secret"}, pgx.CopyFromRows([][]any{{"base-secret"}})); err != nil {
		t.Fatal(err)
	}
	e.assertNoPlaintext("base", "kid-secret", "base-secret")
	if got := apgxEmails(t, pool, "SELECT secret FROM base ORDER BY id"); strings.Join(got, ",") != "kid-secret,base-secret" {
		t.Errorf("base reads %v", got)
	}
	if got := apgxEmails(t, pool, "SELECT secret FROM ONLY kid"); strings.Join(got, ",") != "kid-secret" {
		t.Errorf("kid reads %v", got)
	}
}

// failSource hands out n rows and then fails in the way given.
type failSource struct {
	n, i, at int
	mode     string
	onAt     func()
}

func (s *failSource) Next() bool {
	if s.i == s.at && s.onAt != nil {
		s.onAt()
	}
	if s.i >= s.n || (s.mode == "next-error" && s.i == s.at) {
		return false
	}
	s.i++
	return true
}
func (s *failSource) Values() ([]any, error) {
	i := s.i - 1
	row := []any{fmt.Sprintf("n%d", i), fmt.Sprintf("midstream%d@example.org", i)}
	if i == s.at {
		switch s.mode {
		case "values-error":
			return nil, errors.New("source failed")
		case "short":
			return row[:1], nil
		case "long":
			return append(row, "extra"), nil
		case "bad-plain":
			row[0] = struct{ X chan int }{}
		case "bad-cell":
			row[1] = struct{ X chan int }{}
		}
	}
	return row, nil
}
func (s *failSource) Err() error {
	if s.mode == "next-error" && s.i == s.at {
		return errors.New("source failed in Next")
	}
	return nil
}

// An error anywhere in the stream, after chunks were already sent, leaves
// nothing written.
func TestAttackPgxCopyFailsMidStream(t *testing.T) {
	e := newEnv(t, pgxDDL, pgxMap)
	pool := newPgxPool(t, e)
	for _, mode := range []string{"values-error", "next-error", "short", "long", "bad-plain", "bad-cell", "kms-down", "cancel"} {
		for _, at := range []int{0, 1200, 2800} { // in the first, second and third chunk of 1,024 rows
			ctx, cancel := context.WithCancel(context.Background())
			src := &failSource{n: 3000, at: at, mode: mode}
			switch mode {
			case "kms-down":
				src.onAt = func() { e.kms.SetUnavailable(true) }
			case "cancel":
				src.onAt = cancel
			}
			n, err := pool.CopyFrom(ctx, pgx.Identifier{"people"}, []string{"name", "email"}, src)
			cancel()
			e.kms.SetUnavailable(false)
			if err == nil {
				t.Errorf("%s at row %d: copied %d rows without error", mode, at, n)
			}
			if c := apgxCount(t, e, "people"); c != 0 {
				t.Fatalf("%s at row %d (%v): %d rows left behind", mode, at, err, c)
			}
		}
	}
	// The pool still works, and a good copy in a caller's transaction that
	// then fails leaves nothing either.
	tx, err := pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.CopyFrom(context.Background(), pgx.Identifier{"people"}, []string{"name", "email"}, &failSource{n: 300, at: -1}); err != nil {
		t.Fatal(err)
	}
	// A CopyFrom that fails after two chunks went to the server: pgx
	// aborts the COPY, and with it the caller's transaction; nothing of
	// the failed CopyFrom may be committed.
	_, err = tx.CopyFrom(context.Background(), pgx.Identifier{"people"}, []string{"name", "email"}, &failSource{n: 3000, at: 2800, mode: "values-error"})
	if err == nil {
		t.Fatal("no error")
	}
	cerr := tx.Commit(context.Background())
	if c := apgxCount(t, e, "people"); c != 0 && c != 300 {
		t.Fatalf("the caller's Commit (%v) after a failed CopyFrom committed %d rows: %d of the failed CopyFrom", cerr, c, c-300)
	}
}

// --- SendBatch --------------------------------------------------------------

func TestAttackPgxBatch(t *testing.T) {
	e := newEnv(t, pgxDDL, pgxMap)
	ctx := context.Background()
	sh := apgxSchema(t, e, "sh")
	if _, err := e.raw.Exec(ctx, "CREATE TABLE "+sh+".people (id bigserial PRIMARY KEY, name text, email text)"); err != nil {
		t.Fatal(err)
	}
	c := apgxConn(t, e)
	const ins = "INSERT INTO people (name, email) VALUES ($1, $2) /* apgx-batch */"

	// SET search_path inside a batch, a write under it, then an error:
	// the batch rolls back, the SET with it; the engine must notice.
	b := &pgx.Batch{}
	b.Queue("SET search_path = " + sh + ", " + e.ns)
	b.Queue(ins, "Shadow", "batch-shadow@example.org")
	b.Queue("SELECT 1/0")
	err := c.SendBatch(ctx, b).Close()
	t.Logf("batch with SET and an error: %v", err)
	if err == nil {
		t.Fatal("division by zero succeeded")
	}
	if _, err := c.Exec(ctx, ins, "Eve", "batch-after-rollback@example.org"); err != nil {
		t.Fatal(err)
	}
	e.assertNoPlaintext(e.ns+".people", "batch-after-rollback@example.org")

	// SET LOCAL in a batch that commits.
	b = &pgx.Batch{}
	b.Queue("SET LOCAL search_path = " + sh + ", " + e.ns)
	b.Queue(ins, "Shadow", "batch-local@example.org")
	if err := c.SendBatch(ctx, b).Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, ins, "Eve", "batch-after-local@example.org"); err != nil {
		t.Fatal(err)
	}
	e.assertNoPlaintext(e.ns+".people", "batch-after-local@example.org")

	// Multi-statement strings, DO and CALL, result formats, in a batch.
	for _, q := range []string{
		"INSERT INTO people (name, email) VALUES ('m', 'multi@example.org'); SELECT 1",
		"SELECT 1; INSERT INTO people (name, email) VALUES ('m', 'multi2@example.org')",
		"DO $$ BEGIN INSERT INTO people (name, email) VALUES ('d', 'do@example.org'); END $$",
		"COPY people (name, email) FROM STDIN",
		"PREPARE p AS INSERT INTO people (name, email) VALUES ($1, $2)",
	} {
		b = &pgx.Batch{}
		b.Queue(ins, "A", "batch-before-refusal@example.org")
		b.Queue(q)
		err := c.SendBatch(ctx, b).Close()
		t.Logf("%s: %v", q, err)
		if err == nil {
			t.Errorf("%s: ran in a batch", q)
		}
	}
	e.assertNoPlaintext(e.ns+".people", "multi@example.org", "multi2@example.org", "do@example.org")
	if n := apgxCount(t, e, e.ns+".people WHERE name = 'A'"); n != 0 {
		t.Errorf("%d rows of failed batches were committed", n)
	}
	b = &pgx.Batch{}
	b.Queue("SELECT email FROM people", pgx.QueryResultFormats{pgx.TextFormatCode})
	rerr := c.SendBatch(ctx, b).Close()
	mustErrIs(t, rerr, kmspostgres.ErrUnsupported)

	// Close without reading, NamedArgs and exec modes in a batch.
	b = &pgx.Batch{}
	b.Queue("INSERT INTO people (name, email) VALUES (@n, @e)", pgx.NamedArgs{"n": "N", "e": "named-batch@example.org"})
	b.Queue(ins, pgx.QueryExecModeSimpleProtocol, "S", "simple-batch@example.org")
	b.Queue(ins, pgx.QueryExecModeExec, "X", "exec-batch@example.org")
	var got []string
	b.Queue("SELECT email FROM people WHERE name IN ('N', 'S', 'X') ORDER BY name").Query(func(rows pgx.Rows) error {
		var err error
		got, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err := c.SendBatch(ctx, b).Close(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "named-batch@example.org,simple-batch@example.org,exec-batch@example.org" {
		t.Errorf("batch read %v", got)
	}
	e.assertNoPlaintext(e.ns+".people", "named-batch@example.org", "simple-batch@example.org", "exec-batch@example.org")

	// A callback that fails: the batch's writes are rolled back.
	b = &pgx.Batch{}
	b.Queue(ins, "CB", "callback-rollback@example.org")
	b.Queue("SELECT email FROM people").Query(func(rows pgx.Rows) error { return errors.New("callback failed") })
	b.Queue(ins, "CB", "callback-rollback2@example.org")
	if err := c.SendBatch(ctx, b).Close(); err == nil {
		t.Fatal("callback error lost")
	}
	if n := apgxCount(t, e, e.ns+".people WHERE name = 'CB'"); n != 0 {
		t.Errorf("%d rows of a batch whose callback failed were committed", n)
	}
	// Every row the driver wrote reads back.
	apgxEmails(t, c, "SELECT email FROM "+e.ns+".people ORDER BY id")
}

// --- Query options ------------------------------------------------------------

type rewriterFunc func(sql string, args []any) (string, []any, error)

func (f rewriterFunc) RewriteQuery(ctx context.Context, conn *pgx.Conn, sql string, args []any) (string, []any, error) {
	return f(sql, args)
}

func TestAttackPgxQueryOptions(t *testing.T) {
	e := newEnv(t, pgxDDL, pgxMap)
	ctx := context.Background()
	pool := newPgxPool(t, e)
	modes := []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol}
	for _, m := range modes {
		secret := fmt.Sprintf("mode-%d@example.org", m)
		if _, err := pool.Exec(ctx, "INSERT INTO people (name, email, score) VALUES ($1, $2, $3)", m, fmt.Sprint(m), secret, int64(m)); err != nil {
			t.Fatalf("%v: %v", m, err)
		}
		var email string
		var score int64
		if err := pool.QueryRow(ctx, "SELECT email, score FROM people WHERE name = $1", m, fmt.Sprint(m)).Scan(&email, &score); err != nil || email != secret || score != int64(m) {
			t.Errorf("%v: %q %d %v", m, email, score, err)
		}
		_, err := pool.Query(ctx, "SELECT id FROM people WHERE email = $1", m, secret)
		mustErrIs(t, err, kmspostgres.ErrUnsupported)
		e.assertNoPlaintext("people", secret)
	}
	// Result formats on encrypted columns are refused; on plain ones they work.
	for _, opt := range []any{pgx.QueryResultFormats{pgx.TextFormatCode}, pgx.QueryResultFormatsByOID{pgtype25: pgx.TextFormatCode}} {
		_, err := pool.Query(ctx, "SELECT email FROM people", opt)
		mustErrIs(t, err, kmspostgres.ErrUnsupported)
		rows, err := pool.Query(ctx, "SELECT name FROM people", opt)
		if err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
	// Options after a rewriter, and a rewriter that hands back options or
	// turns the statement into a refused one.
	rows, err := pool.Query(ctx, "SELECT email FROM people WHERE id = @id", pgx.NamedArgs{"id": 1}, pgx.QueryResultFormats{pgx.TextFormatCode})
	t.Logf("formats after NamedArgs: %v", err)
	if err == nil {
		rows.Close()
	}
	_, err = pool.Query(ctx, "SELECT email FROM people", rewriterFunc(func(sql string, args []any) (string, []any, error) {
		return sql, append([]any{pgx.QueryResultFormats{pgx.TextFormatCode}}, args...), nil
	}))
	mustErrIs(t, err, kmspostgres.ErrUnsupported)
	_, err = pool.Query(ctx, "SELECT id FROM people", rewriterFunc(func(sql string, args []any) (string, []any, error) {
		return "SELECT id FROM people WHERE email = $1", []any{"mode-0@example.org"}, nil
	}))
	mustErrIs(t, err, kmspostgres.ErrUnsupported)
	_, err = pool.Exec(ctx, "SELECT 1", rewriterFunc(func(sql string, args []any) (string, []any, error) {
		return "UPDATE people SET name = email", nil, nil
	}))
	mustErrIs(t, err, kmspostgres.ErrUnsupported)
	// A rewriter that returns a second rewriter: pgx applies one only.
	_, err = pool.Exec(ctx, "SELECT 1", rewriterFunc(func(sql string, args []any) (string, []any, error) {
		return "SELECT 1", []any{rewriterFunc(func(string, []any) (string, []any, error) {
			return "INSERT INTO people (name, email) VALUES ('rr', 'rewriter2@example.org')", nil, nil
		})}, nil
	}))
	t.Logf("rewriter returning a rewriter: %v", err)
	e.assertNoPlaintext("people", "rewriter2@example.org")
	// An exec mode as a value: the argument of a plain int column.
	_, err = pool.Exec(ctx, "INSERT INTO people (name, email, score) VALUES ($1, $2, $3)", "modeval", "modeval@example.org", pgx.QueryExecModeExec)
	t.Logf("exec mode as the last argument: %v", err)
	e.assertNoPlaintext("people", "modeval@example.org")
	apgxEmails(t, pool, "SELECT email FROM people ORDER BY id")
}

const pgtype25 = 25

// --- Result decoding: every plaintext type, against pgx on native types ------

const apgxTypesDDL = `
CREATE TABLE ty (id bigserial PRIMARY KEY, c_int2 text, c_int4 text, c_int8 text, c_f4 text, c_f8 text, c_num text, c_bool text,
	c_date text, c_ts text, c_tstz text, c_time text, c_uuid text, c_json text, c_jsonb text, c_bytea bytea, c_text text, c_bytea_t text,
	c_plain int[], encrypted_kms_key text);
CREATE TABLE tyref (id bigserial PRIMARY KEY, c_int2 smallint, c_int4 int, c_int8 bigint, c_f4 real, c_f8 double precision, c_num numeric, c_bool boolean,
	c_date date, c_ts timestamp, c_tstz timestamptz, c_time time, c_uuid uuid, c_json json, c_jsonb jsonb, c_bytea bytea, c_text text, c_bytea_t bytea,
	c_plain int[]);
`

const apgxTypesMap = `
key_id: insecure-test-key
tables:
  ty:
    columns:
      c_int2: {type: smallint}
      c_int4: {type: integer}
      c_int8: {type: bigint}
      c_f4: {type: real}
      c_f8: {type: double precision}
      c_num: {type: numeric}
      c_bool: {type: boolean}
      c_date: {type: date}
      c_ts: {type: timestamp}
      c_tstz: {type: timestamptz}
      c_time: {type: time}
      c_uuid: {type: uuid}
      c_json: {type: json}
      c_jsonb: {type: jsonb}
      c_bytea: {type: bytea}
      c_text: {}
      c_bytea_t: {type: bytea}
`

const apgxTypesCols = "c_int2, c_int4, c_int8, c_f4, c_f8, c_num, c_bool, c_date, c_ts, c_tstz, c_time, c_uuid, c_json, c_jsonb, c_bytea, c_text, c_bytea_t, c_plain"

func apgxTypesRows() [][]any {
	ts := time.Date(2001, 2, 3, 4, 5, 6, 789012000, time.UTC)
	return [][]any{
		{int16(-32768), int32(2147483647), int64(-9223372036854775808), float32(0.1), 3.141592653589793, "-0.0025", true,
			time.Date(1815, 12, 10, 0, 0, 0, 0, time.UTC), ts, ts.Add(time.Hour), "13:14:15.123456", "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
			`{"a": [1, 2], "b": "é"}`, `{"k": null}`, []byte{0, 1, 2, 255}, "héllo\nworld", []byte{0xde, 0xad}, []int32{1, 2}},
		{int16(7), int32(-1), int64(0), float32(math.Copysign(0, -1)), 0.0, "NaN", false,
			time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1969, 12, 31, 23, 59, 59, 999999000, time.UTC), time.Date(2262, 4, 11, 0, 0, 0, 0, time.UTC), "00:00:00", "00000000-0000-0000-0000-000000000000",
			`[]`, `"s"`, []byte{}, "", []byte{}, []int32{}},
		{nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil},
	}
}

// apgxNormalize makes pgx's Values() of two sources comparable: numerics
// by their text, everything else as is.
func apgxNormalize(v any) any {
	switch x := v.(type) {
	case pgtype.Numeric:
		t, _ := x.Value()
		return t
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano) + " " + x.Location().String()
	}
	return v
}

func TestAttackPgxResultTypes(t *testing.T) {
	for _, mode := range []string{"", "simple_protocol", "exec", "describe_exec", "cache_describe"} {
		t.Run("mode="+mode, func(t *testing.T) {
			var extra []string
			if mode != "" {
				extra = append(extra, "default_query_exec_mode="+mode)
			}
			e := newEnv(t, apgxTypesDDL, apgxTypesMap, extra...)
			ctx := context.Background()
			pool := newPgxPool(t, e)
			cols := strings.Split(strings.ReplaceAll(apgxTypesCols, " ", ""), ",")
			src := apgxTypesRows()
			// Through INSERT for the first row, CopyFrom for the others;
			// the reference table through raw pgx.
			ph := make([]string, len(cols))
			for i := range ph {
				ph[i] = fmt.Sprintf("$%d", i+1)
			}
			ins := "INSERT INTO %s (" + apgxTypesCols + ") VALUES (" + strings.Join(ph, ", ") + ")"
			if _, err := pool.Exec(ctx, fmt.Sprintf(ins, "ty"), src[0]...); err != nil {
				t.Fatal(err)
			}
			if _, err := pool.CopyFrom(ctx, pgx.Identifier{"ty"}, cols, pgx.CopyFromRows(src[1:])); err != nil {
				t.Fatal(err)
			}
			for _, r := range src {
				if _, err := e.raw.Exec(ctx, fmt.Sprintf(ins, "tyref"), r...); err != nil {
					t.Fatal(err)
				}
			}
			e.assertNoPlaintext("ty", "héllo", "6ba7b810", "1815", "-0.0025", `"a"`)
			cells := e.rawValues("SELECT coalesce(c_text, '') FROM ty")

			read := func(q pgx.Rows, err error) ([][]any, [][]byte, []pgconn.FieldDescription) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
				defer q.Close()
				var vals [][]any
				var raws [][]byte
				for q.Next() {
					v, err := q.Values()
					if err != nil {
						t.Fatal(err)
					}
					vals = append(vals, v)
					for _, b := range q.RawValues() {
						raws = append(raws, slices.Clone(b))
					}
				}
				if q.Err() != nil {
					t.Fatal(q.Err())
				}
				return vals, raws, slices.Clone(q.FieldDescriptions())
			}
			q := "SELECT " + apgxTypesCols + " FROM %s ORDER BY id"
			gotV, gotR, gotF := read(pool.Query(ctx, fmt.Sprintf(q, "ty")))
			wantV, wantR, wantF := read(e.raw.Query(ctx, fmt.Sprintf(q, "tyref")))
			if len(gotV) != len(wantV) {
				t.Fatalf("%d rows, want %d", len(gotV), len(wantV))
			}
			for i := range gotV {
				for j := range gotV[i] {
					g, w := apgxNormalize(gotV[i][j]), apgxNormalize(wantV[i][j])
					if !reflect.DeepEqual(g, w) {
						t.Errorf("row %d %s: Values() %T %#v, pgx on the native type gives %T %#v", i, cols[j], g, g, w, w)
					}
				}
			}
			for j := range gotF {
				if gotF[j].DataTypeOID != wantF[j].DataTypeOID || gotF[j].Name != wantF[j].Name {
					t.Errorf("%s: described as %d %q, pgx on the native type %d %q", cols[j], gotF[j].DataTypeOID, gotF[j].Name, wantF[j].DataTypeOID, wantF[j].Name)
				}
				if gotF[j].Format == wantF[j].Format {
					for i := range gotV {
						g, w := gotR[i*len(cols)+j], wantR[i*len(cols)+j]
						if !bytes.Equal(g, w) && cols[j] != "c_jsonb" {
							t.Errorf("row %d %s: RawValues %q, pgx on the native type %q", i, cols[j], g, w)
						}
					}
				}
			}
			// No cell or key anywhere in what pgx hands out.
			for _, b := range gotR {
				for _, c := range cells {
					if c != "" && bytes.Contains(b, []byte(c)) {
						t.Errorf("RawValues holds a stored cell: %q", b)
					}
				}
				if bytes.HasPrefix(b, []byte("v1:")) {
					t.Errorf("RawValues holds a wrapped key: %q", b)
				}
			}
			// Scan into Go and pgtype targets.
			var (
				i2 int16
				i4 int32
				f4 float32
				tm pgtype.Time
				u  pgtype.UUID
				bt []byte
				js map[string]any
				dt pgtype.Date
			)
			if err := pool.QueryRow(ctx, "SELECT c_int2, c_int4, c_f4, c_time, c_uuid, c_bytea, c_json, c_date FROM ty ORDER BY id LIMIT 1").Scan(&i2, &i4, &f4, &tm, &u, &bt, &js, &dt); err != nil {
				t.Fatal(err)
			}
			if i2 != -32768 || i4 != 2147483647 || f4 != float32(0.1) || tm.Microseconds != (13*3600+14*60+15)*1e6+123456 || !u.Valid || !bytes.Equal(bt, []byte{0, 1, 2, 255}) || js["b"] != "é" || dt.Time.Year() != 1815 {
				t.Errorf("Scan: %v %v %v %v %v %v %v %v", i2, i4, f4, tm, u, bt, js, dt)
			}
		})
	}
}

// --- pgtype and other argument values written to encrypted columns -------

type apgxValuer struct {
	v   any
	err error
}

func (v apgxValuer) Value() (driver.Value, error) { return v.v, v.err }

// textOnly implements pgx's TextValuer but not driver.Valuer.
type textOnly struct{ s string }

func (t textOnly) TextValue() (pgtype.Text, error) { return pgtype.Text{String: t.s, Valid: true}, nil }

func TestAttackPgxArgumentValues(t *testing.T) {
	e := newEnv(t, pgxDDL, pgxMap)
	ctx := context.Background()
	pool := newPgxPool(t, e)
	var nilStr *string
	s := "ptr-secret@example.org"
	ps := &s
	cases := []struct {
		name string
		col  string
		v    any
		want string // what the column reads back as text ("<NULL>"), or "" for a refusal
	}{
		{"pgtype.Text invalid", "email", pgtype.Text{String: "invalid-text-secret", Valid: false}, "<NULL>"},
		{"pgtype.Text", "email", pgtype.Text{String: "text-secret@example.org", Valid: true}, "text-secret@example.org"},
		{"nil *string", "email", nilStr, "<NULL>"},
		{"**string", "email", &ps, "ptr-secret@example.org"},
		{"sql.NullString", "email", sql.NullString{String: "nullstring-secret", Valid: false}, "<NULL>"},
		{"Valuer nil", "email", apgxValuer{}, "<NULL>"},
		{"Valuer error", "email", apgxValuer{v: "valuer-err-secret", err: errors.New("no")}, ""},
		{"[]byte into text", "email", []byte("bytes-secret@example.org"), "bytes-secret@example.org"},
		{"invalid UTF-8", "email", []byte{0xff, 0xfe, 's'}, ""},
		{"NUL byte", "email", "nul\x00-secret", ""},
		{"TextValuer only", "email", textOnly{"textvaluer-secret"}, ""}, // pgx would write it; a refusal is safe
		{"int into text", "email", 42, "42"},
		{"float into text", "email", 1.5, ""},
		{"pgtype.Date invalid", "dob", pgtype.Date{Time: time.Date(1999, 9, 9, 0, 0, 0, 0, time.UTC)}, "<NULL>"},
		{"pgtype.Date infinity", "dob", pgtype.Date{InfinityModifier: pgtype.Infinity, Valid: true}, ""},
		{"pgtype.Date", "dob", pgtype.Date{Time: time.Date(1999, 9, 9, 0, 0, 0, 0, time.UTC), Valid: true}, "1999-09-09"},
		{"date as string", "dob", "1998-08-08", "1998-08-08"},
		{"date with zone", "dob", time.Date(1997, 7, 7, 23, 0, 0, 0, time.FixedZone("x", -5*3600)), "1997-07-07"},
		{"pgtype.Timestamptz infinity", "born", pgtype.Timestamptz{InfinityModifier: pgtype.NegativeInfinity, Valid: true}, ""},
		{"pgtype.Numeric NaN", "balance", pgtype.Numeric{NaN: true, Valid: true}, "NaN"},
		{"numeric garbage", "balance", "12abc", ""},
		{"pgtype.Int8", "score", pgtype.Int8{Int64: 9, Valid: true}, "9"},
		{"pgtype.Int8 invalid", "score", pgtype.Int8{Int64: 9}, "<NULL>"},
		{"uint64 overflow", "score", uint64(1 << 63), ""},
		{"score as string", "score", "12", "12"},
		{"pgtype.UUID", "ref", pgtype.UUID{Bytes: [16]byte{1, 2, 3}, Valid: true}, "01020300-0000-0000-0000-000000000000"},
		{"uuid garbage", "ref", "not-a-uuid", ""},
		{"pgtype.Bool invalid", "ok", pgtype.Bool{Bool: true}, "<NULL>"},
		{"bool as string", "ok", "t", "true"},
	}
	for i, c := range cases {
		for _, via := range []string{"exec", "copy", "batch"} {
			name := fmt.Sprintf("%s-%s-%d", via, c.name, i)
			var err error
			switch via {
			case "exec":
				_, err = pool.Exec(ctx, "INSERT INTO people (name, "+c.col+") VALUES ($1, $2)", name, c.v)
			case "copy":
				_, err = pool.CopyFrom(ctx, pgx.Identifier{"people"}, []string{"name", c.col}, pgx.CopyFromRows([][]any{{name, c.v}}))
			case "batch":
				b := &pgx.Batch{}
				b.Queue("INSERT INTO people (name, "+c.col+") VALUES ($1, $2)", name, c.v)
				err = pool.SendBatch(ctx, b).Close()
			}
			n := apgxCount(t, e, "people WHERE name = '"+name+"'")
			if c.want == "" {
				if err == nil || n != 0 {
					t.Errorf("%s: %v, %d rows; want a refusal", name, err, n)
				}
				continue
			}
			if err != nil || n != 1 {
				t.Errorf("%s: %v, %d rows", name, err, n)
				continue
			}
			var got *string
			if err := pool.QueryRow(ctx, "SELECT "+c.col+"::text FROM (SELECT "+c.col+" FROM people WHERE name = $1) s", name).Scan(&got); err != nil {
				// ::text on an encrypted column is refused: read it typed.
				var v any
				if err := pool.QueryRow(ctx, "SELECT "+c.col+" FROM people WHERE name = $1", name).Scan(&v); err != nil {
					t.Fatalf("%s: read back: %v", name, err)
				}
				str := "<NULL>"
				switch x := v.(type) {
				case nil:
				case time.Time:
					str = x.Format("2006-01-02")
				case [16]byte:
					u := pgtype.UUID{Bytes: x, Valid: true}
					uv, _ := u.Value()
					str = uv.(string)
				case pgtype.Numeric:
					nv, _ := x.Value()
					str = fmt.Sprint(nv)
				default:
					str = fmt.Sprint(x)
				}
				got = &str
			}
			if *got != c.want {
				t.Errorf("%s: reads back %q, want %q", name, *got, c.want)
			}
		}
	}
	e.assertNoPlaintext("people", "invalid-text-secret", "text-secret", "ptr-secret", "nullstring-secret", "valuer-err-secret", "bytes-secret", "textvaluer-secret", "1999-09-09", "1998-08-08", "12abc")
	// Every row reads.
	rows, err := pool.Query(ctx, "SELECT * FROM people")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		if _, err := rows.Values(); err != nil {
			t.Fatal(err)
		}
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
}

// --- Results through expressions, views, CTEs, whole rows, key columns ------

func TestAttackPgxResultShapes(t *testing.T) {
	e := newEnv(t, pgxDDL+`CREATE VIEW pv AS SELECT id, email FROM people; CREATE VIEW pn AS SELECT id, name FROM people;`, pgxMap)
	ctx := context.Background()
	pool := newPgxPool(t, e)
	if _, err := pool.Exec(ctx, "INSERT INTO people (name, email, score, dob) VALUES ('Ada', 'shape-secret@example.org', 5, '1815-12-10')"); err != nil {
		t.Fatal(err)
	}
	cells := append(e.rawValues("SELECT email FROM people"), e.rawValues("SELECT encrypted_kms_key FROM people")...)
	cells = append(cells, e.rawValues("SELECT encode(score, 'hex') FROM people")...)
	for _, q := range []string{
		"SELECT email FROM (SELECT * FROM people) s",
		"WITH c AS (SELECT email, name FROM people) SELECT email FROM c",
		"WITH c AS MATERIALIZED (SELECT * FROM people) SELECT c.email FROM c",
		"SELECT email FROM people UNION ALL SELECT email FROM people",
		"SELECT (SELECT email FROM people LIMIT 1)",
		"SELECT x.email FROM people p, LATERAL (SELECT p.email) x",
		"SELECT ARRAY(SELECT email FROM people)",
		"SELECT email || '' FROM people",
		"SELECT coalesce(email, 'x') FROM people",
		"SELECT CASE WHEN true THEN email END FROM people",
		"SELECT (email) FROM people",
		"SELECT email::text FROM people",
		"SELECT score::bytea FROM people",
		"SELECT p FROM people p",
		"SELECT p.* FROM people p",
		"SELECT row_to_json(p) FROM people p",
		"SELECT to_jsonb(p.*) FROM people p",
		"SELECT json_agg(email) FROM people",
		"SELECT (p).email FROM people p",
		"SELECT * FROM pv",
		"SELECT * FROM pn",
		"SELECT email FROM people FOR UPDATE",
		"SELECT * FROM ROWS FROM (jsonb_to_record((SELECT to_jsonb(p) FROM people p))) AS x(email text)",
		"SELECT email FROM people GROUP BY id",
		"SELECT DISTINCT ON (id) email FROM people",
		"SELECT email FROM people WHERE email IS NOT NULL",
		"INSERT INTO people (name, email) VALUES ('R', 'returning-secret@example.org') RETURNING *",
		"UPDATE people SET name = name WHERE id = 1 RETURNING email",
		"UPDATE people SET name = name WHERE id = 1 RETURNING email || ''",
		"DELETE FROM people WHERE id = -1 RETURNING people",
		"SELECT t.tableoid::regclass, t.email FROM people t",
		"SELECT email FROM people \\gset",
	} {
		for _, opt := range [][]any{nil, {pgx.QueryExecModeSimpleProtocol}} {
			rows, err := pool.Query(ctx, q, opt...)
			if err != nil {
				t.Logf("%s %v: refused: %v", q, opt, err)
				continue
			}
			var vals []string
			for rows.Next() {
				v, err := rows.Values()
				if err != nil {
					t.Errorf("%s: Values: %v", q, err)
					break
				}
				for _, x := range v {
					vals = append(vals, fmt.Sprint(x))
				}
				for _, b := range rows.RawValues() {
					vals = append(vals, string(b))
				}
			}
			err = rows.Err()
			rows.Close()
			t.Logf("%s %v: %v (%v)", q, opt, vals, err)
			for _, v := range vals {
				for _, c := range cells {
					if c != "" && strings.Contains(v, c[:min(len(c), 20)]) {
						t.Errorf("%s: hands out stored ciphertext or a wrapped key: %q", q, v)
					}
				}
				if strings.Contains(v, "v1:") {
					t.Errorf("%s: hands out a wrapped key: %q", q, v)
				}
			}
		}
	}
}

// A key column named explicitly reads as stored, through both front ends:
// the wrapped data key, encrypted under the KMS key and bound to its row's
// context (README, "What happens to each statement"). It is never part of
// SELECT * or RETURNING *.
func TestAttackPgxKeyColumnRead(t *testing.T) {
	e := newEnv(t, pgxDDL, pgxMap)
	ctx := context.Background()
	pool := newPgxPool(t, e)
	if _, err := pool.Exec(ctx, "INSERT INTO people (name, email) VALUES ('K', 'key-read@example.org')"); err != nil {
		t.Fatal(err)
	}
	stored := e.rawValues("SELECT encrypted_kms_key FROM people")[0]
	if !strings.HasPrefix(stored, "v1:") {
		t.Fatalf("stored key %q", stored)
	}
	var viaSQL, viaPgx string
	if err := e.db.QueryRow("SELECT encrypted_kms_key FROM people").Scan(&viaSQL); err != nil || viaSQL != stored {
		t.Fatalf("database/sql: %q, %v", viaSQL, err)
	}
	if err := pool.QueryRow(ctx, "SELECT p.encrypted_kms_key AS k FROM people p").Scan(&viaPgx); err != nil || viaPgx != stored {
		t.Fatalf("kmspgx: %q, %v", viaPgx, err)
	}
	for _, q := range []string{"SELECT * FROM people", "INSERT INTO people (name, email) VALUES ('R', 'key-returning@example.org') RETURNING *"} {
		rows, err := pool.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range rows.FieldDescriptions() {
			if strings.HasPrefix(f.Name, "encrypted_kms_key") || strings.HasPrefix(f.Name, "__kmspg") {
				t.Errorf("%s: result column %s", q, f.Name)
			}
		}
		for rows.Next() {
			vals, _ := rows.Values()
			for _, v := range vals {
				if s, ok := v.(string); ok && strings.HasPrefix(s, "v1:") {
					t.Errorf("%s: hands out a wrapped data key", q)
				}
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// Rollback of a pgx.Tx after SET search_path and SET LOCAL (no
// savepoint): the engine must read the path again.
func TestAttackPgxRollbackAfterSet(t *testing.T) {
	e := newEnv(t, pgxDDL, pgxMap)
	ctx := context.Background()
	sh := apgxSchema(t, e, "sh")
	if _, err := e.raw.Exec(ctx, "CREATE TABLE "+sh+".people (id bigserial PRIMARY KEY, name text, email text)"); err != nil {
		t.Fatal(err)
	}
	c := apgxConn(t, e)
	const q = "INSERT INTO people (name, email) VALUES ($1, $2) /* apgx-rollback-set */"
	for _, set := range []string{"SET search_path = ", "SET LOCAL search_path = ", "SELECT set_config('search_path', '" + sh + "," + e.ns + "', true) --"} {
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, set+sh+", "+e.ns); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, q, "Shadow", "rollback-shadow@example.org"); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, q, "Eve", "rollback-set-secret@example.org"); err != nil {
			t.Fatal(err)
		}
		e.assertNoPlaintext(e.ns+".people", "rollback-set-secret@example.org")
	}
	for _, s := range apgxEmails(t, c, "SELECT email FROM "+e.ns+".people") {
		if s != "rollback-set-secret@example.org" {
			t.Fatalf("reads %q", s)
		}
	}
}

// A batch outside a transaction runs in one, "like pgx's implicit
// transaction: an error rolls the whole batch back". A statement that
// merely starts with SAVEPOINT or RELEASE (which fail outside a
// transaction block) must not turn that off: pgx's implicit transaction
// would roll the INSERT back with the failing SAVEPOINT.
func TestAttackPgxBatchSavepointOutsideTx(t *testing.T) {
	e := newEnv(t, pgxDDL, pgxMap)
	ctx := context.Background()
	pool := newPgxPool(t, e)
	for _, stmt := range []string{"SAVEPOINT s1", "RELEASE SAVEPOINT s1", "ROLLBACK TO SAVEPOINT s1"} {
		b := &pgx.Batch{}
		b.Queue("INSERT INTO people (name, email) VALUES ($1, $2)", stmt, "batch-savepoint@example.org")
		b.Queue(stmt)
		err := pool.SendBatch(ctx, b).Close()
		t.Logf("%s: %v", stmt, err)
		if err == nil {
			continue
		}
		if n := apgxCount(t, e, "people WHERE name = '"+stmt+"'"); n != 0 {
			t.Errorf("batch with %q failed (%v) but its INSERT was committed", stmt, err)
		}
	}
	// The same batches through plain pgx on an unmapped copy of the table.
	if _, err := e.raw.Exec(ctx, "CREATE TABLE plain_people (name text, email text)"); err != nil {
		t.Fatal(err)
	}
	b := &pgx.Batch{}
	b.Queue("INSERT INTO plain_people (name, email) VALUES ($1, $2)", "p", "x")
	b.Queue("SAVEPOINT s1")
	err := e.raw.SendBatch(ctx, b).Close()
	t.Logf("pgx itself: %v, %d rows kept", err, apgxCount(t, e, "plain_people"))
}

// The hostile author's version of the trigger: the source creates it
// through the driver, on the CopyFrom's own session (no lock stops it).
func TestAttackPgxCopyReentrantTrigger(t *testing.T) {
	e := newEnv(t, pgxDDL, pgxMap)
	ctx := context.Background()
	c := apgxConn(t, e)
	var ddlErr error
	src := &copyHook{rows: apgxRows(300, "reentrant-trigger"), hookAt: 10, hook: func() error {
		if _, ddlErr = c.Exec(ctx, `CREATE FUNCTION leak2() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.email := 'leak-' || NEW.name; RETURN NEW; END $$`); ddlErr == nil {
			_, ddlErr = c.Exec(ctx, `CREATE TRIGGER leak2 BEFORE INSERT ON people FOR EACH ROW EXECUTE FUNCTION leak2()`)
		}
		return nil
	}}
	for i := range src.rows {
		src.rows[i][0] = fmt.Sprintf("reentrant-plain-%d", i)
	}
	n, err := c.CopyFrom(ctx, pgx.Identifier{"people"}, []string{"name", "email"}, src)
	t.Logf("DDL through the driver: %v; CopyFrom: %d, %v", ddlErr, n, err)
	for _, v := range e.rawValues("SELECT coalesce(email, '<NULL>') FROM people") {
		if strings.HasPrefix(v, "leak-") {
			t.Fatalf("plaintext stored in the encrypted column people.email: %q", v)
		}
	}
}
