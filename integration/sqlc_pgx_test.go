package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/integration/sqlc/pgx/authors"
	"github.com/kmspostgres/kmspostgres/integration/sqlc/pgx/booktest"
	"github.com/kmspostgres/kmspostgres/kmspgx"
)

// pgxDB is what the sqlc pgx/v5 suites run on: the DBTX interface sqlc
// generates (Exec, Query, QueryRow, CopyFrom, SendBatch) plus Begin, for
// WithTx. kmspgx's Pool and Conn have it, and so do pgx's own.
type pgxDB interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
	Query(context.Context, string, ...any) (pgx.Rows, error)
	QueryRow(context.Context, string, ...any) pgx.Row
	CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error)
	SendBatch(context.Context, *pgx.Batch) pgx.BatchResults
	Begin(context.Context) (pgx.Tx, error)
}

var (
	_ pgxDB = (*kmspgx.Pool)(nil)
	_ pgxDB = (*kmspgx.Conn)(nil)
	_ pgxDB = (*pgxpool.Pool)(nil)
)

// sqlcPgxProject reads an example project in sqlc/pgx/<name>: the schema as
// stored (migrations.sql), the schema map and the schema sqlc reads.
func sqlcPgxProject(t *testing.T, name string) (migrations, kmsMap, schema string) {
	t.Helper()
	read := func(f string) string {
		b, err := os.ReadFile(filepath.Join("sqlc", "pgx", name, f))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	return read("migrations.sql"), read("kms_schema.yaml"), read("schema.sql")
}

// runSqlcPgx runs suite through kmspgx.NewPool, through kmspgx.Connect,
// and through a pool in pgx's simple protocol (PgBouncer's mode); and, as
// a control that the suite's expectations are pgx's own, through pgxpool
// on the unencrypted schema (schema.sql) with no kmspostgres at all.
func runSqlcPgx(t *testing.T, project string, suite func(t *testing.T, e *env, db pgxDB, encrypted bool)) {
	migrations, kmsMap, schema := sqlcPgxProject(t, project)
	t.Setenv("KMS_KEY_ID", "insecure-test-key")
	ctx := context.Background()
	const simple = "default_query_exec_mode=simple_protocol"
	for _, dsn := range [][]string{nil, {simple}} {
		name := "pool"
		if dsn != nil {
			name = "pool_simple_protocol"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, migrations, kmsMap, dsn...)
			pool, err := kmspgx.NewPool(ctx, e.dsn(), kmspostgres.WithProvider(e.kms))
			if err != nil {
				t.Fatalf("kmspgx.NewPool: %v", err)
			}
			defer pool.Close()
			suite(t, e, pool, true)
		})
	}
	t.Run("conn", func(t *testing.T) {
		e := newEnv(t, migrations, kmsMap)
		conn, err := kmspgx.Connect(ctx, e.dsn(), kmspostgres.WithProvider(e.kms))
		if err != nil {
			t.Fatalf("kmspgx.Connect: %v", err)
		}
		defer conn.Close(ctx)
		suite(t, e, conn, true)
	})
	for _, dsn := range [][]string{nil, {simple}} {
		name := "control_pgx_unencrypted"
		if dsn != nil {
			name += "_simple_protocol"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, schema, kmsMap, dsn...)
			pool, err := pgxpool.New(ctx, e.base)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			suite(t, e, pool, false)
		})
	}
}

// TestSqlcPgxAuthors runs every query sqlc generated for pgx/v5 from its
// authors example (sqlc/pgx/authors), unchanged, on kmspgx: :one, :many,
// :exec, :copyfrom, :batchexec and :batchone, in and out of transactions.
func TestSqlcPgxAuthors(t *testing.T) {
	runSqlcPgx(t, "authors", authorsPgxSuite)
}

// TestSqlcPgxBooktest runs sqlc's booktest example (sqlc/pgx/booktest),
// whose encrypted columns scan into pgtype.Text, Date, Timestamptz,
// Numeric, UUID and Int8, on kmspgx.
func TestSqlcPgxBooktest(t *testing.T) {
	runSqlcPgx(t, "booktest", booktestPgxSuite)
}

