package vault_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/internal/testenv"
	"github.com/kmspostgres/kmspostgres/providers"
	"github.com/kmspostgres/kmspostgres/providers/vault"
)

// client is the real Vault client for a server at addr.
func client(t *testing.T, addr string) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = addr
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken("test-token")
	return c
}

var (
	rowCtx  = envelope.Context{"table": "users", "id": "1"}
	dataKey = make([]byte, 32)
	wrapped = []byte("vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
)

// calls are the provider's calls that reach Vault, each from a fresh
// provider so that the derived-key check runs first.
var calls = map[string]func(ctx context.Context, p *vault.Provider) error{
	"wrap": func(ctx context.Context, p *vault.Provider) error {
		_, err := p.Wrap(ctx, "vault/app", dataKey, rowCtx)
		return err
	},
	"unwrap": func(ctx context.Context, p *vault.Provider) error {
		_, err := p.Unwrap(ctx, "vault/app", wrapped, rowCtx)
		return err
	},
	"batch unwrap": func(ctx context.Context, p *vault.Provider) error {
		reqs := []providers.UnwrapRequest{{Wrapped: wrapped, Context: rowCtx}, {Wrapped: wrapped, Context: rowCtx}}
		_, err := p.UnwrapBatch(ctx, "vault/app", reqs)
		return err
	},
	"context hash": func(ctx context.Context, p *vault.Provider) error {
		_, err := p.ContextHash(ctx, rowCtx, "file")
		return err
	},
}

// TestDeadlineOnHangingServer: a Vault that accepts connections and never
// answers fails every call with ErrUnavailable at the provider's deadline,
// the derived-key check included.
func TestDeadlineOnHangingServer(t *testing.T) {
	t.Parallel()
	addr := "http://" + testenv.HangingServer(t)
	const d = 200 * time.Millisecond
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := vault.NewFromClient(client(t, addr), vault.WithTimeout(d))
			testenv.Unavailable(t, d, func() error { return call(context.Background(), p) })
		})
	}
}

// TestDefaultDeadline: without WithTimeout a call is bounded to
// DefaultTimeout (2 s), not the client's 60 s.
func TestDefaultDeadline(t *testing.T) {
	t.Parallel()
	if vault.DefaultTimeout != 2*time.Second {
		t.Fatalf("DefaultTimeout = %v", vault.DefaultTimeout)
	}
	p := vault.NewFromClient(client(t, "http://"+testenv.HangingServer(t)))
	testenv.Unavailable(t, vault.DefaultTimeout, func() error { return calls["unwrap"](context.Background(), p) })
}

// TestNoTimeoutKeepsCallerDeadline: WithTimeout(0) leaves the bound to the
// caller's context.
func TestNoTimeoutKeepsCallerDeadline(t *testing.T) {
	t.Parallel()
	p := vault.NewFromClient(client(t, "http://"+testenv.HangingServer(t)), vault.WithTimeout(0))
	const d = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	testenv.Unavailable(t, d, func() error { return calls["wrap"](ctx, p) })
}

// TestDeadlineAfterKeyCheck: a Vault that answers the key check and then
// hangs on encrypt and decrypt fails those at the deadline too.
func TestDeadlineAfterKeyCheck(t *testing.T) {
	t.Parallel()
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/v1/transit/keys/app" {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"data": {"derived": true, "type": "aes256-gcm96"}}`))
			return
		}
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	t.Cleanup(func() { close(stop); srv.Close() })
	const d = 200 * time.Millisecond
	for _, name := range []string{"wrap", "unwrap", "batch unwrap"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := vault.NewFromClient(client(t, srv.URL), vault.WithTimeout(d))
			testenv.Unavailable(t, d, func() error { return calls[name](context.Background(), p) })
		})
	}
}
