package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/providers"
	"github.com/kmspostgres/kmspostgres/providers/vault"
)

// legacyDDL is a table as it was before kmspostgres: typed plaintext
// columns. shadow keeps a typed copy of every row to compare against.
const legacyDDL = `
CREATE TABLE patients (
	id bigint PRIMARY KEY, name text, email text, dob date, visits integer,
	balance numeric, active boolean, seen timestamptz, photo bytea, notes jsonb
);
INSERT INTO patients
SELECT i, 'name ' || i,
	CASE WHEN i %% 7 = 0 OR i %% 50 = 0 THEN NULL ELSE 'user' || i || '@example.com' END,
	CASE WHEN i %% 50 = 0 THEN NULL ELSE date '1950-01-01' + i END,
	CASE WHEN i %% 50 = 0 THEN NULL ELSE i * 3 END,
	CASE WHEN i %% 50 = 0 THEN NULL ELSE (i || '.50')::numeric END,
	CASE WHEN i %% 50 = 0 THEN NULL ELSE i %% 2 = 0 END,
	CASE WHEN i %% 50 = 0 THEN NULL ELSE timestamptz '2020-01-01 10:00:00.123456+02' + i * interval '1 minute' END,
	CASE WHEN i %% 50 = 0 THEN NULL ELSE decode(lpad(to_hex(i), 8, '0'), 'hex') END,
	CASE WHEN i %% 50 = 0 OR i %% 7 = 0 THEN NULL ELSE jsonb_build_object('n', i, 'tag', 'x') END
FROM generate_series(1, %d) i;
CREATE TABLE shadow AS SELECT * FROM patients;
ALTER TABLE shadow ADD PRIMARY KEY (id);
`

// adoptDDL is the migration the README's guide gives: a key column, and
// every typed encrypted column changed to text in its text form (bytea
// stays bytea).
const adoptDDL = `
ALTER TABLE patients ADD COLUMN encrypted_kms_key text;
ALTER TABLE patients
	ALTER COLUMN dob TYPE text USING dob::text,
	ALTER COLUMN visits TYPE text USING visits::text,
	ALTER COLUMN balance TYPE text USING balance::text,
	ALTER COLUMN active TYPE text USING active::text,
	ALTER COLUMN seen TYPE text USING seen::text,
	ALTER COLUMN notes TYPE text USING notes::text;
`

const patientsMap = `
key_id: insecure-test-key
tables:
  patients:
    migrating: true
    columns:
      email: {}
      dob: {type: date}
      visits: {type: integer}
      balance: {type: numeric}
      active: {type: boolean}
      seen: {type: timestamptz}
      photo: {type: bytea}
      notes: {type: jsonb}
`

const patientCols = "id, email, dob, visits, balance, active, seen, photo, notes"

// shadowQuery reads the shadow in the Go types the driver returns.
const shadowQuery = "SELECT id, email, dob, visits::bigint, balance::text, active, seen, photo, notes::text FROM shadow ORDER BY id"

func legacyEnv(t *testing.T, rows int, yaml string) *env {
	t.Helper()
	return newEnv(t, fmt.Sprintf(legacyDDL, rows)+adoptDDL, yaml)
}

// canon renders a row's values in one form whatever returned them.
func canon(vals []any) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		switch x := v.(type) {
		case nil:
			parts[i] = "NULL"
		case time.Time:
			parts[i] = x.UTC().Format(time.RFC3339Nano)
		case []byte:
			parts[i] = fmt.Sprintf("%q", x)
		default:
			parts[i] = fmt.Sprintf("%q", fmt.Sprint(x))
		}
	}
	return strings.Join(parts, " ")
}

// driverRows reads every patient through the driver, by id.
func driverRows(db *sql.DB) (map[int64]string, error) {
	rows, err := db.Query("SELECT " + patientCols + " FROM patients ORDER BY id")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]string{}
	for rows.Next() {
		vals := make([]any, 9)
		ptrs := make([]any, 9)
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		out[vals[0].(int64)] = canon(vals)
	}
	return out, rows.Err()
}

