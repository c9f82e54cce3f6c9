package integration

// Attacks on the blind-index tamper checks (README, "Searching encrypted
// columns", "Tampering"): someone with raw write access to the tables
// copies one row's index value into another row. Each test asserts the
// secure behaviour, so a test that fails shows a real gap. The last tests
// are false positives: honest data that the checks refuse or answer
// differently from PostgreSQL.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/blindindex"
	"github.com/kmspostgres/kmspostgres/kmspgx"
)

// attackBidxDDL: users with a second blind-indexed email under the same
// key (alt_email, key_of users.email), invites whose email shares that
// key, a plain audit table, and plain mirror of users for PostgreSQL's own
// answer on the plaintext.
const attackBidxDDL = `
CREATE TABLE users (id bigserial PRIMARY KEY, name text, email text, alt_email text,
	encrypted_kms_key text, email_bidx text, alt_email_bidx text);
CREATE INDEX users_email_bidx ON users (email_bidx);
CREATE TABLE invites (id bigserial PRIMARY KEY, code text, email text, email_bidx text, encrypted_kms_key text);
CREATE TABLE audit (user_id bigint, note text);
CREATE TABLE plain_users (id bigserial PRIMARY KEY, name text, email text, alt_email text);
`

const attackBidxMap = `
key_id: insecure-test-key
tables:
  users:
    columns:
      email: {blind_index: {expression: lower_trim, algorithm: hmac_sha256}}
      alt_email: {blind_index: {expression: lower_trim, algorithm: hmac_sha256, key_of: users.email}}
  invites:
    columns:
      email: {blind_index: {expression: lower_trim, algorithm: hmac_sha256, key_of: users.email}}
`

const attackAlice = "alice@example.com"

// partitionedUsersDDL: users partitioned by region, whose real primary key
// is (id, region).
const partitionedUsersDDL = `
CREATE TABLE users (id bigint, region text, name text, email text, encrypted_kms_key text, email_bidx text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE users_eu PARTITION OF users FOR VALUES IN ('eu');
CREATE TABLE users_us PARTITION OF users FOR VALUES IN ('us');`

// newAttackBidxEnv seeds alice (1), mallory (2), bob (3) and nomail (4),
// the same rows in plain_users, and invites of alice and mallory.
// extra are DSN parameters, as for newEnv.
func newAttackBidxEnv(t *testing.T, ddl string, extra ...string) (*env, *kmspgx.Pool) {
	t.Helper()
	t.Setenv(blindindex.EnvMasterKey, testMasterKey)
	e := newEnv(t, ddl, attackBidxMap, extra...)
	rows := `(name, email, alt_email) VALUES ('alice', 'alice@example.com', NULL), ('mallory', 'mallory@example.com', 'm2@example.com'),
		('bob', 'bob@example.com', 'bob2@example.com'), ('nomail', NULL, NULL)`
	e.exec("INSERT INTO users " + rows)
	if _, err := e.raw.Exec(context.Background(), "INSERT INTO plain_users "+rows); err != nil {
		t.Fatal(err)
	}
	e.exec("INSERT INTO invites (code, email) VALUES ('i-alice', 'alice@example.com'), ('i-mallory', 'mallory@example.com')")
	return e, newPgxPool(t, e)
}

// forgeMallory gives mallory's row alice's email index value.
func (e *env) forgeMallory() {
	e.t.Helper()
	e.rawExec("UPDATE users SET email_bidx = (SELECT email_bidx FROM users WHERE name = 'alice') WHERE name = 'mallory'")
}

// snapshot is every stored row of a table, as the attacker sees it.
func (e *env) snapshot(table string) []string {
	e.t.Helper()
	return e.rawValues("SELECT t::text FROM " + table + " t ORDER BY 1")
}

// secureErr reports whether err is the secure outcome of a query over a
// forged row: the tamper check caught it, or the shape is refused.
func secureErr(err error) bool {
	return errors.Is(err, kmspostgres.ErrBlindIndexMismatch) || errors.Is(err, kmspostgres.ErrUnsupported)
}

