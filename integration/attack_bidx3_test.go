package integration

// Blind-index comparisons outside the rows the driver reads: inside
// subqueries and CTEs, in aggregate and DISTINCT queries, set operations,
// on the other tables of UPDATE … FROM and DELETE … USING, in an upsert's
// DO UPDATE … WHERE. The driver cannot check them on returned rows, so it
// prechecks them (README, "Tampering"): before the statement runs it reads
// every row holding the index values compared with, refuses the statement
// unless each holds the value, and restricts the comparison to the row
// versions it read. Positions where a hidden row would become a selected
// one (NOT IN, NOT EXISTS, EXCEPT, …) are refused.

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kmspostgres/kmspostgres"
)

// precheckedReads are reads whose blind-index comparison is prechecked.
// Each runs on plain_users too (plainAnswer): PostgreSQL's answer on the
// values. $1 is alice's email.
var precheckedReads = []string{
	"SELECT name FROM users WHERE id IN (SELECT id FROM users WHERE email = $1)",
	"SELECT name FROM users o WHERE EXISTS (SELECT 1 FROM users x WHERE x.id = o.id AND x.email = $1)",
	"SELECT name FROM users WHERE id = (SELECT id FROM users x WHERE x.email = $1)",
	"WITH u AS (SELECT id FROM users WHERE email = $1) SELECT name FROM users WHERE id IN (SELECT id FROM u)",
	"WITH u AS (SELECT id, name, email FROM users WHERE email = $1) SELECT name FROM u",
	"SELECT name FROM (SELECT name, email FROM users WHERE email = $1) s",
	"SELECT count(*)::text FROM users WHERE email = $1",
	"SELECT DISTINCT name FROM users WHERE email = $1 OR email = ANY($2)",
	"SELECT name FROM users WHERE email = $1 UNION SELECT name FROM users WHERE email = 'bob@example.com' ORDER BY name",
	"SELECT (EXISTS (SELECT 1 FROM users WHERE email = $1))::text",
	"SELECT name FROM users WHERE id IN (SELECT id FROM users WHERE email = $1 OR alt_email = $1)",
}

// TestBlindIndexPrecheckedHonest: on honest data the prechecked shapes
// answer what PostgreSQL answers on the values, in every exec mode and
// through both front ends.
func TestBlindIndexPrecheckedHonest(t *testing.T) {
	for _, mode := range execModes {
		t.Run(mode, func(t *testing.T) {
			e, pool := newAttackBidxEnv(t, attackBidxDDL, "default_query_exec_mode="+mode)
			for _, q := range precheckedReads {
				args := []any{attackAlice}
				if strings.Contains(q, "$2") {
					args = append(args, []string{"bob@example.com"})
				}
				honestBoth(t, e, pool, q, args...)
			}
			// No row matches: the precheck reads nothing and the query
			// answers nothing.
			honestBoth(t, e, pool, precheckedReads[0], "nobody@example.com")
		})
	}
}

// TestAttackBidxPrecheckedForged: mallory's row holds alice's index value.
// Every prechecked read fails with ErrBlindIndexMismatch instead of
// returning mallory (or counting her) for alice's email; before prechecks
// the subquery and CTE shapes returned mallory's row in plaintext.
func TestAttackBidxPrecheckedForged(t *testing.T) {
	e, pool := newAttackBidxEnv(t, attackBidxDDL)
	e.forgeMallory()
	for _, q := range precheckedReads {
		args := []any{attackAlice}
		if strings.Contains(q, "$2") {
			args = append(args, []string{"bob@example.com"})
		}
		sqlRows, sqlErr, pgxRows, pgxErr := readBoth(t, e, pool, q, args...)
		if !errors.Is(sqlErr, kmspostgres.ErrBlindIndexMismatch) || len(sqlRows) > 0 {
			t.Errorf("database/sql %s: returned %q, err %v; want ErrBlindIndexMismatch and no row", q, sqlRows, sqlErr)
		}
		if !errors.Is(pgxErr, kmspostgres.ErrBlindIndexMismatch) || len(pgxRows) > 0 {
			t.Errorf("kmspgx %s: returned %q, err %v; want ErrBlindIndexMismatch and no row", q, pgxRows, pgxErr)
		}
	}
	// A lookup of another value is not disturbed by the forged row.
	if got, _, err := queryAll(e.db, precheckedReads[0], "bob@example.com"); err != nil || len(got) != 1 || got[0][0] != "bob" {
		t.Errorf("bob's lookup beside a forged row: %v, err %v", got, err)
	}
}

