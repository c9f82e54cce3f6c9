// Package keycache is the driver's bounded cache of unwrapped data keys,
// in the manner of the AWS Encryption SDK's caching materials manager: an
// entry lives at most MaxAge, serves at most MaxUses decryptions, and at
// most MaxKeys entries are held (least recently used evicted first).
//
// Unlike that manager, concurrent misses for one key are combined: the
// first caller claims the key and unwraps it, the others wait for its
// result, so N parallel misses make one KMS call.
//
// Entries are keyed by the caller (key id, wrapped key and context), so a
// cached key is only ever used for the row and context it was unwrapped
// for. Key material is zeroed on eviction and on Purge, as far as Go
// allows: the raw data key bytes are overwritten; the AES key schedule
// inside a cipher cannot be reached and is left to the garbage collector.
package keycache

import (
	"container/list"
	"sync"
	"time"
)

// Config bounds a cache. MaxAge is required (> 0); MaxUses and MaxKeys
// are optional (0: no bound on uses; 0 keys: DefaultMaxKeys).
type Config struct {
	MaxAge  time.Duration
	MaxUses int64
	MaxKeys int
}

// DefaultMaxKeys bounds a cache whose Config leaves MaxKeys zero.
const DefaultMaxKeys = 10000

// Value is what the cache holds for one key: the raw data key (zeroed on
// eviction) and whatever the caller built from it (a cipher).
type Value struct {
	Key   []byte
	Ready any
}

// Stats counts what a cache did.
type Stats struct {
	Hits, Misses, Evictions int64
}

// Cache is safe for concurrent use. The zero value is not usable; call
// New.
type Cache struct {
	cfg Config
	now func() time.Time

	mu       sync.Mutex
	ll       *list.List // front: most recently used
	items    map[string]*list.Element
	inflight map[string]*call
	stats    Stats
}

type entry struct {
	id      string
	val     Value
	created time.Time
	uses    int64
}

// call is a key being unwrapped by the caller that claimed it.
type call struct {
	done chan struct{}
	val  Value
	ok   bool
}

// New returns a cache. It panics on a non-positive MaxAge: a cache
// without an age bound would keep serving keys long after the KMS has
// cut access.
func New(cfg Config) *Cache {
	if cfg.MaxAge <= 0 {
		panic("keycache: MaxAge must be positive")
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	return &Cache{cfg: cfg, now: time.Now, ll: list.New(), items: map[string]*list.Element{}, inflight: map[string]*call{}}
}

// Get returns the cached value for id and counts one use of it (a hit), or
// reports a miss. An entry past MaxAge or MaxUses is evicted and missed.
func (c *Cache) Get(id string) (Value, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.getLocked(id)
	if ok {
		c.stats.Hits++
	} else {
		c.stats.Misses++
	}
	return v, ok
}

func (c *Cache) getLocked(id string) (Value, bool) {
	return c.useLocked(c.items[id])
}

// useLocked counts a use of el (nil: none) and returns its value, unless
// it has expired (it is then evicted).
func (c *Cache) useLocked(el *list.Element) (Value, bool) {
	if el == nil {
		return Value{}, false
	}
	e := el.Value.(*entry)
	if c.now().Sub(e.created) >= c.cfg.MaxAge || (c.cfg.MaxUses > 0 && e.uses >= c.cfg.MaxUses) {
		c.evictLocked(el)
		return Value{}, false
	}
	e.uses++
	c.ll.MoveToFront(el)
	return e.val, true
}

// Claim is Get for a caller about to unwrap, and never blocks. On a hit
// it returns the value (ok). On a miss, either the caller now owns the key
// (owner: it must call Put or Abandon for id), or another caller owns it,
// and wait returns that caller's result once it has one (ok false if its
// unwrap failed: then unwrap on your own). Callers that claim several keys
// publish (Put or Abandon) every key they own before they wait on any, so
// that two callers never wait on each other.
func (c *Cache) Claim(id string) (v Value, ok, owner bool, wait func() (Value, bool)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.getLocked(id); ok {
		c.stats.Hits++
		return v, true, false, nil
	}
	if cl, busy := c.inflight[id]; busy {
		return Value{}, false, false, c.waitFor(cl)
	}
	c.stats.Misses++
	c.inflight[id] = &call{done: make(chan struct{})}
	return Value{}, false, true, nil
}

// waitFor returns the wait of a claim another caller owns.
func (c *Cache) waitFor(cl *call) func() (Value, bool) {
	return func() (Value, bool) {
		<-cl.done
		if cl.ok {
			c.mu.Lock()
			c.stats.Hits++
			c.mu.Unlock()
		}
		return cl.val, cl.ok
	}
}

// ClaimBytes is Claim for an id held as bytes: a hit, or a wait on
// another caller, allocates nothing. When the caller becomes the owner,
// sid is the id as a string, to pass to Put or Abandon.
func (c *Cache) ClaimBytes(id []byte) (v Value, ok, owner bool, wait func() (Value, bool), sid string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.useLocked(c.items[string(id)]); ok {
		c.stats.Hits++
		return v, true, false, nil, ""
	}
	if cl, busy := c.inflight[string(id)]; busy {
		return Value{}, false, false, c.waitFor(cl), ""
	}
	sid = string(id)
	c.stats.Misses++
	c.inflight[sid] = &call{done: make(chan struct{})}
	return Value{}, false, true, nil, sid
}

// Put stores the value of a claimed (or unclaimed) id, counting this use,
// and releases its waiters. The cache keeps v.Key and zeroes it on
// eviction: the caller must not zero it.
func (c *Cache) Put(id string, v Value) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, busy := c.inflight[id]; busy {
		delete(c.inflight, id)
		cl.val, cl.ok = v, true
		close(cl.done)
	}
	if el, ok := c.items[id]; ok {
		c.evictLocked(el)
	}
	for c.ll.Len() >= c.cfg.MaxKeys {
		c.evictLocked(c.ll.Back())
	}
	c.items[id] = c.ll.PushFront(&entry{id: id, val: v, created: c.now(), uses: 1})
}

// Abandon releases the waiters of a claimed id whose unwrap failed.
func (c *Cache) Abandon(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, busy := c.inflight[id]; busy {
		delete(c.inflight, id)
		close(cl.done)
	}
}

// Purge evicts every entry (zeroing its key): when decryption is halted,
// or access revoked.
func (c *Cache) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.ll.Len() > 0 {
		c.evictLocked(c.ll.Back())
	}
}

// Len is the number of entries held.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

// Stats returns the counters so far.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

func (c *Cache) evictLocked(el *list.Element) {
	e := el.Value.(*entry)
	c.ll.Remove(el)
	delete(c.items, e.id)
	clear(e.val.Key)
	c.stats.Evictions++
}
