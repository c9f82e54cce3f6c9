package kmspostgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/kmspostgres/kmspostgres/internal/keycache"

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
	cache     *keycache.Cache        // nil: every unwrap is a KMS call
	// inflight bounds the KMS calls in flight across every connection of
	// a connector (nil: unbounded, for the Box).
	inflight chan struct{}
	// gate, when set, refuses every unwrap while decryption is halted
	// (halt.go); wraps are never refused.
	gate func() error
}

// acquire waits for a free KMS call slot, or for ctx.
func (k *keyring) acquire(ctx context.Context) error {
	if k.inflight == nil {
		return nil
	}
	select {
	case k.inflight <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for a KMS call slot: %w", providers.ErrUnavailable, ctx.Err())
	}
}

func (k *keyring) release() {
	if k.inflight != nil {
		<-k.inflight
	}
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

func (k *keyring) emit(op providers.Op, keyID string, version int, c envelope.Context, start time.Time, err error, cache providers.CacheResult) {
	if len(k.observers) == 0 {
		return
	}
	ev := providers.Event{Op: op, KeyID: keyID, Version: version, Context: c, Duration: time.Since(start), Err: err, Cache: cache}
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
	if err := k.acquire(ctx); err != nil {
		return "", err
	}
	cctx, end := k.startCall(ctx, providers.OpWrap, keyID, 1)
	ct, err := p.Wrap(cctx, keyID, dataKey, c)
	k.release()
	k.emit(providers.OpWrap, keyID, version, c, start, err, providers.CacheNone)
	end(err)
	if err != nil {
		return "", wrapProviderErr(providers.OpWrap, keyID, err)
	}
	return envelope.WrappedKey{Version: version, Ciphertext: ct}.String(), nil
}

// unwrap decrypts one wrapped data key, without the cache.
func (k *keyring) unwrap(ctx context.Context, keyID string, version int, c envelope.Context, wrapped []byte) ([]byte, error) {
	return k.unwrapCall(ctx, keyID, version, c, wrapped, providers.CacheNone)
}

// unwrapCall is one unwrap request; cache says whether the cache was
// consulted (and missed) first, for the event.
func (k *keyring) unwrapCall(ctx context.Context, keyID string, version int, c envelope.Context, wrapped []byte, cache providers.CacheResult) ([]byte, error) {
	if err := k.halted(); err != nil {
		return nil, err
	}
	start := time.Now()
	p, err := k.providerFor(keyID)
	if err != nil {
		return nil, err
	}
	if err := k.acquire(ctx); err != nil {
		return nil, err
	}
	cctx, end := k.startCall(ctx, providers.OpUnwrap, keyID, 1)
	key, err := p.Unwrap(cctx, keyID, wrapped, c)
	k.release()
	k.emit(providers.OpUnwrap, keyID, version, c, start, err, cache)
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

// emitCacheHit reports a data key served from the cache: no KMS call, so
// no KMS audit log entry; observers see it.
func (k *keyring) emitCacheHit(it *unwrapItem) {
	if len(k.observers) == 0 || it.resolve() != nil {
		return
	}
	k.emit(providers.OpUnwrap, it.keyID, it.version, it.ctx, time.Now(), nil, providers.CacheHit)
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
	key     []byte            // result; shared with the cache, read-only
	ck      *envelope.CellKey // result, ready to open cells
	err     error             // result
	cached  bool              // the result came from the cache
	cacheID string            // set when this item's unwrap fills the cache

	// rowID, when set, is the item's id in the cache (rowKeyID.appendCacheID), and
	// row says where the key comes from: keyID, version, ctx and wrapped
	// are filled by resolve only when they are needed (a cache miss, or
	// an observer of a hit), so that a hit builds no context.
	rowID []byte
	row   *rowSource
}

// rowSource is a row's key column as read, for a lazily resolved item.
type rowSource struct {
	ti   *tableInfo
	key  int
	pk   []string
	text string
}

// resolve parses a lazy item's key column and builds its context.
func (it *unwrapItem) resolve() error {
	if it.row == nil {
		return nil
	}
	src := it.row
	it.row = nil
	wk, err := envelope.ParseWrappedKey(src.text)
	if err != nil {
		return err
	}
	keyID, ectx, err := src.ti.entry.contextFor(src.ti.key(src.key), wk.Version, src.pk)
	if err != nil {
		return err
	}
	it.keyID, it.version, it.ctx, it.wrapped = keyID, wk.Version, ectx, wk.Ciphertext
	return nil
}

// resolveAll resolves lazy items and returns those that resolved; the
// others keep their error.
func resolveAll(items []*unwrapItem) []*unwrapItem {
	out := items[:0:0]
	for _, it := range items {
		if err := it.resolve(); err != nil {
			it.err = err
			continue
		}
		out = append(out, it)
	}
	return out
}

// appendCacheID appends the id of a row's data key in the cache, made of what the row
// holds: the schema-map table, the key, the primary key and the key
// column's text (which carries the version). Within one connector, whose
// schema map is fixed, these determine the key id, the wrapped key and
// the context, so a cached key still serves only the row and context it
// was unwrapped for; but the context need not be built to look it up. It
// starts with 0x01, which no key id does: the two kinds of id never meet.
func (id rowKeyID) appendCacheID(b []byte) []byte {
	b = append(b, 1)
	b = append(b, id.table...)
	b = append(b, 0)
	b = strconv.AppendInt(b, int64(id.key), 10)
	b = append(b, 0)
	b = append(b, id.pk...)
	b = append(b, 0)
	return append(b, id.wrapped...)
}

// cacheID identifies a data key in the cache: key id, wrapped key and
// context, so that a cached key serves only the row it was unwrapped for.
func cacheID(keyID string, wrapped []byte, c envelope.Context) (string, error) {
	canon, err := c.Canonical()
	if err != nil {
		return "", err
	}
	return keyID + "\x00" + string(wrapped) + "\x00" + string(canon), nil
}

// openItems unwraps items and builds their cell keys: through the cache
// when there is one (hits need no KMS call; concurrent misses for one key
// make one), else all from the KMS.
func (k *keyring) openItems(ctx context.Context, items []*unwrapItem, limit int) {
	if k.cache == nil {
		items = resolveAll(items)
		k.unwrapAll(ctx, items, limit)
		readyItems(items)
		return
	}
	if err := k.halted(); err != nil {
		for _, it := range items {
			it.err = err // no cache hit while halted either
		}
		return
	}
	type waiter struct {
		it   *unwrapItem
		wait func() (keycache.Value, bool)
	}
	var owned []*unwrapItem
	var waiters []waiter
	for _, it := range items {
		var (
			v         keycache.Value
			ok, owner bool
			wait      func() (keycache.Value, bool)
			id        string
		)
		if it.rowID != nil {
			v, ok, owner, wait, id = k.cache.ClaimBytes(it.rowID)
		} else {
			var err error
			if id, err = cacheID(it.keyID, it.wrapped, it.ctx); err != nil {
				it.err = err
				continue
			}
			v, ok, owner, wait = k.cache.Claim(id)
		}
		switch {
		case ok:
			it.key, it.ck, it.cached = v.Key, v.Ready.(*envelope.CellKey), true
			k.emitCacheHit(it)
		case owner:
			it.cacheID = id
			owned = append(owned, it)
		default:
			waiters = append(waiters, waiter{it, wait})
		}
	}
	// Publish every key this caller owns before waiting on others'.
	ready := resolveAll(owned)
	k.unwrapAll(ctx, ready, limit)
	readyItems(ready)
	for _, it := range owned {
		if it.err != nil {
			k.cache.Abandon(it.cacheID)
			continue
		}
		k.cache.Put(it.cacheID, keycache.Value{Key: it.key, Ready: it.ck})
	}
	var again []*unwrapItem
	for _, w := range waiters {
		if v, ok := w.wait(); ok {
			w.it.key, w.it.ck, w.it.cached = v.Key, v.Ready.(*envelope.CellKey), true
			k.emitCacheHit(w.it)
			continue
		}
		again = append(again, w.it) // the owner's unwrap failed: try ours
	}
	again = resolveAll(again)
	k.unwrapAll(ctx, again, limit)
	readyItems(again)
}

func (k *keyring) unwrapBatch(ctx context.Context, bp providers.BatchUnwrapper, keyID string, reqs []providers.UnwrapRequest) ([]providers.Result, error) {
	if err := k.acquire(ctx); err != nil {
		return nil, err
	}
	defer k.release()
	cctx, end := k.startCall(ctx, providers.OpUnwrap, keyID, len(reqs))
	res, err := bp.UnwrapBatch(cctx, keyID, reqs)
	end(err)
	return res, err
}

// readyItems builds the cell key of every item that unwrapped.
func readyItems(items []*unwrapItem) {
	for _, it := range items {
		if it.err != nil || it.ck != nil {
			continue
		}
		it.ck, it.err = envelope.NewCellKey(it.key)
	}
}

// batchSize bounds one batch request.
const batchSize = 250

// unwrapAll unwraps every item: in batches where the provider can, else
// concurrently, at most limit calls at a time. Its callers consult the
// cache first, when there is one: its events are cache misses then.
func (k *keyring) unwrapAll(ctx context.Context, items []*unwrapItem, limit int) {
	if len(items) == 0 {
		return
	}
	if err := k.halted(); err != nil {
		for _, it := range items {
			it.err = err
		}
		return
	}
	cache := providers.CacheNone
	if k.cache != nil {
		cache = providers.CacheMiss
	}
	if len(items) == 1 { // a point read: one call, no grouping
		it := items[0]
		it.key, it.err = k.unwrapCall(ctx, it.keyID, it.version, it.ctx, it.wrapped, cache)
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
			res, err := k.unwrapBatch(ctx, bp, keyID, reqs)
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
				k.emit(providers.OpUnwrap, keyID, it.version, it.ctx, t0, it.err, cache)
			}
		}
	}
	forEach(len(single), limit, func(i int) error {
		it := single[i]
		it.key, it.err = k.unwrapCall(ctx, it.keyID, it.version, it.ctx, it.wrapped, cache)
		return nil
	})
}

// forEach runs f(0..n-1) with at most limit running at once and returns
// the first error; every f runs even after one fails. Workers pull
// indexes, so n items cost at most limit goroutines, not n (a goroutine
// per item costs more in stack growth than an unwrap from a fast KMS).
// One item runs on the caller's goroutine.
func forEach(n, limit int, f func(i int) error) error {
	workers := min(n, limit)
	if workers <= 1 {
		var first error
		for i := range n {
			if err := f(i); err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	var g errgroup.Group
	var next atomic.Int64
	for range workers {
		g.Go(func() error {
			var first error
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return first
				}
				if err := f(i); err != nil && first == nil {
					first = err
				}
			}
		})
	}
	return g.Wait()
}