// readBoth runs a query through database/sql and through kmspgx, and
// returns each front end's rows (as text) and error.
func readBoth(t *testing.T, e *env, pool *kmspgx.Pool, q string, args ...any) (sqlRows []string, sqlErr error, pgxRows []string, pgxErr error) {
	t.Helper()
	got, _, sqlErr := queryAll(e.db, q, args...)
	for _, r := range got {
		sqlRows = append(sqlRows, fmt.Sprint(r...))
	}
	rows, err := pool.Query(context.Background(), q, args...)
	if err == nil {
		var vals [][]any
		vals, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
		for _, r := range vals {
			pgxRows = append(pgxRows, fmt.Sprint(r...))
		}
	}
	return sqlRows, sqlErr, pgxRows, err
}

// TestAttackBidxSubqueryInSelectList: a lookup by email whose select list
// holds a subquery (a per-row count, EXISTS, ARRAY(…)) is not
// "checkable", so the driver drops every blind-index check of the
// SELECT, and returns mallory's row, in plaintext, for alice's email.
// The README's list of unchecked SELECTs names GROUP BY, DISTINCT,
// functions in the select list and set operations, not subqueries; such a
// select list is common (a count of a user's orders beside the user).
func TestAttackBidxSubqueryInSelectList(t *testing.T) {
	e, pool := newAttackBidxEnv(t, attackBidxDDL)
	e.forgeMallory()
	for _, q := range []string{
		"SELECT u.id, u.name, u.email, (SELECT count(*) FROM audit a WHERE a.user_id = u.id) AS logins FROM users u WHERE u.email = $1",
		"SELECT u.id, u.name, u.email, EXISTS (SELECT 1 FROM audit a WHERE a.user_id = u.id) AS seen FROM users u WHERE u.email = $1",
		"SELECT u.id, u.name, u.email, ARRAY(SELECT a.note FROM audit a WHERE a.user_id = u.id) AS notes FROM users u WHERE u.email = $1",
	} {
		sqlRows, sqlErr, pgxRows, pgxErr := readBoth(t, e, pool, q, attackAlice)
		if !secureErr(sqlErr) || slices.ContainsFunc(sqlRows, func(s string) bool { return strings.Contains(s, "mallory") }) {
			t.Errorf("%s: database/sql returned %q, err %v; want ErrBlindIndexMismatch (or a refusal) and no row of mallory", q, sqlRows, sqlErr)
		}
		if !secureErr(pgxErr) || slices.ContainsFunc(pgxRows, func(s string) bool { return strings.Contains(s, "mallory") }) {
			t.Errorf("%s: kmspgx returned %q, err %v; want ErrBlindIndexMismatch (or a refusal) and no row of mallory", q, pgxRows, pgxErr)
		}
	}
}

// TestAttackBidxComparisonOutsideWhere: a blind-index comparison is
// accepted anywhere an expression goes (the select list, CASE, ORDER BY),
// but checked only in WHERE and JOIN … ON. A forged index value then
// makes the server's answer wrong with no error: mallory's row is
// reported as matching alice's email, or is the one row picked for it.
// The README refuses ORDER BY on the column and lists no such shape among
// the unchecked ones.
func TestAttackBidxComparisonOutsideWhere(t *testing.T) {
	e, pool := newAttackBidxEnv(t, attackBidxDDL)
	e.forgeMallory()
	for _, c := range []struct {
		q string
		// leak reports a row that presents mallory as alice's match.
		leak func(row string) bool
	}{
		{"SELECT name, email, (email = $1) AS is_alice FROM users ORDER BY id",
			func(r string) bool { return strings.HasPrefix(r, "mallory") && strings.HasSuffix(r, "true") }},
		{"SELECT name, email, CASE WHEN email = $1 THEN 'alice' ELSE 'other' END AS who FROM users ORDER BY id",
			func(r string) bool { return strings.HasPrefix(r, "mallory") && strings.HasSuffix(r, "alice") }},
		// The "find by email, else any" idiom: the forged row wins.
		{"SELECT name, email FROM users WHERE id IN (2, 3) ORDER BY (email = $1) DESC NULLS LAST, id DESC LIMIT 1",
			func(r string) bool { return strings.HasPrefix(r, "mallory") }},
	} {
		sqlRows, sqlErr, pgxRows, pgxErr := readBoth(t, e, pool, c.q, attackAlice)
		if slices.ContainsFunc(sqlRows, c.leak) {
			t.Errorf("%s: database/sql returned %q, err %v; want the forged row caught (ErrBlindIndexMismatch) or the shape refused", c.q, sqlRows, sqlErr)
		}
		if slices.ContainsFunc(pgxRows, c.leak) {
			t.Errorf("%s: kmspgx returned %q, err %v; want the forged row caught (ErrBlindIndexMismatch) or the shape refused", c.q, pgxRows, pgxErr)
		}
	}
}

