// Package testkey is the insecure test key: a provider that needs no
// network and no account, for tests, examples and local development.
//
// Key ids:
//
//	insecure-test-key          wraps and unwraps
//	insecure-test-key/encrypt  wraps, refuses every unwrap with ErrPermission
//
// Both name the same key, so what the /encrypt id wraps the full id
// unwraps: a way to rehearse encrypt-only servers. The master key is a
// constant compiled into this package. Never use it in production: anyone
// with this source can decrypt the data.
//
// Importing github.com/kmspostgres/kmspostgres registers it.
package testkey

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/providers"
)

// KeyID and EncryptOnlyKeyID are the two key ids this provider serves.
const (
	KeyID            = "insecure-test-key"
	EncryptOnlyKeyID = "insecure-test-key/encrypt"
)

var (
	masterKey = sha256.Sum256([]byte("kmspostgres insecure test key: never use in production"))
	sivKey    = sha256.Sum256([]byte("kmspostgres insecure test key: nonce derivation"))
	aead      cipher.AEAD
	warnOnce  sync.Once
)

func init() {
	block, err := aes.NewCipher(masterKey[:])
	if err != nil {
		panic(err)
	}
	aead, err = cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	providers.Register(providers.KindTest, func() (providers.Provider, error) { return New(), nil })
}

// Provider is the test provider. The zero value is not usable; call New.
type Provider struct {
	latency     time.Duration
	unavailable atomic.Bool
	wraps       atomic.Int64
	unwraps     atomic.Int64
}

// Option configures a Provider.
type Option func(*Provider)

// WithLatency adds d to every call, to stand in for a KMS round trip in
// benchmarks and tests.
func WithLatency(d time.Duration) Option { return func(p *Provider) { p.latency = d } }

// New returns a test provider. It logs, once per process, that the test key
// is insecure.
func New(opts ...Option) *Provider {
	warnOnce.Do(func() {
		slog.Warn("kmspostgres: using insecure-test-key; it is for tests only, never for production data")
	})
	p := &Provider{}
	for _, o := range opts {
		o(p)
	}
	return p
}

// SetUnavailable makes every later call fail with ErrUnavailable (true) or
// work again (false), to rehearse a KMS outage.
func (p *Provider) SetUnavailable(down bool) { p.unavailable.Store(down) }

// Calls returns how many wrap and unwrap calls were made.
func (p *Provider) Calls() (wraps, unwraps int64) { return p.wraps.Load(), p.unwraps.Load() }

func (p *Provider) call(ctx context.Context, op providers.Op, keyID string) error {
	if keyID != KeyID && keyID != EncryptOnlyKeyID {
		return &providers.Error{Op: op, KeyID: keyID, Err: fmt.Errorf("%w: the test provider serves only %s and %s", providers.ErrNoProvider, KeyID, EncryptOnlyKeyID)}
	}
	if p.latency > 0 {
		t := time.NewTimer(p.latency)
		select {
		case <-ctx.Done():
			t.Stop()
			return &providers.Error{Op: op, KeyID: keyID, Err: fmt.Errorf("%w: %w", providers.ErrUnavailable, ctx.Err())}
		case <-t.C:
		}
	}
	if err := ctx.Err(); err != nil {
		return &providers.Error{Op: op, KeyID: keyID, Err: fmt.Errorf("%w: %w", providers.ErrUnavailable, err)}
	}
	if p.unavailable.Load() {
		return &providers.Error{Op: op, KeyID: keyID, Err: fmt.Errorf("%w: test provider set unavailable", providers.ErrUnavailable)}
	}
	return nil
}

// Wrap encrypts dataKey deterministically: the same key and context give the
// same bytes (a synthetic nonce from an HMAC of both).
func (p *Provider) Wrap(ctx context.Context, keyID string, dataKey []byte, encCtx envelope.Context) ([]byte, error) {
	p.wraps.Add(1)
	if err := p.call(ctx, providers.OpWrap, keyID); err != nil {
		return nil, err
	}
	aad, err := encCtx.Canonical()
	if err != nil {
		return nil, &providers.Error{Op: providers.OpWrap, KeyID: keyID, Err: err}
	}
	mac := hmac.New(sha256.New, sivKey[:])
	mac.Write(aad)
	mac.Write([]byte{0})
	mac.Write(dataKey)
	nonce := mac.Sum(nil)[:aead.NonceSize()]
	return aead.Seal(append([]byte{}, nonce...), nonce, dataKey, aad), nil
}

// Unwrap decrypts a key wrapped by Wrap, checking the context.
func (p *Provider) Unwrap(ctx context.Context, keyID string, wrapped []byte, encCtx envelope.Context) ([]byte, error) {
	p.unwraps.Add(1)
	if err := p.call(ctx, providers.OpUnwrap, keyID); err != nil {
		return nil, err
	}
	if keyID == EncryptOnlyKeyID {
		return nil, &providers.Error{Op: providers.OpUnwrap, KeyID: keyID, Err: fmt.Errorf("%w: %s may only encrypt", providers.ErrPermission, keyID)}
	}
	aad, err := encCtx.Canonical()
	if err != nil {
		return nil, &providers.Error{Op: providers.OpUnwrap, KeyID: keyID, Err: err}
	}
	n := aead.NonceSize()
	if len(wrapped) < n+aead.Overhead() {
		return nil, &providers.Error{Op: providers.OpUnwrap, KeyID: keyID, Err: providers.ErrDecrypt}
	}
	key, err := aead.Open(nil, wrapped[:n], wrapped[n:], aad)
	if err != nil {
		return nil, &providers.Error{Op: providers.OpUnwrap, KeyID: keyID, Err: providers.ErrDecrypt}
	}
	return key, nil
}
