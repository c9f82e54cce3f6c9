package integration

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kmspostgres/kmspostgres"
)

// What the fail-closed engine does support: the adversarial suite shows
// what it refuses; these show that the refusals stop where they should.

const partDDL = `
CREATE TABLE accounts (id bigint, region text, iban text, encrypted_kms_key text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE accounts_eu PARTITION OF accounts FOR VALUES IN ('eu');
CREATE TABLE accounts_us PARTITION OF accounts FOR VALUES IN ('us');`

const partMap = `key_id: insecure-test-key
tables:
  accounts:
    primary_key: [id, region]
    columns:
      iban: {}
`

// Partitions are encrypted and decrypted as their table: a row written
// through a partition reads through the table and the other way round,
// and an UPDATE through the table changes only its row, in its partition.
func TestPartitionsAsTheirTable(t *testing.T) {
	e := newEnv(t, partDDL, partMap)
	e.exec("INSERT INTO accounts (id, region, iban) VALUES (1, 'eu', 'DE-one'), (1, 'us', 'US-one')")
	e.exec("INSERT INTO accounts_eu (id, region, iban) VALUES (2, 'eu', 'DE-two')")
	e.assertNoPlaintext("accounts", "DE-one", "US-one", "DE-two")
	if got := e.strings("SELECT id, region, iban FROM accounts ORDER BY region, id"); got != "1,eu,DE-one|2,eu,DE-two|1,us,US-one" {
		t.Fatalf("through the table: %s", got)
	}
	if got := e.strings("SELECT iban FROM accounts_us"); got != "US-one" {
		t.Fatalf("through the partition: %s", got)
	}
	// Both partitions hold a row at ctid (0,1); only one is updated.
	e.exec("UPDATE accounts SET iban = $1 WHERE id = 1 AND region = 'eu'", "DE-new")
	if got := e.strings("SELECT region, iban FROM accounts WHERE id = 1 ORDER BY region"); got != "eu,DE-new|us,US-one" {
		t.Fatalf("after UPDATE: %s", got)
	}
	e.exec("UPDATE accounts_us SET iban = $1 WHERE id = 1", "US-new")
	if got := e.strings("SELECT iban FROM accounts WHERE region = 'us'"); got != "US-new" {
		t.Fatalf("UPDATE through the partition: %s", got)
	}
}

// A view over plain columns of an encrypted table works; one that reaches
// an encrypted column, directly, through another view or as a whole row,
// is refused.
func TestViewsOverEncryptedTables(t *testing.T) {
	e := newEnv(t, usersDDL+`
CREATE VIEW user_names AS SELECT id, name FROM users;
CREATE VIEW user_emails AS SELECT id, email FROM users;
CREATE VIEW user_emails2 AS SELECT id, email AS contact FROM user_emails;
CREATE VIEW user_rows AS SELECT id, row_to_json(u) AS j FROM users u;`, usersMap)
	e.exec("INSERT INTO users (id, name, email) VALUES (1, 'ada', 'ada@example.com')")
	if got := e.strings("SELECT id, name FROM user_names"); got != "1,ada" {
		t.Fatalf("plain view: %s", got)
	}
	for v, col := range map[string]string{"user_emails": "users.email", "user_emails2": "users.email", "user_rows": "users.* (a whole row)"} {
		_, err := e.db.Query("SELECT * FROM " + v)
		var re *kmspostgres.RefusalError
		if !errors.As(err, &re) || !strings.Contains(err.Error(), col) {
			t.Fatalf("%s: err = %v, want a refusal naming %s", v, err, col)
		}
	}
}

