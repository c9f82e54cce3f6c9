// Package vault is the HashiCorp Vault transit provider. Importing it
// routes key ids of the form vault/<key name> to Vault, configured by the
// client's standard variables (VAULT_ADDR, VAULT_TOKEN, VAULT_CACERT, …).
//
// Keys must be created with derived=true (vault write -f
// transit/keys/<name> derived=true): only then does Vault bind the
// ciphertext to the context. The provider reads the key's settings before
// first use and refuses a key that is not derived.
//
// A result set's data keys are unwrapped in batches (batch_input), not one
// request per row. Each call is bounded to DefaultTimeout (WithTimeout).
package vault

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/providers"
)

func init() {
	providers.Register(providers.KindVault, func() (providers.Provider, error) { return New() })
}

// ErrNotDerived reports a transit key created without derived=true: Vault
// would ignore the context, so it could not be trusted. Use errors.Is.
var ErrNotDerived = errors.New("kmspostgres: Vault transit key is not derived")

// DefaultTimeout bounds each call, as the AWS and Google providers do: a
// Vault server that accepts connections and does not answer fails the
// statement with providers.ErrUnavailable after 2 s instead of holding it
// for the client's one-minute timeout.
const DefaultTimeout = 2 * time.Second

// Provider wraps data keys with Vault transit. It is safe for concurrent
// use.
type Provider struct {
	c       *api.Client
	mount   string
	timeout time.Duration

	mu      sync.Mutex
	checked map[string]bool // key name → derived setting verified
}

var (
	_ providers.Provider       = (*Provider)(nil)
	_ providers.BatchUnwrapper = (*Provider)(nil)
)

// Option configures a Provider.
type Option func(*Provider)

// WithMount sets the transit mount path (default "transit").
func WithMount(path string) Option { return func(p *Provider) { p.mount = strings.Trim(path, "/") } }

// WithTimeout bounds each call (Wrap, Unwrap, UnwrapBatch, ContextHash),
// every request it makes included: the key check on first use, the retries
// of the Vault client (default 2 s; 0: only the caller's context). A call
// that runs out of time fails with providers.ErrUnavailable.
func WithTimeout(d time.Duration) Option { return func(p *Provider) { p.timeout = d } }

// New builds a client from Vault's standard environment variables.
func New(opts ...Option) (*Provider, error) {
	c, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		return nil, fmt.Errorf("kmspostgres: Vault client: %w", err)
	}
	return NewFromClient(c, opts...), nil
}

// NewFromClient uses a client you built (address, token, TLS, HTTP client).
func NewFromClient(c *api.Client, opts ...Option) *Provider {
	p := &Provider{c: c, mount: "transit", timeout: DefaultTimeout, checked: map[string]bool{}}
	for _, o := range opts {
		o(p)
	}
	return p
}

// KeyName returns the transit key name of a vault/<name> key id.
func KeyName(keyID string) (string, error) {
	name, ok := strings.CutPrefix(keyID, "vault/")
	if !ok || name == "" || strings.Contains(name, "/") {
		return "", fmt.Errorf("kmspostgres: %q is not a vault/<key name> key id", keyID)
	}
	return name, nil
}

func (p *Provider) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if p.timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, p.timeout)
}

func encodeContext(c envelope.Context) (string, error) {
	canon, err := c.Canonical()
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(canon), nil
}

// checkDerived refuses a key that is not derived. A token that may not read
// the key's settings (an encrypt-only token, say) cannot check, and is let
// through: grant read on <mount>/keys/<name> to have it checked.
func (p *Provider) checkDerived(ctx context.Context, name string) error {
	p.mu.Lock()
	done := p.checked[name]
	p.mu.Unlock()
	if done {
		return nil
	}
	s, err := p.c.Logical().ReadWithContext(ctx, p.mount+"/keys/"+name)
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == 403 {
			return nil
		}
		return classify(err)
	}
	if s == nil || s.Data == nil {
		return fmt.Errorf("%w: transit key %s does not exist", providers.ErrPermission, name)
	}
	if derived, _ := s.Data["derived"].(bool); !derived {
		return fmt.Errorf("%w: %s; recreate it with derived=true, or Vault ignores the encryption context", ErrNotDerived, name)
	}
	p.mu.Lock()
	p.checked[name] = true
	p.mu.Unlock()
	return nil
}

// Wrap encrypts a data key with transit/encrypt, the context as the key
// derivation context.
func (p *Provider) Wrap(ctx context.Context, keyID string, dataKey []byte, c envelope.Context) ([]byte, error) {
	fail := func(err error) ([]byte, error) {
		return nil, &providers.Error{Op: providers.OpWrap, KeyID: keyID, Err: err}
	}
	name, err := KeyName(keyID)
	if err != nil {
		return fail(err)
	}
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	if err := p.checkDerived(ctx, name); err != nil {
		return fail(err)
	}
	ec, err := encodeContext(c)
	if err != nil {
		return fail(err)
	}
	s, err := p.c.Logical().WriteWithContext(ctx, p.mount+"/encrypt/"+name, map[string]any{
		"plaintext": base64.StdEncoding.EncodeToString(dataKey),
		"context":   ec,
	})
	if err != nil {
		return fail(classify(err))
	}
	ct, _ := s.Data["ciphertext"].(string)
	if ct == "" {
		return fail(fmt.Errorf("%w: Vault returned no ciphertext", providers.ErrUnavailable))
	}
	return []byte(ct), nil
}

