package integration

// The adversarial suite of issue 8: what a hostile but ordinary SQL author
// can do with only sql.Open("kmspostgres") (and a second connection that
// plays a migration tool running DDL), organised by class, one top-level
// test per class and one subtest per case.
//
// Every case asserts safety properties, not a behaviour, so that it stays
// valid whichever way the driver closes a class (refusing it, or supporting
// it properly):
//
//   - a write either fails and leaves the stored rows exactly as they were,
//     or succeeds, stores no plaintext it was given in any affected table,
//     and every row it wrote reads back through the driver as written;
//   - a read either fails, or returns only known plaintexts where an
//     encrypted column's value appears, never a cell or a wrapped key, and
//     where the right answer is known, exactly the right answer;
//   - a statement aimed at one row never changes another row's stored bytes;
//   - after a failed statement the same connection still answers a query.
//
// Every case also runs as <case>/pgx through the pgx front end (a
// kmspgx.Conn on the same DSN and options), where the same properties
// hold.

import (
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"regexp"
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

// advCase is one adversarial case: its own namespace with ddl and a schema
// map ({ns} in either is replaced by the namespace), then run.
type advCase struct {
	name  string
	ddl   string
	yaml  string   // default advMap
	extra []string // DSN parameters
	run   func(a *adv)
	// sameText: the case runs a SQL text the driver planned before a
	// migration. It runs twice: with the catalog checked before every
	// statement (kmspostgres.WithCatalogCheckInterval(0)), and with the
	// default interval, the migration then given that long to be seen.
	// (Its /pgx variant checks before every statement.)
	sameText bool
}

// adv is a case's world: the env, and one driver connection pinned for the
// whole case, so that session state (SET …) and "the connection stays
// usable" are about one connection.
type adv struct {
	*env
	t   *testing.T
	ctx context.Context
	c   *sql.Conn
	// settle is how long a migration waits before the case goes on: the
	// catalog check interval of the connector under test.
	settle time.Duration
	// opts are the connector options of the case's variant; openWith
	// passes them on.
	opts []kmspostgres.Option
	// pc, in the /pgx variant, is the kmspgx connection (same DSN, same
	// options) that exec, try, usable, write, query and begin run on
	// instead of c. c stays open beside it for the few cases that use
	// database/sql directly (a prepared statement: kmspgx refuses
	// preparing by name).
	pc advPgx
	// urls are the DSNs of the *sql.DBs openWith made, so that use can
	// open a kmspgx connection on the same DSN.
	urls map[*sql.DB]string
}

// advPgx is what the /pgx variant runs statements on: a kmspgx.Conn, or
// a kmspgx.Pool used one connection at a time (useTwo).
type advPgx interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

// pgx reports whether the case runs through the pgx front end.
func (a *adv) pgx() bool { return a.pc != nil }

const advPlaceholderDDL = `CREATE TABLE adv_placeholder (id bigint PRIMARY KEY, v text, encrypted_kms_key text);`

const advPlaceholderMap = `key_id: insecure-test-key
tables:
  adv_placeholder:
    columns:
      v: {}
`

// advUsers is the usual mapped table, and a plain one beside it.
const advUsers = `
CREATE TABLE users (id bigint PRIMARY KEY, org_id bigint, name text, email text, encrypted_kms_key text);
CREATE TABLE orgs (id bigint PRIMARY KEY, name text);
`

const advMap = `key_id: insecure-test-key
tables:
  users:
    columns:
      email: {}
`

// advPart: users partitioned by id into two partitions.
const advPart = `
CREATE TABLE users (id bigint, org_id bigint, name text, email text, encrypted_kms_key text, PRIMARY KEY (id)) PARTITION BY RANGE (id);
CREATE TABLE users_p1 PARTITION OF users FOR VALUES FROM (0) TO (100);
CREATE TABLE users_p2 PARTITION OF users FOR VALUES FROM (100) TO (200);
CREATE TABLE orgs (id bigint PRIMARY KEY, name text);
`

// advPart2: two levels of partitions.
const advPart2 = `
CREATE TABLE users (id bigint, org_id bigint, name text, email text, encrypted_kms_key text, PRIMARY KEY (id)) PARTITION BY RANGE (id);
CREATE TABLE users_p1 PARTITION OF users FOR VALUES FROM (0) TO (100);
CREATE TABLE users_p2 PARTITION OF users FOR VALUES FROM (100) TO (200) PARTITION BY RANGE (id);
CREATE TABLE users_p2a PARTITION OF users_p2 FOR VALUES FROM (100) TO (150);
CREATE TABLE users_p2b PARTITION OF users_p2 FOR VALUES FROM (150) TO (200);
CREATE TABLE orgs (id bigint PRIMARY KEY, name text);
`

// advInh: an inheritance child of users.
const advInh = `
CREATE TABLE users (id bigint PRIMARY KEY, org_id bigint, name text, email text, encrypted_kms_key text);
CREATE TABLE users_child (role text) INHERITS (users);
CREATE TABLE orgs (id bigint PRIMARY KEY, name text);
`

func runAdversarial(t *testing.T, cases []advCase) {
	t.Helper()
	seen := map[string]bool{}
	for _, c := range cases {
		if seen[c.name] {
			t.Fatalf("duplicate case %s", c.name)
		}
		seen[c.name] = true
		yaml := c.yaml
		if yaml == "" {
			yaml = advMap
		}
		if !c.sameText {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				c.run(newAdv(t, c.ddl, yaml, nil, false, c.extra...))
			})
		} else {
			t.Run(c.name+"/check_every_statement", func(t *testing.T) {
				t.Parallel()
				c.run(newAdv(t, c.ddl, yaml, []kmspostgres.Option{kmspostgres.WithCatalogCheckInterval(0)}, false, c.extra...))
			})
			t.Run(c.name+"/default_interval", func(t *testing.T) {
				t.Parallel()
				a := newAdv(t, c.ddl, yaml, nil, false, c.extra...)
				a.settle = kmspostgres.DefaultCatalogCheckInterval + 100*time.Millisecond
				c.run(a)
			})
		}
		// Every case runs through the pgx front end too (kmspgx), with
		// the catalog checked before every statement for the sameText ones.
		t.Run(c.name+"/pgx", func(t *testing.T) {
			t.Parallel()
			var opts []kmspostgres.Option
			if c.sameText {
				opts = []kmspostgres.Option{kmspostgres.WithCatalogCheckInterval(0)}
			}
			c.run(newAdv(t, c.ddl, yaml, opts, true, c.extra...))
		})
	}
}

