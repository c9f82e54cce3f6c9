package integration

import (
	"database/sql"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/kmsotel"
	"github.com/kmspostgres/kmspostgres/kmsslog"
	"github.com/kmspostgres/kmspostgres/providers/testkey"
)

// BenchmarkPointSelectObserved is BenchmarkPointSelect with, beside raw
// and kms, kms-observed: the production set-up of the observability
// issue, all on at once. kmsslog logs JSON at Info to io.Discard (so
// successful calls, at Debug, are not formatted), kmsotel reports to the
// real SDK (every span sampled and recorded, metrics aggregated), the
// breaker counts every row against a limit it never reaches, and a halt
// file that does not exist is looked for once a second.
func BenchmarkPointSelectObserved(b *testing.B) {
	d := newBench(b, 100)
	tp := sdktrace.NewTracerProvider()
	b.Cleanup(func() { tp.Shutdown(b.Context()) })
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	otelObs, err := kmsotel.New(kmsotel.WithTracerProvider(tp), kmsotel.WithMeterProvider(mp))
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	observed := d.e.openBare(kmspostgres.WithProvider(testkey.New()),
		kmspostgres.WithObserver(kmsslog.New(log)), kmspostgres.WithObserver(otelObs),
		kmspostgres.WithDecryptLimit(kmspostgres.DecryptLimit{Rows: 1 << 40, Tables: map[string]int{"people": 1 << 40}, Per: time.Minute}),
		kmspostgres.WithHaltFile(filepath.Join(b.TempDir(), "halt")))
	b.Cleanup(func() { observed.Close() })
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
	b.Run("kms", func(b *testing.B) { point(b, d.kms, "people") })
	b.Run("kms-observed", func(b *testing.B) { point(b, observed, "people") })
}
