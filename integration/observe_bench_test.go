package integration

import (
	"database/sql"
	"io"
	"log/slog"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/kmsotel"
	"github.com/kmspostgres/kmspostgres/kmsslog"
	"github.com/kmspostgres/kmspostgres/providers/testkey"
)

// observedRuns rotates the order of BenchmarkPointSelectObserved's
// sub-benchmarks from one -count run to the next, so that none always
// runs first or last on a shared machine.
var observedRuns int

// BenchmarkPointSelectObserved is BenchmarkPointSelect with, beside raw
// and kms, the observability issue's pieces one by one and together:
// kms-slog logs JSON at Info to io.Discard (successful calls, at Debug,
// are not formatted); kms-otel reports to the real SDK (every span
// sampled and recorded, metrics aggregated); kms-guards counts every row
// against a breaker limit it never reaches and looks for a halt file that
// does not exist once a second; kms-observed has all of them.
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
	slogOpt := kmspostgres.WithObserver(kmsslog.New(log))
	otelOpt := kmspostgres.WithObserver(otelObs)
	limitOpt := kmspostgres.WithDecryptLimit(kmspostgres.DecryptLimit{Rows: 1 << 40, Tables: map[string]int{"people": 1 << 40}, Per: time.Minute})
	fileOpt := kmspostgres.WithHaltFile(filepath.Join(b.TempDir(), "halt"))
	open := func(opts ...kmspostgres.Option) *sql.DB {
		db := d.e.openBare(append([]kmspostgres.Option{kmspostgres.WithProvider(testkey.New())}, opts...)...)
		b.Cleanup(func() { db.Close() })
		return db
	}
	point := func(db *sql.DB, table string) func(b *testing.B) {
		return func(b *testing.B) {
			q := "SELECT name, email, phone FROM " + table + " WHERE id = $1"
			var name, email, phone string
			i := 0
			cpu0 := processCPU(b)
			for b.Loop() {
				if err := db.QueryRow(q, i%100+1).Scan(&name, &email, &phone); err != nil {
					b.Fatal(err)
				}
				i++
			}
			// The client's CPU per statement (PostgreSQL's is not in it):
			// steadier than wall time on a loaded machine.
			b.ReportMetric(float64(processCPU(b)-cpu0)/float64(i)/1e3, "client-cpu-µs/op")
		}
	}
	subs := []struct {
		name string
		f    func(b *testing.B)
	}{
		{"raw", point(d.raw, "people_raw")},
		{"kms", point(d.kms, "people")},
		{"kms-slog", point(open(slogOpt), "people")},
		{"kms-otel", point(open(otelOpt), "people")},
		{"kms-guards", point(open(limitOpt, fileOpt), "people")},
		{"kms-observed", point(open(slogOpt, otelOpt, limitOpt, fileOpt), "people")},
	}
	observedRuns++
	for i := range subs {
		s := subs[(i+observedRuns)%len(subs)]
		b.Run(s.name, s.f)
	}
}

// processCPU is the user and system CPU time the test process used so far,
// in nanoseconds.
func processCPU(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
