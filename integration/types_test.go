package integration

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/providers"
	"github.com/kmspostgres/kmspostgres/providers/testkey"
)

const typesDDL = `CREATE TABLE vals (
	id bigint PRIMARY KEY,
	t text, b bytea, i2 text, i4 text, i8 text, f4 text, f8 text, n text, bo text,
	d text, ts text, tz text, tm text, u text, j text, jb bytea,
	encrypted_kms_key text)`

const typesMap = `key_id: insecure-test-key
tables:
  vals:
    columns:
      t: {type: text}
      b: {type: bytea}
      i2: {type: smallint}
      i4: {type: integer}
      i8: {type: bigint}
      f4: {type: real}
      f8: {type: double precision}
      n: {type: numeric}
      bo: {type: boolean}
      d: {type: date}
      ts: {type: timestamp}
      tz: {type: timestamptz}
      tm: {type: time}
      u: {type: uuid}
      j: {type: json}
      jb: {type: jsonb}
`

type nullableEmail struct{ s string }

func (n *nullableEmail) Scan(v any) error {
	if v == nil {
		n.s = "<nil>"
		return nil
	}
	n.s = "scanned:" + v.(string)
	return nil
}

func TestTypes(t *testing.T) {
	for _, mode := range execModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel() // each mode owns its schema
			e := newEnv(t, typesDDL, typesMap, "default_query_exec_mode="+mode)
			tz := time.Date(2024, 2, 29, 23, 59, 58, 123456789, time.FixedZone("X", 5*3600+1800))
			big := "123456789012345678901234567890.000000000000000000001"
			e.exec(`INSERT INTO vals (id, t, b, i2, i4, i8, f4, f8, n, bo, d, ts, tz, tm, u, j, jb)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`,
				1, "héllo", []byte{0, 1, 2}, int16(-32768), int32(7), int64(math.MaxInt64), float32(0.1), math.Inf(-1), big, true,
				time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC), tz, tz, "13:14:15.123456", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
				`{"b": 1, "a": [true]}`, map[string]int{"x": 1})
			e.exec(`INSERT INTO vals (id, t, b, n) VALUES (2, '', $1, 'NaN')`, []byte{})
			e.exec(`INSERT INTO vals (id) VALUES (3)`)
			e.assertNoPlaintext("vals", "héllo", big, "13:14:15", "a0eebc99", `"a": [true]`)

			var (
				s      string
				b      []byte
				i2, i4 int16
				i8     int64
				f4, f8 float64
				n      string
				bo     bool
				d, ts  time.Time
				tzv    time.Time
				tm     time.Time
				u      string
				j      json.RawMessage
				jb     []byte
			)
			err := e.db.QueryRow("SELECT t, b, i2, i4, i8, f4, f8, n, bo, d, ts, tz, tm, u, j, jb FROM vals WHERE id = 1").
				Scan(&s, &b, &i2, &i4, &i8, &f4, &f8, &n, &bo, &d, &ts, &tzv, &tm, &u, &j, &jb)
			if err != nil {
				t.Fatal(err)
			}
			if s != "héllo" || !reflect.DeepEqual(b, []byte{0, 1, 2}) || i2 != -32768 || i4 != 7 || i8 != math.MaxInt64 ||
				f4 != float64(float32(0.1)) || !math.IsInf(f8, -1) || n != big || !bo {
				t.Fatalf("scalars: %q %v %d %d %d %v %v %q %v", s, b, i2, i4, i8, f4, f8, n, bo)
			}
			if !d.Equal(time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC)) ||
				!ts.Equal(time.Date(2024, 2, 29, 23, 59, 58, 123456000, time.UTC)) ||
				!tzv.Equal(tz.Truncate(time.Microsecond)) ||
				tm.Hour() != 13 || tm.Nanosecond() != 123456000 {
				t.Fatalf("times: %v %v %v %v", d, ts, tzv, tm)
			}
			if u != "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11" || string(j) != `{"b": 1, "a": [true]}` || string(jb) != `{"x":1}` {
				t.Fatalf("uuid/json: %q %s %s", u, j, jb)
			}
			// Empty values are encrypted and come back empty, not NULL.
			var es sql.NullString
			var eb []byte
			var nn string
			if err := e.db.QueryRow("SELECT t, b, n FROM vals WHERE id = 2").Scan(&es, &eb, &nn); err != nil || !es.Valid || es.String != "" || eb == nil || len(eb) != 0 || nn != "NaN" {
				t.Fatalf("empty values: %#v %#v %q %v", es, eb, nn, err)
			}
			if raw := e.rawValues("SELECT t FROM vals WHERE id = 2"); raw[0] == "" || raw[0] == "<NULL>" {
				t.Fatalf("empty string stored as %q", raw[0])
			}
			// NULL scans into sql.Null*, pointers and custom Scanners.
			var ns sql.NullString
			var nt sql.NullTime
			var pi *int64
			var cs nullableEmail
			if err := e.db.QueryRow("SELECT t, d, i8, t FROM vals WHERE id = 3").Scan(&ns, &nt, &pi, &cs); err != nil || ns.Valid || nt.Valid || pi != nil || cs.s != "<nil>" {
				t.Fatalf("NULLs: %v %v %v %q %v", ns, nt, pi, cs.s, err)
			}
			if err := e.db.QueryRow("SELECT t FROM vals WHERE id = 1").Scan(&cs); err != nil || cs.s != "scanned:héllo" {
				t.Fatalf("Scanner: %q %v", cs.s, err)
			}
			// Column types report the plaintext type.
			rows, err := e.db.Query("SELECT id, t, b, i8, f8, n, bo, d, tz, u, jb, i2, i4, f4 FROM vals")
			if err != nil {
				t.Fatal(err)
			}
			cts, _ := rows.ColumnTypes()
			rows.Close()
			var names, scans []string
			for _, ct := range cts {
				names = append(names, ct.DatabaseTypeName())
				scans = append(scans, ct.ScanType().String())
			}
			if strings.Join(names, ",") != "INT8,TEXT,BYTEA,INT8,FLOAT8,NUMERIC,BOOL,DATE,TIMESTAMPTZ,UUID,JSONB,INT2,INT4,FLOAT4" {
				t.Fatalf("database type names: %v", names)
			}
			// The same scan types pgx's own driver reports for the plain types.
			if strings.Join(scans[1:], ",") != "string,[]uint8,int64,float64,string,bool,time.Time,time.Time,string,[]uint8,int16,int32,float32" {
				t.Fatalf("scan types: %v", scans)
			}
			// A wrong type is refused before anything is written.
			_, err = e.db.Exec("INSERT INTO vals (id, i2) VALUES (9, $1)", 100000)
			mustErrIs(t, err, kmspostgres.ErrFormat)
			if !strings.Contains(err.Error(), "vals.i2") || strings.Contains(err.Error(), "100000") {
				t.Fatalf("error should name the column and not quote the value: %v", err)
			}
			if got := e.rawValues("SELECT count(*)::text FROM vals"); got[0] != "3" {
				t.Fatalf("rows: %v", got)
			}
		})
	}
}

