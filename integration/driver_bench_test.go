package integration

import (
	"database/sql"
	"fmt"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/providers/testkey"
)

// Each benchmark runs the same SQL through pgx's own driver on a plain
// table (raw) and through kmspostgres with the insecure test key on an
// encrypted table of the same shape (kms), on one database.

const benchDDL = `
CREATE TABLE people (id bigserial PRIMARY KEY, name text, email text, phone text, encrypted_kms_key text);
CREATE TABLE people_raw (id bigserial PRIMARY KEY, name text, email text, phone text, encrypted_kms_key text);`

const benchMap = `key_id: insecure-test-key
tables:
  people:
    columns:
      email: {}
      phone: {}
`

type benchDBs struct {
	e   *env
	raw *sql.DB
	kms *sql.DB // no audit observer: the harness should not measure itself
}

func newBench(b *testing.B, rows int) *benchDBs {
	b.Helper()
	e := newEnv(b, benchDDL, benchMap)
	raw, err := sql.Open("pgx", e.base)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { raw.Close() })
	for i := range rows {
		email, phone := fmt.Sprintf("person%d@example.com", i), fmt.Sprintf("+1-555-%04d", i)
		e.exec("INSERT INTO people (name, email, phone) VALUES ($1, $2, $3)", "p", email, phone)
		if _, err := raw.Exec("INSERT INTO people_raw (name, email, phone) VALUES ($1, $2, $3)", "p", email, phone); err != nil {
			b.Fatal(err)
		}
	}
	kms := e.openBare(kmspostgres.WithProvider(testkey.New()))
	b.Cleanup(func() { kms.Close() })
	return &benchDBs{e: e, raw: raw, kms: kms}
}

func (d *benchDBs) run(b *testing.B, kms *sql.DB, query func(b *testing.B, db *sql.DB, table string)) {
	b.Run("raw", func(b *testing.B) { query(b, d.raw, "people_raw") })
	b.Run("kms", func(b *testing.B) { query(b, kms, "people") })
}

func BenchmarkPointSelect(b *testing.B) {
	d := newBench(b, 100)
	d.run(b, d.kms, func(b *testing.B, db *sql.DB, table string) {
		q := "SELECT name, email, phone FROM " + table + " WHERE id = $1"
		var name, email, phone string
		i := 0
		for b.Loop() {
			if err := db.QueryRow(q, i%100+1).Scan(&name, &email, &phone); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

func BenchmarkInsert(b *testing.B) {
	d := newBench(b, 0)
	d.run(b, d.kms, func(b *testing.B, db *sql.DB, table string) {
		q := "INSERT INTO " + table + " (name, email, phone) VALUES ($1, $2, $3)"
		for b.Loop() {
			if _, err := db.Exec(q, "p", "someone@example.com", "+1-555-0100"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func selectAll(b *testing.B, db *sql.DB, table string) {
	q := "SELECT id, name, email, phone FROM " + table
	for b.Loop() {
		rows, err := db.Query(q)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		var id int64
		var name, email, phone string
		for rows.Next() {
			if err := rows.Scan(&id, &name, &email, &phone); err != nil {
				b.Fatal(err)
			}
			n++
		}
		if err := rows.Err(); err != nil || n != 1000 {
			b.Fatalf("%d rows, %v", n, err)
		}
		rows.Close()
	}
}

func BenchmarkSelect1000(b *testing.B) {
	d := newBench(b, 1000)
	d.run(b, d.kms, selectAll)
}

// BenchmarkSelect1000SlowKMS adds 1 ms to every unwrap call. Unwrapped one
// by one, 1,000 rows would take 1,000 ms; serial-ratio reports the
// fraction of that the driver takes.
func BenchmarkSelect1000SlowKMS(b *testing.B) {
	d := newBench(b, 1000)
	slow := d.e.openBare(kmspostgres.WithProvider(testkey.New(testkey.WithLatency(time.Millisecond))))
	defer slow.Close()
	d.run(b, slow, func(b *testing.B, db *sql.DB, table string) {
		start := time.Now()
		selectAll(b, db, table)
		if table == "people" {
			perOp := time.Since(start) / time.Duration(b.N)
			b.ReportMetric(float64(perOp)/float64(time.Second), "serial-ratio")
		}
	})
}

// kmsCallsPerOp reports the unwrap calls one op made.
func kmsCallsPerOp(b *testing.B, kms *testkey.Provider, before int64) {
	_, after := kms.Calls()
	b.ReportMetric(float64(after-before)/float64(b.N), "kms-calls/op")
}

// BenchmarkSelect1000Cached reads 1,000 rows with the data-key cache on
// and warm: no KMS call, no AES key setup.
func BenchmarkSelect1000Cached(b *testing.B) {
	d := newBench(b, 1000)
	kms := testkey.New()
	cached := d.e.openBare(kmspostgres.WithProvider(kms), kmspostgres.WithKeyCache(&kmspostgres.CacheConfig{MaxAge: time.Hour}))
	defer cached.Close()
	rows, err := cached.Query("SELECT id, name, email, phone FROM people") // warm the cache
	if err != nil {
		b.Fatal(err)
	}
	for rows.Next() {
	}
	rows.Close()
	d.run(b, cached, func(b *testing.B, db *sql.DB, table string) {
		_, before := kms.Calls()
		selectAll(b, db, table)
		if table == "people" {
			kmsCallsPerOp(b, kms, before)
		}
	})
}

// BenchmarkPointSelectSlowKMS reads one row by primary key on a KMS that
// takes 5 ms per unwrap, without and with the data-key cache.
func BenchmarkPointSelectSlowKMS(b *testing.B) {
	d := newBench(b, 100)
	point := func(b *testing.B, db *sql.DB, table string) {
		q := "SELECT name, email, phone FROM " + table + " WHERE id = $1"
		var name, email, phone string
		i := 0
		for b.Loop() {
			if err := db.QueryRow(q, i%100+1).Scan(&name, &email, &phone); err != nil {
				b.Fatal(err)
			}
			i++
		}
	}
	b.Run("raw", func(b *testing.B) { point(b, d.raw, "people_raw") })
	for _, v := range []struct {
		name  string
		cache *kmspostgres.CacheConfig
	}{{"kms", nil}, {"kms-cached", &kmspostgres.CacheConfig{MaxAge: time.Hour}}} {
		b.Run(v.name, func(b *testing.B) {
			kms := testkey.New(testkey.WithLatency(5 * time.Millisecond))
			db := d.e.openBare(kmspostgres.WithProvider(kms), kmspostgres.WithKeyCache(v.cache))
			defer db.Close()
			if v.cache != nil { // warm
				var name, email, phone string
				for id := 1; id <= 100; id++ {
					if err := db.QueryRow("SELECT name, email, phone FROM people WHERE id = $1", id).Scan(&name, &email, &phone); err != nil {
						b.Fatal(err)
					}
				}
			}
			_, before := kms.Calls()
			point(b, db, "people")
			kmsCallsPerOp(b, kms, before)
		})
	}
}
