package kmspostgres

import (
	"errors"
	"time"

	"github.com/kmspostgres/kmspostgres/internal/keycache"
)

// CacheConfig turns on a bounded cache of unwrapped data keys, shared by
// every connection of a connector: a row read again within MaxAge needs no
// KMS call. Off by default; in the schema map:
//
//	cache:
//	  max_age: 5m       # required: an unwrapped data key is reused for at most this long
//	  max_uses: 100000  # optional: and for at most this many decryptions
//	  max_keys: 50000   # optional: entries held, least recently used evicted (default 10000)
//
// A cached key serves only the row and context it was unwrapped for: it is
// found by key id, wrapped key and context. Concurrent misses for one key
// make one KMS call. Cutting access at the KMS stops new unwraps at once
// and cached ones within MaxAge (halting decryption purges the cache at
// once); cache hits reach no KMS and so appear in no KMS audit log: they
// are reported to observers as events with Cache set to providers.CacheHit.
type CacheConfig struct {
	MaxAge  time.Duration
	MaxUses int64
	MaxKeys int
}

func (c *CacheConfig) validate() error {
	switch {
	case c == nil:
		return nil
	case c.MaxAge <= 0:
		return errors.New("max_age must be positive: it bounds how long a data key is reused after KMS access is cut")
	case c.MaxUses < 0:
		return errors.New("max_uses must not be negative")
	case c.MaxKeys < 0:
		return errors.New("max_keys must not be negative")
	}
	return nil
}

func newKeyCache(c *CacheConfig) *keycache.Cache {
	if c == nil {
		return nil
	}
	return keycache.New(keycache.Config{MaxAge: c.MaxAge, MaxUses: c.MaxUses, MaxKeys: c.MaxKeys})
}

// WithKeyCache turns on the data-key cache (see CacheConfig), or, with
// nil, turns off one the schema map turns on.
func WithKeyCache(c *CacheConfig) Option {
	return connectorOption(func(cfg *connectorConfig) { cfg.cache, cfg.cacheSet = c, true })
}
