package kmspostgres

import (
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kmspostgres/kmspostgres/rewrite"
)

func testSchema(t testing.TB) *Schema {
	t.Helper()
	s, err := ParseSchema("m.yaml", []byte("key_id: insecure-test-key\ntables:\n  users:\n    columns:\n      email: {}\n  notes:\n    columns:\n      body: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestBreakerSlidingWindow: the previous interval counts in proportion
// to how much of it the window still covers.
func TestBreakerSlidingWindow(t *testing.T) {
	b, err := newBreaker(DecryptLimit{Rows: 100, Tables: map[string]int{"users": 10}, Per: time.Minute}, testSchema(t))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_000_000, 0)
	steps := []struct {
		at   time.Duration
		rows []tableRows
		ok   bool
	}{
		{0, []tableRows{{"users", 10}}, true},
		{time.Second, []tableRows{{"users", 1}}, false},                    // 11 > 10
		{time.Second, []tableRows{{"notes", 90}}, true},                    // 100 in all
		{2 * time.Second, []tableRows{{"notes", 1}}, false},                // 101 > 100
		{90 * time.Second, []tableRows{{"users", 5}}, true},                // half of the last minute left: 5 + 5
		{90 * time.Second, []tableRows{{"users", 1}}, false},               // 11
		{150 * time.Second, []tableRows{{"users", 10}}, false},             // window [120 s, 180 s): 0, plus 5 of [60 s, 120 s) × 0.5 = 2; 12
		{150 * time.Second, []tableRows{{"users", 8}}, true},               // 10
		{4 * time.Minute, []tableRows{{"users", 10}, {"notes", 90}}, true}, // two idle minutes: all forgotten
	}
	for i, s := range steps {
		why, _, ok := b.admit(t0.Add(s.at), s.rows)
		if ok != s.ok {
			t.Fatalf("step %d at %v: ok = %v (%s), want %v", i, s.at, ok, why, s.ok)
		}
	}
	b.reset()
	if _, _, ok := b.admit(t0.Add(4*time.Minute), []tableRows{{"users", 10}}); !ok {
		t.Fatal("not reset")
	}
}

func TestNewBreakerChecks(t *testing.T) {
	s := testSchema(t)
	for _, l := range []DecryptLimit{
		{Rows: 1},                    // no Per
		{Rows: -1, Per: time.Second}, // negative
		{Tables: map[string]int{"users": 0}, Per: time.Second},
		{Tables: map[string]int{"nope": 1}, Per: time.Second},
	} {
		if _, err := newBreaker(l, s); err == nil {
			t.Errorf("%+v accepted", l)
		}
	}
	if b, err := newBreaker(DecryptLimit{}, s); b != nil || err != nil {
		t.Errorf("no limit: %v, %v", b, err)
	}
}

// TestHaltStates: the first cause of a halt stays; a cool-down lifts only
// the breaker's halt.
func TestHaltStates(t *testing.T) {
	h := newHalt("", &events{})
	purged := 0
	h.purge = func() { purged++ }
	h.set(&haltState{source: HaltManual, reason: "a"})
	if purged != 1 {
		t.Fatalf("purge ran %d times on halting, want 1", purged)
	}
	h.set(&haltState{source: HaltLimit, reason: "b", until: time.Now().Add(-time.Second)})
	if err := h.check(); !errors.Is(err, ErrDecryptHalted) {
		t.Fatalf("check = %v", err)
	}
	if s := h.state.Load(); s.source != HaltManual {
		t.Fatalf("source %s, want manual", s.source)
	}
	h.resume(nil)
	h.set(&haltState{source: HaltLimit, reason: "b", until: time.Now().Add(-time.Second)})
	if err := h.check(); err != nil {
		t.Fatalf("after the cool-down: %v", err)
	}
}

// TestBreakerAdmitsExactly: 16 goroutines race for a limit of 100 rows
// in windows of 1 to 3; the breaker admits windows until one does not
// fit, never more than the limit, and none after it tripped.
func TestBreakerAdmitsExactly(t *testing.T) {
	c, err := NewConnector("postgres://localhost/db", WithSchema(testSchema(t)),
		WithDecryptLimit(DecryptLimit{Tables: map[string]int{"users": 100}, Per: time.Hour}))
	if err != nil {
		t.Fatal(err)
	}
	window := func(n int) *windowKeys {
		w := &windowKeys{infos: []*tableInfo{{table: &rewrite.Table{Name: "users"}}}}
		for range n {
			w.ids = append(w.ids, []rowKeyID{{wrapped: "k"}})
		}
		return w
	}
	var mu sync.Mutex
	admitted, afterTrip := 0, 0
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 20 {
				n := 1 + (g+i)%3
				err := c.admitWindow(t.Context(), window(n))
				mu.Lock()
				switch {
				case err == nil:
					admitted += n
				case errors.Is(err, ErrDecryptHalted):
					afterTrip++
				default:
					t.Errorf("err = %v", err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	// Windows of 1 to 3 rows: the breaker trips when the next window
	// would pass 100, so 98 to 100 rows are admitted.
	if admitted < 98 || admitted > 100 || afterTrip == 0 {
		t.Fatalf("%d rows admitted, %d windows refused", admitted, afterTrip)
	}
	// Tripped, the breaker refuses even a window that would fit.
	if err := c.admitWindow(t.Context(), window(1)); !errors.Is(err, ErrDecryptHalted) {
		t.Fatalf("one more row after the trip: %v", err)
	}
}

// BenchmarkGuards is what the kill switch and the breaker cost a one-row
// read: the window's admission, with a halt file to look for and both
// limits, and the check of its row.
func BenchmarkGuards(b *testing.B) {
	c, err := NewConnector("postgres://localhost/db", WithSchema(testSchema(b)),
		WithDecryptLimit(DecryptLimit{Rows: 1 << 40, Tables: map[string]int{"users": 1 << 40}, Per: time.Minute}),
		WithHaltFile(filepath.Join(b.TempDir(), "halt")))
	if err != nil {
		b.Fatal(err)
	}
	w := &windowKeys{infos: []*tableInfo{{table: &rewrite.Table{Name: "users"}}}, ids: [][]rowKeyID{{{table: "users", wrapped: "v1:x", pk: "1"}}}}
	for b.Loop() {
		if err := c.admitWindow(b.Context(), w); err != nil {
			b.Fatal(err)
		}
		if err := c.halt.refuseRow(); err != nil {
			b.Fatal(err)
		}
	}
}