func TestOnConflict(t *testing.T) {
	e := newEnv(t, usersDDL+"CREATE UNIQUE INDEX ON users (name);", usersMap)
	e.exec("INSERT INTO users (id, name, email) VALUES (1, 'a', 'a@x')")
	// DO NOTHING.
	e.exec("INSERT INTO users (id, name, email) VALUES (1, 'z', 'z@x') ON CONFLICT DO NOTHING")
	// DO UPDATE on the primary key replaces cells and key together.
	e.exec("INSERT INTO users (id, name, email, dob, balance) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, dob = EXCLUDED.dob, balance = EXCLUDED.balance, name = EXCLUDED.name",
		1, "a2", "a2@x", "2001-01-01", "5")
	e.exec("INSERT INTO users (id, name, email, dob, balance) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, dob = EXCLUDED.dob, balance = EXCLUDED.balance",
		2, "b", "b@x", nil, nil)
	if got := e.strings("SELECT id, name, email, dob, balance FROM users ORDER BY id"); got != "1,a2,a2@x,2001-01-01T00:00:00Z,5|2,b,b@x,NULL,NULL" {
		t.Fatalf("upsert: %s", got)
	}
	// Plain columns on any target.
	e.exec("INSERT INTO users (id, name) VALUES (3, 'b') ON CONFLICT (name) DO UPDATE SET org_id = 9")
	// Refused: another target writing an encrypted column; a partial key.
	for _, q := range []string{
		"INSERT INTO users (id, name, email) VALUES (4, 'b', 'x') ON CONFLICT (name) DO UPDATE SET email = EXCLUDED.email",
		"INSERT INTO users (id, name, email) VALUES (1, 'q', 'x') ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email",
	} {
		_, err := e.db.Exec(q)
		mustErrIs(t, err, kmspostgres.ErrUnsupported)
	}
	if got := e.strings("SELECT id, org_id, email FROM users ORDER BY id"); got != "1,NULL,a2@x|2,9,b@x" {
		t.Fatalf("after: %s", got)
	}
}

