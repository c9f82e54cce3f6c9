package providers_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/providers"
	"github.com/kmspostgres/kmspostgres/providers/testkey"
)

// TestErrorPrefixOnce: a provider error says "kmspostgres:" once, however
// its cause was built, and still matches its sentinel.
func TestErrorPrefixOnce(t *testing.T) {
	for _, sentinel := range []error{providers.ErrDecrypt, providers.ErrUnavailable, providers.ErrPermission, providers.ErrNoProvider, providers.ErrKeyID} {
		for _, cause := range []error{sentinel, fmt.Errorf("%w: %w", sentinel, context.DeadlineExceeded)} {
			err := error(&providers.Error{Op: providers.OpUnwrap, KeyID: "vault/app", Err: cause})
			checkRendered(t, err, sentinel)
			checkRendered(t, fmt.Errorf("reading users: %w", err), sentinel)
		}
	}
	err := &providers.Error{Op: providers.OpWrap, KeyID: "alias/app"}
	if got, want := err.Error(), "kmspostgres: wrap with key alias/app failed"; got != want {
		t.Errorf("no cause: %q, want %q", got, want)
	}
}

// TestErrorPrefixOnceFromProvider checks the errors a provider really
// returns.
func TestErrorPrefixOnceFromProvider(t *testing.T) {
	ctx := context.Background()
	p := testkey.New()
	c := envelope.Context{"table": "users", "id": "1"}
	w, err := p.Wrap(ctx, testkey.KeyID, make([]byte, 32), c)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Unwrap(ctx, testkey.KeyID, w, envelope.Context{"table": "users", "id": "2"})
	checkRendered(t, err, providers.ErrDecrypt)
	_, err = p.Unwrap(ctx, testkey.EncryptOnlyKeyID, w, c)
	checkRendered(t, err, providers.ErrPermission)
	p.SetUnavailable(true)
	_, err = p.Wrap(ctx, testkey.KeyID, make([]byte, 32), c)
	checkRendered(t, err, providers.ErrUnavailable)
}

func checkRendered(t *testing.T, err, sentinel error) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Errorf("%v: not %v", err, sentinel)
	}
	if n := strings.Count(err.Error(), "kmspostgres:"); n != 1 {
		t.Errorf("%q: kmspostgres: %d times, want once", err, n)
	}
}