// TestSqlcPgxGenerateIsCurrent regenerates the two pgx/v5 examples with the
// real sqlc and checks that nothing changes.
func TestSqlcPgxGenerateIsCurrent(t *testing.T) {
	sqlc := tool(t, "sqlc")
	for _, project := range []string{"authors", "booktest"} {
		src := filepath.Join("sqlc", "pgx", project)
		dir := t.TempDir()
		for _, f := range []string{"sqlc.yaml", "schema.sql", "query.sql"} {
			b, err := os.ReadFile(filepath.Join(src, f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command(sqlc, "generate")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: sqlc generate: %v\n%s", project, err, out)
		}
		generated, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		checkedIn, _ := filepath.Glob(filepath.Join(src, "*.go"))
		if len(generated) != len(checkedIn) || len(generated) == 0 {
			t.Errorf("%s: sqlc generates %d files, %d checked in: run sqlc generate in integration/%s", project, len(generated), len(checkedIn), src)
		}
		for _, g := range generated {
			got, _ := os.ReadFile(g)
			want, err := os.ReadFile(filepath.Join(src, filepath.Base(g)))
			if err != nil || string(got) != string(want) {
				t.Errorf("%s/%s is out of date: run sqlc generate in integration/%s", project, filepath.Base(g), src)
			}
		}
	}
}

// pgText is a valid pgtype.Text.
func pgText(s string) pgtype.Text { return pgtype.Text{String: s, Valid: true} }

// mustRefusePgx checks that err is a refusal: errors.Is ErrUnsupported,
// and a *RefusalError naming table (any table if table is "").
func mustRefusePgx(t *testing.T, what string, err error, table string) {
	t.Helper()
	var re *kmspostgres.RefusalError
	if !errors.Is(err, kmspostgres.ErrUnsupported) || !errors.As(err, &re) || (table != "" && re.Table != table) {
		t.Fatalf("%s: err = %v, want a refusal (kmspostgres.ErrUnsupported, *RefusalError on %q)", what, err, table)
	}
}

// pgxQueryErr runs sql with db.Query and returns its error, from Query or,
// if pgx defers it, from the rows.
func pgxQueryErr(ctx context.Context, db pgxDB, sql string, args ...any) error {
	rows, err := db.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	rows.Close()
	return rows.Err()
}

// rawCount counts the stored rows of a table (bypassing the driver).
func (e *env) rawCount(table, where string) int {
	e.t.Helper()
	var n int
	q := "SELECT count(*) FROM " + table
	if where != "" {
		q += " WHERE " + where
	}
	if err := e.raw.QueryRow(context.Background(), q).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func authorsPgxSuite(t *testing.T, e *env, db pgxDB, encrypted bool) {
	ctx := context.Background()
	q := authors.New(db)

	// :one INSERT … RETURNING *: a value, a NULL and an empty string.
	ada, err := q.CreateAuthor(ctx, authors.CreateAuthorParams{Name: "Ada Lovelace", Bio: pgText("Wrote the first published program")})
	if err != nil {
		t.Fatalf("CreateAuthor: %v", err)
	}
	if ada.ID == 0 || ada.Name != "Ada Lovelace" || ada.Bio != pgText("Wrote the first published program") {
		t.Fatalf("CreateAuthor RETURNING *: %+v", ada)
	}
	charles, err := q.CreateAuthor(ctx, authors.CreateAuthorParams{Name: "Charles Babbage"})
	if err != nil || charles.Name != "Charles Babbage" || charles.Bio.Valid {
		t.Fatalf("CreateAuthor with a NULL bio: %+v %v", charles, err)
	}
	grace, err := q.CreateAuthor(ctx, authors.CreateAuthorParams{Name: "Grace Hopper", Bio: pgText("")})
	if err != nil || grace.Name != "Grace Hopper" || grace.Bio != pgText("") {
		t.Fatalf("CreateAuthor with an empty bio: %+v %v", grace, err)
	}
	if encrypted {
		e.assertNoPlaintext("authors", "Ada Lovelace", "first published program", "Charles Babbage", "Grace Hopper")
		if n := e.rawCount("authors", "bio IS NULL"); n != 1 {
			t.Fatalf("NULL bio stored as %d NULLs, want 1", n)
		}
	}

	// :one by primary key; pgx.ErrNoRows for a missing row.
	for _, want := range []authors.Author{ada, charles, grace} {
		got, err := q.GetAuthor(ctx, want.ID)
		if err != nil || got != want {
			t.Fatalf("GetAuthor(%d) = %+v, %v; want %+v", want.ID, got, err, want)
		}
	}
	if _, err := q.GetAuthor(ctx, -1); !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("GetAuthor(missing): %v", err)
	}

	// :many ORDER BY id. Ids come from a sequence, in blocks per connection
	// when the driver takes them, so the order is checked, not assumed.
	list := func() []authors.Author {
		t.Helper()
		all, err := q.ListAuthors(ctx)
		if err != nil {
			t.Fatalf("ListAuthors: %v", err)
		}
		if !slices.IsSortedFunc(all, func(a, b authors.Author) int { return int(a.ID - b.ID) }) {
			t.Fatalf("ListAuthors not ordered by id: %+v", all)
		}
		return all
	}
	byName := func(all []authors.Author) map[string]authors.Author {
		m := map[string]authors.Author{}
		for _, a := range all {
			m[a.Name] = a
		}
		return m
	}
	if all := list(); len(all) != 3 || byName(all)["Ada Lovelace"] != ada || byName(all)["Charles Babbage"] != charles || byName(all)["Grace Hopper"] != grace {
		t.Fatalf("ListAuthors: %+v", all)
	}

	// :exec UPDATE … WHERE id = $1 of both encrypted columns.
	if err := q.UpdateAuthor(ctx, authors.UpdateAuthorParams{ID: ada.ID, Name: "Augusta Ada King", Bio: pgText("Countess of Lovelace")}); err != nil {
		t.Fatalf("UpdateAuthor: %v", err)
	}
	ada = authors.Author{ID: ada.ID, Name: "Augusta Ada King", Bio: pgText("Countess of Lovelace")}
	if got, err := q.GetAuthor(ctx, ada.ID); err != nil || got != ada {
		t.Fatalf("after UpdateAuthor: %+v %v", got, err)
	}
	if encrypted {
		e.assertNoPlaintext("authors", "Augusta Ada King", "Countess of Lovelace")
	}

	// :copyfrom: CopyFrom(ctx, []string{"authors"}, []string{"name", "bio"}, …).
	copied := []authors.CreateAuthorsParams{
		{Name: "Alan Turing", Bio: pgText("On Computable Numbers")},
		{Name: "Edsger Dijkstra"},
		{Name: "Barbara Liskov", Bio: pgText("")},
	}
	n, err := q.CreateAuthors(ctx, copied)
	if err != nil || n != int64(len(copied)) {
		t.Fatalf("CreateAuthors (:copyfrom) = %d, %v; want %d", n, err, len(copied))
	}
	all := list()
	if len(all) != 6 {
		t.Fatalf("after :copyfrom, ListAuthors: %+v", all)
	}
	m := byName(all)
	for _, c := range copied {
		got, ok := m[c.Name]
		if !ok || got.Bio != c.Bio || got.ID == 0 {
			t.Fatalf(":copyfrom row %q read back as %+v (present %v)", c.Name, got, ok)
		}
	}
	turing, dijkstra, liskov := m["Alan Turing"], m["Edsger Dijkstra"], m["Barbara Liskov"]
	if encrypted {
		e.assertNoPlaintext("authors", "Alan Turing", "On Computable Numbers", "Edsger Dijkstra", "Barbara Liskov")
		if n := e.rawCount("authors", "encrypted_kms_key IS NULL"); n != 0 {
			t.Fatalf("%d rows stored without a data key", n)
		}
	}

	// CopyFrom as hand-written pgx code calls it: a schema-qualified
	// pgx.Identifier, columns in another order than the table's, and
	// pgx.CopyFromRows with plain Go values (a string, a nil).
	n, err = db.CopyFrom(ctx, pgx.Identifier{e.ns, "authors"}, []string{"bio", "name"},
		pgx.CopyFromRows([][]any{{"Copied with a qualified name", "Qualified Copy"}, {nil, "Nil Bio Copy"}}))
	if err != nil || n != 2 {
		t.Fatalf("CopyFrom(%s.authors, CopyFromRows) = %d, %v; want 2", e.ns, n, err)
	}
	m = byName(list())
	if m["Qualified Copy"].Bio != pgText("Copied with a qualified name") || m["Nil Bio Copy"].ID == 0 || m["Nil Bio Copy"].Bio.Valid {
		t.Fatalf("CopyFromRows rows read back: %+v, %+v", m["Qualified Copy"], m["Nil Bio Copy"])
	}
	if encrypted {
		e.assertNoPlaintext("authors", "Qualified Copy", "Copied with a qualified name", "Nil Bio Copy")
	}
	for _, name := range []string{"Qualified Copy", "Nil Bio Copy"} {
		if err := q.DeleteAuthor(ctx, m[name].ID); err != nil {
			t.Fatal(err)
		}
	}

	// :batchexec: one UPDATE per element, results in order.
	var batchErrs []error
	q.UpdateBioBatch(ctx, []authors.UpdateBioBatchParams{
		{ID: turing.ID, Bio: pgText("Computing Machinery and Intelligence")},
		{ID: dijkstra.ID, Bio: pgText("Go To Statement Considered Harmful")},
		{ID: liskov.ID, Bio: pgtype.Text{}},
	}).Exec(func(i int, err error) {
		if i != len(batchErrs) {
			t.Errorf("UpdateBioBatch: callback %d out of order", i)
		}
		batchErrs = append(batchErrs, err)
	})
	if len(batchErrs) != 3 || errors.Join(batchErrs...) != nil {
		t.Fatalf("UpdateBioBatch (:batchexec): %v", batchErrs)
	}
	turing.Bio = pgText("Computing Machinery and Intelligence")
	dijkstra.Bio = pgText("Go To Statement Considered Harmful")
	liskov.Bio = pgtype.Text{}
	if encrypted {
		e.assertNoPlaintext("authors", "Computing Machinery", "Considered Harmful")
	}

	// :batchone SELECT: every element's row, and pgx.ErrNoRows for a missing one.
	var batchRows []authors.Author
	batchErrs = nil
	q.GetAuthorBatch(ctx, []int64{turing.ID, -1, dijkstra.ID, liskov.ID, ada.ID}).QueryRow(func(i int, a authors.Author, err error) {
		batchRows = append(batchRows, a)
		batchErrs = append(batchErrs, err)
	})
	if len(batchRows) != 5 || batchRows[0] != turing || batchRows[2] != dijkstra || batchRows[3] != liskov || batchRows[4] != ada {
		t.Fatalf("GetAuthorBatch (:batchone): %+v %v", batchRows, batchErrs)
	}
	if batchErrs[0] != nil || !errors.Is(batchErrs[1], pgx.ErrNoRows) || batchErrs[2] != nil || batchErrs[3] != nil || batchErrs[4] != nil {
		t.Fatalf("GetAuthorBatch (:batchone) errors: %v", batchErrs)
	}

	// A pgx.Batch as hand-written pgx code builds it, with QueuedQuery
	// callbacks (QueryRow, Query, Exec) run by BatchResults.Close.
	var queuedName string
	var queuedBio pgtype.Text
	var queuedNames []string
	var queuedTag pgconn.CommandTag
	batch := &pgx.Batch{}
	batch.Queue("SELECT name, bio FROM authors WHERE id = $1", turing.ID).QueryRow(func(row pgx.Row) error {
		return row.Scan(&queuedName, &queuedBio)
	})
	batch.Queue("SELECT name FROM authors WHERE id = ANY($1) ORDER BY id", []int64{ada.ID, liskov.ID}).Query(func(rows pgx.Rows) error {
		var err error
		queuedNames, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	batch.Queue("UPDATE authors SET bio = $2 WHERE id = $1", liskov.ID, "Queued bio").Exec(func(ct pgconn.CommandTag) error {
		queuedTag = ct
		return nil
	})
	if err := db.SendBatch(ctx, batch).Close(); err != nil {
		t.Fatalf("SendBatch with QueuedQuery callbacks: %v", err)
	}
	wantNames := []string{ada.Name, liskov.Name}
	if ada.ID > liskov.ID {
		wantNames = []string{liskov.Name, ada.Name}
	}
	if queuedName != turing.Name || queuedBio != turing.Bio || !slices.Equal(queuedNames, wantNames) || !queuedTag.Update() || queuedTag.RowsAffected() != 1 {
		t.Fatalf("QueuedQuery callbacks: %q %+v %q %q", queuedName, queuedBio, queuedNames, queuedTag)
	}
	liskov.Bio = pgText("Queued bio")
	if got, err := q.GetAuthor(ctx, liskov.ID); err != nil || got != liskov {
		t.Fatalf("after a queued UPDATE: %+v %v", got, err)
	}
	if encrypted {
		e.assertNoPlaintext("authors", "Queued bio")
	}

	// pgx.CollectRows with RowToStructByName over SELECT *: no hidden column
	// reaches the application, and the values are decrypted.
	rows, err := db.Query(ctx, "SELECT * FROM authors ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	collected, err := pgx.CollectRows(rows, pgx.RowToStructByName[authors.Author])
	if err != nil || !slices.Equal(collected, list()) {
		t.Fatalf("CollectRows(RowToStructByName[Author]) = %+v, %v; want %+v", collected, err, list())
	}

	// :batchexec DELETE and :exec DELETE.
	batchErrs = nil
	q.DeleteAuthorsBatch(ctx, []int64{liskov.ID, dijkstra.ID}).Exec(func(_ int, err error) { batchErrs = append(batchErrs, err) })
	if len(batchErrs) != 2 || errors.Join(batchErrs...) != nil {
		t.Fatalf("DeleteAuthorsBatch (:batchexec): %v", batchErrs)
	}
	if err := q.DeleteAuthor(ctx, charles.ID); err != nil {
		t.Fatalf("DeleteAuthor: %v", err)
	}
	for _, id := range []int64{liskov.ID, dijkstra.ID, charles.ID} {
		if _, err := q.GetAuthor(ctx, id); !errors.Is(err, pgx.ErrNoRows) {
			t.Fatalf("GetAuthor(%d) after delete: %v", id, err)
		}
	}
	before := list()
	if len(before) != 3 {
		t.Fatalf("after deletes: %+v", before)
	}

	// WithTx, committed: :one, :exec, :copyfrom and :batchexec in one
	// transaction, reading its own writes.
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) // after a failure; a no-op after Commit
	qtx := q.WithTx(tx)
	hedy, err := qtx.CreateAuthor(ctx, authors.CreateAuthorParams{Name: "Hedy Lamarr", Bio: pgText("Frequency hopping")})
	if err != nil {
		t.Fatalf("tx CreateAuthor: %v", err)
	}
	if err := qtx.UpdateAuthor(ctx, authors.UpdateAuthorParams{ID: grace.ID, Name: "Grace Brewster Hopper", Bio: pgText("COBOL")}); err != nil {
		t.Fatalf("tx UpdateAuthor: %v", err)
	}
	if n, err := qtx.CreateAuthors(ctx, []authors.CreateAuthorsParams{{Name: "Katherine Johnson", Bio: pgText("Orbital mechanics")}}); err != nil || n != 1 {
		t.Fatalf("tx CreateAuthors (:copyfrom) = %d, %v", n, err)
	}
	batchErrs = nil
	qtx.UpdateBioBatch(ctx, []authors.UpdateBioBatchParams{{ID: turing.ID, Bio: pgText("Bletchley Park")}}).Exec(func(_ int, err error) { batchErrs = append(batchErrs, err) })
	if len(batchErrs) != 1 || batchErrs[0] != nil {
		t.Fatalf("tx UpdateBioBatch: %v", batchErrs)
	}
	if got, err := qtx.GetAuthor(ctx, grace.ID); err != nil || got.Name != "Grace Brewster Hopper" || got.Bio != pgText("COBOL") {
		t.Fatalf("tx reads its own write: %+v %v", got, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	grace = authors.Author{ID: grace.ID, Name: "Grace Brewster Hopper", Bio: pgText("COBOL")}
	turing.Bio = pgText("Bletchley Park")
	committed := list()
	m = byName(committed)
	if len(committed) != 5 || m["Hedy Lamarr"] != hedy || m["Grace Brewster Hopper"] != grace || m["Alan Turing"] != turing ||
		m["Katherine Johnson"].Bio != pgText("Orbital mechanics") {
		t.Fatalf("after commit: %+v", committed)
	}
	if encrypted {
		e.assertNoPlaintext("authors", "Hedy Lamarr", "Frequency hopping", "Grace Brewster Hopper", "COBOL", "Katherine Johnson", "Orbital mechanics", "Bletchley Park")
	}

	// WithTx, rolled back: none of its writes remain.
	rawBefore := e.rawCount("authors", "")
	tx, err = db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	qtx = q.WithTx(tx)
	if _, err := qtx.CreateAuthor(ctx, authors.CreateAuthorParams{Name: "Rolled Back", Bio: pgText("never was")}); err != nil {
		t.Fatalf("tx CreateAuthor: %v", err)
	}
	if err := qtx.UpdateAuthor(ctx, authors.UpdateAuthorParams{ID: ada.ID, Name: "Undone Name", Bio: pgText("undone bio")}); err != nil {
		t.Fatalf("tx UpdateAuthor: %v", err)
	}
	if n, err := qtx.CreateAuthors(ctx, []authors.CreateAuthorsParams{{Name: "Ghost Writer"}, {Name: "Second Ghost", Bio: pgText("boo")}}); err != nil || n != 2 {
		t.Fatalf("tx CreateAuthors (:copyfrom) = %d, %v", n, err)
	}
	batchErrs = nil
	qtx.DeleteAuthorsBatch(ctx, []int64{hedy.ID}).Exec(func(_ int, err error) { batchErrs = append(batchErrs, err) })
	if len(batchErrs) != 1 || batchErrs[0] != nil {
		t.Fatalf("tx DeleteAuthorsBatch: %v", batchErrs)
	}
	if inTx, err := qtx.ListAuthors(ctx); err != nil || len(inTx) != 7 {
		t.Fatalf("tx ListAuthors: %d rows, %v", len(inTx), err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatalf("Rollback: %v", err)
	}
	if after := list(); !slices.Equal(after, committed) {
		t.Fatalf("after rollback: %+v, want %+v", after, committed)
	}
	if n := e.rawCount("authors", ""); n != rawBefore {
		t.Fatalf("after rollback: %d stored rows, want %d", n, rawBefore)
	}

	if !encrypted {
		return
	}
	// What the application must not do: filter or sort on an encrypted
	// column. Refused before anything runs, through every entry point.
	mustRefusePgx(t, "Query WHERE bio = $1", pgxQueryErr(ctx, db, "SELECT id FROM authors WHERE bio = $1", "x"), "authors")
	mustRefusePgx(t, "Query ORDER BY name", pgxQueryErr(ctx, db, "SELECT id, name FROM authors ORDER BY name"), "authors")
	var id int64
	mustRefusePgx(t, "QueryRow WHERE name = $1", db.QueryRow(ctx, "SELECT id FROM authors WHERE name = $1", "Alan Turing").Scan(&id), "authors")
	_, err = db.Exec(ctx, "UPDATE authors SET bio = $1 WHERE name = $2", "x", "Alan Turing")
	mustRefusePgx(t, "Exec UPDATE … WHERE name = $2", err, "authors")
	batch = &pgx.Batch{}
	batch.Queue("SELECT id FROM authors WHERE bio = $1", "x")
	br := db.SendBatch(ctx, batch)
	_, err = br.Exec()
	br.Close()
	mustRefusePgx(t, "SendBatch WHERE bio = $1", err, "authors")
	// The connection is still usable after the refusals.
	if got, err := q.GetAuthor(ctx, turing.ID); err != nil || got != turing {
		t.Fatalf("GetAuthor after refusals: %+v %v", got, err)
	}
}

// Helpers for the booktest suite.

func pgDate(y int, m time.Month, d int) pgtype.Date {
	return pgtype.Date{Time: time.Date(y, m, d, 0, 0, 0, 0, time.UTC), Valid: true}
}

func pgTimestamptz(t time.Time) pgtype.Timestamptz { return pgtype.Timestamptz{Time: t, Valid: true} }

func pgNumeric(t *testing.T, s string) pgtype.Numeric {
	t.Helper()
	var n pgtype.Numeric
	if err := n.Scan(s); err != nil {
		t.Fatalf("numeric %q: %v", s, err)
	}
	return n
}

func pgUUID(t *testing.T, s string) pgtype.UUID {
	t.Helper()
	var u pgtype.UUID
	if err := u.Scan(s); err != nil {
		t.Fatalf("uuid %q: %v", s, err)
	}
	return u
}

func pgInt8(v int64) pgtype.Int8 { return pgtype.Int8{Int64: v, Valid: true} }

// bookString renders every field of a book in a form that compares exactly:
// times as UTC instants (microseconds), numerics as PostgreSQL prints them
// (scale kept: 12.50 is not 12.5), NULL as NULL.
func bookString(b booktest.Book) string {
	ts := func(v pgtype.Timestamptz) string {
		if !v.Valid {
			return "NULL"
		}
		if v.InfinityModifier != pgtype.Finite {
			return v.InfinityModifier.String()
		}
		return v.Time.UTC().Format("2006-01-02T15:04:05.000000Z")
	}
	date := func(v pgtype.Date) string {
		if !v.Valid {
			return "NULL"
		}
		if v.InfinityModifier != pgtype.Finite {
			return v.InfinityModifier.String()
		}
		return v.Time.Format("2006-01-02") + "@" + v.Time.Location().String()
	}
	num := func(v pgtype.Numeric) string {
		if !v.Valid {
			return "NULL"
		}
		s, err := v.Value()
		if err != nil {
			return "error: " + err.Error()
		}
		return s.(string)
	}
	str := func(v pgtype.Text) string {
		if !v.Valid {
			return "NULL"
		}
		return fmt.Sprintf("%q", v.String)
	}
	uuid := func(v pgtype.UUID) string {
		if !v.Valid {
			return "NULL"
		}
		return fmt.Sprintf("%x", v.Bytes)
	}
	i8 := func(v pgtype.Int8) string {
		if !v.Valid {
			return "NULL"
		}
		return fmt.Sprint(v.Int64)
	}
	return fmt.Sprintf("book_id=%d author_id=%d isbn=%q book_type=%s title=%q subtitle=%s year=%d available=%s published=%s signed_at=%s price=%s catalog_id=%s copies_sold=%s tags=%q",
		b.BookID, b.AuthorID, b.Isbn, b.BookType, b.Title, str(b.Subtitle), b.Year, ts(b.Available), date(b.Published), ts(b.SignedAt),
		num(b.Price), uuid(b.CatalogID), i8(b.CopiesSold), b.Tags)
}

func wantBook(t *testing.T, what string, got, want booktest.Book) {
	t.Helper()
	if g, w := bookString(got), bookString(want); g != w {
		t.Fatalf("%s:\n got %s\nwant %s", what, g, w)
	}
}

func wantBooks(t *testing.T, what string, got, want []booktest.Book) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d books, want %d:\n got %v\nwant %v", what, len(got), len(want), got, want)
	}
	for i := range got {
		wantBook(t, fmt.Sprintf("%s[%d]", what, i), got[i], want[i])
	}
}

// copiedBook is the book a :copyfrom row becomes, given its id.
func copiedBook(id int32, p booktest.CreateBooksParams) booktest.Book {
	return booktest.Book{BookID: id, AuthorID: p.AuthorID, Isbn: p.Isbn, BookType: p.BookType, Title: p.Title, Subtitle: p.Subtitle,
		Year: p.Year, Available: p.Available, Published: p.Published, SignedAt: p.SignedAt, Price: p.Price, CatalogID: p.CatalogID,
		CopiesSold: p.CopiesSold, Tags: p.Tags}
}

func booktestPgxSuite(t *testing.T, e *env, db pgxDB, encrypted bool) {
	ctx := context.Background()
	q := booktest.New(db)

	// Authors: :one INSERT … RETURNING * and :one by primary key.
	ursula, err := q.CreateAuthor(ctx, "Ursula K. Le Guin")
	if err != nil || ursula.AuthorID == 0 || ursula.Name != "Ursula K. Le Guin" {
		t.Fatalf("CreateAuthor: %+v %v", ursula, err)
	}
	tove, err := q.CreateAuthor(ctx, "Tove Jansson")
	if err != nil || tove.Name != "Tove Jansson" {
		t.Fatalf("CreateAuthor: %+v %v", tove, err)
	}
	if got, err := q.GetAuthor(ctx, ursula.AuthorID); err != nil || got != ursula {
		t.Fatalf("GetAuthor: %+v %v", got, err)
	}
	if encrypted {
		e.assertNoPlaintext("authors", "Ursula K. Le Guin", "Tove Jansson")
	}

	// :one INSERT … RETURNING * with every encrypted column set, then with
	// every nullable one NULL.
	berlin, _ := time.LoadLocation("Europe/Berlin")
	if berlin == nil {
		berlin = time.FixedZone("CET", 3600)
	}
	left := booktest.CreateBookParams{
		AuthorID: ursula.AuthorID, Isbn: "978-0-441-47812-5", BookType: booktest.BookTypeFICTION,
		Title: "The Left Hand of Darkness", Subtitle: pgText("A Hainish novel"), Year: 1969,
		Available: pgTimestamptz(time.Date(2024, 5, 1, 10, 0, 0, 123456000, time.UTC)),
		Published: pgDate(1969, time.March, 1),
		SignedAt:  pgTimestamptz(time.Date(1975, 6, 7, 15, 4, 5, 654321000, berlin)),
		Price:     pgNumeric(t, "12.50"),
		CatalogID: pgUUID(t, "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b"),
		// More than fits in 32 bits.
		CopiesSold: pgInt8(5_000_000_321),
		Tags:       []string{"scifi", "hainish"},
	}
	b1, err := q.CreateBook(ctx, left)
	if err != nil {
		t.Fatalf("CreateBook: %v", err)
	}
	if b1.BookID == 0 {
		t.Fatalf("CreateBook RETURNING *: no id: %+v", b1)
	}
	wantLeft := booktest.Book{BookID: b1.BookID, AuthorID: left.AuthorID, Isbn: left.Isbn, BookType: left.BookType, Title: left.Title,
		Subtitle: left.Subtitle, Year: left.Year, Available: left.Available, Published: left.Published, SignedAt: left.SignedAt,
		Price: left.Price, CatalogID: left.CatalogID, CopiesSold: left.CopiesSold, Tags: left.Tags}
	wantBook(t, "CreateBook RETURNING *", b1, wantLeft)
	if !b1.Published.Valid || !b1.SignedAt.Valid || !b1.Price.Valid || !b1.CatalogID.Valid || !b1.CopiesSold.Valid || !b1.Subtitle.Valid {
		t.Fatalf("CreateBook RETURNING *: a set value came back NULL: %+v", b1)
	}
	dispossessed := booktest.CreateBookParams{
		AuthorID: ursula.AuthorID, Isbn: "978-0-06-051275-0", BookType: booktest.BookTypeNONFICTION,
		Title: "The Dispossessed", Year: 1974, Available: pgTimestamptz(time.Date(2024, 5, 2, 0, 0, 0, 0, time.UTC)), Tags: []string{"scifi"},
	}
	b2, err := q.CreateBook(ctx, dispossessed)
	if err != nil {
		t.Fatalf("CreateBook with NULLs: %v", err)
	}
	wantDisp := booktest.Book{BookID: b2.BookID, AuthorID: ursula.AuthorID, Isbn: dispossessed.Isbn, BookType: booktest.BookTypeNONFICTION,
		Title: "The Dispossessed", Year: 1974, Available: dispossessed.Available, Tags: []string{"scifi"}}
	wantBook(t, "CreateBook with NULLs RETURNING *", b2, wantDisp)
	if b2.Subtitle.Valid || b2.Published.Valid || b2.SignedAt.Valid || b2.Price.Valid || b2.CatalogID.Valid || b2.CopiesSold.Valid {
		t.Fatalf("NULLs did not stay NULL: %+v", b2)
	}
	if encrypted {
		e.assertNoPlaintext("books", "The Left Hand of Darkness", "A Hainish novel", "1969-03-01", "1975-06-07", "12.50",
			"6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b", "6f1c2a9e3b4d4e5f8a7b9c0d1e2f3a4b", "5000000321", "The Dispossessed")
		if n := e.rawCount("books", "published IS NULL AND signed_at IS NULL AND price IS NULL AND catalog_id IS NULL AND copies_sold IS NULL AND subtitle IS NULL"); n != 1 {
			t.Fatalf("NULLs stored as %d all-NULL rows, want 1", n)
		}
	}

	// :one, :many by plain columns, and a LEFT JOIN of two encrypted tables
	// on plain columns with an array filter.
	got, err := q.GetBook(ctx, b1.BookID)
	if err != nil {
		t.Fatalf("GetBook: %v", err)
	}
	wantBook(t, "GetBook", got, wantLeft)
	if _, err := q.GetBook(ctx, -1); !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("GetBook(missing): %v", err)
	}
	byAuthor, err := q.BooksByAuthor(ctx, ursula.AuthorID)
	if err != nil {
		t.Fatalf("BooksByAuthor: %v", err)
	}
	want := []booktest.Book{wantLeft, wantDisp}
	sort.Slice(want, func(i, j int) bool { return want[i].BookID < want[j].BookID })
	wantBooks(t, "BooksByAuthor", byAuthor, want)
	tagged, err := q.BooksByTags(ctx, []string{"hainish", "nothing"})
	if err != nil || len(tagged) != 1 || tagged[0].BookID != b1.BookID || tagged[0].Title != "The Left Hand of Darkness" ||
		tagged[0].Name != pgText("Ursula K. Le Guin") || tagged[0].Isbn != left.Isbn || !slices.Equal(tagged[0].Tags, left.Tags) {
		t.Fatalf("BooksByTags: %+v %v", tagged, err)
	}

	// :exec UPDATEs of an encrypted and plain columns together.
	if err := q.UpdateBook(ctx, booktest.UpdateBookParams{BookID: b2.BookID, Title: "The Dispossessed: An Ambiguous Utopia", Tags: []string{"scifi", "anarres"}}); err != nil {
		t.Fatalf("UpdateBook: %v", err)
	}
	wantDisp.Title, wantDisp.Tags = "The Dispossessed: An Ambiguous Utopia", []string{"scifi", "anarres"}
	if err := q.UpdateBookISBN(ctx, booktest.UpdateBookISBNParams{BookID: b1.BookID, Title: "The Left Hand of Darkness (Ace)", Tags: []string{"scifi"}, Isbn: "978-0-441-00731-4"}); err != nil {
		t.Fatalf("UpdateBookISBN: %v", err)
	}
	wantLeft.Title, wantLeft.Tags, wantLeft.Isbn = "The Left Hand of Darkness (Ace)", []string{"scifi"}, "978-0-441-00731-4"
	for _, w := range []booktest.Book{wantLeft, wantDisp} {
		got, err := q.GetBook(ctx, w.BookID)
		if err != nil {
			t.Fatalf("GetBook after update: %v", err)
		}
		wantBook(t, "GetBook after update", got, w)
	}
	if encrypted {
		e.assertNoPlaintext("books", "Ambiguous Utopia", "(Ace)")
	}

	// :execrows, set-based: an encrypted date on every book of an author,
	// then back to NULL (sqlc.narg).
	if n, err := q.SetPublished(ctx, booktest.SetPublishedParams{AuthorID: ursula.AuthorID, Published: pgDate(2000, time.January, 1)}); err != nil || n != 2 {
		t.Fatalf("SetPublished = %d, %v; want 2", n, err)
	}
	for _, id := range []int32{b1.BookID, b2.BookID} {
		if got, err := q.GetBook(ctx, id); err != nil || bookString(booktest.Book{Published: got.Published}) != bookString(booktest.Book{Published: pgDate(2000, time.January, 1)}) {
			t.Fatalf("after SetPublished: %+v %v", got, err)
		}
	}
	if n, err := q.SetPublished(ctx, booktest.SetPublishedParams{AuthorID: ursula.AuthorID}); err != nil || n != 2 {
		t.Fatalf("SetPublished(NULL) = %d, %v; want 2", n, err)
	}
	wantLeft.Published = pgtype.Date{}
	for _, w := range []booktest.Book{wantLeft, wantDisp} {
		got, err := q.GetBook(ctx, w.BookID)
		if err != nil {
			t.Fatalf("GetBook after SetPublished(NULL): %v", err)
		}
		wantBook(t, "GetBook after SetPublished(NULL)", got, w)
	}

	// :copyfrom, with every encrypted type, NULLs, NaN, a negative numeric,
	// the largest bigint, an enum and an array.
	copyRows := []booktest.CreateBooksParams{
		{AuthorID: tove.AuthorID, Isbn: "978-0-374-31387-9", BookType: booktest.BookTypeFICTION, Title: "Comet in Moominland",
			Subtitle: pgText("The Moomins, book 2"), Year: 1946, Available: pgTimestamptz(time.Date(2024, 6, 1, 8, 30, 0, 1000, time.UTC)),
			Published: pgDate(1946, time.November, 1), SignedAt: pgTimestamptz(time.Date(1950, 1, 2, 3, 4, 5, 6000, time.UTC)),
			Price: pgNumeric(t, "19.99"), CatalogID: pgUUID(t, "00000000-0000-4000-8000-000000000001"), CopiesSold: pgInt8(9223372036854775807),
			Tags: []string{"moomin", "children"}},
		{AuthorID: tove.AuthorID, Isbn: "978-0-374-35032-4", BookType: booktest.BookTypeFICTION, Title: "Finn Family Moomintroll",
			Year: 1948, Available: pgTimestamptz(time.Date(2024, 6, 2, 0, 0, 0, 0, time.UTC)), Price: pgNumeric(t, "NaN"),
			CopiesSold: pgInt8(0), Tags: []string{"moomin"}},
		{AuthorID: tove.AuthorID, Isbn: "978-0-374-44939-4", BookType: booktest.BookTypeNONFICTION, Title: "The Summer Book",
			Subtitle: pgText(""), Year: 1972, Available: pgTimestamptz(time.Date(2024, 6, 3, 0, 0, 0, 0, time.UTC)),
			Published: pgDate(1972, time.May, 5), Price: pgNumeric(t, "-0.0025"), CatalogID: pgUUID(t, "ffffffff-ffff-4fff-bfff-ffffffffffff"),
			CopiesSold: pgInt8(-42), Tags: []string{}},
	}
	n, err := q.CreateBooks(ctx, copyRows)
	if err != nil || n != int64(len(copyRows)) {
		t.Fatalf("CreateBooks (:copyfrom) = %d, %v; want %d", n, err, len(copyRows))
	}
	toveBooks, err := q.BooksByAuthor(ctx, tove.AuthorID)
	if err != nil || len(toveBooks) != len(copyRows) {
		t.Fatalf("BooksByAuthor after :copyfrom: %d books, %v", len(toveBooks), err)
	}
	byISBN := map[string]booktest.Book{}
	for _, b := range toveBooks {
		byISBN[b.Isbn] = b
	}
	for _, p := range copyRows {
		got, ok := byISBN[p.Isbn]
		if !ok || got.BookID == 0 {
			t.Fatalf(":copyfrom row %s missing: %+v", p.Isbn, toveBooks)
		}
		wantBook(t, ":copyfrom row read back", got, copiedBook(got.BookID, p))
	}
	if encrypted {
		// "NaN" is short enough to turn up inside random base64: the price
		// column is checked for it as a whole value instead.
		for _, v := range e.rawValues("SELECT coalesce(price::text, '') FROM books") {
			if strings.EqualFold(v, "NaN") {
				t.Fatalf("books.price stores the plaintext %q", v)
			}
		}
		e.assertNoPlaintext("books", "Comet in Moominland", "The Moomins", "1946-11-01", "1950-01-02", "19.99",
			"00000000-0000-4000-8000-000000000001", "9223372036854775807", "Finn Family", "The Summer Book", "-0.0025", "1972-05-05")
		if n := e.rawCount("books", "encrypted_kms_key IS NULL"); n != 0 {
			t.Fatalf("%d books stored without a data key", n)
		}
	}
	comet, finn, summer := byISBN[copyRows[0].Isbn], byISBN[copyRows[1].Isbn], byISBN[copyRows[2].Isbn]

	// :batchmany on a plain column: one result set per year, in order.
	var years [][]booktest.Book
	var batchErrs []error
	q.BooksByYear(ctx, []int32{1969, 1946, 1800, 1948}).Query(func(i int, bs []booktest.Book, err error) {
		years = append(years, bs)
		batchErrs = append(batchErrs, err)
	})
	if len(years) != 4 || errors.Join(batchErrs...) != nil {
		t.Fatalf("BooksByYear (:batchmany): %d results, %v", len(years), batchErrs)
	}
	wantBooks(t, "BooksByYear 1969", years[0], []booktest.Book{wantLeft})
	wantBooks(t, "BooksByYear 1946", years[1], []booktest.Book{comet})
	wantBooks(t, "BooksByYear 1800", years[2], nil)
	wantBooks(t, "BooksByYear 1948", years[3], []booktest.Book{finn})

	// :batchexec UPDATE of encrypted numeric and bigint columns.
	batchErrs = nil
	q.UpdateBookSales(ctx, []booktest.UpdateBookSalesParams{
		{BookID: b1.BookID, Price: pgNumeric(t, "15.00"), CopiesSold: pgInt8(42)},
		{BookID: finn.BookID, Price: pgNumeric(t, "Infinity")},
		{BookID: -1, Price: pgNumeric(t, "1")},
	}).Exec(func(i int, err error) { batchErrs = append(batchErrs, err) })
	if len(batchErrs) != 3 || errors.Join(batchErrs...) != nil {
		t.Fatalf("UpdateBookSales (:batchexec): %v", batchErrs)
	}
	wantLeft.Price, wantLeft.CopiesSold = pgNumeric(t, "15.00"), pgInt8(42)
	finn.Price, finn.CopiesSold = pgNumeric(t, "Infinity"), pgtype.Int8{}
	for _, w := range []booktest.Book{wantLeft, finn} {
		got, err := q.GetBook(ctx, w.BookID)
		if err != nil {
			t.Fatalf("GetBook after UpdateBookSales: %v", err)
		}
		wantBook(t, "GetBook after UpdateBookSales", got, w)
	}

	// :batchone INSERT … RETURNING *: each element its own row and key.
	batchParams := []booktest.CreateBookBatchParams{
		{AuthorID: tove.AuthorID, Isbn: "978-1-908745-65-5", Title: "Fair Play", Year: 1989, Published: pgDate(1989, time.October, 1),
			Price: pgNumeric(t, "9.00"), CatalogID: pgUUID(t, "12345678-1234-4234-9234-123456789abc"), CopiesSold: pgInt8(7)},
		{AuthorID: ursula.AuthorID, Isbn: "978-0-689-84625-9", Title: "A Wizard of Earthsea", Year: 1968},
	}
	var created []booktest.Book
	batchErrs = nil
	q.CreateBookBatch(ctx, batchParams).QueryRow(func(i int, b booktest.Book, err error) {
		created = append(created, b)
		batchErrs = append(batchErrs, err)
	})
	if len(created) != 2 || errors.Join(batchErrs...) != nil {
		t.Fatalf("CreateBookBatch (:batchone): %+v %v", created, batchErrs)
	}
	for i, p := range batchParams {
		c := created[i]
		if c.BookID == 0 || !c.Available.Valid {
			t.Fatalf("CreateBookBatch[%d]: no id or default: %+v", i, c)
		}
		w := booktest.Book{BookID: c.BookID, AuthorID: p.AuthorID, Isbn: p.Isbn, BookType: booktest.BookTypeFICTION, Title: p.Title, Year: p.Year,
			Available: c.Available, Published: p.Published, Price: p.Price, CatalogID: p.CatalogID, CopiesSold: p.CopiesSold, Tags: []string{}}
		wantBook(t, fmt.Sprintf("CreateBookBatch[%d] RETURNING *", i), c, w)
		got, err := q.GetBook(ctx, c.BookID)
		if err != nil {
			t.Fatalf("GetBook after CreateBookBatch: %v", err)
		}
		wantBook(t, "GetBook after CreateBookBatch", got, w)
	}
	if encrypted {
		e.assertNoPlaintext("books", "Fair Play", "1989-10-01", "9.00", "12345678-1234-4234-9234-123456789abc", "A Wizard of Earthsea")
	}

	// :exec DELETE.
	if err := q.DeleteBook(ctx, summer.BookID); err != nil {
		t.Fatalf("DeleteBook: %v", err)
	}
	if _, err := q.GetBook(ctx, summer.BookID); !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("GetBook after DeleteBook: %v", err)
	}

	// pgx.CollectRows with RowToStructByName[Book] over SELECT *.
	allBooks := func() []booktest.Book {
		t.Helper()
		var all []booktest.Book
		for _, a := range []int32{ursula.AuthorID, tove.AuthorID} {
			bs, err := q.BooksByAuthor(ctx, a)
			if err != nil {
				t.Fatalf("BooksByAuthor: %v", err)
			}
			all = append(all, bs...)
		}
		sort.Slice(all, func(i, j int) bool { return all[i].BookID < all[j].BookID })
		return all
	}
	rows, err := db.Query(ctx, "SELECT * FROM books ORDER BY book_id")
	if err != nil {
		t.Fatal(err)
	}
	collected, err := pgx.CollectRows(rows, pgx.RowToStructByName[booktest.Book])
	if err != nil {
		t.Fatalf("CollectRows(RowToStructByName[Book]): %v", err)
	}
	committed := allBooks()
	wantBooks(t, "CollectRows(RowToStructByName[Book])", collected, committed)
	if len(committed) != 6 {
		t.Fatalf("books: %d, want 6", len(committed))
	}

	// WithTx, committed: :one, :copyfrom, :batchexec, :execrows.
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) // after a failure; a no-op after Commit
	qtx := q.WithTx(tx)
	moomin, err := qtx.CreateBook(ctx, booktest.CreateBookParams{AuthorID: tove.AuthorID, Isbn: "978-0-374-35033-1", BookType: booktest.BookTypeFICTION, Title: "Moominsummer Madness",
		Year: 1954, Available: pgTimestamptz(time.Date(2024, 7, 1, 0, 0, 0, 0, time.UTC)), Price: pgNumeric(t, "11.11"), Tags: []string{"moomin"}})
	if err != nil {
		t.Fatalf("tx CreateBook: %v", err)
	}
	if n, err := qtx.CreateBooks(ctx, []booktest.CreateBooksParams{{AuthorID: tove.AuthorID, Isbn: "978-0-374-35034-8", BookType: booktest.BookTypeFICTION, Title: "Moominland Midwinter",
		Year: 1957, Available: pgTimestamptz(time.Date(2024, 7, 2, 0, 0, 0, 0, time.UTC)), SignedAt: pgTimestamptz(time.Date(1958, 2, 3, 4, 5, 6, 0, time.UTC)),
		Tags: []string{"moomin", "winter"}}}); err != nil || n != 1 {
		t.Fatalf("tx CreateBooks (:copyfrom) = %d, %v", n, err)
	}
	batchErrs = nil
	qtx.UpdateBookSales(ctx, []booktest.UpdateBookSalesParams{{BookID: comet.BookID, Price: pgNumeric(t, "21.00"), CopiesSold: pgInt8(1)}}).
		Exec(func(_ int, err error) { batchErrs = append(batchErrs, err) })
	if len(batchErrs) != 1 || batchErrs[0] != nil {
		t.Fatalf("tx UpdateBookSales: %v", batchErrs)
	}
	if n, err := qtx.SetPublished(ctx, booktest.SetPublishedParams{AuthorID: tove.AuthorID, Published: pgDate(1990, time.January, 2)}); err != nil || n != 5 {
		t.Fatalf("tx SetPublished = %d, %v; want 5", n, err)
	}
	if got, err := qtx.GetBook(ctx, comet.BookID); err != nil || bookString(booktest.Book{Price: got.Price}) != bookString(booktest.Book{Price: pgNumeric(t, "21.00")}) {
		t.Fatalf("tx reads its own write: %+v %v", got, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	committed = allBooks()
	if len(committed) != 8 {
		t.Fatalf("after commit: %d books, want 8", len(committed))
	}
	for _, b := range committed {
		isTove := b.AuthorID == tove.AuthorID
		if isTove && bookString(booktest.Book{Published: b.Published}) != bookString(booktest.Book{Published: pgDate(1990, time.January, 2)}) {
			t.Fatalf("after commit, SetPublished: %s", bookString(b))
		}
		switch b.BookID {
		case moomin.BookID:
			if b.Title != "Moominsummer Madness" || bookString(booktest.Book{Price: b.Price}) != bookString(booktest.Book{Price: pgNumeric(t, "11.11")}) {
				t.Fatalf("after commit, tx CreateBook: %s", bookString(b))
			}
		case comet.BookID:
			if bookString(booktest.Book{Price: b.Price, CopiesSold: b.CopiesSold}) != bookString(booktest.Book{Price: pgNumeric(t, "21.00"), CopiesSold: pgInt8(1)}) {
				t.Fatalf("after commit, tx UpdateBookSales: %s", bookString(b))
			}
		}
		if b.Isbn == "978-0-374-35034-8" && (b.Title != "Moominland Midwinter" || !b.SignedAt.Valid || !b.SignedAt.Time.Equal(time.Date(1958, 2, 3, 4, 5, 6, 0, time.UTC))) {
			t.Fatalf("after commit, tx :copyfrom: %s", bookString(b))
		}
	}
	if encrypted {
		e.assertNoPlaintext("books", "Moominsummer Madness", "11.11", "Moominland Midwinter", "1958-02-03", "21.00", "1990-01-02")
	}

	// WithTx, rolled back: an author, a book, a :copyfrom, a :batchone, an
	// :exec UPDATE and a DELETE, all gone.
	rawAuthors, rawBooks := e.rawCount("authors", ""), e.rawCount("books", "")
	tx, err = db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	qtx = q.WithTx(tx)
	ghost, err := qtx.CreateAuthor(ctx, "Ghost Author")
	if err != nil {
		t.Fatalf("tx CreateAuthor: %v", err)
	}
	if _, err := qtx.CreateBook(ctx, booktest.CreateBookParams{AuthorID: ghost.AuthorID, Isbn: "ghost-1", BookType: booktest.BookTypeFICTION, Title: "Never Written", Year: 2030,
		Available: pgTimestamptz(time.Now().Truncate(time.Microsecond)), Tags: []string{}}); err != nil {
		t.Fatalf("tx CreateBook: %v", err)
	}
	if n, err := qtx.CreateBooks(ctx, []booktest.CreateBooksParams{{AuthorID: ghost.AuthorID, Isbn: "ghost-2", BookType: booktest.BookTypeFICTION, Title: "Never Copied", Year: 2031,
		Available: pgTimestamptz(time.Now().Truncate(time.Microsecond)), Tags: []string{}}}); err != nil || n != 1 {
		t.Fatalf("tx CreateBooks (:copyfrom) = %d, %v", n, err)
	}
	batchErrs = nil
	qtx.CreateBookBatch(ctx, []booktest.CreateBookBatchParams{{AuthorID: ghost.AuthorID, Isbn: "ghost-3", Title: "Never Batched", Year: 2032}}).
		QueryRow(func(_ int, _ booktest.Book, err error) { batchErrs = append(batchErrs, err) })
	if len(batchErrs) != 1 || batchErrs[0] != nil {
		t.Fatalf("tx CreateBookBatch: %v", batchErrs)
	}
	if err := qtx.UpdateBook(ctx, booktest.UpdateBookParams{BookID: b1.BookID, Title: "Overwritten Title", Tags: []string{}}); err != nil {
		t.Fatalf("tx UpdateBook: %v", err)
	}
	if err := qtx.DeleteBook(ctx, b2.BookID); err != nil {
		t.Fatalf("tx DeleteBook: %v", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatalf("Rollback: %v", err)
	}
	wantBooks(t, "after rollback", allBooks(), committed)
	if _, err := q.GetAuthor(ctx, ghost.AuthorID); !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("GetAuthor after rollback: %v", err)
	}
	if a, b := e.rawCount("authors", ""), e.rawCount("books", ""); a != rawAuthors || b != rawBooks {
		t.Fatalf("after rollback: %d authors, %d books stored; want %d, %d", a, b, rawAuthors, rawBooks)
	}

	if !encrypted {
		return
	}
	// sqlc's own BooksByTitleYear filters on title: refused, as are
	// comparisons and sorts on the other encrypted types.
	mustRefusePgx(t, "WHERE title = $1", pgxQueryErr(ctx, db, "SELECT * FROM books WHERE title = $1 AND year = $2", "The Dispossessed", 1974), "books")
	mustRefusePgx(t, "WHERE published > $1", pgxQueryErr(ctx, db, "SELECT book_id FROM books WHERE published > $1", pgDate(1950, time.January, 1)), "books")
	mustRefusePgx(t, "ORDER BY price", pgxQueryErr(ctx, db, "SELECT book_id FROM books ORDER BY price"), "books")
	mustRefusePgx(t, "sum(copies_sold)", pgxQueryErr(ctx, db, "SELECT sum(copies_sold) FROM books"), "books")
	mustRefusePgx(t, "JOIN authors ON name", pgxQueryErr(ctx, db, "SELECT b.book_id FROM books b JOIN authors a ON a.name = b.title"), "")
	if got, err := q.GetBook(ctx, b1.BookID); err != nil || !strings.HasPrefix(got.Title, "The Left Hand") {
		t.Fatalf("GetBook after refusals: %+v %v", got, err)
	}
}