// TestAttackBidxOnConflictDoUpdate: INSERT … ON CONFLICT (email) DO
// UPDATE (the conflict is decided by the unique index on email_bidx).
// With alice's index value moved into mallory's row, alice's sign-in
// upsert would update mallory's row and RETURNING would hand alice's
// session mallory's id and decrypted email; the driver checks the rows an
// upsert may update first, and refuses it.
func TestAttackBidxOnConflictDoUpdate(t *testing.T) {
	e, pool := newAttackBidxEnv(t, strings.Replace(attackBidxDDL, "CREATE INDEX users_email_bidx", "CREATE UNIQUE INDEX users_email_bidx", 1))
	// The unique index allows one holder: alice's value moves to mallory.
	e.rawExec(`UPDATE users SET email_bidx = CASE name WHEN 'mallory' THEN (SELECT email_bidx FROM users WHERE name = 'alice') END
		WHERE name IN ('alice', 'mallory')`)
	ctx := context.Background()
	const upsert = "INSERT INTO users (name, email) VALUES ($2, $1) ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name RETURNING id, name, email"
	before := e.snapshot("users")
	check := func(fe string, id int64, email string, err error) {
		t.Helper()
		switch {
		case err == nil && (id == 2 || strings.Contains(email, "mallory")):
			t.Errorf("%s: alice's upsert updated mallory's row and returned it: id %d, email %q", fe, id, email)
		case !errors.Is(err, kmspostgres.ErrBlindIndexMismatch):
			t.Errorf("%s: %v (row %d %q), want ErrBlindIndexMismatch: the conflicting row's index is forged", fe, err, id, email)
		}
	}
	// Each runs in a transaction that is rolled back, so both meet the
	// same rows.
	tx, err := e.db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	var id int64
	var name, email string
	err = tx.QueryRow(upsert, attackAlice, "alice (signed in)").Scan(&id, &name, &email)
	tx.Rollback()
	check("database/sql", id, email, err)

	ptx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id, email = 0, ""
	err = ptx.QueryRow(ctx, upsert, attackAlice, "alice (kmspgx)").Scan(&id, &name, &email)
	ptx.Rollback(ctx)
	check("kmspgx", id, email, err)
	if after := e.snapshot("users"); !slices.Equal(before, after) {
		t.Fatalf("rows changed after rollbacks:\n%q\n%q", before, after)
	}
}

