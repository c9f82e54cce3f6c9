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
// internal: a traced KMS client adds its own client spans beneath), made
// only under a statement's span unless WithRootSpans, and
// carry kmspostgres.kms.operation, kmspostgres.kms.provider,
// kmspostgres.kms.key_id, kmspostgres.kms.keys (data keys in the request)
// and, on failure, error.type and an error status.
//
// Metrics (attributes in brackets; error.type and db.collection.name are
// OpenTelemetry semantic-convention names):
//
//	kmspostgres.kms.calls          counter, KMS requests [operation, provider, outcome, error.type]
//	kmspostgres.kms.call.duration  histogram, seconds, per request [operation, provider, error.type]
//	kmspostgres.kms.key_errors     counter, data keys a KMS call failed to wrap or unwrap, each key of a batch counting [operation, provider, error.type]
//	kmspostgres.cells              counter, cells encrypted or decrypted [db.collection.name, kmspostgres.cell.operation]
//	kmspostgres.refusals           counter, statements and reads refused [kmspostgres.refusal.reason, db.collection.name]
//	kmspostgres.decrypt.halts      counter, times decryption halted [kmspostgres.halt.source]
//	kmspostgres.key_cache.hits     counter, data keys served by the data-key cache (0 without one)
//	kmspostgres.key_cache.misses   counter, data keys the cache had to ask the KMS for
//	kmspostgres.key_cache.evictions  counter, keys the cache dropped (expired, used up, LRU, purged by a halt); ObserveConnector
//	kmspostgres.key_cache.size     gauge, keys the cache holds; ObserveConnector
//
// kmspostgres.kms.calls, kmspostgres.cells and the key_cache hits and
// misses are observable (asynchronous) counters: counted in atomics on
// the statement's path and reported at each collection, the same
// monotonic sums to an exporter.
//
// where operation is kmspostgres.kms.operation (wrap, unwrap), provider is
// kmspostgres.kms.provider (aws, gcp, vault, test, unknown) and outcome is
// kmspostgres.kms.outcome (ok, error).
package kmsotel

import (
	"context"
	"sync"
	"sync/atomic"
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
	meter    metric.Meter
	tracer   trace.Tracer
	roots    bool
	duration metric.Float64Histogram
	keys     metric.Int64Counter
	refusals metric.Int64Counter
	halts    metric.Int64Counter

	// The counters of every statement (KMS calls, cells, cache hits and
	// misses) are counted in atomics and reported at each collection
	// (observable counters): a measurement through the SDK costs about
	// 0.4 µs, an atomic add a few nanoseconds.
	calls, cells, hits, misses metric.Int64ObservableCounter
	hitCount, missCount        atomic.Int64

	// Attribute sets are built once per combination (all of bounded
	// cardinality) rather than per measurement.
	kinds     cache[string, string] // key id → provider kind
	callCount cache[callKey, *counted]
	durOpts   cache[callKey, metric.MeasurementOption]
	keyOpts   cache[callKey, metric.MeasurementOption]
	cellCount cache[cellKey, *counted]
}

// counted is one series of an observable counter: its attributes and its
// running total.
type counted struct {
	opt metric.ObserveOption
	n   atomic.Int64
}

type callKey struct{ op, provider, errKind string }

type cellKey struct {
	table string
	op    kmspostgres.CellOp
}

// cache is a map filled on first use, safe for concurrent use.
type cache[K comparable, V any] struct {
	mu sync.RWMutex
	m  map[K]V
}

func (c *cache[K, V]) get(k K, make func() V) V {
	c.mu.RLock()
	v, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return v
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.m[k]; ok {
		return v // made meanwhile: one value per key (counted series)
	}
	v = make()
	if c.m == nil {
		c.m = map[K]V{}
	}
	c.m[k] = v
	return v
}

// each calls f for every value, under the read lock.
func (c *cache[K, V]) each(f func(V)) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, v := range c.m {
		f(v)
	}
}

