package testenv

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/providers"
)

// HangingServer returns the address (host:port) of a TCP listener that
// accepts every connection, reads what the client sends and never answers:
// a KMS that is up but stuck. Everything is closed when the test ends.
func HangingServer(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		conns  []net.Conn
		closed bool
		wg     sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				c.Close()
			}
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { io.Copy(io.Discard, c) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		closed = true
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// Unavailable runs call, a KMS call against a server that does not answer
// in time, and checks that it fails with providers.ErrUnavailable after
// about d (not before 0.9 d, at most 3 s after d) and says "kmspostgres:"
// once. It returns the error.
func Unavailable(t testing.TB, d time.Duration, call func() error) error {
	t.Helper()
	start := time.Now()
	err := call()
	took := time.Since(start)
	if !errors.Is(err, providers.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if took < d-d/10 || took > d+3*time.Second {
		t.Fatalf("failed after %v, want about %v", took, d)
	}
	if n := strings.Count(err.Error(), "kmspostgres:"); n != 1 {
		t.Errorf("%q: kmspostgres: %d times, want once", err, n)
	}
	return err
}

// WrapAndUnwrapUnavailable checks that p's Wrap and Unwrap of keyID both
// fail as Unavailable says.
func WrapAndUnwrapUnavailable(t testing.TB, p providers.Provider, keyID string, d time.Duration) {
	t.Helper()
	c := envelope.Context{"table": "users", "id": "1"}
	Unavailable(t, d, func() error {
		_, err := p.Wrap(context.Background(), keyID, make([]byte, 32), c)
		return err
	})
	Unavailable(t, d, func() error {
		_, err := p.Unwrap(context.Background(), keyID, []byte("wrapped"), c)
		return err
	})
}
