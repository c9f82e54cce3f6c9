package awskms_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/internal/testenv"
	"github.com/kmspostgres/kmspostgres/providers/awskms"
)

const keyID = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"

var credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: "AKIDTEST", SecretAccessKey: "test-secret", Source: "test"}, nil
})

// hangingProviders are the provider built from the SDK's default chain (its
// retries included) and one around a client you built, both pointed at a
// server that accepts connections and never answers.
func hangingProviders(t *testing.T, opts ...awskms.Option) map[string]*awskms.Provider {
	t.Helper()
	url := "http://" + testenv.HangingServer(t)
	fromConfig, err := awskms.New(context.Background(), append(opts, awskms.WithLoadOptions(
		config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials),
		config.WithBaseEndpoint(url),
	))...)
	if err != nil {
		t.Fatal(err)
	}
	c := kms.New(kms.Options{Region: "us-east-1", BaseEndpoint: aws.String(url), Credentials: credentials})
	withClient, err := awskms.New(context.Background(), append(opts, awskms.WithClient(c))...)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*awskms.Provider{"default chain": fromConfig, "WithClient": withClient}
}

// TestDeadlineOnHangingServer: an AWS KMS endpoint that accepts connections
// and never answers fails Wrap and Unwrap with ErrUnavailable at the
// provider's deadline.
func TestDeadlineOnHangingServer(t *testing.T) {
	t.Parallel()
	const d = 200 * time.Millisecond
	for name, p := range hangingProviders(t, awskms.WithTimeout(d)) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testenv.WrapAndUnwrapUnavailable(t, p, keyID, d)
		})
	}
}

// TestDefaultDeadline: without WithTimeout a call is bounded to
// DefaultTimeout (2 s).
func TestDefaultDeadline(t *testing.T) {
	t.Parallel()
	if awskms.DefaultTimeout != 2*time.Second {
		t.Fatalf("DefaultTimeout = %v", awskms.DefaultTimeout)
	}
	p := hangingProviders(t)["default chain"]
	testenv.Unavailable(t, awskms.DefaultTimeout, func() error {
		_, err := p.Unwrap(context.Background(), keyID, []byte("wrapped"), envelope.Context{"id": "1"})
		return err
	})
}
