package kmspostgres

import (
	"context"
	"errors"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/providers"

	_ "github.com/kmspostgres/kmspostgres/providers/testkey" // insecure-test-key is always routable
)

// keyring makes every KMS call of the package, so that routing and audit
// events are the same for the driver and the Box.
type keyring struct {
	provider  providers.Provider // nil: route by key id
	observers []providers.Observer
	tracers   []providers.CallTracer // the observers that trace calls
	// gate, when set, refuses every unwrap while decryption is halted
	// (halt.go); wraps are never refused.
	gate func() error
}

func newKeyring(c kmsConfig) *keyring {
	k := &keyring{provider: c.provider, observers: c.observers}
	for _, o := range c.observers {
		if t, ok := o.(providers.CallTracer); ok {
			k.tracers = append(k.tracers, t)
		}
	}
	return k
}

func (k *keyring) providerFor(keyID string) (providers.Provider, error) {
	if k.provider != nil {
		return k.provider, nil
	}
	return providers.ForKeyID(keyID)
}

// startCall tells the tracers a KMS request begins and returns the
// context to make it with and the function to call when it ends.
func (k *keyring) startCall(ctx context.Context, op providers.Op, keyID string, keys int) (context.Context, func(error)) {
	switch len(k.tracers) {
	case 0:
		return ctx, noEnd
	case 1:
		return k.tracers[0].StartCall(ctx, op, keyID, keys)
	}
	ends := make([]func(error), len(k.tracers))
	for i, t := range k.tracers {
		ctx, ends[i] = t.StartCall(ctx, op, keyID, keys)
	}
	return ctx, func(err error) {
		for i := len(ends) - 1; i >= 0; i-- {
			ends[i](err)
		}
	}
}

func noEnd(error) {}

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
	cctx, end := k.startCall(ctx, providers.OpWrap, keyID, 1)
	ct, err := p.Wrap(cctx, keyID, dataKey, c)
	k.emit(providers.OpWrap, keyID, version, c, start, err)
	end(err)
	if err != nil {
		return "", wrapProviderErr(providers.OpWrap, keyID, err)
	}
	return envelope.WrappedKey{Version: version, Ciphertext: ct}.String(), nil
}

// unwrap decrypts one wrapped data key.
func (k *keyring) unwrap(ctx context.Context, keyID string, version int, c envelope.Context, wrapped []byte) ([]byte, error) {
	if err := k.halted(); err != nil {
		return nil, err
	}
	start := time.Now()
	p, err := k.providerFor(keyID)
	if err != nil {
		return nil, err
	}
	cctx, end := k.startCall(ctx, providers.OpUnwrap, keyID, 1)
	key, err := p.Unwrap(cctx, keyID, wrapped, c)
	k.emit(providers.OpUnwrap, keyID, version, c, start, err)
	end(err)
	if err != nil {
		return nil, wrapProviderErr(providers.OpUnwrap, keyID, err)
	}
	return key, nil
}

// halted returns the gate's error, if any.
func (k *keyring) halted() error {
	if k.gate == nil {
		return nil
	}
	return k.gate()
}

// wrapProviderErr makes sure every provider error says which operation and
// key failed, without wrapping twice.
func wrapProviderErr(op providers.Op, keyID string, err error) error {
	var pe *providers.Error
	if errors.As(err, &pe) {
		return err
	}
	return &providers.Error{Op: op, KeyID: keyID, Err: err}
}

// unwrapItem is one data key to unwrap.
type unwrapItem struct {
	keyID   string
	version int
	ctx     envelope.Context
	wrapped []byte
	key     []byte // result
	err     error  // result
}

// batchSize bounds one batch request.
const batchSize = 250

// unwrapAll unwraps every item: in batches where the provider can, else
// concurrently, at most limit calls at a time.
func (k *keyring) unwrapAll(ctx context.Context, items []*unwrapItem, limit int) {
	if err := k.halted(); err != nil {
		for _, it := range items {
			it.err = err
		}
		return
	}
	byKey := map[string][]*unwrapItem{}
	var order []string
	for _, it := range items {
		if _, ok := byKey[it.keyID]; !ok {
			order = append(order, it.keyID)
		}
		byKey[it.keyID] = append(byKey[it.keyID], it)
	}
	var single []*unwrapItem
	for _, keyID := range order {
		group := byKey[keyID]
		p, err := k.providerFor(keyID)
		if err != nil {
			for _, it := range group {
				it.err = err
			}
			continue
		}
		bp, ok := p.(providers.BatchUnwrapper)
		if !ok || len(group) == 1 {
			single = append(single, group...)
			continue
		}
		for start := 0; start < len(group); start += batchSize {
			chunk := group[start:min(start+batchSize, len(group))]
			reqs := make([]providers.UnwrapRequest, len(chunk))
			for i, it := range chunk {
				reqs[i] = providers.UnwrapRequest{Wrapped: it.wrapped, Context: it.ctx}
			}
			t0 := time.Now()
			cctx, end := k.startCall(ctx, providers.OpUnwrap, keyID, len(reqs))
			res, err := bp.UnwrapBatch(cctx, keyID, reqs)
			end(err)
			for i, it := range chunk {
				switch {
				case err != nil:
					it.err = wrapProviderErr(providers.OpUnwrap, keyID, err)
				case i >= len(res):
					it.err = &providers.Error{Op: providers.OpUnwrap, KeyID: keyID, Err: errors.New("batch answer too short")}
				case res[i].Err != nil:
					it.err = wrapProviderErr(providers.OpUnwrap, keyID, res[i].Err)
				default:
					it.key = res[i].Key
				}
				k.emit(providers.OpUnwrap, keyID, it.version, it.ctx, t0, it.err)
			}
		}
	}
	forEach(len(single), limit, func(i int) error {
		it := single[i]
		it.key, it.err = k.unwrap(ctx, it.keyID, it.version, it.ctx, it.wrapped)
		return nil
	})
}

// forEach runs f(0..n-1) with at most limit running at once and returns
// the first error; every f runs even after one fails. One item runs on the
// caller's goroutine.
func forEach(n, limit int, f func(i int) error) error {
	if n == 1 || limit <= 1 {
		var first error
		for i := range n {
			if err := f(i); err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	var g errgroup.Group
	g.SetLimit(limit)
	for i := range n {
		g.Go(func() error { return f(i) })
	}
	return g.Wait()
}
