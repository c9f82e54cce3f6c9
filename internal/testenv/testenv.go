// Package testenv is shared test support: the servers a test needs, named
// by environment variables that scripts/test.sh sets, and an audit event
// recorder. Under CI=true a missing server fails the test; elsewhere the
// test is skipped with a hint.
package testenv

import (
	"os"
	"sync"
	"testing"

	"github.com/kmspostgres/kmspostgres/providers"
)

// Require returns the value of an environment variable a test needs.
func Require(t testing.TB, name, hint string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not set under CI=true: %s", name, hint)
		}
		t.Skipf("%s is not set: %s", name, hint)
	}
	return v
}

// DatabaseURL is the PostgreSQL server of the tests.
func DatabaseURL(t testing.TB) string {
	t.Helper()
	return Require(t, "KMSPG_TEST_DATABASE_URL", "run the tests with ./scripts/test.sh, which starts a throwaway PostgreSQL")
}

// ToolsDir holds the KMS servers and sqlc that scripts/build-tools.sh builds.
func ToolsDir(t testing.TB) string {
	t.Helper()
	return Require(t, "KMSPG_TOOLS", "run the tests with ./scripts/test.sh, which builds local-kms, Vault and sqlc")
}

// Recorder is an audit observer that keeps every event.
type Recorder struct {
	mu     sync.Mutex
	events []providers.Event
}

// Observe records e.
func (r *Recorder) Observe(e providers.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

// Events returns a copy of what was recorded.
func (r *Recorder) Events() []providers.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]providers.Event(nil), r.events...)
}

// Count returns how many events of an operation were recorded.
func (r *Recorder) Count(op providers.Op) int {
	n := 0
	for _, e := range r.Events() {
		if e.Op == op {
			n++
		}
	}
	return n
}

// Reset forgets every event.
func (r *Recorder) Reset() {
	r.mu.Lock()
	r.events = nil
	r.mu.Unlock()
}
