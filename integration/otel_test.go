package integration

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/kmsotel"
	"github.com/kmspostgres/kmspostgres/kmsslog"
)

// otelHarness is the real SDK with in-memory exporters.
type otelHarness struct {
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	obs    *kmsotel.Observer
}

func newOtel(t *testing.T) *otelHarness {
	t.Helper()
	h := &otelHarness{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	h.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(h.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(h.reader))
	var err error
	if h.obs, err = kmsotel.New(kmsotel.WithTracerProvider(h.tp), kmsotel.WithMeterProvider(mp)); err != nil {
		t.Fatal(err)
	}
	return h
}

// metrics collects and returns the metrics by name.
func (h *otelHarness) metrics(t *testing.T) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

// sum adds the points of a counter whose attributes include want; -1 when
// the metric is missing.
func sum(m map[string]metricdata.Aggregation, name string, want ...attribute.KeyValue) int64 {
	s, ok := m[name].(metricdata.Sum[int64])
	if !ok {
		return -1
	}
	var n int64
	for _, dp := range s.DataPoints {
		if hasAll(dp.Attributes, want) {
			n += dp.Value
		}
	}
	return n
}

// histCount counts the observations of a histogram whose attributes
// include want.
func histCount(m map[string]metricdata.Aggregation, name string, want ...attribute.KeyValue) int64 {
	h, ok := m[name].(metricdata.Histogram[float64])
	if !ok {
		return -1
	}
	var n uint64
	for _, dp := range h.DataPoints {
		if hasAll(dp.Attributes, want) {
			n += dp.Count
		}
	}
	return int64(n)
}

func hasAll(set attribute.Set, want []attribute.KeyValue) bool {
	for _, kv := range want {
		if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
			return false
		}
	}
	return true
}