// TestAttackBidxPrecheckedWrites: writes that select rows by a comparison
// the driver does not read change nothing when a forged row would decide
// them: alice's audit rows are not deleted or rewritten as mallory's, and
// an upsert guarded by DO UPDATE … WHERE users.email = $1 does not rename
// mallory's row.
func TestAttackBidxPrecheckedWrites(t *testing.T) {
	e, pool := newAttackBidxEnv(t, attackBidxDDL)
	ctx := context.Background()
	e.rawExec("INSERT INTO audit (user_id, note) VALUES (1, 'alice'), (2, 'mallory')")
	// Honest first: each write changes alice's rows only.
	e.exec("UPDATE audit SET note = 'alice seen' FROM users WHERE users.id = audit.user_id AND users.email = $1", attackAlice)
	if _, err := pool.Exec(ctx, "UPDATE audit SET note = note || '!' WHERE user_id IN (SELECT id FROM users WHERE email = $1)", attackAlice); err != nil {
		t.Fatal(err)
	}
	if got := e.rawValues("SELECT user_id || ':' || note FROM audit ORDER BY user_id"); !slices.Equal(got, []string{"1:alice seen!", "2:mallory"}) {
		t.Fatalf("honest writes: audit is %q", got)
	}
	e.forgeMallory()
	before, users := e.snapshot("audit"), e.snapshot("users")
	for _, w := range []struct{ front, q string }{
		{"database/sql", "DELETE FROM audit WHERE user_id IN (SELECT id FROM users WHERE email = $1)"},
		{"kmspgx", "DELETE FROM audit WHERE user_id IN (SELECT id FROM users WHERE email = $1)"},
		{"database/sql", "DELETE FROM audit USING users WHERE users.id = audit.user_id AND users.email = $1"},
		{"database/sql", "UPDATE audit SET note = 'reset' FROM users WHERE users.id = audit.user_id AND users.email = $1"},
		{"kmspgx", "UPDATE audit SET note = 'reset' FROM users WHERE users.id = audit.user_id AND users.email = $1"},
		{"database/sql", "INSERT INTO audit (user_id, note) VALUES ((SELECT id FROM users WHERE email = $1 AND name = 'mallory'), 'x')"},
		{"database/sql", "INSERT INTO users (id, name, email) VALUES (2, 'renamed', 'x@example.com') ON CONFLICT (id) DO UPDATE SET name = excluded.name WHERE users.email = $1"},
		{"kmspgx", "INSERT INTO users (id, name, email) VALUES (2, 'renamed', 'x@example.com') ON CONFLICT (id) DO UPDATE SET name = excluded.name WHERE users.email = $1"},
	} {
		var err error
		if w.front == "kmspgx" {
			_, err = pool.Exec(ctx, w.q, attackAlice)
		} else {
			_, err = e.db.Exec(w.q, attackAlice)
		}
		if !errors.Is(err, kmspostgres.ErrBlindIndexMismatch) {
			t.Errorf("%s %s: %v, want ErrBlindIndexMismatch", w.front, w.q, err)
		}
	}
	if got := e.snapshot("audit"); !slices.Equal(got, before) {
		t.Errorf("audit changed: %q, was %q", got, before)
	}
	if got := e.snapshot("users"); !slices.Equal(got, users) {
		t.Errorf("users changed: %q, was %q", got, users)
	}
}

// TestBlindIndexPrecheckedExcluded: an upsert's guard on EXCLUDED compares
// the row being written, whose index value the driver computed: it needs
// no precheck and compares the new row, not the existing one.
func TestBlindIndexPrecheckedExcluded(t *testing.T) {
	e, _ := newAttackBidxEnv(t, attackBidxDDL)
	const q = "INSERT INTO users (id, name, email) VALUES (1, $2, $3) ON CONFLICT (id) DO UPDATE SET name = excluded.name WHERE excluded.email = $1"
	// The new row's email is the guard's: updated.
	e.exec(q, "NEW@example.com", "alice (guard true)", "new@example.com")
	// The existing row's email is the guard's, the new row's is not: left.
	e.exec(q, attackAlice, "alice (guard false)", "other@example.com")
	if got := e.names("SELECT name FROM users WHERE id = 1"); !slices.Equal(got, []string{"alice (guard true)"}) {
		t.Errorf("after the guarded upserts alice is %q, want \"alice (guard true)\"", got)
	}
}

