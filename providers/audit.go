package providers

import (
	"context"
	"errors"
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

// CacheResult says whether a data-key cache answered for an Event.
type CacheResult string

// The values of Event.Cache.
const (
	CacheNone CacheResult = ""     // no cache was consulted
	CacheMiss CacheResult = "miss" // the cache was consulted; the key came from the KMS call reported
	CacheHit  CacheResult = "hit"  // the key came from the cache: no KMS call was made
)

// Event reports one wrap or unwrap of a data key: kms_encrypted's encrypt
// and decrypt notifications. It never carries key material or plaintext.
// A batch unwrap reports one Event per key. The table and primary key of a
// row are in Context (under the schema map's context template); the
// provider is providers.KindOf(KeyID).
type Event struct {
	Op       Op
	KeyID    string
	Version  int
	Context  envelope.Context
	Duration time.Duration
	Err      error
	// Cache is CacheHit for a key served by a data-key cache (which
	// reached no KMS and so is in no KMS audit log), CacheMiss for a KMS
	// call made after a cache miss, and CacheNone without a cache.
	Cache CacheResult
}

// The values of Event.ErrorKind, one per error sentinel, for logs and
// metric attributes.
const (
	ErrorKindDecrypt     = "decrypt"
	ErrorKindUnavailable = "unavailable"
	ErrorKindPermission  = "permission"
	ErrorKindNoProvider  = "no_provider"
	ErrorKindKeyID       = "key_id"
	ErrorKindFormat      = "format"
	ErrorKindOther       = "other"
)

// ErrorKind classifies Err by the sentinel it wraps: "" for success, else
// one of the ErrorKind constants. The set is small and fixed, so it suits
// a metric attribute.
func (e Event) ErrorKind() string { return ErrorKind(e.Err) }

// ErrorKind classifies an error of a KMS call as Event.ErrorKind does.
func ErrorKind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrDecrypt):
		return ErrorKindDecrypt
	case errors.Is(err, ErrUnavailable):
		return ErrorKindUnavailable
	case errors.Is(err, ErrPermission):
		return ErrorKindPermission
	case errors.Is(err, ErrNoProvider):
		return ErrorKindNoProvider
	case errors.Is(err, ErrKeyID):
		return ErrorKindKeyID
	case errors.Is(err, envelope.ErrFormat):
		return ErrorKindFormat
	default:
		return ErrorKindOther
	}
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

// CallTracer is implemented by an Observer that also traces KMS requests
// (package kmsotel). StartCall runs before each request with the caller's
// context, which carries the statement's span when the application traces
// its queries; the request is made with the context it returns, so that a
// traced KMS client's spans nest under it. end runs when the request is
// over with its error: for a batch request, the error of the whole
// request (each key's outcome is in its Event). keys is how many data keys
// the request carries.
type CallTracer interface {
	StartCall(ctx context.Context, op Op, keyID string, keys int) (_ context.Context, end func(error))
}
