package integration

// The statement suite (statements_test.go) through the pgx front end:
// the same statements, answers, key accounting and refusals on a
// kmspgx.Pool (or, where one connection matters, a kmspgx.Conn).

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/blindindex"
	"github.com/kmspostgres/kmspostgres/kmspgx"
)

// kmspgxDB is what kmspgx.Pool, kmspgx.Conn and kmspgx.Tx share.
type kmspgxDB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// pgxFront is a stmtFront on kmspgx.
type pgxFront struct {
	t testing.TB
	q kmspgxDB
}

func newPgxFront(t *testing.T, e *env) pgxFront { return pgxFront{t, newPgxPool(t, e)} }

type tagResult struct{ pgconn.CommandTag }

func (r tagResult) RowsAffected() (int64, error) { return r.CommandTag.RowsAffected(), nil }

func (f pgxFront) exec(q string, args ...any) interface{ RowsAffected() (int64, error) } {
	f.t.Helper()
	tag, err := f.q.Exec(context.Background(), q, args...)
	if err != nil {
		f.t.Fatalf("%s: %v", q, err)
	}
	return tagResult{tag}
}

func (f pgxFront) QueryRow(q string, args ...any) interface{ Scan(dest ...any) error } {
	return f.q.QueryRow(context.Background(), q, args...)
}

func (f pgxFront) query(q string, args ...any) stmtRows {
	f.t.Helper()
	rows, err := f.q.Query(context.Background(), q, args...)
	if err != nil {
		f.t.Fatalf("%s: %v", q, err)
	}
	return rows
}

func (f pgxFront) strings(q string, args ...any) string {
	f.t.Helper()
	s, err := pgxStrings(f.q, q, args...)
	if err != nil {
		f.t.Fatalf("%s: %v", q, err)
	}
	return s
}

// pgxStrings is queryStrings through kmspgx: every value scanned into a
// sql.NullString, as queryStrings does.
func pgxStrings(db kmspgxDB, query string, args ...any) (string, error) {
	rows, err := db.Query(context.Background(), query, args...)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals := make([]sql.NullString, len(rows.FieldDescriptions()))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return "", err
		}
		parts := make([]string, len(vals))
		for i, v := range vals {
			parts[i] = v.String
			if !v.Valid {
				parts[i] = "NULL"
			}
		}
		out = append(out, strings.Join(parts, ","))
	}
	return strings.Join(out, "|"), rows.Err()
}

// TestStatementsPgx runs the statement suite through kmspgx.
func TestStatementsPgx(t *testing.T) {
	// Not parallel: the blind-index master key is an environment variable.
	t.Run("unique_violation_with_the_rows", pgxUniqueViolation)
	t.Run("insert_select_update_delete", func(t *testing.T) {
		t.Parallel()
		forEachMode(t, func(t *testing.T, e *env) { insertSelectUpdateDelete(t, e, newPgxFront(t, e)) })
	})
	t.Run("update_under_existing_key", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, notesDDL, notesMap)
		updateUnderExistingKey(t, e, newPgxFront(t, e))
	})
	t.Run("select_shapes", func(t *testing.T) {
		t.Parallel()
		forEachModeOn(t, selectShapesDDL, selectShapesMap, pgxSelectShapes)
	})
	t.Run("refusals", func(t *testing.T) {
		t.Parallel()
		pgxRefusals(t)
	})
	t.Run("plain_tables_pass_through", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, usersDDL, usersMap)
		plainTablesPassThrough(t, e, newPgxFront(t, e))
	})
	t.Run("transactions", func(t *testing.T) {
		t.Parallel()
		forEachMode(t, pgxTransactions)
	})
	t.Run("schema_changed_outside_the_driver", func(t *testing.T) {
		t.Parallel()
		pgxSchemaChanged(t)
	})
}

// pgxSelectShapes is TestSelectShapes through kmspgx.
func pgxSelectShapes(t *testing.T, e *env) {
	f := newPgxFront(t, e)
	for _, q := range selectShapesSeed {
		f.exec(q)
	}
	for _, c := range selectShapes {
		if got := f.strings(c.sql, selectShapeArgs(c.sql)...); got != c.want {
			t.Errorf("%s\n got %s\nwant %s", c.sql, got, c.want)
		}
	}
	// SELECT * shows exactly the table's columns, decrypted.
	rows := f.query("SELECT * FROM users WHERE id = 1")
	var cols []string
	for _, fd := range rows.(pgx.Rows).FieldDescriptions() {
		cols = append(cols, fd.Name)
	}
	rows.Close()
	if strings.Join(cols, ",") != selectStarColumns {
		t.Fatalf("columns %v", cols)
	}
	if got := f.strings("SELECT u.name, u.email FROM users u WHERE id = 2"); got != "bob,bob@x" {
		t.Fatalf("t.col: %s", got)
	}
}

