package kmsotel_test

import (
	"context"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/kmsotel"
	"github.com/kmspostgres/kmspostgres/providers"
)

// BenchmarkPointRead is what the observer costs one point read (one
// unwrap, two cells) on the real SDK, metrics aggregated: untraced (the
// statement has no span: no KMS span either) and traced (a sampled
// statement span: the KMS span is recorded, without an exporter).
func BenchmarkPointRead(b *testing.B) {
	tp := sdktrace.NewTracerProvider()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	o, err := kmsotel.New(kmsotel.WithTracerProvider(tp), kmsotel.WithMeterProvider(mp))
	if err != nil {
		b.Fatal(err)
	}
	ev := providers.Event{Op: providers.OpUnwrap, KeyID: "insecure-test-key", Version: 1, Context: envelope.Context{"table": "users", "id": "1"}}
	read := func(ctx context.Context) func(b *testing.B) {
		return func(b *testing.B) {
			for b.Loop() {
				_, end := o.StartCall(ctx, providers.OpUnwrap, "insecure-test-key", 1)
				o.Observe(ev)
				end(nil)
				o.ObserveCells(ctx, "users", kmspostgres.CellsDecrypted, 2)
			}
		}
	}
	ctx, span := tp.Tracer("bench").Start(context.Background(), "statement")
	defer span.End()
	b.Run("untraced", read(context.Background()))
	b.Run("traced", read(ctx))
}