// TestAttackBidxInsertSelect: INSERT … SELECT … WHERE email = $1 (into a
// plain table) cannot be checked (the driver never reads the SELECT's
// rows), so a forged index value would make alice's lookup write an audit
// row for mallory's id; it is refused.
func TestAttackBidxInsertSelect(t *testing.T) {
	e, pool := newAttackBidxEnv(t, attackBidxDDL)
	e.forgeMallory()
	ctx := context.Background()
	const q = "INSERT INTO audit (user_id, note) SELECT id, 'password reset' FROM users WHERE email = $1"
	_, err := e.db.Exec(q, attackAlice)
	if !secureErr(err) {
		t.Errorf("database/sql %s: %v, want ErrBlindIndexMismatch or a refusal", q, err)
	}
	_, err = pool.Exec(ctx, q, attackAlice)
	if !secureErr(err) {
		t.Errorf("kmspgx %s: %v, want ErrBlindIndexMismatch or a refusal", q, err)
	}
	if got := e.rawValues("SELECT user_id::text FROM audit WHERE user_id = 2"); len(got) > 0 {
		t.Errorf("alice's lookup wrote %d audit rows for mallory (id 2)", len(got))
	}
}

// TestAttackBidxWriteKeyOfPairOnTarget: an UPDATE or DELETE whose WHERE
// compares two index columns of the target table under one key
// (email = alt_email, key_of) is not checked: targetChecks looks only at
// comparisons with operands, and the Verify plan is dropped when it has
// none. Bob's alt_email_bidx set to his email_bidx makes the statements
// change bob's row although his two emails differ. The same SELECT fails
// with ErrBlindIndexMismatch, as the README says of such joins.
func TestAttackBidxWriteKeyOfPairOnTarget(t *testing.T) {
	e, pool := newAttackBidxEnv(t, attackBidxDDL)
	// Honest data: no row has email = alt_email.
	wantNames(t, e.names("SELECT name FROM users WHERE email = alt_email"))
	e.rawExec("UPDATE users SET alt_email_bidx = email_bidx WHERE name = 'bob'")
	// Pinned: the SELECT is checked.
	if _, _, err := queryAll(e.db, "SELECT name, email FROM users WHERE email = alt_email"); !errors.Is(err, kmspostgres.ErrBlindIndexMismatch) {
		t.Fatalf("SELECT … WHERE email = alt_email: %v, want ErrBlindIndexMismatch", err)
	}
	for _, c := range []struct {
		q    string
		args []any
	}{
		{"UPDATE users SET name = 'duplicate' WHERE email = alt_email", nil},
		{"UPDATE users SET alt_email = NULL WHERE email = alt_email", nil},
		{"UPDATE users SET email = $1 WHERE NOT (email <> alt_email)", []any{"merged@example.com"}},
		{"DELETE FROM users WHERE email = alt_email", nil},
	} {
		// On the values the statement selects no row. Each runs in a
		// transaction that is rolled back.
		n, err := execRolledBack(t, e, pool, "database/sql", c.q, c.args...)
		if !secureErr(err) {
			t.Errorf("database/sql %s: %d rows changed, err %v; want ErrBlindIndexMismatch or a refusal, no row changed", c.q, n, err)
		}
		n, err = execRolledBack(t, e, pool, "kmspgx", c.q, c.args...)
		if !secureErr(err) {
			t.Errorf("kmspgx %s: %d rows changed, err %v; want ErrBlindIndexMismatch or a refusal, no row changed", c.q, n, err)
		}
	}
}

