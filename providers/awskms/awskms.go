// Package awskms is the AWS KMS provider. Importing it routes AWS key ids
// (a key id, mrk- multi-Region key id, key ARN, alias/<name> or alias ARN;
// see providers.KindOf) to AWS KMS, with credentials, region and endpoint
// from the SDK's default chain (AWS_ACCESS_KEY_ID, profiles, roles;
// AWS_REGION; AWS_ENDPOINT_URL_KMS). A key ARN's own region wins over the
// default.
//
// Data keys are wrapped with Encrypt and unwrapped with Decrypt (not
// GenerateDataKey, as kms_encrypted 1.0 moved to), the encryption context
// passed as EncryptionContext, so CloudTrail records it with every call.
package awskms

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/providers"
)

func init() {
	providers.Register(providers.KindAWS, func() (providers.Provider, error) {
		return New(context.Background())
	})
}

// Defaults, as kms_encrypted's: a short timeout and one retry.
const (
	DefaultTimeout = 2 * time.Second
	DefaultRetries = 1
)

// Provider wraps data keys with AWS KMS. It is safe for concurrent use.
type Provider struct {
	cfg     aws.Config
	timeout time.Duration
	fixed   *kms.Client // WithClient: used for every region

	mu      sync.Mutex
	clients map[string]*kms.Client // by region
}

var _ providers.Provider = (*Provider)(nil)

// Option configures a Provider.
type Option func(*options)

type options struct {
	timeout time.Duration
	retries int
	client  *kms.Client
	load    []func(*config.LoadOptions) error
}

// WithTimeout bounds each KMS call (default 2 s).
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithRetries sets how many times a failed call is retried (default 1).
func WithRetries(n int) Option { return func(o *options) { o.retries = n } }

// WithClient uses a client you built (custom credentials, endpoint, HTTP
// client) for every key, whatever its region.
func WithClient(c *kms.Client) Option { return func(o *options) { o.client = c } }

// WithLoadOptions adds options for config.LoadDefaultConfig.
func WithLoadOptions(opts ...func(*config.LoadOptions) error) Option {
	return func(o *options) { o.load = append(o.load, opts...) }
}

// New loads the SDK's default configuration and returns a provider.
func New(ctx context.Context, opts ...Option) (*Provider, error) {
	o := options{timeout: DefaultTimeout, retries: DefaultRetries}
	for _, f := range opts {
		f(&o)
	}
	p := &Provider{timeout: o.timeout, fixed: o.client, clients: map[string]*kms.Client{}}
	if o.client != nil {
		return p, nil
	}
	load := append([]func(*config.LoadOptions) error{config.WithRetryMaxAttempts(o.retries + 1)}, o.load...)
	cfg, err := config.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return nil, fmt.Errorf("kmspostgres: loading AWS configuration: %w", err)
	}
	p.cfg = cfg
	return p, nil
}

// client returns the client for a key id's region.
func (p *Provider) client(keyID string) *kms.Client {
	if p.fixed != nil {
		return p.fixed
	}
	region := p.cfg.Region
	if strings.HasPrefix(keyID, "arn:") {
		if parts := strings.SplitN(keyID, ":", 6); len(parts) == 6 && parts[3] != "" {
			region = parts[3]
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.clients[region]
	if c == nil {
		c = kms.NewFromConfig(p.cfg, func(o *kms.Options) { o.Region = region })
		p.clients[region] = c
	}
	return c
}

func (p *Provider) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if p.timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, p.timeout)
}

// Wrap encrypts a data key under keyID with the context.
func (p *Provider) Wrap(ctx context.Context, keyID string, dataKey []byte, c envelope.Context) ([]byte, error) {
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	out, err := p.client(keyID).Encrypt(ctx, &kms.EncryptInput{
		KeyId:             aws.String(keyID),
		Plaintext:         dataKey,
		EncryptionContext: c,
	})
	if err != nil {
		return nil, &providers.Error{Op: providers.OpWrap, KeyID: keyID, Err: classify(err)}
	}
	return out.CiphertextBlob, nil
}

// Unwrap decrypts a data key. The key id is passed so that a ciphertext of
// another key is refused rather than decrypted with it.
func (p *Provider) Unwrap(ctx context.Context, keyID string, wrapped []byte, c envelope.Context) ([]byte, error) {
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	out, err := p.client(keyID).Decrypt(ctx, &kms.DecryptInput{
		KeyId:             aws.String(keyID),
		CiphertextBlob:    wrapped,
		EncryptionContext: c,
	})
	if err != nil {
		return nil, &providers.Error{Op: providers.OpUnwrap, KeyID: keyID, Err: classify(err)}
	}
	return out.Plaintext, nil
}

// classify maps AWS errors onto the provider error kinds, keeping the
// original in the chain. Messages from AWS never contain key material.
func classify(err error) error {
	var (
		invalid   *types.InvalidCiphertextException
		incorrect *types.IncorrectKeyException
		disabled  *types.DisabledException
		state     *types.KMSInvalidStateException
		notFound  *types.NotFoundException
		unavail   *types.KeyUnavailableException
		depTime   *types.DependencyTimeoutException
		internal  *types.KMSInternalException
		api       smithy.APIError
		netErr    net.Error
	)
	switch {
	case errors.As(err, &invalid), errors.As(err, &incorrect):
		return fmt.Errorf("%w: %w", providers.ErrDecrypt, err)
	case errors.As(err, &disabled), errors.As(err, &state), errors.As(err, &notFound):
		return fmt.Errorf("%w: %w", providers.ErrPermission, err)
	case errors.As(err, &unavail), errors.As(err, &depTime), errors.As(err, &internal):
		return fmt.Errorf("%w: %w", providers.ErrUnavailable, err)
	case errors.As(err, &api):
		var httpErr interface{ HTTPStatusCode() int }
		if errors.As(err, &httpErr) && (httpErr.HTTPStatusCode() >= 500 || httpErr.HTTPStatusCode() == 429) {
			// A 5xx from KMS or from a proxy in front of it.
			return fmt.Errorf("%w: %w", providers.ErrUnavailable, err)
		}
		switch api.ErrorCode() {
		case "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException":
			return fmt.Errorf("%w: %w", providers.ErrPermission, err)
		case "ThrottlingException", "ServiceUnavailableException", "InternalFailure":
			return fmt.Errorf("%w: %w", providers.ErrUnavailable, err)
		}
		return err
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), errors.As(err, &netErr):
		return fmt.Errorf("%w: %w", providers.ErrUnavailable, err)
	}
	// Transport failures (connection refused or reset, retries exhausted).
	return fmt.Errorf("%w: %w", providers.ErrUnavailable, err)
}
