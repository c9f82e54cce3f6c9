// Package integration tests kmspostgres against a real PostgreSQL server,
// named by KMSPG_TEST_DATABASE_URL (scripts/test.sh starts one). Under
// CI=true a missing server fails the tests instead of skipping them.
package integration

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/internal/testenv"
	"github.com/kmspostgres/kmspostgres/providers/testkey"
)

func databaseURL(t testing.TB) string { return testenv.DatabaseURL(t) }

// recorder counts audit events.
type recorder = testenv.Recorder

// env is one test's world: its own PostgreSQL schema (namespace), the
// tables of ddl in it, a schema map, a *sql.DB through kmspostgres and a
// raw pgx connection that sees the stored bytes.
type env struct {
	t      testing.TB
	ns     string
	base   string // database URL with search_path set
	schema string // path of the schema map file
	kms    *testkey.Provider
	events *testenv.Recorder
	db     *sql.DB
	raw    *pgx.Conn
}

var nsClean = regexp.MustCompile(`[^a-z0-9]+`)

// newEnv makes a namespace with ddl and opens kmspostgres on it with the
// schema map yaml. extra are DSN parameters (for example
// default_query_exec_mode=simple_protocol).
func newEnv(t testing.TB, ddl, yaml string, extra ...string) *env {
	t.Helper()
	ctx := context.Background()
	u := databaseURL(t)
	var rnd [4]byte
	rand.Read(rnd[:])
	name := strings.ToLower(t.Name())
	name = nsClean.ReplaceAllString(name, "_")
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	ns := "t_" + strings.Trim(name, "_") + "_" + hex.EncodeToString(rnd[:])
	admin, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+ns); err != nil {
		t.Fatal(err)
	}
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	q := pu.Query()
	q.Set("search_path", ns)
	for _, kv := range extra {
		k, v, _ := strings.Cut(kv, "=")
		q.Set(k, v)
	}
	pu.RawQuery = q.Encode()
	e := &env{t: t, ns: ns, base: pu.String(), kms: testkey.New(), events: &recorder{}}
	e.raw, err = pgx.Connect(ctx, e.base)
	if err != nil {
		t.Fatal(err)
	}
	if ddl != "" {
		if _, err := e.raw.Exec(ctx, ddl); err != nil {
			t.Fatalf("ddl: %v", err)
		}
	}
	e.schema = filepath.Join(t.TempDir(), "schema.yaml")
	if err := os.WriteFile(e.schema, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	e.db = e.open()
	t.Cleanup(func() {
		e.db.Close()
		e.raw.Close(context.Background())
		if c, err := pgx.Connect(context.Background(), u); err == nil {
			c.Exec(context.Background(), "DROP SCHEMA "+ns+" CASCADE")
			c.Close(context.Background())
		}
	})
	return e
}

// dsn is the kmspostgres DSN of the environment.
func (e *env) dsn() string {
	return e.base + "&kms_schema=" + url.QueryEscape(e.schema)
}

// open opens another *sql.DB with the test provider and the recorder.
func (e *env) open(opts ...kmspostgres.Option) *sql.DB {
	e.t.Helper()
	return e.openBare(append([]kmspostgres.Option{kmspostgres.WithProvider(e.kms), kmspostgres.WithObserver(e.events)}, opts...)...)
}

// openBare opens a *sql.DB with only the given options.
func (e *env) openBare(opts ...kmspostgres.Option) *sql.DB {
	e.t.Helper()
	c, err := kmspostgres.NewConnector(e.dsn(), opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return sql.OpenDB(c)
}

func (e *env) exec(sql string, args ...any) sql.Result {
	e.t.Helper()
	r, err := e.db.Exec(sql, args...)
	if err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return r
}

// rawValues returns every value of a column as stored, as text.
func (e *env) rawValues(query string, args ...any) []string {
	e.t.Helper()
	rows, err := e.raw.Query(context.Background(), query, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var s *string
		err := r.Scan(&s)
		if s == nil {
			return "<NULL>", err
		}
		return *s, err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// assertNoPlaintext fails if any stored value of the table contains one of
// the plaintexts.
func (e *env) assertNoPlaintext(table string, plaintexts ...string) {
	e.t.Helper()
	for _, row := range e.rawValues("SELECT t::text FROM " + table + " t") {
		for _, p := range plaintexts {
			if p != "" && strings.Contains(row, p) {
				e.t.Fatalf("table %s stores plaintext %q: %s", table, p, row)
			}
		}
	}
}

func mustErrIs(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("err = %v, want %v", err, target)
	}
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