// shadowRows reads the shadow copy over a raw connection, by id.
func shadowRows(t *testing.T, conn *pgx.Conn) map[int64]string {
	t.Helper()
	rows, err := conn.Query(context.Background(), shadowQuery)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]string{}
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		out[vals[0].(int64)] = canon(vals)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	return out
}

// sameAsShadow compares every row read through the driver with the shadow
// and returns how many differ or are missing.
func sameAsShadow(t *testing.T, e *env, db *sql.DB) int {
	t.Helper()
	got, err := driverRows(db)
	if err != nil {
		t.Fatalf("reading through the driver: %v", err)
	}
	want := shadowRows(t, e.raw)
	bad := 0
	for id, w := range want {
		if got[id] != w {
			if bad < 3 {
				t.Errorf("row %d:\n got %s\nwant %s", id, got[id], w)
			}
			bad++
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d rows through the driver, %d in the shadow", len(got), len(want))
		bad++
	}
	return bad
}

func TestMigratingRead(t *testing.T) {
	e := legacyEnv(t, 120, patientsMap)
	if bad := sameAsShadow(t, e, e.db); bad != 0 {
		t.Fatalf("%d legacy rows read wrong in migrating mode", bad)
	}
	// Writes encrypt as usual.
	e.exec("INSERT INTO patients (id, name, email, dob) VALUES (1000, 'n', 'new@example.com', '2001-02-03')")
	e.rawExec("INSERT INTO shadow (id, name, email, dob) VALUES (1000, 'n', 'new@example.com', '2001-02-03')")
	e.assertNoPlaintext("patients", "new@example.com", "2001-02-03")
	if bad := sameAsShadow(t, e, e.db); bad != 0 {
		t.Fatal("mixed rows read wrong")
	}
	// A partial UPDATE of legacy rows encrypts every column under the key,
	// not only those it sets.
	e.exec("UPDATE patients SET email = 'x@example.com' WHERE id IN (3, 4)")
	e.rawExec("UPDATE shadow SET email = 'x@example.com' WHERE id IN (3, 4)")
	if got := e.rawValues("SELECT count(*)::text FROM patients WHERE id IN (3, 4) AND encrypted_kms_key IS NOT NULL AND dob NOT LIKE '19%' AND notes NOT LIKE '{%'"); got[0] != "2" {
		t.Fatalf("%s of 2 rows encrypted by a partial UPDATE", got[0])
	}
	e.assertNoPlaintext("patients", "x@example.com", "1950-01-04", "1950-01-05")
	if bad := sameAsShadow(t, e, e.db); bad != 0 {
		t.Fatal("rows read wrong after a partial UPDATE of legacy rows")
	}
	// A cell beside a cleared key column is not plaintext.
	e.rawExec("UPDATE patients SET encrypted_kms_key = NULL WHERE id = 1000")
	_, err := driverRows(e.db)
	mustErrIs(t, err, kmspostgres.ErrDecrypt)
	if !strings.Contains(err.Error(), "cleared") || strings.Contains(err.Error(), "new@example.com") {
		t.Fatalf("cleared key column: %v", err)
	}
	e.rawExec("DELETE FROM patients WHERE id = 1000")
	// Without migrating, plaintext beside a NULL key is an error, and a
	// partial UPDATE of a legacy row is refused.
	e.setMap(strings.Replace(patientsMap, "    migrating: true\n", "", 1))
	_, err = driverRows(e.db)
	mustErrIs(t, err, kmspostgres.ErrDecrypt)
	_, err = e.db.Exec("UPDATE patients SET email = 'y@example.com' WHERE id = 5")
	var re *kmspostgres.RefusalError
	if !errorsAs(err, &re) {
		t.Fatalf("partial update of a legacy row without migrating: %v", err)
	}
}

func TestEncryptDecryptRoundTrip(t *testing.T) {
	const n = 400
	e := legacyEnv(t, n, patientsMap)
	ctx := context.Background()
	c := e.connector(kmspostgres.WithProvider(e.kms))
	withValues := n - n/50 // rows 50, 100, … have no encrypted values
	var progress int
	st, err := c.Encrypt(ctx, "patients", kmspostgres.BackfillOptions{BatchSize: 37, Concurrency: 4, Progress: func(kmspostgres.BackfillStats) { progress++ }})
	if err != nil {
		t.Fatal(err)
	}
	if st.Done != int64(withValues) || st.Total != int64(withValues) || st.Failed != 0 || st.Changed != 0 || st.KMSCalls != int64(withValues) {
		t.Fatalf("encrypt: %+v", st)
	}
	if progress != 1+(withValues+36)/37 {
		t.Errorf("progress called %d times", progress)
	}
	e.assertNoPlaintext("patients", "user1@example.com", "user399@example.com", "1950-01-02")
	if got := e.rawValues("SELECT count(*)::text FROM patients WHERE encrypted_kms_key IS NULL"); got[0] != fmt.Sprint(n/50) {
		t.Fatalf("rows without a key: %v", got)
	}
	// Every row is encrypted: it reads without migrating mode.
	e.setMap(strings.Replace(patientsMap, "    migrating: true\n", "", 1))
	if bad := sameAsShadow(t, e, e.db); bad != 0 {
		t.Fatalf("%d rows differ after encrypt", bad)
	}
	if st, err := c.Encrypt(ctx, "patients", kmspostgres.BackfillOptions{}); err != nil || st.Done != 0 || st.Total != 0 || st.KMSCalls != 0 {
		t.Fatalf("second encrypt: %+v %v", st, err)
	}
	// Reencrypt: a fresh key and fresh cells for every row.
	keysBefore := e.rawValues("SELECT encrypted_kms_key || email FROM patients WHERE email IS NOT NULL ORDER BY id")
	if st, err := c.Reencrypt(ctx, "patients", kmspostgres.BackfillOptions{DryRun: true}); err != nil || st.Done != int64(withValues) || st.KMSCalls != 0 {
		t.Fatalf("reencrypt dry run: %+v %v", st, err)
	}
	if st, err := c.Reencrypt(ctx, "patients", kmspostgres.BackfillOptions{BatchSize: 64}); err != nil || st.Done != int64(withValues) || st.KMSCalls != 2*int64(withValues) {
		t.Fatalf("reencrypt: %+v %v", st, err)
	}
	keysAfter := e.rawValues("SELECT encrypted_kms_key || email FROM patients WHERE email IS NOT NULL ORDER BY id")
	for i := range keysBefore {
		if keysBefore[i] == keysAfter[i] {
			t.Fatalf("row %d kept its key and cell", i)
		}
	}
	if bad := sameAsShadow(t, e, e.db); bad != 0 {
		t.Fatalf("%d rows differ after reencrypt", bad)
	}
	// And back out: plaintext in the text form of each type, castable back.
	if st, err := c.Decrypt(ctx, "patients", kmspostgres.BackfillOptions{BatchSize: 50}); err != nil || st.Done != int64(withValues) {
		t.Fatalf("decrypt: %+v %v", st, err)
	}
	if st, err := c.Decrypt(ctx, "patients", kmspostgres.BackfillOptions{}); err != nil || st.Done != 0 {
		t.Fatalf("second decrypt: %+v %v", st, err)
	}
	e.setMap(patientsMap)
	if bad := sameAsShadow(t, e, e.db); bad != 0 {
		t.Fatalf("%d rows differ after decrypt", bad)
	}
	e.rawExec(`ALTER TABLE patients DROP COLUMN encrypted_kms_key,
		ALTER COLUMN dob TYPE date USING dob::date, ALTER COLUMN visits TYPE integer USING visits::integer,
		ALTER COLUMN balance TYPE numeric USING balance::numeric, ALTER COLUMN active TYPE boolean USING active::boolean,
		ALTER COLUMN seen TYPE timestamptz USING seen::timestamptz, ALTER COLUMN notes TYPE jsonb USING notes::jsonb`)
	if got := e.rawValues(`SELECT count(*)::text FROM patients p FULL JOIN shadow s USING (id)
		WHERE (p.name, p.email, p.dob, p.visits, p.balance, p.active, p.seen, p.photo, p.notes)
		IS DISTINCT FROM (s.name, s.email, s.dob, s.visits, s.balance, s.active, s.seen, s.photo, s.notes)`); got[0] != "0" {
		t.Fatalf("%s rows differ from the original table after decrypt and ALTER back", got[0])
	}
}

// writer writes through the driver while a backfill runs, and mirrors
// every write that succeeded into the plaintext shadow table.
type writer struct {
	t       *testing.T
	db      *sql.DB
	shadow  *pgx.Conn
	nextID  int64
	maxID   int64
	writes  atomic.Int64
	refused atomic.Int64
	stop    chan struct{}
	done    sync.WaitGroup
}

func (w *writer) start() {
	w.stop = make(chan struct{})
	w.done.Add(1)
	go func() {
		defer w.done.Done()
		ctx := context.Background()
		rng := rand.New(rand.NewPCG(1, uint64(w.nextID)))
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			id := rng.Int64N(w.maxID) + 1
			email := fmt.Sprintf("w%d-%d@example.com", id, i)
			dob := time.Date(1960+i%40, 1+time.Month(i%12), 1+i%28, 0, 0, 0, 0, time.UTC)
			seen := time.Date(2024, 1, 1, 0, 0, i, 123000, time.UTC)
			args := []any{email, dob, int64(i), fmt.Sprintf("%d.25", i), i%3 == 0, seen, []byte{byte(i), 1, 2}, fmt.Sprintf(`{"w": %d}`, i), id}
			var err error
			var shadowSQL string
			switch op := rng.IntN(10); {
			case op < 2: // insert a new row
				w.nextID++
				args[len(args)-1] = w.nextID
				_, err = w.db.ExecContext(ctx, "INSERT INTO patients (email, dob, visits, balance, active, seen, photo, notes, id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)", args...)
				shadowSQL = "INSERT INTO shadow (email, dob, visits, balance, active, seen, photo, notes, id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)"
			case op < 4: // a partial update: refused on a row not yet encrypted
				_, err = w.db.ExecContext(ctx, "UPDATE patients SET email = $1 WHERE id = $2", email, id)
				args = []any{email, id}
				shadowSQL = "UPDATE shadow SET email = $1 WHERE id = $2"
			default: // every encrypted column
				_, err = w.db.ExecContext(ctx, "UPDATE patients SET email = $1, dob = $2, visits = $3, balance = $4, active = $5, seen = $6, photo = $7, notes = $8 WHERE id = $9", args...)
				shadowSQL = "UPDATE shadow SET email = $1, dob = $2, visits = $3, balance = $4, active = $5, seen = $6, photo = $7, notes = $8::jsonb WHERE id = $9"
			}
			var re *kmspostgres.RefusalError
			if errors.As(err, &re) {
				w.refused.Add(1)
				continue
			}
			if err != nil {
				w.t.Errorf("writer: %v", err)
				return
			}
			if _, err := w.shadow.Exec(ctx, shadowSQL, args...); err != nil {
				w.t.Errorf("shadow: %v", err)
				return
			}
			w.writes.Add(1)
		}
	}()
}

