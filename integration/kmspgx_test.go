package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/blindindex"
	"github.com/kmspostgres/kmspostgres/kmspgx"
)

const pgxDDL = `
CREATE TABLE people (
	id bigserial PRIMARY KEY,
	name text,
	email text,
	dob bytea,
	born text,
	balance text,
	score bytea,
	ref bytea,
	ok bytea,
	tags text[],
	encrypted_kms_key text
);
CREATE TABLE plain_notes (id bigserial PRIMARY KEY, body text);
`

const pgxMap = `
key_id: insecure-test-key
tables:
  people:
    columns:
      email: {}
      dob: {type: date}
      born: {type: timestamptz}
      balance: {type: numeric}
      score: {type: bigint}
      ref: {type: uuid}
      ok: {type: boolean}
`

type person struct {
	ID      int64
	Name    pgtype.Text
	Email   pgtype.Text
	Dob     pgtype.Date
	Born    pgtype.Timestamptz
	Balance pgtype.Numeric
	Score   pgtype.Int8
	Ref     pgtype.UUID
	Ok      pgtype.Bool
	Tags    []string
}

func newPgxPool(t *testing.T, e *env, opts ...kmspgx.Option) *kmspgx.Pool {
	t.Helper()
	p, err := kmspgx.NewPool(context.Background(), e.dsn(), append([]kmspgx.Option{kmspostgres.WithProvider(e.kms), kmspostgres.WithObserver(e.events)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func TestKmspgxRoundTrip(t *testing.T) {
	e := newEnv(t, pgxDDL, pgxMap)
	ctx := context.Background()
	pool := newPgxPool(t, e)
	born := time.Date(2001, 2, 3, 4, 5, 6, 789000, time.UTC)
	var id int64
	err := pool.QueryRow(ctx, `INSERT INTO people (name, email, dob, born, balance, score, ref, ok, tags) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id`,
		"Ada", pgtype.Text{String: "ada@example.org", Valid: true}, pgtype.Date{Time: time.Date(1815, 12, 10, 0, 0, 0, 0, time.UTC), Valid: true},
		born, "1234.50", int64(-42), "6ba7b810-9dad-11d1-80b4-00c04fd430c8", true, []string{"a", "b"}).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO people (name) VALUES ($1)`, "Nobody"); err != nil {
		t.Fatal(err)
	}
	e.assertNoPlaintext("people", "ada@example.org", "1815", "1234.5", "6ba7b810")

	rows, err := pool.Query(ctx, `SELECT * FROM people ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := pgx.CollectRows(rows, pgx.RowToStructByName[person])
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 {
		t.Fatalf("%d rows", len(ps))
	}
	a := ps[0]
	if a.ID != id || a.Name.String != "Ada" || a.Email.String != "ada@example.org" || !a.Dob.Valid || a.Dob.Time.Format("2006-01-02") != "1815-12-10" ||
		!a.Born.Time.Equal(born) || a.Score.Int64 != -42 || !a.Ok.Bool || a.Tags[1] != "b" {
		t.Fatalf("got %+v", a)
	}
	if v, _ := a.Balance.Value(); v != "1234.50" {
		t.Fatalf("balance %v", v)
	}
	if u, _ := a.Ref.Value(); u != "6ba7b810-9dad-11d1-80b4-00c04fd430c8" {
		t.Fatalf("uuid %v", u)
	}
	n := ps[1]
	if n.Email.Valid || n.Dob.Valid || n.Born.Valid || n.Balance.Valid || n.Score.Valid || n.Ref.Valid || n.Ok.Valid {
		t.Fatalf("NULLs: %+v", n)
	}

	// Plain Go targets, Values and RawValues.
	var email string
	var dob time.Time
	var score int64
	if err := pool.QueryRow(ctx, `SELECT email, dob, score FROM people WHERE id = $1`, id).Scan(&email, &dob, &score); err != nil {
		t.Fatal(err)
	}
	if email != "ada@example.org" || dob.Year() != 1815 || score != -42 {
		t.Fatalf("%q %v %d", email, dob, score)
	}
	rows, err = pool.Query(ctx, `SELECT email, balance, ref FROM people WHERE id = $1`, id)
	if err != nil {
		t.Fatal(err)
	}
	if !rows.Next() {
		t.Fatal(rows.Err())
	}
	vals, err := rows.Values()
	if err != nil {
		t.Fatal(err)
	}
	raw := rows.RawValues()
	if vals[0] != "ada@example.org" || string(raw[0]) != "ada@example.org" || string(raw[1]) != "1234.50" {
		t.Fatalf("values %#v raw %q", vals, raw)
	}
	fds := rows.FieldDescriptions()
	if len(fds) != 3 || fds[0].DataTypeOID != pgtype.TextOID || fds[1].DataTypeOID != pgtype.NumericOID || fds[2].DataTypeOID != pgtype.UUIDOID {
		t.Fatalf("field descriptions %+v", fds)
	}
	rows.Close()

	// Refusals reach pgx callers as the driver's errors.
	_, err = pool.Query(ctx, `SELECT id FROM people WHERE email = $1`, "x")
	mustErrIs(t, err, kmspostgres.ErrUnsupported)
	_, err = pool.Exec(ctx, `UPDATE people SET name = email`)
	mustErrIs(t, err, kmspostgres.ErrUnsupported)
	if err := pool.QueryRow(ctx, `SELECT email FROM people WHERE id = -1`).Scan(&email); !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("no rows: %v", err)
	}

	// UPDATE of an encrypted column, and pgx.NamedArgs.
	if _, err := pool.Exec(ctx, `UPDATE people SET email = @email WHERE id = @id`, pgx.NamedArgs{"email": "ada@new.example", "id": id}); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT email FROM people WHERE id = $1`, id).Scan(&email); err != nil || email != "ada@new.example" {
		t.Fatalf("%q %v", email, err)
	}
	e.assertNoPlaintext("people", "ada@new.example")
}

func TestKmspgxTxAndConn(t *testing.T) {
	e := newEnv(t, pgxDDL, pgxMap)
	ctx := context.Background()
	pool := newPgxPool(t, e)
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `INSERT INTO people (name, email) VALUES ('Gone', $1)`, "gone@example.org"); err != nil {
		t.Fatal(err)
	}
	var email string
	if err := tx.QueryRow(ctx, `SELECT email FROM people WHERE name = 'Gone'`).Scan(&email); err != nil || email != "gone@example.org" {
		t.Fatalf("%q %v", email, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM people`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("after rollback: %d %v", n, err)
	}
	if st := pool.Stat(); st.AcquiredConns() != 0 {
		t.Fatalf("%d connections still acquired", st.AcquiredConns())
	}

	c, err := kmspgx.Connect(ctx, e.dsn(), kmspostgres.WithProvider(e.kms))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	ctx2, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctx2.Exec(ctx, `INSERT INTO people (name, email) VALUES ('Kept', $1)`, "kept@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := ctx2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.QueryRow(ctx, `SELECT email FROM people WHERE name = 'Kept'`).Scan(&email); err != nil || email != "kept@example.org" {
		t.Fatalf("%q %v", email, err)
	}
	e.assertNoPlaintext("people", "kept@example.org")
}

func TestKmspgxCopyFrom(t *testing.T) {
	e := newEnv(t, pgxDDL, pgxMap)
	ctx := context.Background()
	pool := newPgxPool(t, e)
	const n = 2500 // more than one chunk
	src := make([][]any, n)
	for i := range src {
		var em any = fmt.Sprintf("user%d@example.org", i)
		if i%7 == 0 {
			em = nil
		}
		src[i] = []any{fmt.Sprintf("n%d", i), em, pgtype.Int8{Int64: int64(i), Valid: true}}
	}
	got, err := pool.CopyFrom(ctx, pgx.Identifier{"people"}, []string{"name", "email", "score"}, pgx.CopyFromRows(src))
	if err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Fatalf("copied %d", got)
	}
	e.assertNoPlaintext("people", "user1@example.org", "user2499@example.org")
	rows, err := pool.Query(ctx, `SELECT name, email, score FROM people ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for rows.Next() {
		var name string
		var email pgtype.Text
		var score int64
		if err := rows.Scan(&name, &email, &score); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("user%d@example.org", i)
		if name != fmt.Sprintf("n%d", i) || score != int64(i) || (i%7 == 0) == email.Valid || (email.Valid && email.String != want) {
			t.Fatalf("row %d: %s %+v %d", i, name, email, score)
		}
		i++
	}
	if rows.Err() != nil || i != n {
		t.Fatalf("%d rows, %v", i, rows.Err())
	}
	// A plain table is copied as pgx copies it.
	if got, err := pool.CopyFrom(ctx, pgx.Identifier{"plain_notes"}, []string{"body"}, pgx.CopyFromRows([][]any{{"a"}, {"b"}})); err != nil || got != 2 {
		t.Fatalf("plain copy: %d %v", got, err)
	}
	// A failing row leaves nothing written.
	before := len(e.rawValues("SELECT id::text FROM people"))
	bad := [][]any{{"x", "ok@example.org", int64(1)}, {"y", "fine@example.org", "not a number"}}
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{"people"}, []string{"name", "email", "score"}, pgx.CopyFromRows(bad)); err == nil {
		t.Fatal("a bad row was copied")
	}
	if after := len(e.rawValues("SELECT id::text FROM people")); after != before {
		t.Fatalf("%d rows before, %d after a failed copy", before, after)
	}
}

func TestKmspgxBatch(t *testing.T) {
	e := newEnv(t, pgxDDL, pgxMap)
	ctx := context.Background()
	pool := newPgxPool(t, e)
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO people (name, email) VALUES ($1, $2)`, "A", "a@example.org")
	b.Queue(`INSERT INTO people (name, email) VALUES ($1, $2)`, "B", "b@example.org")
	var emails []string
	b.Queue(`SELECT email FROM people ORDER BY name`).Query(func(rows pgx.Rows) error {
		var err error
		emails, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err := pool.SendBatch(ctx, b).Close(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(emails, ",") != "a@example.org,b@example.org" {
		t.Fatalf("emails %v", emails)
	}
	e.assertNoPlaintext("people", "a@example.org")

	// A refused statement fails the batch, and the batch's writes are
	// rolled back.
	b = &pgx.Batch{}
	b.Queue(`INSERT INTO people (name, email) VALUES ($1, $2)`, "C", "c@example.org")
	b.Queue(`SELECT id FROM people WHERE email = $1`, "a@example.org")
	br := pool.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		t.Fatal(err)
	}
	_, err := br.Query()
	mustErrIs(t, err, kmspostgres.ErrUnsupported)
	mustErrIs(t, br.Close(), kmspostgres.ErrUnsupported)
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM people`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("count %d %v", n, err)
	}
	if st := pool.Stat(); st.AcquiredConns() != 0 {
		t.Fatalf("%d connections still acquired", st.AcquiredConns())
	}
}

// A connection acquired from the pool keeps its session (a SET) across
// statements, and its statements still go through the engine.
func TestKmspgxAcquire(t *testing.T) {
	e := newEnv(t, pgxDDL, pgxMap)
	ctx := context.Background()
	pool := newPgxPool(t, e)
	c, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	if _, err := c.Exec(ctx, `SET application_name = 'kmspgx-acquire'`); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, `INSERT INTO people (name, email) VALUES ('A', $1)`, "acq@example.org"); err != nil {
		t.Fatal(err)
	}
	var app, email string
	if err := c.QueryRow(ctx, `SELECT current_setting('application_name')`).Scan(&app); err != nil || app != "kmspgx-acquire" {
		t.Fatalf("%q %v", app, err)
	}
	if err := c.QueryRow(ctx, `SELECT email FROM people`).Scan(&email); err != nil || email != "acq@example.org" {
		t.Fatalf("%q %v", email, err)
	}
	_, err = c.Query(ctx, `SELECT name FROM people ORDER BY email`)
	mustErrIs(t, err, kmspostgres.ErrUnsupported)
	e.assertNoPlaintext("people", "acq@example.org")
	c.Release()
	if st := pool.Stat(); st.AcquiredConns() != 0 {
		t.Fatalf("%d connections still acquired", st.AcquiredConns())
	}
}

// Blind-index lookups work through the pgx front end as through
// database/sql: equality, ANY, UPDATE and DELETE by the encrypted value,
// CopyFrom filling the index, and a copied index value caught.
func TestKmspgxBlindIndex(t *testing.T) {
	t.Setenv(blindindex.EnvMasterKey, testMasterKey)
	e := newEnv(t, `CREATE TABLE members (id bigserial PRIMARY KEY, name text, email text, email_bidx text, encrypted_kms_key text);`, `
key_id: insecure-test-key
tables:
  members:
    columns:
      email: {blind_index: {expression: lower_trim, algorithm: hmac_sha256}}
`)
	ctx := context.Background()
	pool := newPgxPool(t, e)
	if _, err := pool.Exec(ctx, `INSERT INTO members (name, email) VALUES ('Ada', $1)`, "Ada@Example.org"); err != nil {
		t.Fatal(err)
	}
	src := [][]any{{"Bob", "bob@example.org"}, {"Cy", nil}}
	if n, err := pool.CopyFrom(ctx, pgx.Identifier{"members"}, []string{"name", "email"}, pgx.CopyFromRows(src)); err != nil || n != 2 {
		t.Fatalf("copy: %d %v", n, err)
	}
	var name string
	if err := pool.QueryRow(ctx, `SELECT name FROM members WHERE email = $1`, " ada@example.ORG").Scan(&name); err != nil || name != "Ada" {
		t.Fatalf("lookup: %q %v", name, err)
	}
	if err := pool.QueryRow(ctx, `SELECT name FROM members WHERE email = $1`, "BOB@example.org").Scan(&name); err != nil || name != "Bob" {
		t.Fatalf("lookup of a copied row: %q %v", name, err)
	}
	rows, err := pool.Query(ctx, `SELECT name FROM members WHERE email = ANY($1) ORDER BY id`, []string{"ada@example.org", "bob@example.org", "nobody@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || strings.Join(names, ",") != "Ada,Bob" {
		t.Fatalf("ANY: %v %v", names, err)
	}
	if tag, err := pool.Exec(ctx, `UPDATE members SET name = 'Robert' WHERE email = $1`, "bob@example.org"); err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("update by email: %v %v", tag, err)
	}
	e.assertNoPlaintext("members", "Ada@Example.org", "ada@example.org", "bob@example.org")
	// An index value copied from another row does not make the driver
	// hand out that row for the wrong query.
	if _, err := e.raw.Exec(ctx, `UPDATE members SET email_bidx = (SELECT email_bidx FROM members WHERE name = 'Ada') WHERE name = 'Robert'`); err != nil {
		t.Fatal(err)
	}
	rows, err = pool.Query(ctx, `SELECT name FROM members WHERE email = $1`, "ada@example.org")
	if err != nil {
		t.Fatal(err)
	}
	_, err = pgx.CollectRows(rows, pgx.RowTo[string])
	mustErrIs(t, err, kmspostgres.ErrBlindIndexMismatch)
	if tag, err := pool.Exec(ctx, `DELETE FROM members WHERE email = $1`, "nobody@example.org"); err != nil || tag.RowsAffected() != 0 {
		t.Fatalf("delete by an absent email: %v %v", tag, err)
	}
}
