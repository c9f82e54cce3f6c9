package lru

import (
	"strconv"
	"sync"
	"testing"
)

func TestEviction(t *testing.T) {
	tests := []struct {
		name    string
		max     int
		ops     []string // "p:k" put, "g:k" get
		present []string
		absent  []string
	}{
		{"under capacity keeps all", 3, []string{"p:a", "p:b"}, []string{"a", "b"}, nil},
		{"oldest evicted", 2, []string{"p:a", "p:b", "p:c"}, []string{"b", "c"}, []string{"a"}},
		{"get refreshes", 2, []string{"p:a", "p:b", "g:a", "p:c"}, []string{"a", "c"}, []string{"b"}},
		{"put refreshes", 2, []string{"p:a", "p:b", "p:a", "p:c"}, []string{"a", "c"}, []string{"b"}},
		{"max below one is one", 0, []string{"p:a", "p:b"}, []string{"b"}, []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New[string, int](tt.max)
			for i, op := range tt.ops {
				switch op[0] {
				case 'p':
					c.Put(op[2:], i)
				case 'g':
					c.Get(op[2:])
				}
			}
			for _, k := range tt.present {
				if _, ok := c.Get(k); !ok {
					t.Errorf("%s evicted", k)
				}
			}
			for _, k := range tt.absent {
				if _, ok := c.Get(k); ok {
					t.Errorf("%s still present", k)
				}
			}
		})
	}
}

func TestPutReplacesValue(t *testing.T) {
	c := New[string, int](2)
	c.Put("a", 1)
	c.Put("a", 2)
	if v, _ := c.Get("a"); v != 2 || c.Len() != 1 {
		t.Fatalf("v=%d len=%d", v, c.Len())
	}
	c.Clear()
	if _, ok := c.Get("a"); ok || c.Len() != 0 {
		t.Fatal("Clear left entries")
	}
}

func TestConcurrent(t *testing.T) {
	c := New[string, int](64)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				k := strconv.Itoa((g*7919 + i) % 200)
				c.Put(k, i)
				c.Get(k)
			}
		}()
	}
	wg.Wait()
	if c.Len() > 64 {
		t.Fatalf("len %d over max", c.Len())
	}
}