func newAdv(t *testing.T, ddl, yaml string, opts []kmspostgres.Option, viaPgx bool, extra ...string) *adv {
	t.Helper()
	e := newEnv(t, advPlaceholderDDL, advPlaceholderMap, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	// Schemas named <ns>_… that a case makes are dropped with it (this
	// runs before newEnv's cleanup, while e.raw is open).
	t.Cleanup(func() {
		for _, s := range e.rawValues(`SELECT nspname FROM pg_namespace WHERE left(nspname, length($1) + 1) = $1 || '_'`, e.ns) {
			e.raw.Exec(context.Background(), "DROP SCHEMA "+s+" CASCADE")
		}
	})
	if ddl = strings.ReplaceAll(ddl, "{ns}", e.ns); strings.TrimSpace(ddl) != "" {
		if _, err := e.raw.Exec(ctx, ddl); err != nil {
			t.Fatalf("ddl: %v", err)
		}
	}
	if err := os.WriteFile(e.schema, []byte(strings.ReplaceAll(yaml, "{ns}", e.ns)), 0o644); err != nil {
		t.Fatal(err)
	}
	e.db.Close()
	e.db = e.open(opts...)
	a := &adv{env: e, t: t, ctx: ctx, opts: opts, urls: map[*sql.DB]string{e.db: e.dsn()}}
	if err := a.pin(e.db, viaPgx); err != nil {
		t.Fatal(err)
	}
	return a
}

// use pins a new connection of db for the rest of the case (in the /pgx
// variant, a kmspgx connection on db's DSN as well).
func (a *adv) use(db *sql.DB) {
	a.t.Helper()
	if err := a.pin(db, a.pgx()); err != nil {
		a.t.Fatal(err)
	}
}

// pin is use that returns a refused connection's error. Through kmspgx,
// the kmspgx connection is opened first: its refusal is the one returned.
func (a *adv) pin(db *sql.DB, viaPgx bool) error {
	a.t.Helper()
	var pc advPgx
	if viaPgx {
		c, err := kmspgx.Connect(a.ctx, a.pgxDSN(db), a.pgxOptions()...)
		if err != nil {
			return err
		}
		a.t.Cleanup(func() { c.Close(context.Background()) })
		pc = c
	}
	c, err := db.Conn(a.ctx)
	if err != nil {
		if pc != nil {
			a.t.Fatalf("database/sql refused the connection kmspgx accepted: %v", err)
		}
		return err
	}
	a.t.Cleanup(func() { c.Close() })
	a.c, a.pc = c, pc
	return nil
}

// pgxDSN is the DSN db was opened on.
func (a *adv) pgxDSN(db *sql.DB) string {
	a.t.Helper()
	dsn, ok := a.urls[db]
	if !ok {
		a.t.Fatal("harness: a *sql.DB that openWith did not make")
	}
	return dsn
}

// pgxOptions are the options of a kmspgx connection or pool of the case.
func (a *adv) pgxOptions() []kmspostgres.Option {
	return append([]kmspostgres.Option{kmspostgres.WithProvider(a.kms), kmspostgres.WithObserver(a.events)}, a.opts...)
}

// useTwo pins a connection of db for the case, and returns a function
// that moves the case to a second connection of the same engine (two
// connections of one *sql.DB; in the /pgx variant, of one kmspgx.Pool:
// the pool is used one statement at a time, so on its one connection,
// until the switch holds that one in a transaction and the pool opens a
// second).
func (a *adv) useTwo(db *sql.DB) (other func()) {
	a.t.Helper()
	if !a.pgx() {
		c, err := db.Conn(a.ctx)
		if err != nil {
			a.t.Fatal(err)
		}
		a.t.Cleanup(func() { c.Close() })
		a.use(db)
		return func() { a.c = c }
	}
	p, err := kmspgx.NewPool(a.ctx, a.pgxDSN(db), a.pgxOptions()...)
	if err != nil {
		a.t.Fatal(err)
	}
	a.t.Cleanup(p.Close)
	a.pc = p
	return func() {
		a.t.Helper()
		const q = "SELECT pg_backend_pid()"
		var first, held, second uint32
		if err := p.QueryRow(a.ctx, q).Scan(&first); err != nil {
			a.t.Fatal(err)
		}
		tx, err := p.Begin(a.ctx)
		if err != nil {
			a.t.Fatal(err)
		}
		a.t.Cleanup(func() { tx.Rollback(context.Background()) }) // before p.Close
		if err := tx.QueryRow(a.ctx, q).Scan(&held); err != nil {
			a.t.Fatal(err)
		}
		if err := p.QueryRow(a.ctx, q).Scan(&second); err != nil {
			a.t.Fatal(err)
		}
		if held != first || second == first {
			a.t.Fatalf("harness: the pool's connections are not the ones meant: first %d, held %d, second %d", first, held, second)
		}
	}
}

// advTx is a transaction on the pinned connection, through the case's
// front end.
type advTx struct {
	a  *adv
	sq *sql.Tx
	px pgx.Tx
}

// begin starts a transaction on the pinned connection.
func (a *adv) begin() (*advTx, error) {
	if a.pgx() {
		tx, err := a.pc.Begin(a.ctx)
		if err != nil {
			return nil, err
		}
		return &advTx{a: a, px: tx}, nil
	}
	tx, err := a.c.BeginTx(a.ctx, nil)
	if err != nil {
		return nil, err
	}
	return &advTx{a: a, sq: tx}, nil
}

// Exec runs a statement in the transaction and returns the rows it
// affected.
func (t *advTx) Exec(q string, args ...any) (int64, error) {
	if t.px != nil {
		tag, err := t.px.Exec(t.a.ctx, q, args...)
		return tag.RowsAffected(), err
	}
	res, err := t.sq.ExecContext(t.a.ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (t *advTx) Commit() error {
	if t.px != nil {
		return t.px.Commit(t.a.ctx)
	}
	return t.sq.Commit()
}

func (t *advTx) Rollback() error {
	if t.px != nil {
		return t.px.Rollback(t.a.ctx)
	}
	return t.sq.Rollback()
}

// openWith opens another *sql.DB through kmspostgres on the case's
// namespace with DSN parameters replaced (search_path=…).
func (a *adv) openWith(kv ...string) *sql.DB {
	a.t.Helper()
	u, err := url.Parse(a.base)
	if err != nil {
		a.t.Fatal(err)
	}
	q := u.Query()
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	q.Set("kms_schema", a.schema)
	u.RawQuery = q.Encode()
	c, err := kmspostgres.NewConnector(u.String(), append([]kmspostgres.Option{kmspostgres.WithProvider(a.kms), kmspostgres.WithObserver(a.events)}, a.opts...)...)
	if err != nil {
		a.t.Fatal(err)
	}
	db := sql.OpenDB(c)
	a.t.Cleanup(func() { db.Close() })
	a.urls[db] = u.String()
	return db
}

// execOn runs a statement on the pinned connection of the case's front
// end.
func (a *adv) execOn(q string, args ...any) error {
	if a.pgx() {
		_, err := a.pc.Exec(a.ctx, q, args...)
		return err
	}
	_, err := a.c.ExecContext(a.ctx, q, args...)
	return err
}

// x replaces {ns} and {db} in a SQL text.
func (a *adv) x(s string) string {
	s = strings.ReplaceAll(s, "{ns}", a.ns)
	if strings.Contains(s, "{db}") {
		s = strings.ReplaceAll(s, "{db}", a.rawValues("SELECT current_database()")[0])
	}
	return s
}

// exec runs a setup statement through the driver; it must succeed.
func (a *adv) exec(q string, args ...any) {
	a.t.Helper()
	if err := a.execOn(a.x(q), args...); err != nil {
		a.t.Fatalf("setup %s: %v", q, err)
	}
}

// try runs a statement through the driver whose outcome is not asserted
// (for example SET standard_conforming_strings, which a fixed driver
// refuses); it logs a failure and checks the connection stays usable.
func (a *adv) try(q string, args ...any) error {
	a.t.Helper()
	err := a.execOn(a.x(q), args...)
	if err != nil {
		a.t.Logf("refused: %s: %v", short(q), err)
		a.usable()
	}
	return err
}

// rawExec runs SQL on the raw connection (seeding plain data, moving rows).
func (a *adv) rawExec(q string, args ...any) {
	a.t.Helper()
	if _, err := a.raw.Exec(a.ctx, a.x(q), args...); err != nil {
		a.t.Fatalf("raw %s: %v", q, err)
	}
}

// migrate runs DDL from a second raw connection, as a migration tool in
// another process would, while the driver keeps its connections.
func (a *adv) migrate(stmts ...string) {
	a.t.Helper()
	c, err := pgx.Connect(a.ctx, a.base)
	if err != nil {
		a.t.Fatal(err)
	}
	defer c.Close(context.Background())
	for _, s := range stmts {
		if _, err := c.Exec(a.ctx, a.x(s)); err != nil {
			a.t.Fatalf("migration %s: %v", s, err)
		}
	}
	time.Sleep(a.settle)
}

// plain marks a table of write's list that may legitimately hold the
// plaintext (a plain table): it is snapshotted, not searched.
func plain(table string) string { return "plain:" + table }

// snap renders every stored row of the tables (children and partitions
// included) as the raw connection sees them.
func (a *adv) snap(tables ...string) string {
	a.t.Helper()
	var b strings.Builder
	for _, tb := range tables {
		tb = a.x(strings.TrimPrefix(tb, "plain:"))
		b.WriteString(tb + ": " + strings.Join(a.rawValues("SELECT tableoid::regclass::text || ' ' || t::text FROM "+tb+" t ORDER BY 1"), " | ") + "\n")
	}
	return b.String()
}

// noPlaintext fails if a stored row of a table (children and partitions
// included) contains one of the plaintexts.
func (a *adv) noPlaintext(tables []string, secrets []string) {
	a.t.Helper()
	for _, tb := range tables {
		if strings.HasPrefix(tb, "plain:") {
			continue
		}
		for _, row := range a.rawValues("SELECT tableoid::regclass::text || ' ' || t::text FROM " + a.x(tb) + " t") {
			for _, s := range secrets {
				if s != "" && strings.Contains(row, s) {
					a.t.Errorf("plaintext %q stored in %s: %s", s, tb, row)
				}
			}
		}
	}
}

// usable checks that the pinned connection still answers.
func (a *adv) usable() {
	a.t.Helper()
	var n int
	var err error
	if a.pgx() {
		err = a.pc.QueryRow(a.ctx, "SELECT 1").Scan(&n)
	} else {
		err = a.c.QueryRowContext(a.ctx, "SELECT 1").Scan(&n)
	}
	if err != nil || n != 1 {
		a.t.Errorf("the connection is not usable after a failed statement: %v", err)
	}
}

// write runs a statement through the driver and checks the write
// properties: either it fails and the tables are unchanged, or no table
// stores a secret and readback (the rows written, through the driver)
// passes.
func (a *adv) write(tables, secrets []string, readback func(), q string, args ...any) error {
	a.t.Helper()
	return a.writeFn(tables, secrets, readback, q, func() error {
		return a.execOn(a.x(q), args...)
	})
}

func (a *adv) writeFn(tables, secrets []string, readback func(), what string, run func() error) error {
	a.t.Helper()
	before := a.snap(tables...)
	err := run()
	if err != nil {
		a.t.Logf("refused: %s: %v", short(what), err)
		if after := a.snap(tables...); after != before {
			a.t.Errorf("%s failed (%v) but changed stored rows:\nbefore:\n%safter:\n%s", short(what), err, before, after)
		}
		a.usable()
		return err
	}
	a.noPlaintext(tables, secrets)
	if readback != nil {
		readback()
	}
	return nil
}

// query runs a query on the pinned connection and renders its values; any
// value that looks like a cell or a wrapped key fails the case, even if
// the query fails later.
func (a *adv) query(q string, args ...any) ([][]string, error) {
	a.t.Helper()
	if a.pgx() {
		return a.queryPgx(q, args...)
	}
	rows, err := a.c.QueryContext(a.ctx, a.x(q), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out [][]string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return out, err
		}
		r := make([]string, len(cols))
		for i, v := range vals {
			r[i] = render(v)
			if leaky(v) {
				a.t.Errorf("%s: column %s returned a cell or wrapped key: %.120s", short(q), cols[i], r[i])
			}
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// queryPgx is query through kmspgx. Each value is rendered as
// database/sql would give it (the column type's DecodeDatabaseSQLValue);
// the decoded value and the raw bytes are both checked for cells and
// wrapped keys.
func (a *adv) queryPgx(q string, args ...any) ([][]string, error) {
	a.t.Helper()
	rows, err := a.pc.Query(a.ctx, a.x(q), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]string
	for rows.Next() {
		fds, m := rows.FieldDescriptions(), rows.TypeMap()
		raw := rows.RawValues()
		r := make([]string, len(fds))
		for i, fd := range fds {
			v, err := sqlValue(m, fd, raw[i])
			if err != nil {
				return out, fmt.Errorf("column %s: %w", fd.Name, err)
			}
			r[i] = render(v)
			if leaky(v) || leaky(raw[i]) {
				a.t.Errorf("%s: column %s returned a cell or wrapped key: %.120s", short(q), fd.Name, r[i])
			}
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// sqlValue decodes a pgx wire value as pgx's database/sql driver would.
func sqlValue(m *pgtype.Map, fd pgconn.FieldDescription, raw []byte) (any, error) {
	if raw == nil {
		return nil, nil
	}
	if dt, ok := m.TypeForOID(fd.DataTypeOID); ok {
		return dt.Codec.DecodeDatabaseSQLValue(m, fd.DataTypeOID, fd.Format, raw)
	}
	if fd.Format == pgx.TextFormatCode {
		return string(raw), nil
	}
	return slices.Clone(raw), nil
}

func render(v any) string {
	switch v := v.(type) {
	case nil:
		return "NULL"
	case string:
		return v
	case []byte:
		return string(v)
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano)
	default:
		return fmt.Sprint(v)
	}
}

func joinRows(rows [][]string) string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = strings.Join(r, ",")
	}
	return strings.Join(out, "|")
}

var (
	wrappedKeyRe = regexp.MustCompile(`v[0-9]+:[A-Za-z0-9+/]{16,}={0,2}`)
	base64RunRe  = regexp.MustCompile(`[A-Za-z0-9+/]{40,}={0,2}`)
	hexCellRe    = regexp.MustCompile(`\\x01[0-9a-f]{56,}`)
)

// leaky reports whether a returned value is, or contains, a wrapped key or
// a version-1 cell (base64 text, bytea hex text, or raw bytes).
func leaky(v any) bool {
	var s string
	switch v := v.(type) {
	case string:
		s = v
	case []byte:
		if len(v) >= 29 && v[0] == 0x01 {
			return true
		}
		s = string(v)
	default:
		return false
	}
	if wrappedKeyRe.MatchString(s) || hexCellRe.MatchString(s) {
		return true
	}
	for _, m := range base64RunRe.FindAllString(s, -1) {
		if b, err := base64.StdEncoding.DecodeString(m); err == nil && len(b) >= 29 && b[0] == 0x01 {
			return true
		}
	}
	return false
}

// readSafe: the query may fail; if it succeeds, the values of the result
// columns enc (indexes) are NULL or one of allowed, and no value anywhere
// is a cell or wrapped key.
func (a *adv) readSafe(enc []int, allowed []string, q string, args ...any) {
	a.t.Helper()
	rows, err := a.query(q, args...)
	if err != nil {
		a.t.Logf("refused: %s: %v", short(q), err)
		a.usable()
		return
	}
	for _, r := range rows {
		for _, i := range enc {
			if i >= len(r) {
				a.t.Errorf("%s: no result column %d in %q", short(q), i, r)
				continue
			}
			if v := r[i]; v != "NULL" && !contains(allowed, v) {
				a.t.Errorf("%s: result column %d returned %.120q, which is not a plaintext that was written", short(q), i, v)
			}
		}
	}
}

// readExact: the query either fails or returns exactly want.
func (a *adv) readExact(want, q string, args ...any) {
	a.t.Helper()
	rows, err := a.query(q, args...)
	if err != nil {
		a.t.Logf("refused: %s: %v", short(q), err)
		a.usable()
		return
	}
	if got := joinRows(rows); got != want {
		a.t.Errorf("%s: wrong answer\n got %.300s\nwant %s", short(q), got, want)
	}
}

// mustRead: the query succeeds and returns exactly want (rows just written
// must read back).
func (a *adv) mustRead(want, q string, args ...any) {
	a.t.Helper()
	rows, err := a.query(q, args...)
	if err != nil {
		a.t.Errorf("a row the driver wrote does not read back: %s: %v", short(q), err)
		return
	}
	if got := joinRows(rows); got != want {
		a.t.Errorf("a row the driver wrote reads back wrong: %s\n got %.300s\nwant %s", short(q), got, want)
	}
}

// reads returns a readback that checks q returns want.
func (a *adv) reads(want, q string, args ...any) func() {
	return func() { a.t.Helper(); a.mustRead(want, q, args...) }
}

// rawOne returns one value through the raw connection.
func (a *adv) rawOne(q string, args ...any) string {
	a.t.Helper()
	v := a.rawValues(a.x(q), args...)
	if len(v) != 1 {
		a.t.Fatalf("%s: %d rows", q, len(v))
	}
	return v[0]
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

func short(q string) string {
	if len(q) > 140 {
		return q[:140] + "…"
	}
	return q
}

// sec is a distinctive plaintext.
func sec(tag string) string { return "secret-" + tag + "@example.com" }

// seedUsers writes users (id, org_id, name, email) through the driver.
func (a *adv) seedUsers(rows ...any) {
	a.t.Helper()
	for i := 0; i+3 < len(rows); i += 4 {
		a.exec("INSERT INTO users (id, org_id, name, email) VALUES ($1, $2, $3, $4)", rows[i:i+4]...)
	}
}

// seedOK is seedUsers for tables a fixed driver may refuse as a whole
// (partitioned, inherited, with rules, views or computed columns): a
// refusal must leave the table unchanged, and ends the case.
func (a *adv) seedOK(rows ...any) bool {
	a.t.Helper()
	for i := 0; i+3 < len(rows); i += 4 {
		email, _ := rows[i+3].(string)
		if err := a.write([]string{"users"}, []string{email}, nil, "INSERT INTO users (id, org_id, name, email) VALUES ($1, $2, $3, $4)", rows[i:i+4]...); err != nil {
			a.t.Logf("the driver refuses writing users here: nothing more to check")
			return false
		}
	}
	return true
}

// ---------------------------------------------------------------------------
// Class 1: statement kinds the planner does not know.

func TestAdversarialStatementKinds(t *testing.T) {
	seed := sec("seed")
	one := func(a *adv) { a.seedUsers(1, 10, "seed", seed) }
	users := []string{"users"}
	cases := []advCase{
		{name: "merge_not_matched_insert_param", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("merge-ins-param")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"MERGE INTO users u USING (SELECT 2::bigint AS id) s ON u.id = s.id WHEN NOT MATCHED THEN INSERT (id, name, email) VALUES (s.id, 'm', $1)", s)
		}},
		{name: "merge_not_matched_insert_literal", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("merge-ins-literal")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"MERGE INTO users u USING (SELECT 2::bigint AS id) s ON u.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id, NULL, 'm', '"+s+"')")
		}},
		{name: "merge_matched_update", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("merge-upd")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 1"),
				"MERGE INTO users u USING (SELECT 1::bigint AS id) s ON u.id = s.id WHEN MATCHED THEN UPDATE SET email = $1", s)
		}},
		{name: "merge_both_from_values", ddl: advUsers, run: func(a *adv) {
			one(a)
			s1, s2 := sec("merge-both-1"), sec("merge-both-2")
			a.write(users, []string{s1, s2}, a.reads("1,"+s1+"|2,"+s2, "SELECT id, email FROM users ORDER BY id"),
				`MERGE INTO users u USING (VALUES (1::bigint, $1::text), (2::bigint, $2::text)) s(id, email) ON u.id = s.id
				 WHEN MATCHED THEN UPDATE SET email = s.email
				 WHEN NOT MATCHED THEN INSERT (id, name, email) VALUES (s.id, 'm', s.email)`, s1, s2)
		}},
		{name: "merge_copies_cell_between_rows", ddl: advUsers, run: func(a *adv) {
			a.seedUsers(1, 10, "a", sec("merge-a"), 2, 10, "b", sec("merge-b"))
			a.write(users, nil, a.reads("1,"+sec("merge-b")+"|2,"+sec("merge-b"), "SELECT id, email FROM users ORDER BY id"),
				"MERGE INTO users u USING users s ON s.id = 2 AND u.id = 1 WHEN MATCHED THEN UPDATE SET email = s.email")
		}},
		{name: "merge_matched_delete_not_matched_insert", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("merge-del-ins")
			a.write(users, []string{s}, a.reads("2,"+s, "SELECT id, email FROM users ORDER BY id"),
				`MERGE INTO users u USING (VALUES (1::bigint), (2::bigint)) s(id) ON u.id = s.id
				 WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN INSERT (id, name, email) VALUES (s.id, 'm', $1)`, s)
		}},
		{name: "do_block_insert", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("do-insert")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"DO $$ BEGIN INSERT INTO users (id, name, email) VALUES (2, 'd', '"+s+"'); END $$")
		}},
		{name: "do_block_update", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("do-update")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 1"),
				"DO $$ BEGIN UPDATE users SET email = '"+s+"' WHERE id = 1; END $$")
		}},
		{name: "do_block_dynamic_sql", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("do-dynamic")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"DO $$ BEGIN EXECUTE format('INSERT INTO %I (id, name, email) VALUES (2, %L, %L)', 'us' || 'ers', 'd', '"+s+"'); END $$")
		}},
		{name: "call_procedure_that_inserts", ddl: advUsers + `CREATE PROCEDURE put_user(i bigint, e text) LANGUAGE sql AS $$ INSERT INTO users (id, name, email) VALUES (i, 'p', e) $$;`, run: func(a *adv) {
			one(a)
			s := sec("call")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"), "CALL put_user(2, $1)", s)
		}},
		{name: "call_procedure_literal", ddl: advUsers + `CREATE PROCEDURE set_email(i bigint, e text) LANGUAGE plpgsql AS $$ BEGIN UPDATE users SET email = e WHERE id = i; END $$;`, run: func(a *adv) {
			one(a)
			s := sec("call-literal")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 1"), "CALL set_email(1, '"+s+"')")
		}},
		{name: "prepare_execute_insert", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("prepare-insert")
			a.try("PREPARE adv_ins(bigint, text) AS INSERT INTO users (id, name, email) VALUES ($1, 'p', $2)")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"), "EXECUTE adv_ins(2, '"+s+"')")
		}},
		{name: "prepare_execute_update", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("prepare-update")
			a.try("PREPARE adv_upd(text) AS UPDATE users SET email = $1 WHERE id = 1")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 1"), "EXECUTE adv_upd('"+s+"')")
		}},
		{name: "prepare_execute_select", ddl: advUsers, run: func(a *adv) {
			one(a)
			a.try("PREPARE adv_sel AS SELECT id, email FROM users")
			a.readSafe([]int{1}, []string{seed}, "EXECUTE adv_sel")
		}},
		{name: "copy_from_program", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("copy")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				`COPY users (id, name, email) FROM PROGRAM 'printf ''2,c,`+s+`\n''' WITH (FORMAT csv)`)
		}},
		{name: "cte_insert", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("cte-insert")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"WITH x AS (INSERT INTO users (id, name, email) VALUES (2, 'w', $1) RETURNING id) SELECT id FROM x", s)
		}},
		{name: "cte_update", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("cte-update")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 1"),
				"WITH x AS (UPDATE users SET email = $1 WHERE id = 1 RETURNING id) SELECT count(*) FROM x", s)
		}},
		{name: "explain_analyze_insert", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("explain-insert")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"EXPLAIN ANALYZE INSERT INTO users (id, name, email) VALUES (2, 'e', '"+s+"')")
		}},
		{name: "explain_analyze_update", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("explain-update")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 1"),
				"EXPLAIN (ANALYZE, COSTS OFF) UPDATE users SET email = '"+s+"' WHERE id = 1")
		}},
		{name: "update_multi_column_assignment", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("multi-assign")
			a.write(users, []string{s}, a.reads("n,"+s, "SELECT name, email FROM users WHERE id = 1"),
				"UPDATE users SET (name, email) = ('n', $1) WHERE id = 1", s)
		}},
		{name: "update_multi_column_subselect", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("multi-subselect")
			a.write(users, []string{s}, a.reads("n,"+s, "SELECT name, email FROM users WHERE id = 1"),
				"UPDATE users SET (name, email) = (SELECT 'n', $1::text) WHERE id = 1", s)
		}},
		{name: "insert_select_param", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("insert-select")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"INSERT INTO users (id, name, email) SELECT * FROM (VALUES (2::bigint, 'n', $1::text)) v", s)
		}},
		{name: "on_conflict_update_from_parameter", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("upsert-param")
			a.write(users, []string{s, "ignored@example.com"}, a.reads(s, "SELECT email FROM users WHERE id = 1"),
				"INSERT INTO users (id, name, email) VALUES (1, 'x', 'ignored@example.com') ON CONFLICT (id) DO UPDATE SET email = $1", s)
		}},
		{name: "on_conflict_on_constraint", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("upsert-constraint")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 1"),
				"INSERT INTO users (id, name, email) VALUES (1, 'x', $1) ON CONFLICT ON CONSTRAINT users_pkey DO UPDATE SET email = EXCLUDED.email", s)
		}},
		{name: "on_conflict_target_alias", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("upsert-alias")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 1"),
				"INSERT INTO users AS u (id, name, email) VALUES (1, 'x', $1) ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email WHERE u.id = 1", s)
		}},
		{name: "cursor_with_hold_fetch", ddl: advUsers, run: func(a *adv) {
			one(a)
			a.try("DECLARE adv_cur CURSOR WITH HOLD FOR SELECT id, email FROM users")
			a.readSafe([]int{1}, []string{seed}, "FETCH ALL FROM adv_cur")
		}},
		{name: "table_statement", ddl: advUsers, run: func(a *adv) {
			one(a)
			a.readSafe([]int{3}, []string{seed}, "TABLE users")
		}},
		{name: "select_into_copies_cells", ddl: advUsers, run: func(a *adv) {
			one(a)
			a.try("SELECT id, email INTO users_copy FROM users")
			a.readSafe([]int{0}, []string{seed}, "SELECT email FROM users_copy")
		}},
		{name: "create_table_as_copies_cells", ddl: advUsers, run: func(a *adv) {
			one(a)
			a.try("CREATE TABLE users_copy AS SELECT id, email FROM users")
			a.readSafe([]int{0}, []string{seed}, "SELECT email FROM users_copy")
		}},
	}
	runAdversarial(t, cases)
}