// TestOtelSelect: a SELECT of N rows in a traced request makes N unwrap
// spans under the request's span and the expected counts.
func TestOtelSelect(t *testing.T) {
	e := newEnv(t, obsDDL, obsMap)
	h := newOtel(t)
	c, db := e.observed(kmspostgres.WithObserver(h.obs))
	const n = 30
	fillPeople(t, db, n)

	ctx, parent := h.tp.Tracer("test").Start(context.Background(), "GET /people")
	rows, err := db.QueryContext(ctx, "SELECT id, email, phone FROM people")
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for rows.Next() {
		got++
	}
	if err := rows.Err(); err != nil || got != n {
		t.Fatalf("%d rows, %v", got, err)
	}
	rows.Close()
	parent.End()

	unwraps, wraps := 0, 0
	for _, s := range h.spans.Ended() {
		switch s.Name() {
		case "kmspostgres.unwrap":
			unwraps++
			if s.Parent().SpanID() != parent.SpanContext().SpanID() || s.Parent().TraceID() != parent.SpanContext().TraceID() {
				t.Errorf("unwrap span parent %v, want the request's span %v", s.Parent().SpanID(), parent.SpanContext().SpanID())
			}
			if !hasAll(attribute.NewSet(s.Attributes()...), []attribute.KeyValue{kmsotel.AttrOperation.String("unwrap"), kmsotel.AttrProvider.String("test"),
				kmsotel.AttrKeyID.String("insecure-test-key"), kmsotel.AttrKeys.Int(1)}) {
				t.Errorf("unwrap span attributes %v", s.Attributes())
			}
		case "kmspostgres.wrap":
			wraps++
		}
	}
	// The inserts were not traced: their KMS calls make no root spans.
	if unwraps != n || wraps != 0 {
		t.Fatalf("%d unwrap and %d wrap spans, want %d and 0", unwraps, wraps, n)
	}

	m := h.metrics(t)
	unwrapOK := []attribute.KeyValue{kmsotel.AttrOperation.String("unwrap"), kmsotel.AttrProvider.String("test"), kmsotel.AttrOutcome.String("ok")}
	checks := []struct {
		name string
		got  int64
		want int64
	}{
		{"kms.calls unwrap ok", sum(m, "kmspostgres.kms.calls", unwrapOK...), n},
		{"kms.calls wrap ok", sum(m, "kmspostgres.kms.calls", kmsotel.AttrOperation.String("wrap"), kmsotel.AttrOutcome.String("ok")), n},
		{"kms.key_errors", sum(m, "kmspostgres.kms.key_errors"), -1},
		{"kms.call.duration unwrap", histCount(m, "kmspostgres.kms.call.duration", kmsotel.AttrOperation.String("unwrap")), n},
		{"cells decrypted", sum(m, "kmspostgres.cells", kmsotel.AttrTable.String("people"), kmsotel.AttrCellOperation.String("decrypt")), 2 * n},
		{"cells encrypted", sum(m, "kmspostgres.cells", kmsotel.AttrTable.String("people"), kmsotel.AttrCellOperation.String("encrypt")), 2 * n},
		{"key_cache.hits (no cache yet)", sum(m, "kmspostgres.key_cache.hits"), 0},
		{"key_cache.misses (no cache yet)", sum(m, "kmspostgres.key_cache.misses"), 0},
		{"refusals", sum(m, "kmspostgres.refusals"), -1},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}

	// An UPDATE of one cell re-seals it under the row's key.
	if _, err := db.Exec("UPDATE people SET email = 'new@x' WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	// Refusals: one unsupported statement, then a halt and a refused read.
	if _, err := db.Query("SELECT id FROM people ORDER BY phone"); err == nil {
		t.Fatal("ORDER BY an encrypted column ran")
	}
	c.HaltDecryption("test")
	mustErrIs(t, readEmail(db, 1), kmspostgres.ErrDecryptHalted)
	// A failed KMS call: the key column of row 2 is row 3's.
	c.ResumeDecryption()
	if _, err := e.raw.Exec(context.Background(), "UPDATE people SET encrypted_kms_key = (SELECT encrypted_kms_key FROM people WHERE id = 3) WHERE id = 2"); err != nil {
		t.Fatal(err)
	}
	ctx, parent = h.tp.Tracer("test").Start(context.Background(), "GET /people/2")
	var email string
	mustErrIs(t, db.QueryRowContext(ctx, "SELECT email FROM people WHERE id = 2").Scan(&email), kmspostgres.ErrDecrypt)
	parent.End()

	m = h.metrics(t)
	checks = []struct {
		name string
		got  int64
		want int64
	}{
		{"cells encrypted by the update", sum(m, "kmspostgres.cells", kmsotel.AttrTable.String("people"), kmsotel.AttrCellOperation.String("encrypt")), 2*n + 1},
		{"refusals unsupported", sum(m, "kmspostgres.refusals", kmsotel.AttrRefusalReason.String("unsupported"), kmsotel.AttrTable.String("people")), 1},
		{"refusals halted", sum(m, "kmspostgres.refusals", kmsotel.AttrRefusalReason.String("decrypt_halted")), 1},
		{"halts manual", sum(m, "kmspostgres.decrypt.halts", kmsotel.AttrHaltSource.String("manual")), 1},
		{"kms.calls unwrap error", sum(m, "kmspostgres.kms.calls", kmsotel.AttrOperation.String("unwrap"), kmsotel.AttrOutcome.String("error"), kmsotel.AttrErrorType.String("decrypt")), 1},
		{"kms.key_errors unwrap decrypt", sum(m, "kmspostgres.kms.key_errors", kmsotel.AttrOperation.String("unwrap"), kmsotel.AttrErrorType.String("decrypt")), 1},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
	failed := 0
	for _, s := range h.spans.Ended() {
		if s.Name() == "kmspostgres.unwrap" && s.Status().Code.String() == "Error" {
			failed++
			if s.Status().Description != "decrypt" {
				t.Errorf("status %v", s.Status())
			}
		}
	}
	if failed != 1 {
		t.Errorf("%d failed unwrap spans, want 1", failed)
	}
}

// TestBreakerReported: the breaker's trip is logged once at Error and
// counted once; each refused read is logged at Warn and counted with its
// reason and table; the resume is logged.
func TestBreakerReported(t *testing.T) {
	e := newEnv(t, obsDDL, obsMap)
	h := newOtel(t)
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c, db := e.observed(kmspostgres.WithObserver(h.obs), kmspostgres.WithObserver(kmsslog.New(log)),
		kmspostgres.WithDecryptLimit(kmspostgres.DecryptLimit{Tables: map[string]int{"people": 3}, Per: time.Minute}))
	fillPeople(t, db, 5)
	for id := 1; id <= 3; id++ {
		if err := readEmail(db, id); err != nil {
			t.Fatal(err)
		}
	}
	mustErrIs(t, readEmail(db, 4), kmspostgres.ErrDecryptHalted) // trips
	mustErrIs(t, readEmail(db, 1), kmspostgres.ErrDecryptHalted) // open
	c.ResumeDecryption()
	if err := readEmail(db, 1); err != nil {
		t.Fatal(err)
	}

	count := map[string]int{}
	for _, r := range buf.records(t) {
		count[fmt.Sprint(r["level"], " ", r["msg"], " ", r["source"], r["reason"], " ", r["table"])]++
	}
	want := map[string]int{
		"ERROR kmspostgres: decryption halted limitdecrypt-rate breaker tripped: table people: 4 rows decrypted in 1m0s would exceed the limit of 3 <nil>": 1,
		"WARN kmspostgres: read refused, decryption halted <nil>decrypt_limit people":                                                                      1,
		"WARN kmspostgres: read refused, decryption halted <nil>decrypt_limit <nil>":                                                                       1,
		"WARN kmspostgres: decryption resumed limitdecrypt-rate breaker tripped: table people: 4 rows decrypted in 1m0s would exceed the limit of 3 <nil>": 1,
	}
	if fmt.Sprint(count) != fmt.Sprint(want) {
		t.Fatalf("records:\n%v\nwant\n%v", count, want)
	}
	m := h.metrics(t)
	if got := sum(m, "kmspostgres.decrypt.halts", kmsotel.AttrHaltSource.String("limit")); got != 1 {
		t.Errorf("decrypt.halts = %d, want 1", got)
	}
	if got := sum(m, "kmspostgres.refusals", kmsotel.AttrRefusalReason.String("decrypt_limit")); got != 2 {
		t.Errorf("refusals = %d, want 2", got)
	}
	if got := sum(m, "kmspostgres.cells", kmsotel.AttrCellOperation.String("decrypt")); got != 4 {
		t.Errorf("cells decrypted = %d, want 4 (3 reads before the trip, 1 after the resume)", got)
	}
}

// TestObservedCache: with the data-key cache, a SELECT of N rows makes N
// KMS spans and misses the first time, and no KMS call, no span and N
// hits the second; kmsslog logs each hit; a halt purges the cache, so
// that after the resume the rows are unwrapped by the KMS again.
func TestObservedCache(t *testing.T) {
	e := newEnv(t, obsDDL, obsMap)
	h := newOtel(t)
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, db := e.observed(kmspostgres.WithObserver(h.obs), kmspostgres.WithObserver(kmsslog.New(log)),
		kmspostgres.WithKeyCache(&kmspostgres.CacheConfig{MaxAge: 5 * time.Minute}))
	const n = 12
	fillPeople(t, db, n)
	reg, err := h.obs.ObserveConnector(c)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Unregister()
	gauge := func(name string) int64 {
		switch d := h.metrics(t)[name].(type) {
		case metricdata.Sum[int64]:
			return d.DataPoints[0].Value
		case metricdata.Gauge[int64]:
			return d.DataPoints[0].Value
		}
		return -1
	}
	tracer := h.tp.Tracer("test")
	read := func() {
		t.Helper()
		ctx, span := tracer.Start(context.Background(), "GET /people")
		defer span.End()
		rows, err := db.QueryContext(ctx, "SELECT email FROM people")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		got := 0
		for rows.Next() {
			got++
		}
		if err := rows.Err(); err != nil || got != n {
			t.Fatalf("%d rows, %v", got, err)
		}
	}
	unwrapSpans := func() int {
		k := 0
		for _, s := range h.spans.Ended() {
			if s.Name() == "kmspostgres.unwrap" {
				k++
			}
		}
		return k
	}
	logged := func(cache string) int {
		k := 0
		for _, r := range buf.records(t) {
			if r["op"] == "unwrap" && r["cache"] == cache {
				k++
			}
		}
		return k
	}
	type want struct{ spans, hits, misses, logHits, logMisses int }
	check := func(step string, w want) {
		t.Helper()
		m := h.metrics(t)
		got := want{unwrapSpans(), int(sum(m, "kmspostgres.key_cache.hits")), int(sum(m, "kmspostgres.key_cache.misses")), logged("hit"), logged("miss")}
		if got != w {
			t.Fatalf("%s: spans, hits, misses, logged hits, logged misses = %+v, want %+v", step, got, w)
		}
	}
	read()
	check("first read", want{n, 0, n, 0, n})
	read()
	check("second read", want{n, n, n, n, n})
	if size, ev := gauge("kmspostgres.key_cache.size"), gauge("kmspostgres.key_cache.evictions"); size != n || ev != 0 {
		t.Fatalf("key_cache.size %d, evictions %d; want %d, 0", size, ev, n)
	}
	_, before := e.kms.Calls()
	c.HaltDecryption("test")
	if size, ev := gauge("kmspostgres.key_cache.size"), gauge("kmspostgres.key_cache.evictions"); size != 0 || ev != n {
		t.Fatalf("after the halt: key_cache.size %d, evictions %d; want 0, %d", size, ev, n)
	}
	c.ResumeDecryption()
	read()
	if _, after := e.kms.Calls(); after-before != n {
		t.Fatalf("after a halt and resume: %d KMS unwraps, want %d (the halt purges the cache)", after-before, n)
	}
	check("after the halt", want{2 * n, n, 2 * n, n, 2 * n})
}
