// Package gcpkms is the Google Cloud KMS provider. Importing it routes key
// ids of the form projects/…/locations/…/keyRings/…/cryptoKeys/… to Cloud
// KMS, with application default credentials.
//
// The canonical context is sent as additional authenticated data, and every
// request and response is checked with Cloud KMS's CRC32C integrity fields,
// as Google recommends. Note for auditing: Cloud KMS's data-access logs do
// not record the additional authenticated data, so they cannot show which
// row was decrypted.
//
// The Go client does not log request payloads; do not turn on gRPC payload
// logging in production, since requests carry data keys.
package gcpkms

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	kms "cloud.google.com/go/kms/apiv1"
	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/providers"
)

func init() {
	providers.Register(providers.KindGCP, func() (providers.Provider, error) {
		return New(context.Background())
	})
}

// DefaultTimeout bounds each Cloud KMS call, retries included, as
// kms_encrypted bounds AWS calls: a KMS outage fails statements quickly
// instead of holding them for the client's one-minute default.
const DefaultTimeout = 2 * time.Second

// Provider wraps data keys with Cloud KMS. It is safe for concurrent use.
type Provider struct {
	c       *kms.KeyManagementClient
	timeout time.Duration
}

var _ providers.Provider = (*Provider)(nil)

// New dials Cloud KMS with application default credentials; opts can set
// an endpoint, credentials or gRPC options.
func New(ctx context.Context, opts ...option.ClientOption) (*Provider, error) {
	c, err := kms.NewKeyManagementClient(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("kmspostgres: Cloud KMS client: %w", err)
	}
	return &Provider{c: c, timeout: DefaultTimeout}, nil
}

// NewFromClient uses a client you built.
func NewFromClient(c *kms.KeyManagementClient) *Provider {
	return &Provider{c: c, timeout: DefaultTimeout}
}

// WithTimeout sets the bound on each call (0: only the caller's context).
func (p *Provider) WithTimeout(d time.Duration) *Provider {
	p.timeout = d
	return p
}

func (p *Provider) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if p.timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, p.timeout)
}

// Close closes the client.
func (p *Provider) Close() error { return p.c.Close() }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(b []byte) *wrapperspb.Int64Value {
	return wrapperspb.Int64(int64(crc32.Checksum(b, castagnoli)))
}

var errIntegrity = fmt.Errorf("%w: a Cloud KMS request or response was corrupted in transit (CRC32C mismatch); retry", providers.ErrUnavailable)

// Wrap encrypts a data key with the crypto key's primary version.
func (p *Provider) Wrap(ctx context.Context, keyID string, dataKey []byte, c envelope.Context) ([]byte, error) {
	fail := func(err error) ([]byte, error) {
		return nil, &providers.Error{Op: providers.OpWrap, KeyID: keyID, Err: err}
	}
	aad, err := c.Canonical()
	if err != nil {
		return fail(err)
	}
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	resp, err := p.c.Encrypt(ctx, &kmspb.EncryptRequest{
		Name:                              keyID,
		Plaintext:                         dataKey,
		PlaintextCrc32C:                   crc(dataKey),
		AdditionalAuthenticatedData:       aad,
		AdditionalAuthenticatedDataCrc32C: crc(aad),
	})
	if err != nil {
		return fail(classify(err))
	}
	if !resp.VerifiedPlaintextCrc32C || !resp.VerifiedAdditionalAuthenticatedDataCrc32C ||
		resp.CiphertextCrc32C == nil || resp.CiphertextCrc32C.Value != crc(resp.Ciphertext).Value {
		return fail(errIntegrity)
	}
	return resp.Ciphertext, nil
}

// Unwrap decrypts a data key; Cloud KMS finds the key version from the
// ciphertext.
func (p *Provider) Unwrap(ctx context.Context, keyID string, wrapped []byte, c envelope.Context) ([]byte, error) {
	fail := func(err error) ([]byte, error) {
		return nil, &providers.Error{Op: providers.OpUnwrap, KeyID: keyID, Err: err}
	}
	aad, err := c.Canonical()
	if err != nil {
		return fail(err)
	}
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	resp, err := p.c.Decrypt(ctx, &kmspb.DecryptRequest{
		Name:                              keyID,
		Ciphertext:                        wrapped,
		CiphertextCrc32C:                  crc(wrapped),
		AdditionalAuthenticatedData:       aad,
		AdditionalAuthenticatedDataCrc32C: crc(aad),
	})
	if err != nil {
		return fail(classify(err))
	}
	if resp.PlaintextCrc32C == nil || resp.PlaintextCrc32C.Value != crc(resp.Plaintext).Value {
		return fail(errIntegrity)
	}
	return resp.Plaintext, nil
}

// classify maps gRPC status codes onto the provider error kinds.
func classify(err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%w: %w", providers.ErrUnavailable, err)
	}
	s, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%w: %w", providers.ErrUnavailable, err)
	}
	switch s.Code() {
	case codes.InvalidArgument:
		// Cloud KMS answers a wrong key, AAD or tampered ciphertext with
		// INVALID_ARGUMENT ("Decryption failed").
		return fmt.Errorf("%w: %w", providers.ErrDecrypt, err)
	case codes.PermissionDenied, codes.Unauthenticated, codes.FailedPrecondition, codes.NotFound:
		return fmt.Errorf("%w: %w", providers.ErrPermission, err)
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.ResourceExhausted, codes.Aborted, codes.Internal:
		return fmt.Errorf("%w: %w", providers.ErrUnavailable, err)
	}
	return err
}