func (o *Observer) kind(keyID string) string {
	return o.kinds.get(keyID, func() string { return string(providers.KindOf(keyID)) })
}

// kmsAttrs are the attributes of a KMS call or data key metric.
func kmsAttrs(k callKey, withOutcome bool) attribute.Set {
	attrs := []attribute.KeyValue{AttrOperation.String(k.op), AttrProvider.String(k.provider)}
	if withOutcome {
		attrs = append(attrs, AttrOutcome.String(cond(k.errKind == "", "ok", "error")))
	}
	if k.errKind != "" {
		attrs = append(attrs, AttrErrorType.String(k.errKind))
	}
	return attribute.NewSet(attrs...)
}

func cond[T any](c bool, a, b T) T {
	if c {
		return a
	}
	return b
}

var (
	_ providers.Observer          = (*Observer)(nil)
	_ providers.CallTracer        = (*Observer)(nil)
	_ kmspostgres.CellObserver    = (*Observer)(nil)
	_ kmspostgres.RefusalObserver = (*Observer)(nil)
	_ kmspostgres.HaltObserver    = (*Observer)(nil)
)

type config struct {
	tp    trace.TracerProvider
	mp    metric.MeterProvider
	roots bool
}

// Option configures an Observer.
type Option func(*config)

// WithTracerProvider sets the TracerProvider (default: otel's global one).
func WithTracerProvider(tp trace.TracerProvider) Option { return func(c *config) { c.tp = tp } }

// WithMeterProvider sets the MeterProvider (default: otel's global one).
func WithMeterProvider(mp metric.MeterProvider) Option { return func(c *config) { c.mp = mp } }

// WithRootSpans traces KMS requests of statements that are not traced
// too, as traces of their own. By default a KMS request is traced only
// under a statement's span: an application that traces its queries gets
// the KMS calls of the statements it samples, and one that does not is
// not flooded with a root trace per row written.
func WithRootSpans() Option { return func(c *config) { c.roots = true } }

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
	o := &Observer{meter: m, tracer: c.tp.Tracer(ScopeName), roots: c.roots}
	var err error
	counter := func(dst *metric.Int64Counter, name, unit, desc string) {
		if err == nil {
			*dst, err = m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		}
	}
	observable := func(dst *metric.Int64ObservableCounter, name, unit, desc string) {
		if err == nil {
			*dst, err = m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		}
	}
	observable(&o.calls, "kmspostgres.kms.calls", "{call}", "KMS requests made by kmspostgres")
	counter(&o.keys, "kmspostgres.kms.key_errors", "{key}", "Data keys a KMS call failed to wrap or unwrap")
	observable(&o.cells, "kmspostgres.cells", "{cell}", "Cells encrypted or decrypted")
	counter(&o.refusals, "kmspostgres.refusals", "{refusal}", "Statements and reads kmspostgres refused")
	counter(&o.halts, "kmspostgres.decrypt.halts", "{halt}", "Times decryption was halted")
	observable(&o.hits, "kmspostgres.key_cache.hits", "{key}", "Data keys served by the data-key cache")
	observable(&o.misses, "kmspostgres.key_cache.misses", "{key}", "Data keys the data-key cache asked the KMS for")
	if err != nil {
		return nil, err
	}
	// The cache series are reported from the start, at 0, so that
	// dashboards and alerts on them work before the cache is turned on.
	if _, err := m.RegisterCallback(func(_ context.Context, obs metric.Observer) error {
		o.callCount.each(func(c *counted) { obs.ObserveInt64(o.calls, c.n.Load(), c.opt) })
		o.cellCount.each(func(c *counted) { obs.ObserveInt64(o.cells, c.n.Load(), c.opt) })
		obs.ObserveInt64(o.hits, o.hitCount.Load())
		obs.ObserveInt64(o.misses, o.missCount.Load())
		return nil
	}, o.calls, o.cells, o.hits, o.misses); err != nil {
		return nil, err
	}
	o.duration, err = m.Float64Histogram("kmspostgres.kms.call.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of KMS requests"), metric.WithExplicitBucketBoundaries(durationBuckets...))
	if err != nil {
		return nil, err
	}
	return o, nil
}

