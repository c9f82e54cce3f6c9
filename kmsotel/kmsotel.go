// Package kmsotel reports kmspostgres's KMS calls and driver events to
// OpenTelemetry: a span per KMS request, a child of the statement's span
// when the application traces its queries (otelsql and the like pass it in
// the statement's context), and metrics. It uses only the OpenTelemetry
// API; the application brings the SDK and exporters.
//
//	obs, err := kmsotel.New() // the global TracerProvider and MeterProvider
//	c, err := kmspostgres.NewConnector(dsn, kmspostgres.WithObserver(obs))
//
// Spans are named "kmspostgres.wrap" and "kmspostgres.unwrap" (kind
// internal: a traced KMS client adds its own client spans beneath) and
// carry kmspostgres.kms.operation, kmspostgres.kms.provider,
// kmspostgres.kms.key_id, kmspostgres.kms.keys (data keys in the request)
// and, on failure, error.type and an error status.
//
// Metrics (attributes in brackets; error.type and db.collection.name are
// OpenTelemetry semantic-convention names):
//
//	kmspostgres.kms.calls          counter, KMS requests [operation, provider, outcome, error.type]
//	kmspostgres.kms.call.duration  histogram, seconds, per request [operation, provider, error.type]
//	kmspostgres.kms.data_keys      counter, data keys wrapped or unwrapped, a batch counting each [operation, provider, outcome, error.type]
//	kmspostgres.cells              counter, cells encrypted or decrypted [db.collection.name, kmspostgres.cell.operation]
//	kmspostgres.refusals           counter, statements and reads refused [kmspostgres.refusal.reason, db.collection.name]
//	kmspostgres.decrypt.halts      counter, times decryption halted [kmspostgres.halt.source]
//	kmspostgres.key_cache.hits     counter, data keys served by the data-key cache (0 until it exists)
//	kmspostgres.key_cache.misses   counter, data keys the cache had to ask the KMS for
//
// where operation is kmspostgres.kms.operation (wrap, unwrap), provider is
// kmspostgres.kms.provider (aws, gcp, vault, test, unknown) and outcome is
// kmspostgres.kms.outcome (ok, error).
package kmsotel

import (
	"context"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/providers"
)

// ScopeName is the instrumentation scope of the tracer and meter.
const ScopeName = "github.com/kmspostgres/kmspostgres/kmsotel"

// Attribute keys.
const (
	AttrOperation     = attribute.Key("kmspostgres.kms.operation")
	AttrProvider      = attribute.Key("kmspostgres.kms.provider")
	AttrKeyID         = attribute.Key("kmspostgres.kms.key_id")
	AttrKeys          = attribute.Key("kmspostgres.kms.keys")
	AttrOutcome       = attribute.Key("kmspostgres.kms.outcome")
	AttrErrorType     = attribute.Key("error.type")         // semantic conventions
	AttrTable         = attribute.Key("db.collection.name") // semantic conventions
	AttrCellOperation = attribute.Key("kmspostgres.cell.operation")
	AttrRefusalReason = attribute.Key("kmspostgres.refusal.reason")
	AttrHaltSource    = attribute.Key("kmspostgres.halt.source")
)

// durationBuckets spans an in-process test key (microseconds) to a
// cloud KMS timing out (2 s deadline, retries).
var durationBuckets = []float64{0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10}

// Observer is a kmspostgres observer that traces KMS requests and counts
// KMS calls, cells, refusals and halts. Give it to
// kmspostgres.WithObserver.
type Observer struct {
	tracer   trace.Tracer
	calls    metric.Int64Counter
	duration metric.Float64Histogram
	keys     metric.Int64Counter
	cells    metric.Int64Counter
	refusals metric.Int64Counter
	halts    metric.Int64Counter
	hits     metric.Int64Counter
	misses   metric.Int64Counter
}

var (
	_ providers.Observer          = (*Observer)(nil)
	_ providers.CallTracer        = (*Observer)(nil)
	_ kmspostgres.CellObserver    = (*Observer)(nil)
	_ kmspostgres.RefusalObserver = (*Observer)(nil)
	_ kmspostgres.HaltObserver    = (*Observer)(nil)
)

type config struct {
	tp trace.TracerProvider
	mp metric.MeterProvider
}

// Option configures an Observer.
type Option func(*config)

// WithTracerProvider sets the TracerProvider (default: otel's global one).
func WithTracerProvider(tp trace.TracerProvider) Option { return func(c *config) { c.tp = tp } }

// WithMeterProvider sets the MeterProvider (default: otel's global one).
func WithMeterProvider(mp metric.MeterProvider) Option { return func(c *config) { c.mp = mp } }