func TestPrimaryKeyKinds(t *testing.T) {
	e := newEnv(t, `
		CREATE TABLE a (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, s text, encrypted_kms_key text);
		CREATE TABLE b (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), s text, encrypted_kms_key text);
		CREATE TABLE c (org text, n int, s text, encrypted_kms_key text, PRIMARY KEY (org, n));
		CREATE TABLE d (id int PRIMARY KEY, s text, encrypted_kms_key text);
		CREATE SEQUENCE e_seq; CREATE TABLE e (id bigint PRIMARY KEY DEFAULT nextval('e_seq'), s text, encrypted_kms_key text);`,
		`key_id: insecure-test-key
tables:
  a: {columns: {s: {}}}
  b: {columns: {s: {}}}
  c: {primary_key: [org, n], columns: {s: {}}}
  d: {columns: {s: {}}}
  e: {columns: {s: {}}}
`)
	e.exec("INSERT INTO a (s) VALUES ('one'), ('two')")
	e.exec("INSERT INTO b (s) VALUES ('uuid')")
	e.exec("INSERT INTO b (id, s) VALUES ('A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', 'upper')")
	e.exec("INSERT INTO c (org, n, s) VALUES ($1, $2, $3)", "acme", 7, "composite")
	e.exec("INSERT INTO e (s) VALUES ('seq')")
	_, err := e.db.Exec("INSERT INTO d (s) VALUES ('x')")
	mustErrIs(t, err, kmspostgres.ErrUnsupported)
	if got := e.strings("SELECT id, s FROM a ORDER BY id"); got != "1,one|2,two" {
		t.Fatalf("identity: %s", got)
	}
	if got := e.strings("SELECT s FROM b ORDER BY id = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"); got != "uuid|upper" {
		t.Fatalf("uuid: %s", got)
	}
	if got := e.strings("SELECT org, n, s FROM c"); got != "acme,7,composite" {
		t.Fatalf("composite: %s", got)
	}
	if got := e.strings("SELECT s FROM e"); got != "seq" {
		t.Fatalf("nextval default: %s", got)
	}
	// Ids come from the sequence in blocks; a plain pgx insert still gets its own.
	if _, err := e.raw.Exec(context.Background(), "INSERT INTO a (s) VALUES (NULL)"); err != nil {
		t.Fatal(err)
	}
}

func TestSchemaMismatch(t *testing.T) {
	cases := map[string]struct{ ddl, want string }{
		"missing table":     {"", "no such table"},
		"missing column":    {"CREATE TABLE users (id int PRIMARY KEY, encrypted_kms_key text)", "encrypted column email does not exist"},
		"wrong storage":     {"CREATE TABLE users (id int PRIMARY KEY, email int, encrypted_kms_key text)", "stored as integer"},
		"missing key col":   {"CREATE TABLE users (id int PRIMARY KEY, email text)", "key column encrypted_kms_key (key kms_key) does not exist"},
		"default on cell":   {"CREATE TABLE users (id int PRIMARY KEY, email text DEFAULT 'x', encrypted_kms_key text)", "has a default"},
		"unsupported pk":    {"CREATE TABLE users (id date PRIMARY KEY, email text, encrypted_kms_key text)", "primary-key column id is date"},
		"missing pk column": {"CREATE TABLE users (uid int PRIMARY KEY, email text, encrypted_kms_key text)", "primary-key column id does not exist"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, c.ddl, "key_id: insecure-test-key\ntables:\n  users:\n    columns:\n      email: {}\n")
			_, err := e.db.Exec("SELECT email FROM users")
			if !errors.Is(err, kmspostgres.ErrSchema) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "users") {
				t.Fatalf("err = %v, want ErrSchema with %q", err, c.want)
			}
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap)
	e.db.SetMaxOpenConns(8)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				email := fmt.Sprintf("g%d-%d@x", g, i)
				var id int64
				if err := e.db.QueryRow("INSERT INTO users (name, email) VALUES ($1, $2) RETURNING id", "n", email).Scan(&id); err != nil {
					errs <- err
					return
				}
				if i%3 == 0 {
					if _, err := e.db.Exec("UPDATE users SET phone = $1 WHERE id = $2", []byte(email), id); err != nil {
						errs <- err
						return
					}
				}
				var got string
				if err := e.db.QueryRow("SELECT email FROM users WHERE id = $1", id).Scan(&got); err != nil || got != email {
					errs <- fmt.Errorf("read %q: %v", got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := e.strings("SELECT count(*), count(DISTINCT id) FROM users"); got != "320,320" {
		t.Fatalf("rows: %s", got)
	}
}

func TestAuditAndUnwrapDedup(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap)
	for i := range 50 {
		e.exec("INSERT INTO users (name, email, phone) VALUES ($1, $2, $3)", "n", fmt.Sprintf("u%d@x", i), []byte("p"))
	}
	// One wrap per inserted row and key.
	if w := e.events.Count(providers.OpWrap); w != 100 {
		t.Fatalf("wraps: %d, want 100", w)
	}
	e.events.Reset()
	// A self-join reads every row key twice per row: each is unwrapped once.
	got := e.strings("SELECT a.email, b.email, a.phone FROM users a JOIN users b ON a.id = b.id")
	if strings.Count(got, "|") != 49 {
		t.Fatalf("rows: %d", strings.Count(got, "|")+1)
	}
	if u := e.events.Count(providers.OpUnwrap); u != 100 {
		t.Fatalf("unwraps: %d, want 100 (50 rows x 2 keys, deduplicated)", u)
	}
}