// ---------------------------------------------------------------------------
// Class 2: relations that reach an encrypted table.

func TestAdversarialRelations(t *testing.T) {
	users := []string{"users"}
	cases := []advCase{
		{name: "partition_insert_direct", ddl: advPart, run: func(a *adv) {
			if !a.seedOK(1, 10, "a", sec("p-seed")) {
				return
			}
			s := sec("p-insert")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 150"),
				"INSERT INTO users_p2 (id, name, email) VALUES (150, 'p', $1)", s)
		}},
		{name: "partition_insert_through_parent", ddl: advPart, run: func(a *adv) {
			s1, s2 := sec("pp-1"), sec("pp-2")
			a.write(users, []string{s1, s2}, a.reads("1,"+s1+"|150,"+s2, "SELECT id, email FROM users ORDER BY id"),
				"INSERT INTO users (id, name, email) VALUES (1, 'a', $1), (150, 'b', $2)", s1, s2)
		}},
		{name: "partition_update_direct", ddl: advPart, run: func(a *adv) {
			if !a.seedOK(150, 10, "a", sec("pu-seed")) {
				return
			}
			s := sec("pu")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 150"),
				"UPDATE users_p2 SET email = $1 WHERE id = 150", s)
		}},
		{name: "partition_select_direct", ddl: advPart, run: func(a *adv) {
			if !a.seedOK(1, 10, "a", sec("ps-1"), 150, 10, "b", sec("ps-2")) {
				return
			}
			a.readSafe([]int{0}, []string{sec("ps-1"), sec("ps-2")}, "SELECT email FROM users_p2")
			a.readSafe([]int{3}, []string{sec("ps-1"), sec("ps-2")}, "SELECT * FROM users_p1")
			a.readSafe([]int{0}, []string{sec("ps-1"), sec("ps-2")}, "SELECT p.email FROM users_p1 p JOIN orgs o ON true UNION ALL SELECT email FROM users_p2")
		}},
		{name: "multilevel_insert_leaf", ddl: advPart2, run: func(a *adv) {
			if !a.seedOK(1, 10, "a", sec("ml-seed")) {
				return
			}
			s := sec("ml-leaf")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 120"),
				"INSERT INTO users_p2a (id, name, email) VALUES (120, 'l', $1)", s)
		}},
		{name: "multilevel_insert_middle", ddl: advPart2, run: func(a *adv) {
			if !a.seedOK(1, 10, "a", sec("mm-seed")) {
				return
			}
			s := sec("ml-mid")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 170"),
				"INSERT INTO users_p2 (id, name, email) VALUES (170, 'm', $1)", s)
		}},
		{name: "multilevel_select_leaf_and_middle", ddl: advPart2, run: func(a *adv) {
			if !a.seedOK(120, 10, "a", sec("mls-1"), 170, 10, "b", sec("mls-2")) {
				return
			}
			ok := []string{sec("mls-1"), sec("mls-2")}
			a.readSafe([]int{0}, ok, "SELECT email FROM users_p2b")
			a.readSafe([]int{1}, ok, "SELECT id, email FROM users_p2 ORDER BY id")
		}},
		{name: "multilevel_update_leaf", ddl: advPart2, run: func(a *adv) {
			if !a.seedOK(120, 10, "a", sec("mlu-seed")) {
				return
			}
			s := sec("mlu")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 120"),
				"UPDATE users_p2a SET email = $1 WHERE id = 120", s)
		}},
		{name: "inheritance_insert_child", ddl: advInh, run: func(a *adv) {
			if !a.seedOK(1, 10, "a", sec("inh-seed")) {
				return
			}
			s := sec("inh-insert")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 101"),
				"INSERT INTO users_child (id, name, email, role) VALUES (101, 'c', $1, 'r')", s)
		}},
		{name: "inheritance_select_child", ddl: advInh, run: func(a *adv) {
			if !a.seedOK(1, 10, "a", sec("inh-1"), 101, 10, "b", sec("inh-101")) {
				return
			}
			a.rawExec("WITH m AS (DELETE FROM ONLY users WHERE id = 101 RETURNING *) INSERT INTO users_child SELECT *, 'moved' FROM m")
			ok := []string{sec("inh-1"), sec("inh-101")}
			a.readSafe([]int{0}, ok, "SELECT email FROM users_child")
			a.readSafe([]int{3}, ok, "SELECT * FROM users_child")
			a.readExact("1,"+sec("inh-1")+"|101,"+sec("inh-101"), "SELECT id, email FROM users ORDER BY id")
		}},
		{name: "inheritance_update_child", ddl: advInh, run: func(a *adv) {
			if !a.seedOK(101, 10, "b", sec("inh-u-seed")) {
				return
			}
			a.rawExec("WITH m AS (DELETE FROM ONLY users WHERE id = 101 RETURNING *) INSERT INTO users_child SELECT *, 'moved' FROM m")
			s := sec("inh-u")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 101"),
				"UPDATE users_child SET email = $1 WHERE id = 101", s)
		}},
		{name: "view_over_view", ddl: advUsers + `CREATE VIEW v1 AS SELECT id, email FROM users; CREATE VIEW v2 AS SELECT * FROM v1;`, run: func(a *adv) {
			if !a.seedOK(1, 10, "a", sec("vv")) {
				return
			}
			a.readSafe([]int{1}, []string{sec("vv")}, "SELECT id, email FROM v2")
			a.readSafe([]int{1}, []string{sec("vv")}, "SELECT * FROM v2")
		}},
		{name: "view_three_levels_renamed", ddl: advUsers + `CREATE VIEW v1 AS SELECT id, email FROM users; CREATE VIEW v2 AS SELECT id, email AS mail FROM v1; CREATE VIEW v3 AS SELECT mail AS contact FROM v2;`, run: func(a *adv) {
			if !a.seedOK(1, 10, "a", sec("v3")) {
				return
			}
			a.readSafe([]int{0}, []string{sec("v3")}, "SELECT contact FROM v3")
		}},
		{name: "view_whole_row_json", ddl: advUsers + `CREATE VIEW vj AS SELECT u.id, row_to_json(u) AS j FROM users u;`, run: func(a *adv) {
			if !a.seedOK(1, 10, "a", sec("vj")) {
				return
			}
			a.readSafe(nil, nil, "SELECT j FROM vj")
			a.readSafe(nil, nil, "SELECT * FROM vj")
		}},
		{name: "view_whole_row_text", ddl: advUsers + `CREATE VIEW vt AS SELECT u::text AS t FROM users u;`, run: func(a *adv) {
			if !a.seedOK(1, 10, "a", sec("vt")) {
				return
			}
			a.readSafe(nil, nil, "SELECT t FROM vt")
		}},
		{name: "view_over_partition", ddl: advPart + `CREATE VIEW vp AS SELECT id, email FROM users_p1;`, run: func(a *adv) {
			if !a.seedOK(1, 10, "a", sec("vp")) {
				return
			}
			a.readSafe([]int{1}, []string{sec("vp")}, "SELECT id, email FROM vp")
		}},
		{name: "whole_row_in_select", ddl: advUsers, run: func(a *adv) {
			if !a.seedOK(1, 10, "a", sec("wr")) {
				return
			}
			ok := []string{sec("wr")}
			a.readSafe(nil, nil, "SELECT row_to_json(u) FROM users u")
			a.readSafe(nil, nil, "SELECT u FROM users u")
			a.readSafe(nil, nil, "SELECT to_jsonb(u.*) FROM users u")
			a.readSafe(nil, nil, "SELECT (u.*)::text FROM users u")
			a.readSafe(nil, nil, "SELECT ARRAY[u.*] FROM users u")
			a.readSafe([]int{0}, ok, "SELECT (u).email FROM users u")
		}},
		{name: "updatable_view_insert", ddl: advUsers + `CREATE VIEW vw AS SELECT id, name, email FROM users;`, run: func(a *adv) {
			if !a.seedOK(1, 10, "a", sec("vw-seed")) {
				return
			}
			s := sec("vw-insert")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"INSERT INTO vw (id, name, email) VALUES (2, 'v', $1)", s)
		}},
		{name: "updatable_view_update", ddl: advUsers + `CREATE VIEW vw AS SELECT id, name, email FROM users;`, run: func(a *adv) {
			if !a.seedOK(1, 10, "a", sec("vwu-seed")) {
				return
			}
			s := sec("vw-update")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 1"),
				"UPDATE vw SET email = $1 WHERE id = 1", s)
		}},
		{name: "updatable_view_over_view_insert", ddl: advUsers + `CREATE VIEW vw1 AS SELECT id, name, email FROM users; CREATE VIEW vw2 AS SELECT * FROM vw1 WHERE id > 0;`, run: func(a *adv) {
			if !a.seedOK(1, 10, "a", sec("vw2-seed")) {
				return
			}
			s := sec("vw2-insert")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"INSERT INTO vw2 (id, name, email) VALUES (2, 'v', $1)", s)
		}},
		{name: "materialized_view", ddl: advUsers + `CREATE MATERIALIZED VIEW mv AS SELECT id, email FROM users WITH NO DATA;`, run: func(a *adv) {
			if !a.seedOK(1, 10, "a", sec("mv")) {
				return
			}
			a.rawExec("REFRESH MATERIALIZED VIEW mv")
			a.readSafe([]int{1}, []string{sec("mv")}, "SELECT id, email FROM mv")
		}},
		{name: "rule_instead_insert_into_mapped", ddl: advUsers + `CREATE TABLE inbox (id bigint, email text);
			CREATE RULE inbox_to_users AS ON INSERT TO inbox DO INSTEAD INSERT INTO users (id, name, email) VALUES (NEW.id, 'r', NEW.email);`, run: func(a *adv) {
			if !a.seedOK(1, 10, "a", sec("rule-seed")) {
				return
			}
			s := sec("rule-instead")
			a.write([]string{"users", plain("inbox")}, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"INSERT INTO inbox (id, email) VALUES (2, $1)", s)
		}},
		{name: "rule_instead_whole_row", ddl: advUsers + `CREATE TABLE inbox (id bigint, org_id bigint, name text, email text, encrypted_kms_key text);
			CREATE RULE inbox_rows AS ON INSERT TO inbox DO INSTEAD INSERT INTO users VALUES (NEW.*);`, run: func(a *adv) {
			if !a.seedOK(1, 10, "a", sec("rule-row-seed")) {
				return
			}
			s := sec("rule-row")
			a.write([]string{"users", plain("inbox")}, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"INSERT INTO inbox (id, name, email) VALUES (2, 'r', $1)", s)
		}},
		{name: "rule_also_update_mapped", ddl: advUsers + `CREATE TABLE inbox (id bigint, email text);
			CREATE RULE inbox_upd AS ON UPDATE TO inbox DO ALSO UPDATE users SET email = NEW.email WHERE id = NEW.id;`, run: func(a *adv) {
			if !a.seedOK(1, 10, "a", sec("rule-upd-seed")) {
				return
			}
			a.rawExec("INSERT INTO inbox VALUES (1, 'plain')")
			s := sec("rule-also")
			a.write([]string{"users", plain("inbox")}, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 1"),
				"UPDATE inbox SET email = $1 WHERE id = 1", s)
		}},
		{name: "rule_on_mapped_copies_cells", ddl: advUsers + `CREATE TABLE audit (id bigint, email text);
			CREATE RULE users_audit AS ON INSERT TO users DO ALSO INSERT INTO audit VALUES (NEW.id, NEW.email);`, run: func(a *adv) {
			s := sec("rule-audit")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 1"),
				"INSERT INTO users (id, name, email) VALUES (1, 'a', $1)", s)
			a.readSafe([]int{0}, []string{s}, "SELECT email FROM audit")
		}},
		{name: "generated_column_lower", ddl: `CREATE TABLE users (id bigint PRIMARY KEY, name text, email text, email_lower text GENERATED ALWAYS AS (lower(email)) STORED, encrypted_kms_key text);`, run: func(a *adv) {
			s := "Secret-Gen-Lower@Example.COM"
			if a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 1"),
				"INSERT INTO users (id, name, email) VALUES (1, 'g', $1)", s) != nil {
				return
			}
			a.noPlaintext(users, []string{strings.ToLower(s)})
			a.readExact(strings.ToLower(s), "SELECT email_lower FROM users WHERE id = 1")
			a.readExact("1,g,"+s+","+strings.ToLower(s), "SELECT * FROM users")
		}},
		{name: "generated_column_length", ddl: `CREATE TABLE users (id bigint PRIMARY KEY, name text, email text, email_len int GENERATED ALWAYS AS (length(email)) STORED, encrypted_kms_key text);`, run: func(a *adv) {
			s := sec("gen-len")
			if a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 1"),
				"INSERT INTO users (id, name, email) VALUES (1, 'g', $1)", s) != nil {
				return
			}
			a.readExact(fmt.Sprint(len(s)), "SELECT email_len FROM users WHERE id = 1")
		}},
		{name: "expression_unique_index", ddl: advUsers + `CREATE UNIQUE INDEX users_email_lower ON users (lower(email));`, run: func(a *adv) {
			s1, s2 := "Secret-Dup-Idx@example.com", "secret-dup-idx@example.com"
			err1 := a.write(users, []string{s1}, a.reads(s1, "SELECT email FROM users WHERE id = 1"),
				"INSERT INTO users (id, name, email) VALUES (1, 'a', $1)", s1)
			err2 := a.write(users, []string{s2}, a.reads(s2, "SELECT email FROM users WHERE id = 2"),
				"INSERT INTO users (id, name, email) VALUES (2, 'b', $1)", s2)
			if err1 == nil && err2 == nil {
				a.t.Errorf("the unique index on lower(email) silently stopped holding: both %q and %q were stored", s1, s2)
			}
		}},
		{name: "check_constraint", ddl: advUsers + `ALTER TABLE users ADD CONSTRAINT no_forbidden CHECK (email <> 'secret-forbidden@example.com');`, run: func(a *adv) {
			s := sec("forbidden")
			if a.write(users, []string{s}, nil, "INSERT INTO users (id, name, email) VALUES (1, 'a', $1)", s) == nil {
				a.t.Errorf("the check constraint on email silently stopped holding: %q was stored", s)
			}
		}},
	}
	runAdversarial(t, cases)
}

