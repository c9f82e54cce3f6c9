package providers

import (
	"time"

	"github.com/kmspostgres/kmspostgres/envelope"
)

// Op is what a KMS call did.
type Op string

// The operations an Event reports.
const (
	OpWrap   Op = "wrap"
	OpUnwrap Op = "unwrap"
)

// Event reports one wrap or unwrap of a data key: kms_encrypted's encrypt
// and decrypt notifications. It never carries key material or plaintext.
// A batch unwrap reports one Event per key.
type Event struct {
	Op       Op
	KeyID    string
	Version  int
	Context  envelope.Context
	Duration time.Duration
	Err      error
}

// Observer receives audit events. It is called synchronously on the
// goroutine that made the KMS call, so it must be quick and safe for
// concurrent use.
type Observer interface {
	Observe(Event)
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(Event)

// Observe calls f(e).
func (f ObserverFunc) Observe(e Event) { f(e) }