func TestSlowKMSUnwrapsConcurrently(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap)
	for i := range 200 {
		e.exec("INSERT INTO users (name, email) VALUES ($1, $2)", "n", fmt.Sprintf("u%d@x", i))
	}
	slow := &concurrencyMeter{Provider: testkey.New(testkey.WithLatency(2 * time.Millisecond))}
	db := e.open(kmspostgres.WithProvider(slow))
	defer db.Close()
	rows, err := db.Query("SELECT id, email FROM users")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		n++
	}
	if err := rows.Err(); err != nil || n != 200 {
		t.Fatalf("%d rows, %v", n, err)
	}
	// Assert on overlap, not on time: unwraps ran side by side.
	if slow.max.Load() < 4 {
		t.Fatalf("at most %d unwraps ran at once; want concurrency", slow.max.Load())
	}
}

func TestRawConnAndPing(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap)
	ctx := context.Background()
	if err := e.db.PingContext(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := e.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	err = conn.Raw(func(dc any) error {
		pc := dc.(interface{ Conn() *pgx.Conn }).Conn()
		return pc.Ping(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	// The registered driver name and the DSN parameter work with sql.Open.
	db, err := sql.Open("kmspostgres", e.dsn())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	t.Setenv("KMS_KEY_ID", "insecure-test-key")
	if _, err := db.Exec("INSERT INTO users (name, email) VALUES ('o', 'open@x')"); err != nil {
		t.Fatal(err)
	}
	var s string
	if err := db.QueryRow("SELECT email FROM users").Scan(&s); err != nil || s != "open@x" {
		t.Fatalf("%q %v", s, err)
	}
	_ = stdlib.GetDefaultDriver
}

// TestNullValuers: sql.Null* with Valid false, nil pointers and nil-pointer
// Valuers are NULL, not values to encrypt (found by the sqlc suite).
func TestNullValuers(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap)
	var nilStr *string
	var nilValuer *sql.NullString
	e.exec("INSERT INTO users (id, name, email, dob, balance, phone) VALUES (1, 'a', $1, $2, $3, $4)",
		sql.NullString{}, sql.NullTime{}, nilStr, nilValuer)
	if got := e.rawValues("SELECT coalesce(email, 'NULL') || coalesce(dob, 'NULL') || coalesce(balance, 'NULL') || coalesce(encrypted_kms_key, 'NULL') FROM users"); got[0] != "NULLNULLNULLNULL" {
		t.Fatalf("stored %v: NULLs must stay NULL, with no data key", got)
	}
	s := "set"
	e.exec("UPDATE users SET email = $1 WHERE id = 1", &s)
	e.exec("UPDATE users SET dob = $1 WHERE id = 1", sql.NullTime{Time: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), Valid: true})
	e.exec("UPDATE users SET balance = $1 WHERE id = 1", sql.NullString{})
	if got := e.strings("SELECT email, dob, balance FROM users"); got != "set,2000-01-01T00:00:00Z,NULL" {
		t.Fatalf("after updates: %s", got)
	}
}

// TestWindowValuesOwnMemory: the cells of a window are decoded through one
// scratch buffer; every value handed out (text json as bytes, bytea) must
// own its memory, so a later row cannot overwrite an earlier one.
func TestWindowValuesOwnMemory(t *testing.T) {
	e := newEnv(t, typesDDL, typesMap)
	for i := 1; i <= 40; i++ {
		e.exec(`INSERT INTO vals (id, j, b) VALUES ($1, $2, $3)`, i, fmt.Sprintf(`{"n": %d}`, i), []byte(fmt.Sprintf("bytes %d", i)))
	}
	rows, err := e.db.Query("SELECT id, j, b FROM vals ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var js []json.RawMessage
	var bs [][]byte
	for rows.Next() {
		var id int
		var j sql.RawBytes
		var b []byte
		if err := rows.Scan(&id, &j, &b); err != nil {
			t.Fatal(err)
		}
		js, bs = append(js, json.RawMessage(slices.Clone(j))), append(bs, b)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for i := range js {
		if string(js[i]) != fmt.Sprintf(`{"n": %d}`, i+1) || string(bs[i]) != fmt.Sprintf("bytes %d", i+1) {
			t.Fatalf("row %d: j %s, b %q", i+1, js[i], bs[i])
		}
	}
}
