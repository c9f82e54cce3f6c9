package integration

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/providers/testkey"
)

// The data-key cache: hits make no KMS call, a cached key serves only the
// row and context it was unwrapped for, concurrent misses make one call,
// and keys expire after max_age.
func TestKeyCache(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap+"cache:\n  max_age: 5m\n")
	e.exec("INSERT INTO users (id, name, email) VALUES (1, 'a', 'a@x'), (2, 'b', 'b@x')")
	kms := testkey.New(testkey.WithLatency(20 * time.Millisecond))
	db := e.openBare(kmspostgres.WithProvider(kms))
	defer db.Close()
	unwraps := func() int64 { _, u := kms.Calls(); return u }

	if got := stringsOf(t, db, "SELECT email FROM users ORDER BY id"); got != "a@x|b@x" {
		t.Fatalf("first read: %s", got)
	}
	if n := unwraps(); n != 2 {
		t.Fatalf("first read: %d unwraps, want 2", n)
	}
	if got := stringsOf(t, db, "SELECT id, email FROM users WHERE id = 2"); got != "2|b@x" && got != "2,b@x" {
		t.Fatalf("second read: %s", got)
	}
	if n := unwraps(); n != 2 {
		t.Fatalf("a cached key was unwrapped again: %d unwraps", n)
	}

	// Row 1's key column copied to row 2: the wrapped key is in the
	// cache, but under row 1's context; row 2 must not decrypt with it.
	if _, err := e.raw.Exec(context.Background(), "UPDATE users SET encrypted_kms_key = (SELECT encrypted_kms_key FROM users WHERE id = 1) WHERE id = 2"); err != nil {
		t.Fatal(err)
	}
	var s string
	if err := db.QueryRow("SELECT email FROM users WHERE id = 2").Scan(&s); !errors.Is(err, kmspostgres.ErrDecrypt) {
		t.Fatalf("a key moved to another row read %q, err %v; want ErrDecrypt", s, err)
	}

	// Concurrent misses for one key make one KMS call.
	e.exec("INSERT INTO users (id, name, email) VALUES (3, 'c', 'c@x')")
	before := unwraps()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var got string
			if err := db.QueryRow("SELECT email FROM users WHERE id = 3").Scan(&got); err != nil || got != "c@x" {
				errs <- errors.Join(err, errors.New("got "+got))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := unwraps() - before; n != 1 {
		t.Fatalf("16 concurrent readers of one row made %d unwraps, want 1", n)
	}
}

func TestKeyCacheExpires(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap)
	e.exec("INSERT INTO users (id, name, email) VALUES (1, 'a', 'a@x')")
	kms := testkey.New()
	db := e.openBare(kmspostgres.WithProvider(kms), kmspostgres.WithKeyCache(&kmspostgres.CacheConfig{MaxAge: 100 * time.Millisecond, MaxUses: 3}))
	defer db.Close()
	read := func() {
		t.Helper()
		if got := stringsOf(t, db, "SELECT email FROM users"); got != "a@x" {
			t.Fatalf("read %s", got)
		}
	}
	read()
	read()
	read()
	if _, u := kms.Calls(); u != 1 {
		t.Fatalf("%d unwraps for three reads within max_uses", u)
	}
	read() // fourth use: past max_uses
	if _, u := kms.Calls(); u != 2 {
		t.Fatalf("%d unwraps after max_uses", u)
	}
	time.Sleep(150 * time.Millisecond)
	read()
	if _, u := kms.Calls(); u != 3 {
		t.Fatalf("%d unwraps after max_age", u)
	}
	if _, err := kmspostgres.NewConnector(e.dsn(), kmspostgres.WithKeyCache(&kmspostgres.CacheConfig{})); err == nil {
		t.Fatal("a cache without max_age was accepted")
	}
}

// WithKMSConcurrency bounds the calls in flight across connections: two
// result sets on a slow KMS with a bound of one take twice as long as one.
func TestKMSConcurrencyBound(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap)
	for i := 1; i <= 8; i++ {
		e.exec("INSERT INTO users (id, name, email) VALUES ($1, 'n', 'e@x')", i)
	}
	kms := testkey.New(testkey.WithLatency(20 * time.Millisecond))
	db := e.openBare(kmspostgres.WithProvider(kms), kmspostgres.WithKMSConcurrency(1))
	defer db.Close()
	start := time.Now()
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got := stringsOf(t, db, "SELECT email FROM users"); strings.Count(got, "e@x") != 8 {
				t.Errorf("rows: %s", got)
			}
		}()
	}
	wg.Wait()
	// 16 unwraps, one at a time, 20 ms each.
	if d := time.Since(start); d < 16*20*time.Millisecond {
		t.Fatalf("16 unwraps with one slot took %v: the bound did not hold", d)
	}
	if _, err := kmspostgres.NewConnector(e.dsn(), kmspostgres.WithKMSConcurrency(0)); err == nil {
		t.Fatal("a bound of zero was accepted")
	}
}