// TestBlindIndexPrecheckRefusals: where a comparison outside the rows the
// driver reads would let a forged value turn a hidden row into a selected
// one, or its value is used otherwise, the statement is refused with an
// error naming the column.
func TestBlindIndexPrecheckRefusals(t *testing.T) {
	e, pool := newAttackBidxEnv(t, attackBidxDDL)
	ctx := context.Background()
	for _, q := range []string{
		"SELECT name FROM users WHERE id NOT IN (SELECT id FROM users WHERE email = $1)",
		"SELECT name FROM users o WHERE NOT EXISTS (SELECT 1 FROM users x WHERE x.id = o.id AND x.email = $1)",
		"SELECT name FROM users WHERE id IN (SELECT id FROM users WHERE email <> $1)",
		"WITH u AS (SELECT id FROM users WHERE email = $1) SELECT name FROM users WHERE id NOT IN (SELECT id FROM u)",
		"SELECT name FROM users EXCEPT SELECT name FROM users WHERE email = $1",
		"SELECT name FROM users WHERE id IN (SELECT id FROM users WHERE (email = $1) IS NOT TRUE)",
		"SELECT count(*) FILTER (WHERE email = $1)::text FROM users",
		"SELECT name FROM users a WHERE EXISTS (SELECT 1 FROM users b WHERE b.email = a.email AND b.id <> a.id AND b.name = $1)",
		"UPDATE users SET name = CASE WHEN email = $1 THEN 'x' ELSE name END WHERE id = 3",
		"DELETE FROM audit WHERE user_id = 0 RETURNING (SELECT email = $1 FROM users WHERE id = 1)",
		"INSERT INTO audit (user_id, note) SELECT 9, 'new' WHERE (SELECT count(*) FROM users WHERE email = $1) = 0",
		// The anti-join: with mallory's index forged away from her email,
		// this would return mallory for "users whose email is not hers".
		"SELECT a.name FROM users a LEFT JOIN users u ON u.id = a.id AND u.email = $1 WHERE u.id IS NULL",
		// The null-extension read elsewhere: ORDER BY with LIMIT picks the
		// first "unmatched" row; a later join or a LATERAL subquery filters.
		"SELECT a.name FROM users a LEFT JOIN users u ON u.id = a.id AND u.email = $1 ORDER BY u.id NULLS FIRST, a.id LIMIT 1",
		"SELECT a.name FROM users a LEFT JOIN users u ON u.id = a.id AND u.email = $1 JOIN audit x ON u.id IS NULL AND x.user_id = a.id",
		"SELECT a.name FROM users a LEFT JOIN users u ON u.id = a.id AND u.email = $1 CROSS JOIN LATERAL (SELECT 1 WHERE u.id IS NULL) l",
		// Aggregates that select rows or are written.
		"SELECT 'free' FROM users WHERE email = $1 HAVING count(*) = 0",
		"INSERT INTO audit (user_id, note) SELECT coalesce(max(id), 3), 'x' FROM users WHERE email = $1",
		"SELECT name FROM users WHERE id IN (SELECT min(id) FROM users WHERE email = $1 GROUP BY name HAVING count(*) < 2)",
	} {
		_, sqlErr := e.db.Exec(q, attackAlice)
		_, pgxErr := pool.Exec(ctx, q, attackAlice)
		for _, err := range []error{sqlErr, pgxErr} {
			if !errors.Is(err, kmspostgres.ErrUnsupported) || !strings.Contains(err.Error(), "users.") {
				t.Errorf("%s: %v, want a refusal naming the column", q, err)
			}
		}
	}
}