// await waits (up to a second) for the writer's next write, so that
// every round of a backfill has a write between it and the next.
func (w *writer) await() {
	seen := w.writes.Load() + w.refused.Load()
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		if w.writes.Load()+w.refused.Load() > seen {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func (w *writer) halt() {
	close(w.stop)
	w.done.Wait()
}

// TestBackfillConcurrentWriter runs each backfill while a writer inserts
// and updates through the driver, interrupts it part-way, restarts it, and
// compares every row with the plaintext shadow: no lost update, no value
// encrypted twice, no unreadable row.
func TestBackfillConcurrentWriter(t *testing.T) {
	const n = 3000
	e := legacyEnv(t, n, patientsMap)
	shadowConn, err := pgx.Connect(context.Background(), e.base)
	if err != nil {
		t.Fatal(err)
	}
	defer shadowConn.Close(context.Background())
	c := e.connector(kmspostgres.WithProvider(e.kms))
	w := &writer{t: t, db: e.db, shadow: shadowConn, nextID: 100_000, maxID: n}
	opts := kmspostgres.BackfillOptions{BatchSize: 50, Concurrency: 4, KMSRate: 5_000}

	phase := func(name string, run func(context.Context, string, kmspostgres.BackfillOptions) (kmspostgres.BackfillStats, error)) {
		t.Helper()
		before, refusedBefore := w.writes.Load(), w.refused.Load()
		w.start()
		// Interrupted a third of the way.
		ctx, cancel := context.WithCancel(context.Background())
		o := opts
		o.Progress = func(s kmspostgres.BackfillStats) {
			w.await()
			if s.Done >= n/3 {
				cancel()
			}
		}
		st1, err := run(ctx, "patients", o)
		cancel()
		if !errors.Is(err, context.Canceled) || st1.Done < n/3 || st1.Done >= st1.Total {
			w.halt()
			t.Fatalf("%s: interrupted run: %+v %v", name, st1, err)
		}
		// Restarted, to the end; Reencrypt resumes after the last row read.
		o = opts
		o.Progress = func(kmspostgres.BackfillStats) { w.await() }
		if name == "reencrypt" {
			o.After = st1.Last
		}
		st2, err := run(context.Background(), "patients", o)
		w.halt()
		if err != nil || st2.Failed != 0 || st1.Failed != 0 {
			t.Fatalf("%s: restarted run: %+v %v", name, st2, err)
		}
		t.Logf("%s: first run %d rows, restart %d rows, %d changed meanwhile; writer: %d writes, %d partial updates refused",
			name, st1.Done, st2.Done, st1.Changed+st2.Changed, w.writes.Load()-before, w.refused.Load()-refusedBefore)
		if w.writes.Load()-before < 50 {
			t.Fatalf("%s: the writer made only %d writes during the backfill", name, w.writes.Load()-before)
		}
	}

	phase("encrypt", c.Encrypt)
	if st, err := c.Encrypt(context.Background(), "patients", opts); err != nil || st.Total != 0 {
		t.Fatalf("encrypt after the writer stopped: %+v %v", st, err)
	}
	if got := e.rawValues("SELECT count(*)::text FROM patients WHERE encrypted_kms_key IS NULL AND email IS NOT NULL"); got[0] != "0" {
		t.Fatalf("%s rows left in plaintext", got[0])
	}
	// Read without migrating mode: a row left in plaintext would fail.
	e.setMap(strings.Replace(patientsMap, "    migrating: true\n", "", 1))
	w.db = e.db
	checkShadow(t, e)

	phase("reencrypt", c.Reencrypt)
	checkShadow(t, e)

	e.setMap(patientsMap)
	w.db = e.db
	phase("decrypt", c.Decrypt)
	checkShadow(t, e)
}

// checkShadow counts unreadable rows, rows whose value is a cell (encrypted
// twice), and rows that differ from the shadow (lost updates), and fails
// unless all are 0.
func checkShadow(t *testing.T, e *env) {
	t.Helper()
	rows, err := e.db.Query("SELECT id, email FROM patients ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	double := 0
	for rows.Next() {
		var id int64
		var email sql.NullString
		if err := rows.Scan(&id, &email); err != nil {
			t.Fatal(err)
		}
		if email.Valid && !strings.Contains(email.String, "@") {
			double++
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("unreadable rows: %v", err)
	}
	lost := sameAsShadow(t, e, e.db)
	if double != 0 || lost != 0 {
		t.Fatalf("%d rows encrypted twice, %d rows differ from the shadow", double, lost)
	}
}

// TestRowContextHash: the context RowContext gives for a row (what
// kmspostgres context-hash hashes) is the one the driver wrapped the row's
// key under: its Vault audit HMAC is in the audit log, and another row's
// is not.
func TestRowContextHash(t *testing.T) {
	v := startVault(t)
	p := vault.NewFromClient(v.client(t, v.addr, "root"))
	useProvider(t, providers.KindVault, p)
	e := newEnv(t, `CREATE TABLE items (org text, id bigint, secret text, encrypted_kms_key text, PRIMARY KEY (org, id))`,
		"key_id: vault/kp\ntables:\n  items:\n    primary_key: [org, id]\n    columns:\n      secret: {}\n")
	db := e.openBare()
	defer db.Close()
	if _, err := db.Exec("INSERT INTO items (org, id, secret) VALUES ('acme', 5, 's')"); err != nil {
		t.Fatal(err)
	}
	c := e.connector()
	ctx := context.Background()
	hash := func(pk ...string) string {
		t.Helper()
		keyID, rowCtx, err := c.RowContext("items", "", pk)
		if err != nil || keyID != "vault/kp" {
			t.Fatalf("%s %v", keyID, err)
		}
		h, err := p.ContextHash(ctx, rowCtx, "file")
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	log, err := os.ReadFile(v.auditLog)
	if err != nil {
		t.Fatal(err)
	}
	if h := hash("acme", "5"); !strings.Contains(string(log), h) {
		t.Fatalf("the row's hash %s is not in the audit log", h)
	}
	if h := hash("acme", "6"); strings.Contains(string(log), h) {
		t.Fatalf("another row's hash %s is in the audit log", h)
	}
	if _, _, err := c.RowContext("items", "", []string{"5"}); err == nil {
		t.Fatal("one value for a two-column primary key was accepted")
	}
}

// TestEncryptTwoKeys: each key of a table is done on its own, and a
// second run finds nothing.
func TestEncryptTwoKeys(t *testing.T) {
	e := newEnv(t, usersDDL, strings.Replace(usersMap, "  users:\n", "  users:\n    migrating: true\n", 1))
	e.rawExec(`INSERT INTO users (id, name, email, phone, dob, balance)
		SELECT i, 'n' || i, CASE WHEN i % 3 > 0 THEN 'e' || i || '@x' END, CASE WHEN i % 2 = 0 THEN ('p' || i)::bytea END, '2001-02-03', '1.50'
		FROM generate_series(1, 30) i`)
	c := e.connector(kmspostgres.WithProvider(e.kms))
	st, err := c.Encrypt(context.Background(), "users", kmspostgres.BackfillOptions{BatchSize: 7})
	// kms_key: every row (dob, balance); kms_key_phone: the 15 with a phone.
	if err != nil || st.Done != 45 || st.Total != 45 {
		t.Fatalf("%+v %v", st, err)
	}
	if got := e.rawValues("SELECT count(*)::text FROM users WHERE encrypted_kms_key IS NULL OR (phone IS NULL) <> (encrypted_kms_key_phone IS NULL)"); got[0] != "0" {
		t.Fatalf("%s rows keyed wrong", got[0])
	}
	e.assertNoPlaintext("users", "e1@x", "2001-02-03", "1.50")
	e.setMap(usersMap)
	var email sql.NullString
	var phone []byte
	var dob time.Time
	if err := e.db.QueryRow("SELECT email, phone, dob FROM users WHERE id = 4").Scan(&email, &phone, &dob); err != nil || email.String != "e4@x" || string(phone) != "p4" || dob.Format("2006-01-02") != "2001-02-03" {
		t.Fatalf("row 4: %v %q %v %v", email, phone, dob, err)
	}
	if st, err := c.Encrypt(context.Background(), "users", kmspostgres.BackfillOptions{}); err != nil || st.Total != 0 {
		t.Fatalf("second run: %+v %v", st, err)
	}
}