// ---------------------------------------------------------------------------
// Class 3: name resolution.

const advBilling = `
CREATE SCHEMA {ns}_billing;
CREATE TABLE {ns}_billing.invoices (id bigint PRIMARY KEY, email text, encrypted_kms_key text);
`

const advBillingMap = `key_id: insecure-test-key
tables:
  {ns}_billing.invoices:
    columns:
      email: {}
`

const advApp = `
CREATE SCHEMA {ns}_app;
CREATE TABLE {ns}_app.accounts (id bigint PRIMARY KEY, email text, encrypted_kms_key text);
`

const advAppMap = `key_id: insecure-test-key
tables:
  accounts:
    columns:
      email: {}
`

func TestAdversarialNames(t *testing.T) {
	inv := []string{"{ns}_billing.invoices"}
	acc := []string{"{ns}_app.accounts"}
	users := []string{"users"}
	cases := []advCase{
		{name: "search_path_dsn_unqualified_insert", ddl: advBilling, yaml: advBillingMap, run: func(a *adv) {
			a.use(a.openWith("search_path", a.ns+"_billing"))
			s := sec("sp-dsn")
			a.write(inv, []string{s}, a.reads(s, "SELECT email FROM {ns}_billing.invoices WHERE id = 1"),
				"INSERT INTO invoices (id, email) VALUES (1, $1)", s)
		}},
		{name: "search_path_dsn_unqualified_select", ddl: advBilling, yaml: advBillingMap, run: func(a *adv) {
			a.exec("INSERT INTO {ns}_billing.invoices (id, email) VALUES (1, $1)", sec("sp-dsn-sel"))
			a.use(a.openWith("search_path", a.ns+"_billing"))
			a.readSafe([]int{0}, []string{sec("sp-dsn-sel")}, "SELECT email FROM invoices")
		}},
		{name: "set_search_path_then_insert", ddl: advBilling, yaml: advBillingMap, run: func(a *adv) {
			a.try("SET search_path = {ns}_billing")
			s := sec("sp-set")
			a.write(inv, []string{s}, a.reads(s, "SELECT email FROM {ns}_billing.invoices WHERE id = 1"),
				"INSERT INTO invoices (id, email) VALUES (1, $1)", s)
		}},
		{name: "set_search_path_then_select", ddl: advBilling, yaml: advBillingMap, run: func(a *adv) {
			a.exec("INSERT INTO {ns}_billing.invoices (id, email) VALUES (1, $1)", sec("sp-set-sel"))
			a.try("SET search_path TO {ns}_billing, public")
			a.readSafe([]int{0}, []string{sec("sp-set-sel")}, "SELECT email FROM invoices")
		}},
		{name: "set_config_in_select_then_insert", ddl: advBilling, yaml: advBillingMap, run: func(a *adv) {
			a.try("SELECT set_config('search_path', '{ns}_billing', false)")
			s := sec("sp-set-config")
			a.write(inv, []string{s}, a.reads(s, "SELECT email FROM {ns}_billing.invoices WHERE id = 1"),
				"INSERT INTO invoices (id, email) VALUES (1, $1)", s)
		}},
		{name: "set_config_in_select_then_select", ddl: advBilling, yaml: advBillingMap, run: func(a *adv) {
			a.exec("INSERT INTO {ns}_billing.invoices (id, email) VALUES (1, $1)", sec("sp-sc-sel"))
			a.readSafe(nil, nil, "SELECT set_config('search_path', '{ns}_billing', false)")
			a.readSafe([]int{0}, []string{sec("sp-sc-sel")}, "SELECT email FROM invoices")
		}},
		{name: "shadowing_plain_table_search_path_order", ddl: advBilling + `CREATE TABLE invoices (id bigint PRIMARY KEY, email text, encrypted_kms_key text);`, yaml: advBillingMap, run: func(a *adv) {
			// The plain table first: the write is the plain table's, and the
			// mapped table must not change.
			a.try("SET search_path = {ns}, {ns}_billing")
			p := "plain-shadow@example.com"
			before := a.snap(inv...)
			if err := a.try("INSERT INTO invoices (id, email) VALUES (1, $1)", p); err == nil {
				a.readExact(p, "SELECT email FROM invoices WHERE id = 1")
			}
			if after := a.snap(inv...); after != before {
				a.t.Errorf("a write to the plain invoices changed the mapped one:\n%s%s", before, after)
			}
			// The mapped table first: the write is encrypted.
			if a.try("SET search_path = {ns}_billing, {ns}") != nil {
				return // refused: unqualified names still mean the plain table
			}
			s := sec("shadow")
			a.write(inv, []string{s}, a.reads(s, "SELECT email FROM {ns}_billing.invoices WHERE id = 2"),
				"INSERT INTO invoices (id, email) VALUES (2, $1)", s)
		}},
		{name: "unqualified_map_entry_written_qualified", ddl: advApp, yaml: advAppMap, run: func(a *adv) {
			a.use(a.openWith("search_path", a.ns+"_app"))
			s := sec("app-qualified")
			a.write(acc, []string{s}, a.reads(s, "SELECT email FROM accounts WHERE id = 1"),
				"INSERT INTO {ns}_app.accounts (id, email) VALUES (1, $1)", s)
		}},
		{name: "unqualified_map_entry_read_qualified", ddl: advApp, yaml: advAppMap, run: func(a *adv) {
			a.use(a.openWith("search_path", a.ns+"_app"))
			s := sec("app-read")
			a.exec("INSERT INTO accounts (id, email) VALUES (1, $1)", s)
			a.readSafe([]int{0}, []string{s}, "SELECT email FROM {ns}_app.accounts")
			a.readSafe([]int{0}, []string{s}, "SELECT a.email FROM {db}.{ns}_app.accounts a")
		}},
		{name: "unqualified_map_entry_updated_qualified", ddl: advApp, yaml: advAppMap, run: func(a *adv) {
			a.use(a.openWith("search_path", a.ns+"_app"))
			a.exec("INSERT INTO accounts (id, email) VALUES (1, $1)", sec("app-upd-seed"))
			s := sec("app-upd")
			a.write(acc, []string{s}, a.reads(s, "SELECT email FROM accounts WHERE id = 1"),
				"UPDATE {ns}_app.accounts SET email = $1 WHERE id = 1", s)
		}},
		{name: "namespace_qualified_mapped_table", ddl: advUsers, run: func(a *adv) {
			a.seedUsers(1, 10, "a", sec("nsq-seed"))
			s := sec("nsq")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"INSERT INTO {ns}.users (id, name, email) VALUES (2, 'q', $1)", s)
			a.readSafe([]int{0}, []string{sec("nsq-seed"), s}, "SELECT email FROM {ns}.users")
			a.readSafe([]int{0}, []string{sec("nsq-seed"), s}, "SELECT u.email FROM {db}.{ns}.users u")
		}},
		{name: "quoted_lowercase_identifiers", ddl: advUsers, run: func(a *adv) {
			a.seedUsers(1, 10, "a", sec("quoted-seed"))
			s := sec("quoted")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				`INSERT INTO "users" ("id", "name", "email") VALUES (2, 'q', $1)`, s)
			a.readSafe([]int{0}, []string{sec("quoted-seed"), s}, `SELECT "email" FROM "users"`)
		}},
		{name: "uppercase_unquoted_identifiers", ddl: advUsers, run: func(a *adv) {
			a.seedUsers(1, 10, "a", sec("upper-seed"))
			s := sec("upper")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				`INSERT INTO USERS (ID, NAME, EMAIL) VALUES (2, 'q', $1)`, s)
			a.readSafe([]int{0}, []string{sec("upper-seed"), s}, `SELECT EMAIL FROM USERS`)
		}},
		{name: "quoted_capitalised_other_table", ddl: advUsers + `CREATE TABLE "Users" (id bigint PRIMARY KEY, name text, email text, encrypted_kms_key text);`, run: func(a *adv) {
			a.seedUsers(1, 10, "a", sec("cap-seed"))
			before := a.snap("users")
			p := "plain-capital@example.com"
			if err := a.try(`INSERT INTO "Users" (id, name, email) VALUES (2, 'Q', $1)`, p); err == nil {
				a.readExact(p, `SELECT email FROM "Users" WHERE id = 2`)
			}
			if after := a.snap("users"); after != before {
				a.t.Errorf(`a write to "Users" changed users:\n%s%s`, before, after)
			}
			a.readExact(sec("cap-seed"), "SELECT email FROM users")
		}},
		{name: "unicode_escaped_identifiers", ddl: advUsers, run: func(a *adv) {
			a.seedUsers(1, 10, "a", sec("uesc-seed"))
			s := sec("uesc")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				`INSERT INTO U&"us\0065rs" (id, name, U&"em\0061il") VALUES (2, 'u', $1)`, s)
			a.readSafe([]int{0}, []string{sec("uesc-seed"), s}, `SELECT U&"em\0061il" FROM U&"us\0065rs"`)
		}},
		{name: "set_local_search_path_in_transaction", ddl: advBilling, yaml: advBillingMap, run: func(a *adv) {
			s := sec("sp-local")
			a.writeFn(inv, []string{s}, a.reads(s, "SELECT email FROM {ns}_billing.invoices WHERE id = 1"), "SET LOCAL search_path; INSERT INTO invoices", func() error {
				tx, err := a.begin()
				if err != nil {
					return err
				}
				if _, err := tx.Exec(a.x("SET LOCAL search_path = {ns}_billing")); err != nil {
					tx.Rollback()
					return err
				}
				if _, err := tx.Exec("INSERT INTO invoices (id, email) VALUES (1, $1)", s); err != nil {
					tx.Rollback()
					return err
				}
				return tx.Commit()
			})
		}},
		{name: "temp_table_shadows_mapped", ddl: advUsers, run: func(a *adv) {
			a.seedUsers(1, 10, "a", sec("temp-seed"))
			a.try("CREATE TEMP TABLE users (id bigint PRIMARY KEY, org_id bigint, name text, email text, encrypted_kms_key text)")
			a.readSafe([]int{0}, []string{sec("temp-seed")}, "SELECT email FROM {ns}.users")
			s := sec("temp")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM {ns}.users WHERE id = 2"),
				"INSERT INTO {ns}.users (id, name, email) VALUES (2, 't', $1)", s)
		}},
	}
	runAdversarial(t, cases)
}