// TestAttackBidxPrecheckRace: the precheck and the statement are two
// queries, without locks. The attacker gives mallory alice's index value
// after the precheck has read the rows and before the statement takes its
// snapshot (the statement waits on a lock the attacker holds on another
// table it reads). The comparison is restricted to the row versions the
// precheck read, so mallory's new version is not selected: alice's
// lookup returns alice alone.
func TestAttackBidxPrecheckRace(t *testing.T) {
	e, pool := newAttackBidxEnv(t, attackBidxDDL+"CREATE TABLE gate (x int); INSERT INTO gate VALUES (1);")
	ctx := context.Background()
	const q = "SELECT u.name FROM users u, gate WHERE u.id IN (SELECT id FROM users WHERE email = $1)"
	honest := e.rawValues("SELECT email_bidx FROM users WHERE name = 'mallory'")[0]
	for _, front := range []string{"database/sql", "kmspgx"} {
		e.rawExec("UPDATE users SET email_bidx = $1 WHERE name = 'mallory'", honest)
		atk, err := pgx.Connect(ctx, e.base)
		if err != nil {
			t.Fatal(err)
		}
		defer atk.Close(ctx)
		tx, err := atk.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var atkPID int
		if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&atkPID); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "LOCK TABLE gate IN ACCESS EXCLUSIVE MODE"); err != nil {
			t.Fatal(err)
		}
		type result struct {
			rows []string
			err  error
		}
		done := make(chan result, 1)
		go func() {
			var r result
			if front == "kmspgx" {
				rows, err := pool.Query(ctx, q, attackAlice)
				if err == nil {
					r.rows, err = pgx.CollectRows(rows, pgx.RowTo[string])
				}
				r.err = err
			} else {
				got, _, err := queryAll(e.db, q, attackAlice)
				for _, g := range got {
					r.rows = append(r.rows, g[0].(string))
				}
				r.err = err
			}
			done <- r
		}()
		waited := false
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !waited; time.Sleep(10 * time.Millisecond) {
			var n int
			if err := e.raw.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", atkPID).Scan(&n); err != nil {
				t.Fatal(err)
			}
			waited = n > 0
		}
		if !waited {
			tx.Rollback(ctx)
			t.Fatalf("%s: the statement never waited on the attacker's lock", front)
		}
		e.forgeMallory() // committed while the statement waits
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.err != nil || !slices.Equal(r.rows, []string{"alice"}) {
			t.Errorf("%s: alice's lookup with mallory forged after the precheck returned %q, err %v; want alice alone", front, r.rows, r.err)
		}
	}
}

// TestAttackBidxRotationConflict: during a rotation the new index column
// has its own UNIQUE constraint, which decides an upsert's conflict as
// much as the current one. The attacker moves alice's new-index value to
// mallory's row; alice's sign-in upsert ON CONSTRAINT of the new column
// would then update, and return, mallory's row. The conflict check reads
// the rotation column too, and refuses.
func TestAttackBidxRotationConflict(t *testing.T) {
	e := newBlindEnv(t, "cache_statement") // alice, bob, cy
	t.Setenv(rotateEnv, rotateMasterKey)
	e.rawExec(rotateDDL + ` ALTER TABLE users ADD CONSTRAINT users_v2_key UNIQUE USING INDEX users_email_bidx_v2;`)
	_, db := e.openMap(rotatingMap)
	if _, err := db.Exec("INSERT INTO users (name, email) VALUES ('mallory', 'mallory@example.com')"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("UPDATE users SET email = $1 WHERE name = 'alice'", "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	v := e.rawValues("SELECT encode(email_bidx_v2, 'hex') FROM users WHERE name = 'alice'")[0]
	e.rawExec("UPDATE users SET email_bidx_v2 = NULL WHERE name = 'alice'")
	e.rawExec("UPDATE users SET email_bidx_v2 = decode($1, 'hex') WHERE name = 'mallory'", v)
	before := e.snapshot("users")
	for _, q := range []string{
		"INSERT INTO users (name, email) VALUES ('alice (signed in)', $1) ON CONFLICT ON CONSTRAINT users_v2_key DO UPDATE SET name = EXCLUDED.name RETURNING id, name, email",
		"INSERT INTO users (name, email) VALUES ('alice (signed in)', $1) ON CONFLICT (email_bidx_v2) DO UPDATE SET name = EXCLUDED.name RETURNING id, name, email",
	} {
		var id int64
		var name, email string
		err := db.QueryRow(q, "alice@example.com").Scan(&id, &name, &email)
		if !errors.Is(err, kmspostgres.ErrBlindIndexMismatch) {
			t.Errorf("%s: returned %d %q %q, err %v; want ErrBlindIndexMismatch", q, id, name, email, err)
		}
	}
	if after := e.snapshot("users"); !slices.Equal(before, after) {
		t.Errorf("users changed:\n%q\n%q", before, after)
	}
}