// pgxRefusals is TestRefusals through kmspgx: Exec, Query, QueryRow, a
// batch and a transaction all refuse, naming the table, and send nothing.
func pgxRefusals(t *testing.T) {
	e := newEnv(t, refusalsDDL, usersMap)
	ctx := context.Background()
	p := newPgxPool(t, e)
	f := pgxFront{t, p}
	f.exec("INSERT INTO users (name, email) VALUES ('a', 'a@x')")
	refused := func(how, q string, err error) {
		t.Helper()
		if !errors.Is(err, kmspostgres.ErrUnsupported) {
			t.Errorf("%s: %s: err = %v, want ErrUnsupported", q, how, err)
		} else if !strings.Contains(err.Error(), "users") {
			t.Errorf("%s: %s: error does not name the table: %v", q, how, err)
		}
	}
	tx, err := p.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, q := range refusedStatements {
		args := refusalArgs(q)
		_, err := p.Exec(ctx, q, args...)
		refused("Exec", q, err)
		rows, err := p.Query(ctx, q, args...)
		if err == nil {
			for rows.Next() {
			}
			rows.Close()
			err = rows.Err()
		}
		refused("Query", q, err)
		var v any
		refused("QueryRow", q, p.QueryRow(ctx, q, args...).Scan(&v))
		b := &pgx.Batch{}
		b.Queue(q, args...)
		br := p.SendBatch(ctx, b)
		_, err = br.Exec()
		refused("SendBatch", q, err)
		br.Close()
		_, err = tx.Exec(ctx, q, args...)
		refused("Tx.Exec", q, err)
	}
	// A refused statement is not sent: the transaction is still good.
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit after refusals: %v", err)
	}
	// Nothing was written by any refused statement.
	if got := f.strings("SELECT id, name, email FROM users"); got != "1,a,a@x" {
		t.Fatalf("table changed: %s", got)
	}
	var re *kmspostgres.RefusalError
	_, err = p.Exec(ctx, "SELECT id FROM users WHERE email = 'a@x'")
	if !errors.As(err, &re) || re.Table != "users" || re.Column != "email" {
		t.Fatalf("RefusalError: %#v", err)
	}
	if st := p.Stat(); st.AcquiredConns() != 0 {
		t.Fatalf("%d connections still acquired", st.AcquiredConns())
	}
}

// pgxTransactions is TestPreparedAndTransactions through kmspgx, which
// has no prepared statements of its own (pgx prepares and caches every
// statement it runs): the same texts run many times, then transactions,
// savepoints (SQL and pgx's nested Begin) and read-only mode.
func pgxTransactions(t *testing.T, e *env) {
	ctx := context.Background()
	p := newPgxPool(t, e)
	f := pgxFront{t, p}
	for i := range 20 {
		var id int64
		if err := p.QueryRow(ctx, "INSERT INTO users (name, email) VALUES ($1, $2) RETURNING id", fmt.Sprintf("u%d", i), fmt.Sprintf("u%d@x", i)).Scan(&id); err != nil {
			t.Fatal(err)
		}
		var email string
		if err := p.QueryRow(ctx, "SELECT email FROM users WHERE id = $1", id).Scan(&email); err != nil || email != fmt.Sprintf("u%d@x", i) {
			t.Fatalf("select: %q %v", email, err)
		}
	}

	// Rollback leaves nothing; commit keeps it.
	tx, err := p.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO users (name, email) VALUES ('rb', 'rb@x')"); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "UPDATE users SET email = 'changed@x' WHERE name = 'u0'"); err != nil {
		t.Fatal(err)
	}
	var email string
	if err := tx.QueryRow(ctx, "SELECT email FROM users WHERE name = 'u0'").Scan(&email); err != nil || email != "changed@x" {
		t.Fatalf("read own write in tx: %q %v", email, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.strings("SELECT email FROM users WHERE name IN ('rb', 'u0')"); got != "u0@x" {
		t.Fatalf("after rollback: %s", got)
	}
	// Savepoints, in SQL and as pgx's nested transactions.
	tx, err = p.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tx.Exec(ctx, "SAVEPOINT s1")
	if _, err := tx.Exec(ctx, "UPDATE users SET email = 'sp@x' WHERE name = 'u1'"); err != nil {
		t.Fatal(err)
	}
	tx.Exec(ctx, "ROLLBACK TO SAVEPOINT s1")
	nested, err := tx.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nested.Exec(ctx, "UPDATE users SET email = 'nested@x' WHERE name = 'u3'"); err != nil {
		t.Fatal(err)
	}
	if err := nested.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "UPDATE users SET email = 'kept@x' WHERE name = 'u2'"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.strings("SELECT email FROM users WHERE name IN ('u1', 'u2', 'u3') ORDER BY name"); got != "u1@x|kept@x|u3@x" {
		t.Fatalf("savepoints: %s", got)
	}
	// Read-only transactions refuse writes (the server says so).
	tx, err = p.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO orgs (id, name) VALUES (99, 'x')"); err == nil {
		t.Fatal("read-only transaction accepted a write")
	}
	tx.Rollback(ctx)
	if st := p.Stat(); st.AcquiredConns() != 0 {
		t.Fatalf("%d connections still acquired", st.AcquiredConns())
	}
}