// StartCall starts the span of one KMS request (providers.CallTracer).
func (o *Observer) StartCall(ctx context.Context, op providers.Op, keyID string, keys int) (context.Context, func(error)) {
	provider := o.kind(keyID)
	span := trace.SpanFromContext(ctx) // the statement's, or a no-op
	if o.roots || span.SpanContext().IsValid() {
		ctx, span = o.tracer.Start(ctx, "kmspostgres."+string(op), trace.WithSpanKind(trace.SpanKindInternal),
			trace.WithAttributes(AttrOperation.String(string(op)), AttrProvider.String(provider), AttrKeyID.String(keyID), AttrKeys.Int(keys)))
	} else {
		span = nil
	}
	start := time.Now()
	return ctx, func(err error) {
		took := time.Since(start).Seconds()
		k := callKey{op: string(op), provider: provider, errKind: providers.ErrorKind(err)}
		if span != nil {
			if err != nil {
				span.SetAttributes(AttrErrorType.String(k.errKind))
				span.SetStatus(codes.Error, k.errKind)
			}
			span.End()
		}
		o.callCount.get(k, func() *counted { return &counted{opt: metric.WithAttributeSet(kmsAttrs(k, true))} }).n.Add(1)
		o.duration.Record(ctx, took, o.durOpts.get(k, func() metric.MeasurementOption { return metric.WithAttributeSet(kmsAttrs(k, false)) }))
	}
}

// Observe counts cache hits and misses, and data keys that failed
// (providers.Observer): in a batch request that succeeds, single keys can
// fail, a tampered row among good ones.
func (o *Observer) Observe(e providers.Event) {
	switch e.Cache {
	case providers.CacheHit:
		o.hitCount.Add(1)
		return
	case providers.CacheMiss:
		o.missCount.Add(1)
	}
	if e.Err == nil {
		return
	}
	k := callKey{op: string(e.Op), provider: o.kind(e.KeyID), errKind: e.ErrorKind()}
	o.keys.Add(context.Background(), 1, o.keyOpts.get(k, func() metric.MeasurementOption { return metric.WithAttributeSet(kmsAttrs(k, false)) }))
}

// ObserveCells counts cells (kmspostgres.CellObserver).
func (o *Observer) ObserveCells(ctx context.Context, table string, op kmspostgres.CellOp, n int) {
	o.cellCount.get(cellKey{table, op}, func() *counted {
		return &counted{opt: metric.WithAttributeSet(attribute.NewSet(AttrTable.String(table), AttrCellOperation.String(string(op))))}
	}).n.Add(int64(n))
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

// ObserveConnector reports a connector's data-key cache evictions and size,
// which the cache counts itself rather than reporting as events:
// kmspostgres.key_cache.evictions and kmspostgres.key_cache.size, read at
// each collection, without attributes: watch one connector per Observer
// (make an Observer per connector to watch several). Unregister the
// returned registration when the connector is closed.
func (o *Observer) ObserveConnector(c *kmspostgres.Connector) (metric.Registration, error) {
	ev, err := o.meter.Int64ObservableCounter("kmspostgres.key_cache.evictions", metric.WithUnit("{key}"),
		metric.WithDescription("Data keys the data-key cache dropped: expired, used up, least recently used or purged"))
	if err != nil {
		return nil, err
	}
	size, err := o.meter.Int64ObservableGauge("kmspostgres.key_cache.size", metric.WithUnit("{key}"),
		metric.WithDescription("Data keys the data-key cache holds"))
	if err != nil {
		return nil, err
	}
	return o.meter.RegisterCallback(func(_ context.Context, obs metric.Observer) error {
		s := c.KeyCacheStats()
		obs.ObserveInt64(ev, s.Evictions)
		obs.ObserveInt64(size, int64(s.Keys))
		return nil
	}, ev, size)
}