// ---------------------------------------------------------------------------
// Class 4: a stale catalog. A second connection (a migration tool) changes
// the schema after the driver has run statements.

const advUsersNoOrg = `CREATE TABLE users (id bigint PRIMARY KEY, name text, email text, encrypted_kms_key text);`

func TestAdversarialStaleCatalog(t *testing.T) {
	users := []string{"users"}
	cases := []advCase{
		{name: "view_created_after_load", ddl: advUsers, run: func(a *adv) {
			a.seedUsers(1, 10, "a", sec("sv"))
			a.readExact(sec("sv"), "SELECT email FROM users")
			a.migrate("CREATE VIEW v AS SELECT id, email FROM users")
			a.readSafe([]int{1}, []string{sec("sv")}, "SELECT id, email FROM v")
			a.readSafe([]int{1}, []string{sec("sv")}, "SELECT * FROM v")
		}},
		{name: "view_replaced_same_sql_text", sameText: true, ddl: advUsers + `CREATE VIEW v AS SELECT 1::bigint AS id, 'not-secret'::text AS email;`, run: func(a *adv) {
			a.seedUsers(1, 10, "a", sec("svr"))
			a.readExact("1,not-secret", "SELECT id, email FROM v")
			a.migrate("CREATE OR REPLACE VIEW v AS SELECT id, email FROM users")
			a.readSafe([]int{1}, []string{sec("svr"), "not-secret"}, "SELECT id, email FROM v")
		}},
		{name: "view_over_view_created_after_load", ddl: advUsers, run: func(a *adv) {
			a.seedUsers(1, 10, "a", sec("svv"))
			a.migrate("CREATE VIEW v1 AS SELECT id, email FROM users", "CREATE VIEW v2 AS SELECT id, email AS contact FROM v1")
			a.readSafe([]int{0}, []string{sec("svv")}, "SELECT contact FROM v2")
		}},
		{name: "whole_row_view_created_after_load", ddl: advUsers, run: func(a *adv) {
			a.seedUsers(1, 10, "a", sec("svj"))
			a.migrate("CREATE VIEW vj AS SELECT row_to_json(u) AS j FROM users u")
			a.readSafe(nil, nil, "SELECT j FROM vj")
		}},
		{name: "drop_column_then_positional_insert", ddl: advUsersNoOrg, run: func(a *adv) {
			a.exec("INSERT INTO users (id, name, email) VALUES (1, 'a', $1)", sec("sd-seed"))
			a.migrate("ALTER TABLE users DROP COLUMN name")
			s := sec("sd")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"INSERT INTO users VALUES ($1, $2)", 2, s)
		}},
		{name: "drop_column_then_same_positional_insert_text", sameText: true, ddl: advUsersNoOrg, run: func(a *adv) {
			a.readSafe(nil, nil, "SELECT email FROM users")
			a.try("INSERT INTO users VALUES ($1, $2)", 1, "name-one")
			a.migrate("ALTER TABLE users DROP COLUMN name")
			s := sec("sd-same")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"INSERT INTO users VALUES ($1, $2)", 2, s)
		}},
		{name: "reorder_columns_then_same_positional_insert_text", sameText: true, ddl: advUsersNoOrg, run: func(a *adv) {
			a.readSafe(nil, nil, "SELECT email FROM users")
			a.try("INSERT INTO users VALUES ($1, $2)", 1, "name-one")
			a.migrate("ALTER TABLE users DROP COLUMN name", "ALTER TABLE users ADD COLUMN name text")
			s := sec("sreorder")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"INSERT INTO users VALUES ($1, $2)", 2, s)
		}},
		{name: "table_recreated_reordered", sameText: true, ddl: advUsersNoOrg, run: func(a *adv) {
			a.exec("INSERT INTO users (id, name, email) VALUES (1, 'a', $1)", sec("srec-seed"))
			a.try("INSERT INTO users VALUES ($1, $2, $3)", 3, "name-three", sec("srec-seed"))
			a.migrate("DROP TABLE users", "CREATE TABLE users (id bigint PRIMARY KEY, email text, name text, encrypted_kms_key text)")
			s := sec("srec")
			a.write(users, []string{s}, a.reads(s+",nm", "SELECT email, name FROM users WHERE id = 2"),
				"INSERT INTO users VALUES ($1, $2, $3)", 2, s, "nm")
		}},
		{name: "drop_column_then_select_star", ddl: advUsersNoOrg, run: func(a *adv) {
			a.exec("INSERT INTO users (id, name, email) VALUES (1, 'a', $1)", sec("sds"))
			a.readExact("1,a,"+sec("sds"), "SELECT * FROM users")
			a.migrate("ALTER TABLE users DROP COLUMN name")
			a.readSafe([]int{1}, []string{sec("sds")}, "SELECT * FROM users")
			a.readSafe([]int{1}, []string{sec("sds")}, "SELECT * FROM users")
		}},
		{name: "add_column_then_select_star", ddl: advUsersNoOrg, run: func(a *adv) {
			a.exec("INSERT INTO users (id, name, email) VALUES (1, 'a', $1)", sec("sas"))
			a.readExact("1,a,"+sec("sas"), "SELECT * FROM users")
			a.migrate("ALTER TABLE users ADD COLUMN note text")
			a.readSafe([]int{2}, []string{sec("sas")}, "SELECT * FROM users")
		}},
		{name: "prepared_statement_across_migration", sameText: true, ddl: advUsersNoOrg, run: func(a *adv) {
			// database/sql in the /pgx variant too: kmspgx refuses
			// preparing by name, and runs the same text again as
			// drop_column_then_same_positional_insert_text does.
			st, err := a.c.PrepareContext(a.ctx, "INSERT INTO users VALUES ($1, $2)")
			if err != nil {
				a.t.Logf("refused: prepare: %v", err)
				a.usable()
				return
			}
			defer st.Close()
			if _, err := st.ExecContext(a.ctx, 1, "name-one"); err != nil {
				a.t.Logf("refused: the prepared INSERT before the migration: %v", err)
			}
			a.migrate("ALTER TABLE users DROP COLUMN name")
			s := sec("sprep")
			a.writeFn(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"), "prepared INSERT INTO users VALUES ($1, $2)", func() error {
				_, err := st.ExecContext(a.ctx, 2, s)
				return err
			})
		}},
		{name: "partition_created_after_load", ddl: advPart, run: func(a *adv) {
			if !a.seedOK(1, 10, "a", sec("spart-seed")) {
				return
			}
			a.migrate("CREATE TABLE users_p3 PARTITION OF users FOR VALUES FROM (200) TO (300)")
			s := sec("spart")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 250"),
				"INSERT INTO users_p3 (id, name, email) VALUES (250, 'p', $1)", s)
			a.readSafe([]int{0}, []string{s}, "SELECT email FROM users_p3")
		}},
		{name: "inheritance_child_created_after_load", ddl: advUsers, run: func(a *adv) {
			a.seedUsers(1, 10, "a", sec("sinh-seed"))
			a.migrate("CREATE TABLE users_child () INHERITS (users)")
			s := sec("sinh")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 101"),
				"INSERT INTO users_child (id, name, email) VALUES (101, 'c', $1)", s)
		}},
		{name: "rule_created_after_same_sql_text", sameText: true, ddl: advUsers + `CREATE TABLE inbox (id bigint, email text);`, run: func(a *adv) {
			a.seedUsers(1, 10, "a", sec("srule-seed"))
			a.exec("INSERT INTO inbox (id, email) VALUES ($1, $2)", 1, "plain-inbox")
			a.migrate("CREATE RULE inbox_to_users AS ON INSERT TO inbox DO INSTEAD INSERT INTO users (id, name, email) VALUES (NEW.id, 'r', NEW.email)")
			s := sec("srule")
			a.write([]string{"users", plain("inbox")}, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"INSERT INTO inbox (id, email) VALUES ($1, $2)", 2, s)
		}},
		{name: "table_swapped_by_rename", ddl: advUsers, run: func(a *adv) {
			a.seedUsers(1, 10, "a", sec("swap-seed"))
			a.migrate("CREATE TABLE users_new (LIKE users INCLUDING ALL)", "INSERT INTO users_new SELECT * FROM users",
				"ALTER TABLE users RENAME TO users_old", "ALTER TABLE users_new RENAME TO users")
			s := sec("swap")
			a.write(users, []string{s}, a.reads("1,"+sec("swap-seed")+"|2,"+s, "SELECT id, email FROM users ORDER BY id"),
				"INSERT INTO users (id, name, email) VALUES (2, 'n', $1)", s)
		}},
		{name: "generated_column_added_after_load", ddl: advUsers, run: func(a *adv) {
			s := "Secret-Stale-Gen@Example.COM"
			a.seedUsers(1, 10, "a", s)
			a.readExact(s, "SELECT email FROM users")
			a.migrate("ALTER TABLE users ADD COLUMN email_lower text GENERATED ALWAYS AS (lower(email)) STORED")
			a.readExact(strings.ToLower(s), "SELECT email_lower FROM users WHERE id = 1")
		}},
		{name: "mapped_column_added_after_start", ddl: advUsers, yaml: advMap + "      phone: {}\n", run: func(a *adv) {
			// The map is ahead of the database: phone does not exist yet.
			a.try("INSERT INTO users (id, name, email) VALUES (1, 'a', $1)", sec("sphone-early"))
			a.migrate("ALTER TABLE users ADD COLUMN phone text")
			s, p := sec("sphone-email"), sec("sphone-phone")
			a.write(users, []string{s, p}, a.reads(s+","+p, "SELECT email, phone FROM users WHERE id = 2"),
				"INSERT INTO users (id, name, email, phone) VALUES (2, 'n', $1, $2)", s, p)
		}},
	}
	runAdversarial(t, cases)
}

