package integration

import (
	"database/sql"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/blindindex"
	"github.com/kmspostgres/kmspostgres/providers/testkey"
)

// The lookup benchmarks compare one query by email on three tables of the
// same rows: plaintext with a btree index (raw, through pgx's driver), and
// encrypted with a unique blind index under HMAC-SHA256 or Argon2id
// (through kmspostgres with the insecure test key).

const lookupDDL = `
CREATE TABLE people_raw (id bigserial PRIMARY KEY, name text, email text);
CREATE INDEX ON people_raw (email);
CREATE TABLE people_hmac (id bigserial PRIMARY KEY, name text, email text, encrypted_kms_key text, email_bidx text UNIQUE);
CREATE TABLE people_argon (id bigserial PRIMARY KEY, name text, email text, encrypted_kms_key text, email_bidx text UNIQUE);
CREATE TABLE people_plain (id bigserial PRIMARY KEY, name text, email text, encrypted_kms_key text, email_bidx text);`

const lookupMap = `key_id: insecure-test-key
tables:
  people_hmac:
    columns:
      email: {blind_index: {algorithm: hmac_sha256, expression: lower}}
  people_argon:
    columns:
      email: {blind_index: {algorithm: argon2id, expression: lower}}
  people_plain:
    columns:
      email: {}
`

const lookupRows = 1000

var insertSeq atomic.Int64

func newLookupBench(b *testing.B, rows int) (raw, kms *sql.DB) {
	b.Helper()
	b.Setenv(blindindex.EnvMasterKey, strings.Repeat("0123456789abcdef", 4))
	e := newEnv(b, lookupDDL, lookupMap)
	raw, err := sql.Open("pgx", e.base)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { raw.Close() })
	for i := range rows {
		email := fmt.Sprintf("person%d@example.com", i)
		if _, err := raw.Exec("INSERT INTO people_raw (name, email) VALUES ($1, $2)", "p", email); err != nil {
			b.Fatal(err)
		}
		e.exec("INSERT INTO people_hmac (name, email) VALUES ($1, $2)", "p", email)
		e.exec("INSERT INTO people_argon (name, email) VALUES ($1, $2)", "p", email)
	}
	for _, t := range []string{"people_raw", "people_hmac", "people_argon"} {
		if _, err := raw.Exec("ANALYZE " + t); err != nil {
			b.Fatal(err)
		}
	}
	kms = e.openBare(kmspostgres.WithProvider(testkey.New()))
	b.Cleanup(func() { kms.Close() })
	return raw, kms
}

// BenchmarkLookupByEmail: SELECT id, name, email … WHERE email = $1, one
// matching row of 1,000.
func BenchmarkLookupByEmail(b *testing.B) {
	raw, kms := newLookupBench(b, lookupRows)
	for _, c := range []struct {
		name, table string
		db          *sql.DB
	}{{"raw", "people_raw", raw}, {"kms_hmac", "people_hmac", kms}, {"kms_argon2id", "people_argon", kms}} {
		b.Run(c.name, func(b *testing.B) {
			q := "SELECT id, name, email FROM " + c.table + " WHERE email = $1"
			lookupLoop(b, c.db, q)
		})
	}
}

// BenchmarkInsertBlindIndex: the cost of one indexed column on INSERT.
func BenchmarkInsertBlindIndex(b *testing.B) {
	raw, kms := newLookupBench(b, 0)
	for _, c := range []struct {
		name, table string
		db          *sql.DB
	}{{"raw", "people_raw", raw}, {"kms_no_index", "people_plain", kms}, {"kms_hmac", "people_hmac", kms}, {"kms_argon2id", "people_argon", kms}} {
		b.Run(c.name, func(b *testing.B) {
			q := "INSERT INTO " + c.table + " (name, email) VALUES ($1, $2)"
			for b.Loop() {
				// Unique across -count runs, which share the tables.
				if _, err := c.db.Exec(q, "p", fmt.Sprintf("new%d@example.com", insertSeq.Add(1))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLookupByEmailSubquery: the lookup written as a subquery, whose
// comparison the driver prechecks (one more indexed query and one unwrap)
// rather than checking the returned row.
func BenchmarkLookupByEmailSubquery(b *testing.B) {
	raw, kms := newLookupBench(b, lookupRows)
	for _, c := range []struct {
		name, table string
		db          *sql.DB
	}{{"raw", "people_raw", raw}, {"kms_hmac", "people_hmac", kms}} {
		b.Run(c.name, func(b *testing.B) {
			q := "SELECT id, name, email FROM " + c.table + " WHERE id IN (SELECT id FROM " + c.table + " WHERE email = $1)"
			lookupLoop(b, c.db, q)
		})
	}
}

// lookupLoop looks up person i's row by email, i going round the table.
func lookupLoop(b *testing.B, db *sql.DB, q string) {
	var id int64
	var name, email string
	i := 0
	for b.Loop() {
		want := fmt.Sprintf("person%d@example.com", i%lookupRows)
		if err := db.QueryRow(q, want).Scan(&id, &name, &email); err != nil {
			b.Fatal(err)
		}
		if email != want {
			b.Fatalf("got %q for %q", email, want)
		}
		i++
	}
}
