package kmspostgres

import (
	"context"
	"errors"
	"time"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/providers"

	_ "github.com/kmspostgres/kmspostgres/providers/testkey" // insecure-test-key is always routable
)

// keyring makes every KMS call of the package, so that routing and audit
// events are the same for the driver and the Box.
type keyring struct {
	provider  providers.Provider // nil: route by key id
	observers []providers.Observer
}

func (k *keyring) providerFor(keyID string) (providers.Provider, error) {
	if k.provider != nil {
		return k.provider, nil
	}
	return providers.ForKeyID(keyID)
}

func (k *keyring) emit(op providers.Op, keyID string, version int, c envelope.Context, start time.Time, err error) {
	if len(k.observers) == 0 {
		return
	}
	ev := providers.Event{Op: op, KeyID: keyID, Version: version, Context: c, Duration: time.Since(start), Err: err}
	for _, o := range k.observers {
		o.Observe(ev)
	}
}

// wrap encrypts dataKey under keyID with context c and renders the key
// column text for version.
func (k *keyring) wrap(ctx context.Context, keyID string, version int, c envelope.Context, dataKey []byte) (string, error) {
	start := time.Now()
	p, err := k.providerFor(keyID)
	if err != nil {
		return "", err
	}
	ct, err := p.Wrap(ctx, keyID, dataKey, c)
	k.emit(providers.OpWrap, keyID, version, c, start, err)
	if err != nil {
		return "", wrapProviderErr("wrap", keyID, err)
	}
	return envelope.WrappedKey{Version: version, Ciphertext: ct}.String(), nil
}

// unwrap decrypts one wrapped data key.
func (k *keyring) unwrap(ctx context.Context, keyID string, version int, c envelope.Context, wrapped []byte) ([]byte, error) {
	start := time.Now()
	p, err := k.providerFor(keyID)
	if err != nil {
		return nil, err
	}
	key, err := p.Unwrap(ctx, keyID, wrapped, c)
	k.emit(providers.OpUnwrap, keyID, version, c, start, err)
	if err != nil {
		return nil, wrapProviderErr("unwrap", keyID, err)
	}
	return key, nil
}

// wrapProviderErr makes sure every provider error says which operation and
// key failed, without wrapping twice.
func wrapProviderErr(op, keyID string, err error) error {
	var pe *providers.Error
	if errors.As(err, &pe) {
		return err
	}
	return &providers.Error{Op: op, KeyID: keyID, Err: err}
}