// execRolledBack runs a write through one front end in a transaction
// that it rolls back, and returns the rows it changed.
func execRolledBack(t *testing.T, e *env, pool *kmspgx.Pool, fe, q string, args ...any) (int64, error) {
	t.Helper()
	ctx := context.Background()
	if fe == "database/sql" {
		tx, err := e.db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		res, err := tx.Exec(q, args...)
		if err != nil {
			return 0, err
		}
		return res.RowsAffected()
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	tag, err := tx.Exec(ctx, q, args...)
	return tag.RowsAffected(), err
}

// TestAttackBidxWriteJoinOnTargetColumn: DELETE … USING and UPDATE … FROM
// joined on the target's own blind-indexed column (i.email = u.email,
// key_of) are not checked, although the forged value is in the target's
// own row: invite i-mallory given alice's index value is deleted (or
// rewritten) by a statement meant for alice's invites. The README's
// exclusion names comparisons of other tables' columns; this one is the
// target's.
func TestAttackBidxWriteJoinOnTargetColumn(t *testing.T) {
	e, pool := newAttackBidxEnv(t, attackBidxDDL)
	e.rawExec("UPDATE invites SET email_bidx = (SELECT email_bidx FROM users WHERE name = 'alice') WHERE code = 'i-mallory'")
	// Pinned: the same join in a SELECT is checked.
	if _, _, err := queryAll(e.db, "SELECT i.code, u.name FROM invites i JOIN users u ON u.email = i.email WHERE u.name = 'alice'"); !errors.Is(err, kmspostgres.ErrBlindIndexMismatch) {
		t.Fatalf("SELECT join: %v, want ErrBlindIndexMismatch", err)
	}
	for _, q := range []string{
		"UPDATE invites i SET code = i.code || ' (accepted)' FROM users u WHERE u.email = i.email AND u.name = 'alice'",
		"DELETE FROM invites i USING users u WHERE u.email = i.email AND u.name = 'alice'",
	} {
		// On the values the statement changes one invite, i-alice.
		for _, fe := range []string{"database/sql", "kmspgx"} {
			n, err := execRolledBack(t, e, pool, fe, q)
			if !secureErr(err) {
				t.Errorf("%s %s: %d rows changed (on the values: 1), err %v; want ErrBlindIndexMismatch or a refusal", fe, q, n, err)
			}
		}
	}
}

// plainAnswer runs q on plain_users (the same rows, unencrypted): what
// PostgreSQL answers on the values.
func (e *env) plainAnswer(q string, args ...any) []string {
	e.t.Helper()
	q = strings.ReplaceAll(q, "FROM users", "FROM plain_users")
	q = strings.ReplaceAll(q, "UPDATE users", "UPDATE plain_users")
	rows, err := e.raw.Query(context.Background(), q, args...)
	if err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
	return out
}

// honestBoth runs a read on honest data through both front ends and
// fails unless each returns, without error, what PostgreSQL answers on
// the plaintext.
func honestBoth(t *testing.T, e *env, pool *kmspgx.Pool, q string, args ...any) {
	t.Helper()
	want := e.plainAnswer(q, args...)
	if want == nil {
		want = []string{}
	}
	got, _, err := queryAll(e.db, q, args...)
	gs := []string{}
	for _, r := range got {
		gs = append(gs, fmt.Sprint(r...))
	}
	if err != nil || !slices.Equal(gs, want) {
		t.Errorf("database/sql %s %v: %q, err %v; PostgreSQL on the values: %q", q, args, gs, err, want)
	}
	rows, err := pool.Query(context.Background(), q, args...)
	var ps []string
	if err == nil {
		ps, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if ps == nil {
		ps = []string{}
	}
	if err != nil || !slices.Equal(ps, want) {
		t.Errorf("kmspgx %s %v: %q, err %v; PostgreSQL on the values: %q", q, args, ps, err, want)
	}
}

// TestAttackBidxEmptyArrayFalsePositive: on honest data, `<> ALL($1)` and
// NOT (= ANY($1)) with an empty list (an "exclude these" filter with
// nothing to exclude) fail with ErrBlindIndexMismatch as soon as a row
// has a NULL email: PostgreSQL says NULL <> ALL('{}') is true, and
// checkAgrees insists a NULL value compares as NULL. The same refuses an
// honest UPDATE.
func TestAttackBidxEmptyArrayFalsePositive(t *testing.T) {
	e, pool := newAttackBidxEnv(t, attackBidxDDL)
	for _, q := range []string{
		"SELECT name FROM users WHERE email <> ALL($1) ORDER BY id",
		"SELECT name FROM users WHERE NOT (email = ANY($1)) ORDER BY id",
	} {
		honestBoth(t, e, pool, q, []string{})
	}
	const upd = "UPDATE users SET name = name || '!' WHERE email <> ALL($1)"
	if _, err := e.db.Exec(upd, []string{}); err != nil {
		t.Errorf("database/sql %s with an empty list: %v; PostgreSQL updates every row", upd, err)
	}
}

// TestAttackBidxArrayNullElement: on honest data, an array operand with a
// NULL element (sqlc's []*string, pq.Array of NullStrings) is sent to the
// server without its NULL, while the check models PostgreSQL's answer
// with it. Negated forms fail with ErrBlindIndexMismatch where
// PostgreSQL returns no row; an IS NULL / IS NOT FALSE test of = ANY
// silently selects other rows than PostgreSQL would, in reads and writes
// (no check fires: the rows the server's NULL-free answer drops are never
// read).
func TestAttackBidxArrayNullElement(t *testing.T) {
	e, pool := newAttackBidxEnv(t, attackBidxDDL)
	arr := []*string{ptr(attackAlice), nil}
	for _, q := range []string{
		"SELECT name FROM users WHERE email <> ALL($1) ORDER BY id",
		"SELECT name FROM users WHERE NOT (email = ANY($1)) ORDER BY id",
		"SELECT name FROM users WHERE (email = ANY($1)) IS NULL ORDER BY id",
		"SELECT name FROM users WHERE (email = ANY($1)) IS NOT FALSE ORDER BY id",
	} {
		honestBoth(t, e, pool, q, arr)
	}
	const upd = "UPDATE users SET name = name || '!' WHERE (email = ANY($1)) IS NOT FALSE RETURNING name"
	want := e.plainAnswer(upd, arr)
	slices.Sort(want)
	var got []string
	rows, err := e.db.Query(upd, arr)
	if err == nil {
		for rows.Next() {
			var s string
			rows.Scan(&s)
			got = append(got, s)
		}
		err = rows.Err()
		rows.Close()
	}
	slices.Sort(got)
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("%s: updated %q, err %v; PostgreSQL on the values updates %q", upd, got, err, want)
	}
}

// TestAttackBidxPinPartitionedAndBatch pins, untested so far: the tamper
// checks on a partitioned table (rows told apart by tableoid as well as
// ctid) under OR and NOT, and in a kmspgx batch (its implicit
// transaction) and QueryRow, in every exec mode; a refused write changes
// nothing, and honest writes under OR change exactly their rows.
func TestAttackBidxPinPartitionedAndBatch(t *testing.T) {
	t.Setenv(blindindex.EnvMasterKey, testMasterKey)
	for _, mode := range execModes {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, partitionedUsersDDL, `
key_id: insecure-test-key
tables:
  users:
    primary_key: [id, region]
    columns:
      email: {blind_index: {expression: lower_trim, algorithm: hmac_sha256}}
`, "default_query_exec_mode="+mode)
			ctx := context.Background()
			pool := newPgxPool(t, e)
			// Same id, other partitions: ctid alone could mix them up.
			e.exec("INSERT INTO users (id, region, name, email) VALUES (1, 'eu', 'alice', 'alice@example.com'), (1, 'us', 'mallory', 'mallory@example.com'), (2, 'us', 'nomail', NULL)")
			e.exec("UPDATE users SET name = name || '+' WHERE email = $1 OR name = 'nomail'", attackAlice)
			wantNames(t, e.names("SELECT name FROM users"), "alice+", "mallory", "nomail+")
			e.rawExec("UPDATE users SET email_bidx = (SELECT email_bidx FROM users WHERE region = 'eu' AND id = 1) WHERE region = 'us' AND id = 1")
			before := e.snapshot("users")
			for _, q := range []string{
				"SELECT name, email FROM users WHERE email = $1 OR id < 0",
				"SELECT name, email FROM users WHERE NOT (email <> $1)",
			} {
				if _, _, err := queryAll(e.db, q, attackAlice); !errors.Is(err, kmspostgres.ErrBlindIndexMismatch) {
					t.Errorf("%s: %v, want ErrBlindIndexMismatch", q, err)
				}
			}
			for _, q := range []string{
				"UPDATE users SET name = 'pwned' WHERE NOT (email <> $1)",
				"UPDATE users SET email = 'pwned@example.com' WHERE email = $1 OR id < 0",
				"DELETE FROM users WHERE email IN ($1) OR false",
			} {
				if _, err := e.db.Exec(q, attackAlice); !errors.Is(err, kmspostgres.ErrBlindIndexMismatch) {
					t.Errorf("%s: %v, want ErrBlindIndexMismatch", q, err)
				}
			}
			b := &pgx.Batch{}
			b.Queue("SELECT name, email FROM users WHERE email = $1", attackAlice)
			b.Queue("UPDATE users SET name = 'pwned' WHERE email = $1 OR id < 0", attackAlice)
			br := pool.SendBatch(ctx, b)
			rows, err := br.Query()
			if err == nil {
				_, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
			}
			if !errors.Is(err, kmspostgres.ErrBlindIndexMismatch) {
				t.Errorf("batch SELECT: %v, want ErrBlindIndexMismatch", err)
			}
			if _, err := br.Exec(); !errors.Is(err, kmspostgres.ErrBlindIndexMismatch) {
				t.Errorf("batch UPDATE: %v, want ErrBlindIndexMismatch", err)
			}
			br.Close()
			var name, email string
			if err := pool.QueryRow(ctx, "SELECT name, email FROM users WHERE email = $1", attackAlice).Scan(&name, &email); !errors.Is(err, kmspostgres.ErrBlindIndexMismatch) {
				t.Errorf("kmspgx QueryRow: %q %q %v, want ErrBlindIndexMismatch", name, email, err)
			}
			if after := e.snapshot("users"); !slices.Equal(before, after) {
				t.Errorf("a refused statement changed rows:\n%q\n%q", before, after)
			}
		})
	}
}