// pgxSchemaChanged is TestSchemaChangedOutsideTheDriver through one
// kmspgx connection: a column dropped by another process fails the
// cached plan once (the error may come with the rows, where pgx reports
// it), then the engine plans again.
func pgxSchemaChanged(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap)
	ctx := context.Background()
	c, err := kmspgx.Connect(ctx, e.dsn(), kmspostgres.WithProvider(e.kms), kmspostgres.WithObserver(e.events))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	f := pgxFront{t, c}
	f.exec("INSERT INTO users (id, name, email) VALUES (1, 'a', 'a@x')")
	if got := f.strings("SELECT * FROM users"); !strings.Contains(got, "a@x") {
		t.Fatal(got)
	}
	if _, err := e.raw.Exec(ctx, "ALTER TABLE users DROP COLUMN org_id"); err != nil {
		t.Fatal(err)
	}
	// The cached plan still names org_id: the server refuses it once.
	if _, err := pgxStrings(c, "SELECT * FROM users"); err == nil || !strings.Contains(err.Error(), "org_id") {
		t.Fatalf("first run after the change: %v", err)
	}
	if got := f.strings("SELECT * FROM users"); got != "1,a,a@x,NULL,NULL,NULL" {
		t.Fatalf("after an outside ALTER: %s", got)
	}
}

// pgxUniqueViolation: a unique violation on a blind-index column is a
// *kmspostgres.UniqueError through kmspgx too, whether pgx reports it
// from Exec or with the rows of an INSERT … RETURNING (with and without
// an encrypted column to decrypt), and never quotes the value.
func pgxUniqueViolation(t *testing.T) {
	t.Setenv(blindindex.EnvMasterKey, testMasterKey)
	e := newEnv(t, bidxDDL, bidxMap)
	ctx := context.Background()
	p := newPgxPool(t, e)
	if _, err := p.Exec(ctx, "INSERT INTO users (name, email) VALUES ('bob', $1)", "bob@example.com"); err != nil {
		t.Fatal(err)
	}
	var id int64
	var email string
	for how, err := range map[string]error{
		"Exec": func() error {
			_, err := p.Exec(ctx, "INSERT INTO users (name, email) VALUES ('dup', $1)", "Bob@Example.com")
			return err
		}(),
		"RETURNING id":         p.QueryRow(ctx, "INSERT INTO users (name, email) VALUES ('dup', $1) RETURNING id", "Bob@Example.com").Scan(&id),
		"RETURNING id, email":  p.QueryRow(ctx, "INSERT INTO users (name, email) VALUES ('dup', $1) RETURNING id, email", "Bob@Example.com").Scan(&id, &email),
		"RETURNING in a batch": pgxBatchRow(ctx, p, "INSERT INTO users (name, email) VALUES ('dup', $1) RETURNING id", "Bob@Example.com"),
	} {
		var ue *kmspostgres.UniqueError
		var pe *pgconn.PgError
		if !errors.As(err, &ue) || ue.Table != "users" || ue.Column != "email" || ue.Index != "users_email_bidx" || !errors.As(err, &pe) || pe.Code != "23505" {
			t.Errorf("%s: duplicate email: %v", how, err)
		} else if strings.Contains(strings.ToLower(err.Error()), "bob@") {
			t.Errorf("%s: error quotes the value: %v", how, err)
		}
	}
	if st := p.Stat(); st.AcquiredConns() != 0 {
		t.Fatalf("%d connections still acquired", st.AcquiredConns())
	}
}

// pgxBatchRow runs one query in a batch and scans its one row.
func pgxBatchRow(ctx context.Context, p *kmspgx.Pool, q string, args ...any) error {
	b := &pgx.Batch{}
	b.Queue(q, args...)
	br := p.SendBatch(ctx, b)
	var v any
	err := br.QueryRow().Scan(&v)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}