// ---------------------------------------------------------------------------
// Class 5: parse disagreements between pg_query and the server.

// scsSplit is one harmless SELECT of two strings to a parser with
// standard_conforming_strings = on, and a SELECT followed by an INSERT of
// the plaintext to a server with it off.
func scsSplit(s string) string {
	return `SELECT 'x\', '; INSERT INTO users (id, name, email) VALUES (2, $q$n$q$, $q$` + s + `$q$); -- '`
}

// deepCasts is 2 under 6000 casts: the server (PostgreSQL 15, 2 MB stack)
// evaluates it; pg_query's parse tree is deeper than its protobuf limit.
func deepCasts(v string) string { return v + strings.Repeat("::bigint", 6000) }

func TestAdversarialParse(t *testing.T) {
	users := []string{"users"}
	seed := sec("parse-seed")
	one := func(a *adv) { a.seedUsers(1, 10, "a", seed) }
	// written: a readback for statements that may legitimately write
	// nothing (the server saw one SELECT): if row 2 exists it reads back.
	written := func(a *adv, s string) func() {
		return func() {
			if a.rawOne("SELECT count(*)::text FROM users WHERE id = 2") != "0" {
				a.mustRead(s, "SELECT email FROM users WHERE id = 2")
			}
		}
	}
	cases := []advCase{
		{name: "deep_nesting_select", ddl: advUsers, run: func(a *adv) {
			one(a)
			a.readSafe([]int{0}, []string{seed}, "SELECT email FROM users WHERE id = "+deepCasts("1"))
		}},
		{name: "deep_nesting_insert", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("deep")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"INSERT INTO users (id, name, email) VALUES ("+deepCasts("2")+", 'd', '"+s+"')")
		}},
		{name: "deep_nesting_insert_param", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("deep-param")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"INSERT INTO users (id, name, email) VALUES ("+deepCasts("2")+", 'd', $1)", s)
		}},
		{name: "system_user_alias_insert", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("sysuser")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"INSERT INTO users AS system_user (id, name, email) VALUES (2, 's', $1)", s)
		}},
		{name: "system_user_alias_select", ddl: advUsers, run: func(a *adv) {
			one(a)
			a.readSafe([]int{0}, []string{seed}, "SELECT system_user.email FROM users system_user")
			a.readSafe([]int{0}, []string{seed}, "WITH system_user AS (SELECT email FROM users) SELECT email FROM system_user")
		}},
		{name: "system_user_alias_update", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("sysuser-upd")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 1"),
				"UPDATE users system_user SET email = $1 WHERE system_user.id = 1", s)
		}},
		{name: "standard_conforming_strings_set_off", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("scs-set")
			a.try("SET standard_conforming_strings = off")
			a.write(users, []string{s}, written(a, s), scsSplit(s))
		}},
		{name: "standard_conforming_strings_set_config", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("scs-config")
			a.try("SELECT set_config('standard_conforming_strings', 'off', false)")
			a.write(users, []string{s}, written(a, s), scsSplit(s))
		}},
		{name: "standard_conforming_strings_off_in_dsn", ddl: advUsers, run: func(a *adv) {
			s := sec("scs-dsn")
			// Refusing such connections outright is a fine outcome.
			if err := a.pin(a.openWith("options", "-cstandard_conforming_strings=off"), a.pgx()); err != nil {
				a.t.Logf("refused: connecting with standard_conforming_strings=off: %v", err)
				return
			}
			if a.try("INSERT INTO users (id, org_id, name, email) VALUES (1, 10, 'a', $1)", seed) == nil {
				a.noPlaintext(users, []string{seed})
			}
			a.write(users, []string{s}, written(a, s), scsSplit(s))
		}},
		{name: "multi_statement_select_then_insert", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("multi-1")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"SELECT 1; INSERT INTO users (id, name, email) VALUES (2, 'm', '"+s+"')")
		}},
		{name: "multi_statement_insert_then_select", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("multi-2")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"INSERT INTO users (id, name, email) VALUES (2, 'm', '"+s+"'); SELECT 1")
		}},
		{name: "multi_statement_plain_then_update", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("multi-3")
			a.write([]string{"users", plain("orgs")}, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 1"),
				"UPDATE orgs SET name = 'x'; UPDATE users SET email = '"+s+"' WHERE id = 1")
		}},
		{name: "multi_statement_comment_semicolon", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("multi-4")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"SELECT 1 /* ; */ ; /* x */ INSERT INTO users (id, name, email) VALUES (2, 'm', '"+s+"') -- ;")
		}},
		{name: "multi_statement_transaction", ddl: advUsers, run: func(a *adv) {
			one(a)
			s := sec("multi-5")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 2"),
				"BEGIN; INSERT INTO users (id, name, email) VALUES (2, 'm', '"+s+"'); COMMIT")
		}},
		{name: "multi_statement_read_simple_protocol", ddl: advUsers, extra: []string{"default_query_exec_mode=simple_protocol"}, run: func(a *adv) {
			one(a)
			a.readSafe([]int{0}, []string{seed}, "SELECT 'x'::text; SELECT email FROM users")
			a.readSafe([]int{0}, []string{seed}, "SELECT email FROM orgs WHERE false; SELECT email FROM users")
		}},
	}
	runAdversarial(t, cases)
}

// ---------------------------------------------------------------------------
// Class 6: encryption contexts against the stored primary key.

func TestAdversarialContexts(t *testing.T) {
	kMap := `key_id: insecure-test-key
tables:
  k:
    primary_key: code
    columns:
      secret: {}
`
	kDDL := func(typ string) string {
		return "CREATE TABLE k (code " + typ + " PRIMARY KEY, secret text, encrypted_kms_key text);"
	}
	type ctxCase struct {
		name, typ, sql string
		args           []any // the secret is appended
	}
	const upper = "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"
	list := []ctxCase{
		{"varchar3_trailing_spaces_literal", "varchar(3)", "INSERT INTO k (code, secret) VALUES ('abc  ', $1)", nil},
		{"varchar3_trailing_spaces_param", "varchar(3)", "INSERT INTO k (code, secret) VALUES ($1, $2)", []any{"abc  "}},
		{"char5_padding_literal", "char(5)", "INSERT INTO k (code, secret) VALUES ('ab', $1)", nil},
		{"char5_padding_param", "char(5)", "INSERT INTO k (code, secret) VALUES ($1, $2)", []any{"ab   "}},
		{"numeric_literal_into_text", "text", "INSERT INTO k (code, secret) VALUES (1.50, $1)", nil},
		{"exponent_literal_into_text", "text", "INSERT INTO k (code, secret) VALUES (1e2, $1)", nil},
		{"leading_zero_integer_into_text", "text", "INSERT INTO k (code, secret) VALUES (007, $1)", nil},
		{"cast_in_text_key", "text", "INSERT INTO k (code, secret) VALUES ('0042'::int, $1)", nil},
		{"cast_in_bigint_key", "bigint", "INSERT INTO k (code, secret) VALUES ('0042'::int, $1)", nil},
		{"numeric_into_bigint_rounds", "bigint", "INSERT INTO k (code, secret) VALUES (7.5, $1)", nil},
		{"bigint_param_with_spaces", "bigint", "INSERT INTO k (code, secret) VALUES ($1, $2)", []any{"  7"}},
		{"bigint_param_with_plus", "bigint", "INSERT INTO k (code, secret) VALUES ($1, $2)", []any{"+007"}},
		{"bigint_literal_with_spaces", "bigint", "INSERT INTO k (code, secret) VALUES ('  7', $1)", nil},
		{"smallint_float_param", "smallint", "INSERT INTO k (code, secret) VALUES ($1, $2)", []any{7.0}},
		{"uuid_upper_literal", "uuid", "INSERT INTO k (code, secret) VALUES ('" + upper + "', $1)", nil},
		{"uuid_upper_param", "uuid", "INSERT INTO k (code, secret) VALUES ($1, $2)", []any{upper}},
		{"uuid_braces_no_hyphens", "uuid", "INSERT INTO k (code, secret) VALUES ('{a0eebc999c0b4ef8bb6d6bb9bd380a11}', $1)", nil},
		{"text_key_expression", "text", "INSERT INTO k (code, secret) VALUES ('ab' || 'c', $1)", nil},
		{"text_key_from_default_expression", "text DEFAULT ('k-' || md5(random()::text))", "INSERT INTO k (secret) VALUES ($1)", nil},
		{"varchar_key_from_subselect", "varchar(10)", "INSERT INTO k (code, secret) VALUES ((SELECT 'sub'), $1)", nil},
	}
	var cases []advCase
	for _, c := range list {
		cases = append(cases, advCase{name: c.name, ddl: kDDL(c.typ), yaml: kMap, run: func(a *adv) {
			s := sec("ctx-" + c.name)
			args := append(append([]any{}, c.args...), s)
			// The one row written reads back, by a full scan (no predicate
			// on the key, so the key's text plays no part in finding it).
			a.write([]string{"k"}, []string{s}, a.reads(s, "SELECT secret FROM k"), c.sql, args...)
			// And an update of it (which reads the stored key) works too.
			if a.rawOne("SELECT count(*)::text FROM k") == "1" {
				s2 := sec("ctx2-" + c.name)
				a.write([]string{"k"}, []string{s2}, a.reads(s2, "SELECT secret FROM k"), "UPDATE k SET secret = $1", s2)
			}
		}})
	}
	runAdversarial(t, cases)
}