// TestAttackBidxNonUniquePrimaryKey: the map's primary_key (default id)
// is checked for existence and type only, not for being unique. On a
// partitioned table, whose real primary key must include the partition
// column, the default map is accepted with id alone; two rows then share
// one encryption context, and the README's "the ciphertext cannot be
// copied across rows (its key is bound to the row's primary key)" fails:
// alice's email cells (ciphertext, key column, index) copied into
// mallory's row in the other partition decrypt there, and alice's lookup
// returns mallory's row with no error. (The same map makes an UPDATE key
// both rows under one id, a data race under -race in keyRows.)
func TestAttackBidxNonUniquePrimaryKey(t *testing.T) {
	t.Setenv(blindindex.EnvMasterKey, testMasterKey)
	e := newEnv(t, partitionedUsersDDL, `
key_id: insecure-test-key
tables:
  users:
    columns:
      email: {blind_index: {expression: lower_trim, algorithm: hmac_sha256}}
`)
	_, err := e.db.Exec("INSERT INTO users (id, region, name, email) VALUES (1, 'eu', 'alice', 'alice@example.com'), (1, 'us', 'mallory', 'mallory@example.com')")
	if err != nil {
		if errors.Is(err, kmspostgres.ErrSchema) || errors.Is(err, kmspostgres.ErrUnsupported) {
			return // secure: the map is refused
		}
		t.Fatalf("insert: %v", err)
	}
	e.rawExec(`UPDATE users u SET email = a.email, encrypted_kms_key = a.encrypted_kms_key, email_bidx = a.email_bidx
		FROM users a WHERE a.region = 'eu' AND a.id = 1 AND u.region = 'us' AND u.id = 1`)
	got, _, err := queryAll(e.db, "SELECT name, email FROM users WHERE email = $1 ORDER BY region", attackAlice)
	for _, r := range got {
		if fmt.Sprint(r...) == "malloryalice@example.com" {
			t.Errorf("alice's lookup returned mallory's row with alice's copied cells: %v (err %v); want the map refused (primary_key is not unique) or the row refused", got, err)
		}
	}
}
