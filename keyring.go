package kmspostgres

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
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
			res, err := bp.UnwrapBatch(ctx, keyID, reqs)
			for i, it := range chunk {
				switch {
				case err != nil:
					it.err = wrapProviderErr("unwrap", keyID, err)
				case i >= len(res):
					it.err = &providers.Error{Op: "unwrap", KeyID: keyID, Err: errors.New("batch answer too short")}
				case res[i].Err != nil:
					it.err = wrapProviderErr("unwrap", keyID, res[i].Err)
				default:
					it.key = res[i].Key
				}
				k.emit(providers.OpUnwrap, keyID, it.version, it.ctx, t0, it.err)
			}
		}
	}
	parallel(len(single), limit, func(i int) error {
		it := single[i]
		it.key, it.err = k.unwrap(ctx, it.keyID, it.version, it.ctx, it.wrapped)
		return nil
	})
}

// parallel runs f(0..n-1) on at most limit goroutines and returns the
// first error. Workers pull indexes, so n items cost limit goroutines, not
// n.
func parallel(n, limit int, f func(i int) error) error {
	workers := min(n, limit)
	if workers <= 1 {
		for i := 0; i < n; i++ {
			if err := f(i); err != nil {
				return err
			}
		}
		return nil
	}
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					errOnce.Do(func() { firstErr = err })
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}