// ---------------------------------------------------------------------------
// Class 7: set-based UPDATE on partitioned and inherited tables, where rows
// of different partitions share a ctid.

func TestAdversarialRowIdentity(t *testing.T) {
	twoCols := `
tables:
  users:
    columns:
      email: {}
      note: {}
`
	m := "key_id: insecure-test-key" + twoCols
	part := `CREATE TABLE users (id bigint, name text, email text, note text, encrypted_kms_key text, PRIMARY KEY (id)) PARTITION BY RANGE (id);
		CREATE TABLE users_p1 PARTITION OF users FOR VALUES FROM (0) TO (100);
		CREATE TABLE users_p2 PARTITION OF users FOR VALUES FROM (100) TO (200);`
	part2 := `CREATE TABLE users (id bigint, name text, email text, note text, encrypted_kms_key text, PRIMARY KEY (id)) PARTITION BY RANGE (id);
		CREATE TABLE users_p1 PARTITION OF users FOR VALUES FROM (0) TO (100);
		CREATE TABLE users_p2 PARTITION OF users FOR VALUES FROM (100) TO (200) PARTITION BY RANGE (id);
		CREATE TABLE users_p2a PARTITION OF users_p2 FOR VALUES FROM (100) TO (150);
		CREATE TABLE users_p2b PARTITION OF users_p2 FOR VALUES FROM (150) TO (200);`
	inh := `CREATE TABLE users (id bigint PRIMARY KEY, name text, email text, note text, encrypted_kms_key text);
		CREATE TABLE users_child () INHERITS (users);`

	// seed writes one row per id through the driver (name n<id>, email
	// and note derived from the id).
	// A fixed driver may refuse partitioned or inherited tables as a whole:
	// then the refusal must leave the table unchanged, and the case ends.
	seed := func(a *adv, ids ...int) bool {
		for _, id := range ids {
			e, n := sec(fmt.Sprintf("e%d", id)), sec(fmt.Sprintf("n%d", id))
			if a.write([]string{"users"}, []string{e, n}, nil, "INSERT INTO users (id, name, email, note) VALUES ($1, $2, $3, $4)", id, fmt.Sprintf("n%d", id), e, n) != nil {
				a.t.Logf("the driver refuses writing users here: nothing more to check")
				return false
			}
		}
		return true
	}
	// rowBytes is the stored row, as the raw connection sees it.
	rowBytes := func(a *adv, id int) string {
		return a.rawOne("SELECT tableoid::regclass::text || ' ' || t::text FROM users t WHERE id = $1", id)
	}
	sameCtid := func(a *adv, ids ...int) {
		for _, id := range ids {
			if c := a.rawOne("SELECT ctid::text FROM users WHERE id = $1", id); c != "(0,1)" {
				a.t.Fatalf("setup: row %d is at %s, want (0,1)", id, c)
			}
		}
	}
	// check runs an UPDATE aimed at the rows touched and asserts the other
	// rows' stored bytes did not change and every row reads back.
	check := func(a *adv, all, touched []int, set string, args ...any) {
		before := map[int]string{}
		for _, id := range all {
			before[id] = rowBytes(a, id)
		}
		newEmail := args[0].(string)
		var secrets []string
		for _, v := range args {
			secrets = append(secrets, v.(string))
		}
		want := make([]string, len(all))
		for i, id := range all {
			want[i] = fmt.Sprintf("%d,%s", id, sec(fmt.Sprintf("e%d", id)))
		}
		err := a.write([]string{"users"}, secrets, nil, set, args...)
		for i, id := range all {
			if slices.Contains(touched, id) {
				if err == nil {
					want[i] = fmt.Sprintf("%d,%s", id, newEmail)
				}
				continue
			}
			if after := rowBytes(a, id); after != before[id] {
				a.t.Errorf("row %d, which the UPDATE does not match, was modified:\nbefore %s\nafter  %s", id, before[id], after)
			}
		}
		a.mustRead(strings.Join(want, "|"), "SELECT id, email FROM users ORDER BY id")
	}
	// moveToChild moves a row, cell and key as they are, into users_child.
	moveToChild := func(a *adv, id int) {
		a.rawExec("WITH m AS (DELETE FROM ONLY users WHERE id = $1 RETURNING *) INSERT INTO users_child SELECT * FROM m", id)
	}
	cases := []advCase{
		{name: "partitioned_point_update_own_key", ddl: part, yaml: m, run: func(a *adv) {
			if !seed(a, 1, 101) {
				return
			}
			sameCtid(a, 1, 101)
			check(a, []int{1, 101}, []int{1}, "UPDATE users SET email = $1 WHERE id = 1", sec("rid-1"))
		}},
		{name: "partitioned_point_update_fresh_key", ddl: part, yaml: m, run: func(a *adv) {
			if !seed(a, 1, 101) {
				return
			}
			sameCtid(a, 1, 101)
			check(a, []int{1, 101}, []int{1}, "UPDATE users SET email = $1, note = $2 WHERE id = 1", sec("rid-2"), sec("rid-2n"))
		}},
		{name: "partitioned_point_update_second_partition", ddl: part, yaml: m, run: func(a *adv) {
			if !seed(a, 1, 101) {
				return
			}
			sameCtid(a, 1, 101)
			check(a, []int{1, 101}, []int{101}, "UPDATE users SET email = $1 WHERE id = 101", sec("rid-3"))
		}},
		{name: "partitioned_set_based_update", ddl: part, yaml: m, run: func(a *adv) {
			if !seed(a, 1, 2, 3, 101, 102, 103) {
				return
			}
			sameCtid(a, 1, 101)
			check(a, []int{1, 2, 3, 101, 102, 103}, []int{1, 2}, "UPDATE users SET email = $1 WHERE id <= 2", sec("rid-4"))
		}},
		{name: "partitioned_set_based_update_by_plain_column", ddl: part, yaml: m, run: func(a *adv) {
			if !seed(a, 1, 2, 101, 102) {
				return
			}
			sameCtid(a, 1, 101)
			check(a, []int{1, 2, 101, 102}, []int{2}, "UPDATE users SET email = $1 WHERE name = 'n2'", sec("rid-5"))
		}},
		{name: "multilevel_partition_point_update", ddl: part2, yaml: m, run: func(a *adv) {
			if !seed(a, 1, 120, 170) {
				return
			}
			sameCtid(a, 1, 120, 170)
			check(a, []int{1, 120, 170}, []int{120}, "UPDATE users SET email = $1 WHERE id = 120", sec("rid-6"))
		}},
		{name: "partition_updated_directly", ddl: part, yaml: m, run: func(a *adv) {
			if !seed(a, 1, 101) {
				return
			}
			sameCtid(a, 1, 101)
			check(a, []int{1, 101}, []int{101}, "UPDATE users_p2 SET email = $1 WHERE id >= 100", sec("rid-7"))
		}},
		{name: "inheritance_update_parent_row", ddl: inh, yaml: m, run: func(a *adv) {
			if !seed(a, 1, 101) {
				return
			}
			moveToChild(a, 101)
			sameCtid(a, 1, 101)
			check(a, []int{1, 101}, []int{1}, "UPDATE users SET email = $1 WHERE id = 1", sec("rid-8"))
		}},
		{name: "inheritance_update_child_row_through_parent", ddl: inh, yaml: m, run: func(a *adv) {
			if !seed(a, 1, 101) {
				return
			}
			moveToChild(a, 101)
			sameCtid(a, 1, 101)
			check(a, []int{1, 101}, []int{101}, "UPDATE users SET email = $1 WHERE id = 101", sec("rid-9"))
		}},
		{name: "inheritance_update_only_parent", ddl: inh, yaml: m, run: func(a *adv) {
			if !seed(a, 1, 101) {
				return
			}
			moveToChild(a, 101)
			sameCtid(a, 1, 101)
			check(a, []int{1, 101}, []int{1}, "UPDATE ONLY users SET email = $1 WHERE id IN (1, 101)", sec("rid-10"))
		}},
		{name: "inheritance_set_based_update", ddl: inh, yaml: m, run: func(a *adv) {
			if !seed(a, 1, 2, 101, 102) {
				return
			}
			moveToChild(a, 101)
			moveToChild(a, 102)
			check(a, []int{1, 2, 101, 102}, []int{1, 2}, "UPDATE users SET email = $1 WHERE id < 100", sec("rid-11"))
		}},
	}
	runAdversarial(t, cases)
}

// ---------------------------------------------------------------------------
// Class 8: result scopes of UPDATE … FROM, DELETE … USING and friends.