// A mapped table that is missing or does not match refuses the statements
// that reach it and leaves the others alone; once a migration creates it,
// the driver picks it up.
func TestMapAheadOfTheDatabase(t *testing.T) {
	e := newEnv(t, `CREATE TABLE notes (id bigint PRIMARY KEY, body text);`, `key_id: insecure-test-key
tables:
  patients:
    columns:
      name: {}
`)
	e.exec("INSERT INTO notes VALUES (1, 'plain')")
	if got := e.strings("SELECT body FROM notes"); got != "plain" {
		t.Fatalf("plain table: %s", got)
	}
	_, err := e.db.Exec("INSERT INTO patients (id, name) VALUES (1, 'Ada')")
	if !errors.Is(err, kmspostgres.ErrSchema) || !strings.Contains(err.Error(), "patients") {
		t.Fatalf("missing table: err = %v", err)
	}
	if _, err := e.raw.Exec(context.Background(), "CREATE TABLE patients (id bigint PRIMARY KEY, name text, encrypted_kms_key text)"); err != nil {
		t.Fatal(err)
	}
	e.exec("INSERT INTO patients (id, name) VALUES (1, 'Ada')")
	e.assertNoPlaintext("patients", "Ada")
	if got := e.strings("SELECT name FROM patients"); got != "Ada" {
		t.Fatalf("after the migration: %s", got)
	}
}

// A mapped table on which the database computes on an encrypted column is
// refused, and check names what to drop.
func TestComputedOnEncryptedColumn(t *testing.T) {
	cases := map[string]struct{ ddl, want string }{
		"generated column": {"ALTER TABLE users ADD COLUMN email_lower text GENERATED ALWAYS AS (lower(email)) STORED", "generated column"},
		"expression index": {"CREATE UNIQUE INDEX users_email_lower ON users (lower(email))", "an index (users_email_lower)"},
		"check constraint": {"ALTER TABLE users ADD CONSTRAINT email_at CHECK (email LIKE '%@%')", "a constraint (email_at)"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, usersDDL+c.ddl+";", usersMap)
			_, err := e.db.Exec("INSERT INTO users (id, email) VALUES (1, 'a@example.com')")
			if !errors.Is(err, kmspostgres.ErrSchema) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "users.email") && !strings.Contains(err.Error(), "column email") {
				t.Fatalf("err = %v, want ErrSchema naming %q and email", err, c.want)
			}
			connector, err := kmspostgres.NewConnector(e.dsn(), kmspostgres.WithProvider(e.kms))
			if err != nil {
				t.Fatal(err)
			}
			if err := connector.Check(context.Background()); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Check: %v", err)
			}
		})
	}
}

// A SQL text already planned sees DDL by another process once the check
// interval has passed, and at once with an interval of zero.
func TestCatalogCheckInterval(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
		wait     time.Duration
	}{
		{"every statement", 0, 0},
		{"interval", 200 * time.Millisecond, 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, usersDDL+`CREATE VIEW v AS SELECT id, name AS label FROM users;`, usersMap)
			db := e.open(kmspostgres.WithCatalogCheckInterval(tc.interval))
			defer db.Close()
			e.exec("INSERT INTO users (id, name, email) VALUES (1, 'ada', 'ada@example.com')")
			if got := stringsOf(t, db, "SELECT label FROM v"); got != "ada" {
				t.Fatalf("before: %s", got)
			}
			if _, err := e.raw.Exec(context.Background(), "CREATE OR REPLACE VIEW v AS SELECT id, email AS label FROM users"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(tc.wait)
			rows, err := db.Query("SELECT label FROM v")
			if err == nil {
				defer rows.Close()
				for rows.Next() {
					var s string
					rows.Scan(&s)
					t.Fatalf("the replaced view returned %q", s)
				}
			}
			if !errors.Is(err, kmspostgres.ErrUnsupported) {
				t.Fatalf("err = %v, want a refusal", err)
			}
		})
	}
}

// DISCARD ALL drops the session's prepared statements, which pgx (and so
// the driver's own catalog queries) had cached: the next statements must
// still run.
func TestDiscardAllThenStatements(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap)
	db := e.open(kmspostgres.WithCatalogCheckInterval(0))
	defer db.Close()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "INSERT INTO users (id, email) VALUES (1, $1)", "a@x"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "DISCARD ALL"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "INSERT INTO users (id, email) VALUES (2, $1)", "b@x"); err != nil {
		t.Fatalf("after DISCARD ALL: %v", err)
	}
	var got string
	if err := conn.QueryRowContext(ctx, "SELECT email FROM users WHERE id = 2").Scan(&got); err != nil || got != "b@x" {
		t.Fatalf("after DISCARD ALL: %q %v", got, err)
	}
}