// New makes an Observer and its instruments.
func New(opts ...Option) (*Observer, error) {
	var c config
	for _, f := range opts {
		f(&c)
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	m := c.mp.Meter(ScopeName)
	o := &Observer{tracer: c.tp.Tracer(ScopeName)}
	var err error
	counter := func(dst *metric.Int64Counter, name, unit, desc string) {
		if err == nil {
			*dst, err = m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		}
	}
	counter(&o.calls, "kmspostgres.kms.calls", "{call}", "KMS requests made by kmspostgres")
	counter(&o.keys, "kmspostgres.kms.data_keys", "{key}", "Data keys wrapped or unwrapped by the KMS")
	counter(&o.cells, "kmspostgres.cells", "{cell}", "Cells encrypted or decrypted")
	counter(&o.refusals, "kmspostgres.refusals", "{refusal}", "Statements and reads kmspostgres refused")
	counter(&o.halts, "kmspostgres.decrypt.halts", "{halt}", "Times decryption was halted")
	counter(&o.hits, "kmspostgres.key_cache.hits", "{key}", "Data keys served by the data-key cache")
	counter(&o.misses, "kmspostgres.key_cache.misses", "{key}", "Data keys the data-key cache asked the KMS for")
	if err != nil {
		return nil, err
	}
	o.duration, err = m.Float64Histogram("kmspostgres.kms.call.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of KMS requests"), metric.WithExplicitBucketBoundaries(durationBuckets...))
	if err != nil {
		return nil, err
	}
	// The cache series exist from the start, at 0, so that dashboards and
	// alerts on them work before the cache is turned on.
	o.hits.Add(context.Background(), 0)
	o.misses.Add(context.Background(), 0)
	return o, nil
}

// StartCall starts the span of one KMS request (providers.CallTracer).
func (o *Observer) StartCall(ctx context.Context, op providers.Op, keyID string, keys int) (context.Context, func(error)) {
	provider := string(providers.KindOf(keyID))
	ctx, span := o.tracer.Start(ctx, "kmspostgres."+string(op), trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(AttrOperation.String(string(op)), AttrProvider.String(provider), AttrKeyID.String(keyID), AttrKeys.Int(keys)))
	start := time.Now()
	return ctx, func(err error) {
		took := time.Since(start).Seconds()
		kind := providers.ErrorKind(err)
		base := []attribute.KeyValue{AttrOperation.String(string(op)), AttrProvider.String(provider)}
		if err != nil {
			span.SetAttributes(AttrErrorType.String(kind))
			span.SetStatus(codes.Error, kind)
			base = append(base, AttrErrorType.String(kind))
		}
		span.End()
		o.duration.Record(ctx, took, metric.WithAttributes(base...))
		o.calls.Add(ctx, 1, metric.WithAttributes(append(base, outcome(err))...))
	}
}

func outcome(err error) attribute.KeyValue {
	if err != nil {
		return AttrOutcome.String("error")
	}
	return AttrOutcome.String("ok")
}

// Observe counts one data key (providers.Observer).
func (o *Observer) Observe(e providers.Event) {
	ctx := context.Background()
	switch e.Cache {
	case providers.CacheHit:
		o.hits.Add(ctx, 1)
		return
	case providers.CacheMiss:
		o.misses.Add(ctx, 1)
	}
	attrs := []attribute.KeyValue{AttrOperation.String(string(e.Op)), AttrProvider.String(string(providers.KindOf(e.KeyID))), outcome(e.Err)}
	if e.Err != nil {
		attrs = append(attrs, AttrErrorType.String(e.ErrorKind()))
	}
	o.keys.Add(ctx, 1, metric.WithAttributes(attrs...))
}

// ObserveCells counts cells (kmspostgres.CellObserver).
func (o *Observer) ObserveCells(ctx context.Context, table string, op kmspostgres.CellOp, n int) {
	o.cells.Add(ctx, int64(n), metric.WithAttributes(AttrTable.String(table), AttrCellOperation.String(string(op))))
}

// ObserveRefusal counts a refused statement or read
// (kmspostgres.RefusalObserver).
func (o *Observer) ObserveRefusal(ctx context.Context, r kmspostgres.Refusal) {
	attrs := []attribute.KeyValue{AttrRefusalReason.String(string(r.Reason))}
	if r.Table != "" {
		attrs = append(attrs, AttrTable.String(r.Table))
	}
	o.refusals.Add(ctx, 1, metric.WithAttributes(attrs...))
}

// ObserveHalt counts halts (kmspostgres.HaltObserver).
func (o *Observer) ObserveHalt(h kmspostgres.HaltEvent) {
	if h.Halted {
		o.halts.Add(context.Background(), 1, metric.WithAttributes(AttrHaltSource.String(string(h.Source))))
	}
}