func TestAdversarialResultScopes(t *testing.T) {
	sa, sb := sec("scope-a"), sec("scope-b")
	ok := []string{sa, sb}
	setup := func(a *adv) {
		a.exec("INSERT INTO orgs (id, name) VALUES (10, 'acme'), (20, 'globex')")
		a.seedUsers(1, 10, "a", sa, 2, 20, "b", sb)
	}
	cases := []advCase{
		{name: "update_from_returning_column", ddl: advUsers, run: func(a *adv) {
			setup(a)
			a.readSafe([]int{0}, ok, "UPDATE orgs o SET name = o.name || '!' FROM users u WHERE u.org_id = o.id RETURNING u.email")
		}},
		{name: "update_from_returning_star", ddl: advUsers, run: func(a *adv) {
			setup(a)
			a.readSafe(nil, nil, "UPDATE orgs o SET name = 'x' FROM users u WHERE u.org_id = o.id RETURNING *")
		}},
		{name: "update_from_returning_alias_star", ddl: advUsers, run: func(a *adv) {
			setup(a)
			a.readSafe([]int{3}, ok, "UPDATE orgs o SET name = 'x' FROM users u WHERE u.org_id = o.id RETURNING u.*")
		}},
		{name: "update_from_returning_whole_row", ddl: advUsers, run: func(a *adv) {
			setup(a)
			a.readSafe(nil, nil, "UPDATE orgs o SET name = 'x' FROM users u WHERE u.org_id = o.id RETURNING u")
		}},
		{name: "update_from_returning_function", ddl: advUsers, run: func(a *adv) {
			setup(a)
			a.readSafe([]int{0}, ok, "UPDATE orgs o SET name = 'x' FROM users u WHERE u.org_id = o.id RETURNING lower(u.email)")
		}},
		{name: "update_from_subquery_returning", ddl: advUsers, run: func(a *adv) {
			setup(a)
			a.readSafe([]int{0}, ok, "UPDATE orgs o SET name = 'x' FROM (SELECT org_id, email AS e FROM users) u WHERE u.org_id = o.id RETURNING u.e")
		}},
		{name: "delete_using_returning_column", ddl: advUsers, run: func(a *adv) {
			setup(a)
			a.readSafe([]int{0}, ok, "DELETE FROM orgs o USING users u WHERE u.org_id = o.id RETURNING u.email")
		}},
		{name: "delete_using_returning_star", ddl: advUsers, run: func(a *adv) {
			setup(a)
			a.readSafe(nil, nil, "DELETE FROM orgs o USING users u WHERE u.org_id = o.id RETURNING *")
		}},
		{name: "update_self_join_returning_other_alias", ddl: advUsers, run: func(a *adv) {
			setup(a)
			a.readSafe([]int{0}, ok, "UPDATE users u SET name = 'x' FROM users u2 WHERE u2.id = u.id RETURNING u2.email")
		}},
		{name: "returning_scalar_subquery", ddl: advUsers, run: func(a *adv) {
			setup(a)
			a.readExact(sa, "UPDATE orgs SET name = 'y' WHERE id = 10 RETURNING (SELECT email FROM users WHERE id = 1)")
			a.readExact(sa, "INSERT INTO orgs (id, name) VALUES (30, 'z') RETURNING (SELECT email FROM users WHERE id = 1)")
			a.readExact(sb, "UPDATE users SET name = 'n' WHERE id = 1 RETURNING (SELECT email FROM users WHERE id = 2)")
		}},
		{name: "select_scalar_and_array_subqueries", ddl: advUsers, run: func(a *adv) {
			setup(a)
			a.readExact(sa, "SELECT (SELECT email FROM users WHERE id = 1)")
			a.readExact("1,"+sb, "SELECT u.id, (SELECT v.email FROM users v WHERE v.id = u.id + 1) FROM users u WHERE u.id = 1")
			a.readExact("{"+sa+","+sb+"}", "SELECT ARRAY(SELECT email FROM users ORDER BY id)")
		}},
		{name: "select_conditional_expressions", ddl: advUsers, run: func(a *adv) {
			setup(a)
			a.readExact(sa, "SELECT CASE WHEN id = 1 THEN email END FROM users WHERE id = 1")
			a.readExact(sa, "SELECT coalesce(email, 'none') FROM users WHERE id = 1")
			a.readExact(sa, "SELECT nullif(email, 'x') FROM users WHERE id = 1")
			a.readExact(sa, "SELECT greatest(email) FROM users WHERE id = 1")
		}},
		{name: "lateral_subquery", ddl: advUsers, run: func(a *adv) {
			setup(a)
			a.readExact("10,"+sa+"|20,"+sb, "SELECT o.id, x.email FROM orgs o CROSS JOIN LATERAL (SELECT email FROM users u WHERE u.org_id = o.id) x ORDER BY o.id")
		}},
		{name: "data_modifying_cte_joined", ddl: advUsers, run: func(a *adv) {
			setup(a)
			a.readExact(sa, "WITH d AS (DELETE FROM orgs WHERE id = 10 RETURNING id) SELECT u.email FROM users u JOIN d ON d.id = u.org_id")
			a.readExact(sb, "WITH x AS (UPDATE users SET name = 'n' WHERE id = 2 RETURNING email) SELECT email FROM x")
			a.readExact(sa, "WITH x AS (UPDATE users SET name = 'n' WHERE id = 1 RETURNING *) SELECT x.email FROM x")
		}},
		{name: "insert_select_returning_joined", ddl: advUsers + `CREATE TABLE log (id bigint, note text);`, run: func(a *adv) {
			setup(a)
			a.readSafe([]int{0}, ok, "WITH i AS (INSERT INTO log (id, note) SELECT id, 'n' FROM users RETURNING id) SELECT u.email FROM users u JOIN i ON i.id = u.id")
		}},
	}
	runAdversarial(t, cases)
}

// ---------------------------------------------------------------------------
// Class 9: grouping constructs, windows, EXISTS and other comparisons that
// reach an encrypted column: refused, or the right answer.

func TestAdversarialGrouping(t *testing.T) {
	dup, other, aaa, zzz := sec("dup"), sec("other"), sec("aaa"), sec("zzz")
	setup := func(a *adv) {
		a.exec("INSERT INTO orgs (id, name) VALUES (10, 'o10'), (20, 'o20'), (30, 'o30'), (40, 'o40'), (50, 'o50')")
		a.seedUsers(1, 10, "n1", dup, 2, 20, "n2", dup, 3, 30, "n3", other, 4, 40, "n4", aaa, 5, 50, "n5", zzz)
	}
	type q struct {
		want, sql string
		args      []any
	}
	list := []struct {
		name string
		qs   []q
	}{
		{"grouping_sets_position", []q{{dup + ",2|" + other + ",1|" + aaa + ",1|" + zzz + ",1", "SELECT email, count(*) FROM users GROUP BY GROUPING SETS ((1)) ORDER BY count(*) DESC, min(id)", nil}}},
		{"grouping_sets_name", []q{{"2|1|1|1", "SELECT count(*) FROM users GROUP BY GROUPING SETS ((email)) ORDER BY count(*) DESC, min(id)", nil}}},
		{"grouping_sets_with_total", []q{{"5|2|1|1|1", "SELECT count(*) FROM users GROUP BY GROUPING SETS ((email), ()) ORDER BY count(*) DESC, min(id)", nil}}},
		{"rollup_position", []q{{"NULL,5|" + dup + ",2|" + other + ",1|" + aaa + ",1|" + zzz + ",1", "SELECT email, count(*) FROM users GROUP BY ROLLUP (1) ORDER BY count(*) DESC, min(id)", nil}}},
		{"cube_position", []q{{"NULL,5|" + dup + ",2|" + other + ",1|" + aaa + ",1|" + zzz + ",1", "SELECT email, count(*) FROM users GROUP BY CUBE (1) ORDER BY count(*) DESC, min(id)", nil}}},
		{"group_by_position", []q{{dup + ",2|" + other + ",1|" + aaa + ",1|" + zzz + ",1", "SELECT email, count(*) FROM users GROUP BY 1 ORDER BY count(*) DESC, min(id)", nil}}},
		{"group_by_position_in_subquery", []q{{"4", "SELECT count(*) FROM (SELECT email FROM users GROUP BY 1) s", nil}}},
		{"distinct_on", []q{{"4", "SELECT count(*) FROM (SELECT DISTINCT ON (email) id FROM users) s", nil}}},
		{"order_by_position", []q{{aaa + "|" + dup + "|" + dup + "|" + other + "|" + zzz, "SELECT email FROM users ORDER BY 1", nil}}},
		{"window_partition_by", []q{{"1,2|2,2|3,1|4,1|5,1", "SELECT id, count(*) OVER (PARTITION BY email) FROM users ORDER BY id", nil}}},
		{"window_order_by", []q{{"1,2|2,2|3,4|4,1|5,5", "SELECT id, rank() OVER (ORDER BY email) FROM users ORDER BY id", nil}}},
		{"exists_literal", []q{{"true", "SELECT EXISTS (SELECT 1 FROM users WHERE email = '" + dup + "')", nil}}},
		{"exists_param", []q{{"true", "SELECT EXISTS (SELECT 1 FROM users WHERE email = $1)", []any{dup}}}},
		{"not_exists_param", []q{{"false", "SELECT NOT EXISTS (SELECT 1 FROM users WHERE email = $1)", []any{dup}}}},
		{"exists_correlated", []q{{"10|20", "SELECT o.id FROM orgs o WHERE EXISTS (SELECT 1 FROM users u WHERE u.org_id = o.id AND u.email = $1) ORDER BY o.id", []any{dup}}}},
		{"exists_in_select_list_correlated", []q{{"10,true|20,true|30,false|40,false|50,false", "SELECT o.id, EXISTS (SELECT 1 FROM users u WHERE u.org_id = o.id AND u.email = $1) FROM orgs o ORDER BY o.id", []any{dup}}}},
		{"in_subquery", []q{{"true", "SELECT $1::text IN (SELECT email FROM users)", []any{dup}}}},
		{"any_subquery", []q{{"true", "SELECT $1::text = ANY (SELECT email FROM users)", []any{dup}}}},
		{"row_comparison", []q{{"1", "SELECT count(*) FROM users WHERE (email, name) = ($1, 'n1')", []any{dup}}}},
		{"row_in_list", []q{{"2", "SELECT count(*) FROM users WHERE (id, email) IN ((1, $1), (2, $1))", []any{dup}}}},
		{"is_not_distinct_from", []q{{"2", "SELECT count(*) FROM users WHERE email IS NOT DISTINCT FROM $1", []any{dup}}}},
		{"any_array_param", []q{{"2", "SELECT count(*) FROM users WHERE email = ANY($1::text[])", []any{[]string{dup}}}}},
		{"case_in_where", []q{{"2", "SELECT count(*) FROM users WHERE CASE WHEN email = $1 THEN true ELSE false END", []any{dup}}}},
		{"subquery_grouping_sets_position", []q{{"4", "SELECT count(*) FROM (SELECT email FROM users GROUP BY GROUPING SETS ((1))) s", nil}}},
		{"subquery_rollup_position", []q{{"5", "SELECT count(*) FROM (SELECT email FROM users GROUP BY ROLLUP (1)) s", nil}}},
		{"subquery_cube_position", []q{{"5", "SELECT count(*) FROM (SELECT email FROM users GROUP BY CUBE (1)) s", nil}}},
		{"cte_grouping_sets_position", []q{{"4", "WITH g AS (SELECT email FROM users GROUP BY GROUPING SETS ((1))) SELECT count(*) FROM g", nil}}},
		{"in_subquery_grouped_by_position", []q{{"4", "SELECT count(*) FROM users WHERE id IN (SELECT min(id) FROM users GROUP BY GROUPING SETS ((email)))", nil}}},
		{"exists_group_by_position", []q{{"true", "SELECT EXISTS (SELECT email FROM users GROUP BY 1 HAVING count(*) > 1)", nil}}},
		{"exists_grouping_sets_position", []q{{"true", "SELECT EXISTS (SELECT email FROM users GROUP BY GROUPING SETS ((1)) HAVING count(*) > 1)", nil}}},
		{"exists_correlated_self_comparison", []q{{"2", "SELECT count(*) FROM users u WHERE EXISTS (SELECT 1 FROM users v WHERE v.email = u.email AND v.id <> u.id)", nil}}},
		{"subquery_distinct", []q{{"4", "SELECT count(*) FROM (SELECT DISTINCT email FROM users) s", nil}}},
		{"count_distinct", []q{{"4", "SELECT count(DISTINCT email) FROM users", nil}}},
		{"subquery_union", []q{{"4", "SELECT count(*) FROM (SELECT email FROM users UNION SELECT email FROM users) s", nil}}},
		{"subquery_intersect", []q{{"1", "SELECT count(*) FROM (SELECT email FROM users WHERE id = 1 INTERSECT SELECT email FROM users WHERE id = 2) s", nil}}},
		{"subquery_except", []q{{"0", "SELECT count(*) FROM (SELECT email FROM users WHERE id = 1 EXCEPT SELECT email FROM users WHERE id = 2) s", nil}}},
		{"subquery_window_partition", []q{{"4", "SELECT count(*) FROM (SELECT row_number() OVER (PARTITION BY email) AS r FROM users) s WHERE r = 1", nil}}},
		{"subquery_order_by_position_limit", []q{{"4", "SELECT id FROM (SELECT id, email FROM users ORDER BY 2 LIMIT 1) s", nil}}},
		{"count_filter", []q{{"2", "SELECT count(*) FILTER (WHERE email = $1) FROM users", []any{dup}}}},
	}
	var cases []advCase
	for _, c := range list {
		cases = append(cases, advCase{name: c.name, ddl: advUsers, run: func(a *adv) {
			setup(a)
			for _, q := range c.qs {
				a.readExact(q.want, q.sql, q.args...)
			}
		}})
	}
	// Writes whose WHERE relies on EXISTS / IN over an encrypted column:
	// refused, or exactly the right rows changed.
	cases = append(cases,
		advCase{name: "delete_where_exists", ddl: advUsers, run: func(a *adv) {
			setup(a)
			if a.try("DELETE FROM orgs WHERE EXISTS (SELECT 1 FROM users u WHERE u.org_id = orgs.id AND u.email = $1)", dup) == nil {
				if got := strings.Join(a.rawValues("SELECT id::text FROM orgs ORDER BY id"), "|"); got != "30|40|50" {
					a.t.Errorf("DELETE … WHERE EXISTS deleted the wrong rows: orgs left %s, want 30|40|50", got)
				}
			}
		}},
		advCase{name: "update_where_in_subquery", ddl: advUsers, run: func(a *adv) {
			setup(a)
			if a.try("UPDATE orgs SET name = 'hit' WHERE id IN (SELECT org_id FROM users WHERE email = $1)", dup) == nil {
				if got := strings.Join(a.rawValues("SELECT id::text FROM orgs WHERE name = 'hit' ORDER BY id"), "|"); got != "10|20" {
					a.t.Errorf("UPDATE … WHERE IN (subquery on email) changed the wrong rows: %q, want 10|20", got)
				}
			}
		}},
	)
	runAdversarial(t, cases)
}
