package kmsotel_test

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/kmsotel"
	"github.com/kmspostgres/kmspostgres/providers"
)

// TestDeps: the core links no OpenTelemetry, and kmsotel only its API.
func TestDeps(t *testing.T) {
	deps := func(pkg string) string {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		return string(out)
	}
	if d := deps("github.com/kmspostgres/kmspostgres"); strings.Contains(d, "go.opentelemetry.io/") || strings.Contains(d, "kmsotel") {
		t.Error("the core links OpenTelemetry")
	}
	if d := deps("github.com/kmspostgres/kmspostgres/kmsotel"); strings.Contains(d, "go.opentelemetry.io/otel/sdk") {
		t.Error("kmsotel links the OpenTelemetry SDK")
	}
}

func setup(t *testing.T, opts ...kmsotel.Option) (*kmsotel.Observer, *tracetest.SpanRecorder, *sdkmetric.ManualReader) {
	t.Helper()
	sr := tracetest.NewSpanRecorder()
	reader := sdkmetric.NewManualReader()
	o, err := kmsotel.New(append([]kmsotel.Option{kmsotel.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))),
		kmsotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return o, sr, reader
}

func collect(t *testing.T, r *sdkmetric.ManualReader) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

func total(m metricdata.Metrics) int64 {
	var n int64
	for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
		n += dp.Value
	}
	return n
}

// TestBatchAndCache: a batch request is one span and one call; a key
// that fails in it is counted; cache hits and misses are counted, hits
// make no span or KMS call.
func TestBatchAndCache(t *testing.T) {
	o, sr, reader := setup(t, kmsotel.WithRootSpans())
	m := collect(t, reader)
	if total(m["kmspostgres.key_cache.hits"]) != 0 || total(m["kmspostgres.key_cache.misses"]) != 0 {
		t.Fatal("cache series not at 0 from the start")
	}
	_, end := o.StartCall(context.Background(), providers.OpUnwrap, "vault/app", 3)
	end(nil)
	for range 3 {
		o.Observe(providers.Event{Op: providers.OpUnwrap, KeyID: "vault/app", Cache: providers.CacheMiss})
	}
	o.Observe(providers.Event{Op: providers.OpUnwrap, KeyID: "vault/app", Cache: providers.CacheHit})
	o.Observe(providers.Event{Op: providers.OpUnwrap, KeyID: "vault/app", Err: providers.ErrDecrypt})
	_, end = o.StartCall(context.Background(), providers.OpWrap, "vault/app", 1)
	end(errors.Join(providers.ErrPermission))
	o.ObserveHalt(kmspostgres.HaltEvent{Halted: true, Source: kmspostgres.HaltLimit})
	o.ObserveHalt(kmspostgres.HaltEvent{Halted: false, Source: kmspostgres.HaltLimit})

	if n := len(sr.Ended()); n != 2 {
		t.Fatalf("%d spans, want 2", n)
	}
	m = collect(t, reader)
	for name, want := range map[string]int64{
		"kmspostgres.kms.calls": 2, "kmspostgres.kms.key_errors": 1, "kmspostgres.key_cache.hits": 1,
		"kmspostgres.key_cache.misses": 3, "kmspostgres.decrypt.halts": 1,
	} {
		if got := total(m[name]); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	if u := m["kmspostgres.kms.call.duration"].Unit; u != "s" {
		t.Errorf("duration unit %q", u)
	}
	failed := sr.Ended()[1]
	if failed.Status().Description != "permission" {
		t.Errorf("failed span status %v", failed.Status())
	}
}

// TestSpansNeedAParent: without WithRootSpans, a KMS request outside a
// traced statement makes no span but is counted; inside one, its span is
// the statement's child and the provider sees the span in its context.
func TestSpansNeedAParent(t *testing.T) {
	o, sr, reader := setup(t)
	_, end := o.StartCall(context.Background(), providers.OpWrap, "alias/app", 1)
	end(nil)
	if n := len(sr.Ended()); n != 0 {
		t.Fatalf("%d spans without a parent", n)
	}
	tp := sdktrace.NewTracerProvider()
	ctx, parent := tp.Tracer("test").Start(context.Background(), "statement")
	callCtx, end := o.StartCall(ctx, providers.OpWrap, "alias/app", 1)
	if got := trace.SpanContextFromContext(callCtx).SpanID(); got == parent.SpanContext().SpanID() || !got.IsValid() {
		t.Fatalf("the provider's context carries span %v, want the KMS span", got)
	}
	end(nil)
	spans := sr.Ended()
	if len(spans) != 1 || spans[0].Parent().SpanID() != parent.SpanContext().SpanID() || spans[0].Name() != "kmspostgres.wrap" {
		t.Fatalf("spans %v", spans)
	}
	if got := total(collect(t, reader)["kmspostgres.kms.calls"]); got != 2 {
		t.Fatalf("kms.calls = %d, want 2", got)
	}
}