// Unwrap decrypts one data key.
func (p *Provider) Unwrap(ctx context.Context, keyID string, wrapped []byte, c envelope.Context) ([]byte, error) {
	res, err := p.UnwrapBatch(ctx, keyID, []providers.UnwrapRequest{{Wrapped: wrapped, Context: c}})
	if err != nil {
		return nil, err
	}
	return res[0].Key, res[0].Err
}

// UnwrapBatch decrypts many data keys in one transit/decrypt request.
func (p *Provider) UnwrapBatch(ctx context.Context, keyID string, reqs []providers.UnwrapRequest) ([]providers.Result, error) {
	fail := func(err error) ([]providers.Result, error) {
		return nil, &providers.Error{Op: providers.OpUnwrap, KeyID: keyID, Err: err}
	}
	name, err := KeyName(keyID)
	if err != nil {
		return fail(err)
	}
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	if err := p.checkDerived(ctx, name); err != nil {
		return fail(err)
	}
	batch := make([]map[string]any, len(reqs))
	for i, r := range reqs {
		ec, err := encodeContext(r.Context)
		if err != nil {
			return fail(err)
		}
		batch[i] = map[string]any{"ciphertext": string(r.Wrapped), "context": ec}
	}
	// With a partial failure Vault answers 200 and reports each item; when
	// every item fails it answers 400, still with batch_results, which the
	// raw call keeps readable.
	body, err := json.Marshal(map[string]any{"batch_input": batch, "partial_failure_response_code": 200})
	if err != nil {
		return fail(err)
	}
	r := p.c.NewRequest("PUT", "/v1/"+p.mount+"/decrypt/"+name)
	r.BodyBytes = body
	//lint:ignore SA1019 the raw response is needed: Logical().Write drops a 400's batch_results
	resp, err := p.c.RawRequestWithContext(ctx, r)
	if resp != nil {
		defer resp.Body.Close()
	}
	var re *api.ResponseError
	if err != nil && !(errors.As(err, &re) && re.StatusCode == 400 && resp != nil) {
		return fail(classify(err))
	}
	s, perr := api.ParseSecret(resp.Body)
	if perr != nil || s == nil {
		if err != nil {
			return fail(classify(err))
		}
		return fail(fmt.Errorf("%w: unreadable Vault answer: %v", providers.ErrUnavailable, perr))
	}
	items, _ := s.Data["batch_results"].([]any)
	if len(items) != len(reqs) {
		return fail(fmt.Errorf("%w: Vault answered %d results for %d keys", providers.ErrUnavailable, len(items), len(reqs)))
	}
	out := make([]providers.Result, len(reqs))
	for i, it := range items {
		m, _ := it.(map[string]any)
		if msg, _ := m["error"].(string); msg != "" {
			out[i].Err = &providers.Error{Op: providers.OpUnwrap, KeyID: keyID, Err: classifyMessage(msg)}
			continue
		}
		pt, _ := m["plaintext"].(string)
		key, err := base64.StdEncoding.DecodeString(pt)
		if err != nil || len(key) == 0 {
			out[i].Err = &providers.Error{Op: providers.OpUnwrap, KeyID: keyID, Err: fmt.Errorf("%w: Vault returned no plaintext", providers.ErrDecrypt)}
			continue
		}
		out[i].Key = key
	}
	return out, nil
}

// ContextHash returns the HMAC that the Vault audit device at auditPath
// (file, syslog, socket, …) logs for a context, so that an audit log line
// can be matched to a row: kms_encrypted's context_hash.
func (p *Provider) ContextHash(ctx context.Context, c map[string]string, auditPath string) (string, error) {
	ec, err := encodeContext(envelope.Context(c))
	if err != nil {
		return "", err
	}
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	h, err := p.c.Sys().AuditHashWithContext(ctx, auditPath, ec)
	if err != nil {
		return "", classify(err)
	}
	return h, nil
}

// classify maps Vault errors onto the provider error kinds.
func classify(err error) error {
	var re *api.ResponseError
	if errors.As(err, &re) {
		switch {
		case re.StatusCode == 403 || re.StatusCode == 401:
			return fmt.Errorf("%w: %w", providers.ErrPermission, err)
		case re.StatusCode == 400:
			return fmt.Errorf("%w: %w", classifyMessage(strings.Join(re.Errors, "; ")), err)
		case re.StatusCode == 429 || re.StatusCode >= 500:
			return fmt.Errorf("%w: %w", providers.ErrUnavailable, err)
		}
		return err
	}
	// Anything else did not get an answer: a deadline, a cancellation, a
	// refused or reset connection.
	return fmt.Errorf("%w: %w", providers.ErrUnavailable, err)
}

// classifyMessage reads a transit error message: a bad ciphertext or
// context is a decryption failure.
func classifyMessage(msg string) error {
	switch {
	case strings.Contains(msg, "message authentication failed"), strings.Contains(msg, "invalid ciphertext"),
		strings.Contains(msg, "invalid version"), strings.Contains(msg, "ciphertext"),
		strings.Contains(msg, "context"):
		return fmt.Errorf("%w: %s", providers.ErrDecrypt, msg)
	case strings.Contains(msg, "permission denied"):
		return fmt.Errorf("%w: %s", providers.ErrPermission, msg)
	}
	return errors.New("Vault: " + msg)
}
