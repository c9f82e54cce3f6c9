package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/kmspgx"
	"github.com/kmspostgres/kmspostgres/providers/testkey"
)

// The pgx front end beside raw pgxpool: the same SQL through pgxpool on a
// plain table (raw) and through kmspgx with the insecure test key on an
// encrypted table of the same shape (kms), on one database. sqlc's
// pgx/v5 code calls exactly these methods.

// pgxQuerier is what sqlc's pgx/v5 DBTX needs, met by both pools.
type pgxQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	CopyFrom(ctx context.Context, table pgx.Identifier, cols []string, src pgx.CopyFromSource) (int64, error)
}

type pgxBench struct {
	raw *pgxpool.Pool
	kms *kmspgx.Pool
	dsn string
}

func newPgxBench(b *testing.B, rows int) *pgxBench {
	b.Helper()
	d := newBench(b, rows)
	ctx := context.Background()
	raw, err := pgxpool.New(ctx, d.e.base)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(raw.Close)
	kms, err := kmspgx.NewPool(ctx, d.e.dsn(), kmspostgres.WithProvider(testkey.New()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(kms.Close)
	return &pgxBench{raw: raw, kms: kms, dsn: d.e.dsn()}
}

func (d *pgxBench) run(b *testing.B, f func(b *testing.B, q pgxQuerier, table string)) {
	b.Run("raw", func(b *testing.B) { f(b, d.raw, "people_raw") })
	b.Run("kms", func(b *testing.B) { f(b, d.kms, "people") })
}

func BenchmarkPgxPointSelect(b *testing.B) {
	d := newPgxBench(b, 100)
	ctx := context.Background()
	d.run(b, func(b *testing.B, q pgxQuerier, table string) {
		sql := "SELECT name, email, phone FROM " + table + " WHERE id = $1"
		var name, email, phone string
		i := 0
		for b.Loop() {
			if err := q.QueryRow(ctx, sql, i%100+1).Scan(&name, &email, &phone); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

func BenchmarkPgxSelect1000(b *testing.B) {
	d := newPgxBench(b, 1000)
	d.run(b, pgxSelectAll)
}

// BenchmarkPgxSelect1000Cached is BenchmarkPgxSelect1000 with the
// data-key cache on and warm: no KMS call, no AES key setup.
func BenchmarkPgxSelect1000Cached(b *testing.B) {
	d := newPgxBench(b, 1000)
	ctx := context.Background()
	kms := testkey.New()
	cached, err := kmspgx.NewPool(ctx, d.dsn, kmspostgres.WithProvider(kms), kmspostgres.WithKeyCache(&kmspostgres.CacheConfig{MaxAge: time.Hour}))
	if err != nil {
		b.Fatal(err)
	}
	defer cached.Close()
	rows, err := cached.Query(ctx, "SELECT id, name, email, phone FROM people") // warm the cache
	if err != nil {
		b.Fatal(err)
	}
	for rows.Next() {
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	d.kms = cached
	d.run(b, func(b *testing.B, q pgxQuerier, table string) {
		_, before := kms.Calls()
		pgxSelectAll(b, q, table)
		if table == "people" {
			kmsCallsPerOp(b, kms, before)
		}
	})
}

func pgxSelectAll(b *testing.B, q pgxQuerier, table string) {
	ctx := context.Background()
	sql := "SELECT id, name, email, phone FROM " + table
	for b.Loop() {
		rows, err := q.Query(ctx, sql)
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
	}
}

// BenchmarkPgxCopyFrom copies 5,000 rows per op; rows/s is the figure to
// compare (goal: kms at least half of raw).
func BenchmarkPgxCopyFrom(b *testing.B) {
	d := newPgxBench(b, 0)
	ctx := context.Background()
	const n = 5000
	src := make([][]any, n)
	for i := range src {
		src[i] = []any{"p", fmt.Sprintf("person%d@example.com", i), fmt.Sprintf("+1-555-%04d", i)}
	}
	d.run(b, func(b *testing.B, q pgxQuerier, table string) {
		for b.Loop() {
			got, err := q.CopyFrom(ctx, pgx.Identifier{table}, []string{"name", "email", "phone"}, pgx.CopyFromRows(src))
			if err != nil || got != n {
				b.Fatalf("copied %d: %v", got, err)
			}
		}
		b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "rows/s")
	})
}
