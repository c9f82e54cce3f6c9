package keycache

import (
	"bytes"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTest(cfg Config) (*Cache, *clock) {
	c := New(cfg)
	clk := &clock{t: time.Unix(1e9, 0)}
	c.now = clk.now
	return c, clk
}

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func TestBounds(t *testing.T) {
	t.Run("max age", func(t *testing.T) {
		c, clk := newTest(Config{MaxAge: time.Minute})
		k := key(1)
		c.Put("a", Value{Key: k})
		clk.t = clk.t.Add(59 * time.Second)
		if _, ok := c.Get("a"); !ok {
			t.Fatal("evicted before max age")
		}
		clk.t = clk.t.Add(time.Second)
		if _, ok := c.Get("a"); ok {
			t.Fatal("served at max age")
		}
		if !bytes.Equal(k, make([]byte, 32)) {
			t.Fatal("evicted key not zeroed")
		}
	})
	t.Run("max uses", func(t *testing.T) {
		c, _ := newTest(Config{MaxAge: time.Hour, MaxUses: 3})
		c.Put("a", Value{Key: key(1)}) // use 1
		for i := 2; i <= 3; i++ {
			if _, ok := c.Get("a"); !ok {
				t.Fatalf("use %d missed", i)
			}
		}
		if _, ok := c.Get("a"); ok {
			t.Fatal("served a fourth use")
		}
	})
	t.Run("max keys, least recently used first", func(t *testing.T) {
		c, _ := newTest(Config{MaxAge: time.Hour, MaxKeys: 2})
		c.Put("a", Value{Key: key(1)})
		c.Put("b", Value{Key: key(2)})
		c.Get("a")
		c.Put("c", Value{Key: key(3)})
		if _, ok := c.Get("b"); ok {
			t.Fatal("b should have been evicted")
		}
		if _, ok := c.Get("a"); !ok {
			t.Fatal("a was recently used")
		}
		if c.Len() != 2 {
			t.Fatalf("len %d", c.Len())
		}
	})
	t.Run("purge zeroes", func(t *testing.T) {
		c, _ := newTest(Config{MaxAge: time.Hour})
		k := key(9)
		c.Put("a", Value{Key: k})
		c.Purge()
		if c.Len() != 0 || !bytes.Equal(k, make([]byte, 32)) {
			t.Fatal("purge left key material")
		}
	})
	t.Run("max age required", func(t *testing.T) {
		defer func() {
			if recover() == nil {
				t.Fatal("no panic")
			}
		}()
		New(Config{})
	})
}

// Concurrent misses for one key make one unwrap.
func TestClaimCombinesMisses(t *testing.T) {
	c := New(Config{MaxAge: time.Hour})
	var unwraps atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			v, ok, owner, wait := c.Claim("k")
			if owner {
				unwraps.Add(1)
				time.Sleep(10 * time.Millisecond) // the KMS call
				c.Put("k", Value{Key: key(7)})
				return
			}
			if !ok {
				v, ok = wait()
			}
			if !ok || v.Key[0] != 7 {
				t.Errorf("waiter got %v %v", ok, v.Key)
			}
		}()
	}
	close(start)
	wg.Wait()
	if n := unwraps.Load(); n != 1 {
		t.Fatalf("%d unwraps for one key", n)
	}
	if s := c.Stats(); s.Misses != 1 || s.Hits != 31 {
		t.Fatalf("stats %+v", s)
	}
}

// A failed unwrap releases the waiters, who then unwrap on their own.
func TestAbandon(t *testing.T) {
	c := New(Config{MaxAge: time.Hour})
	_, _, owner, _ := c.Claim("k")
	if !owner {
		t.Fatal("first claim does not own")
	}
	got := make(chan bool)
	go func() {
		_, ok, owner, wait := c.Claim("k")
		if wait != nil {
			_, ok = wait()
		}
		got <- ok || owner
	}()
	time.Sleep(10 * time.Millisecond)
	c.Abandon("k")
	if <-got {
		t.Fatal("waiter of an abandoned key got a value or ownership")
	}
	if _, _, owner, _ := c.Claim("k"); !owner {
		t.Fatal("after Abandon the key can be claimed again")
	}
}

// TestClaimBytes: ClaimBytes shares Claim's entries and in-flight claims,
// hands the owner the id as a string, and allocates nothing on a hit.
func TestClaimBytes(t *testing.T) {
	c, clk := newTest(Config{MaxAge: time.Minute})
	id := []byte("\x01users\x000\x007\x00v1:abc")
	_, ok, owner, _, sid := c.ClaimBytes(id)
	if ok || !owner || sid != string(id) {
		t.Fatalf("first claim: ok %v owner %v sid %q", ok, owner, sid)
	}
	if _, ok, owner, wait := c.Claim(string(id)); ok || owner || wait == nil {
		t.Fatalf("Claim of an id claimed by bytes: ok %v owner %v wait %v; want a wait", ok, owner, wait != nil)
	}
	c.Put(sid, Value{Key: key(2)})
	if v, ok, _, _, _ := c.ClaimBytes(id); !ok || !bytes.Equal(v.Key, key(2)) {
		t.Fatalf("hit after Put: ok %v", ok)
	}
	if n := testing.AllocsPerRun(1, func() { c.ClaimBytes(id) }); n != 0 {
		t.Errorf("a hit allocated %v times", n)
	}
	clk.t = clk.t.Add(time.Minute)
	if _, ok, owner, _, _ := c.ClaimBytes(id); ok || !owner {
		t.Fatalf("claim at max age: ok %v owner %v; want a miss owned", ok, owner)
	}
}
