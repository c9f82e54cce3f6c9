package gcpkms_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/internal/testenv"
	"github.com/kmspostgres/kmspostgres/providers"
	"github.com/kmspostgres/kmspostgres/providers/gcpkms"
)

const keyID = "projects/p/locations/global/keyRings/r/cryptoKeys/k"

// provider is the real Google client for an endpoint without TLS.
func provider(t *testing.T, addr string) *gcpkms.Provider {
	t.Helper()
	p, err := gcpkms.New(context.Background(),
		option.WithEndpoint(addr),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// silentGRPC is a gRPC server that takes every call and never answers it.
func silentGRPC(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		<-stream.Context().Done()
		return stream.Context().Err()
	}))
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return l.Addr().String()
}

// failsWithin runs call and checks that it fails with ErrUnavailable after
// about d.
func failsWithin(t *testing.T, d time.Duration, call func() error) {
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
		t.Errorf("%q: kmspostgres: %d times", err, n)
	}
}

func wrapAndUnwrap(t *testing.T, p *gcpkms.Provider, d time.Duration) {
	t.Helper()
	c := envelope.Context{"table": "users", "id": "1"}
	failsWithin(t, d, func() error {
		_, err := p.Wrap(context.Background(), keyID, make([]byte, 32), c)
		return err
	})
	failsWithin(t, d, func() error {
		_, err := p.Unwrap(context.Background(), keyID, []byte("wrapped"), c)
		return err
	})
}

// TestDeadlineOnHangingServer: a Cloud KMS endpoint that accepts TCP
// connections and never answers, or takes gRPC calls and never answers
// them, fails Wrap and Unwrap with ErrUnavailable at the provider's
// deadline.
func TestDeadlineOnHangingServer(t *testing.T) {
	t.Parallel()
	const d = 200 * time.Millisecond
	for name, addr := range map[string]string{"tcp": testenv.HangingServer(t), "grpc": silentGRPC(t)} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			wrapAndUnwrap(t, provider(t, addr).WithTimeout(d), d)
		})
	}
}

// TestDefaultDeadline: without WithTimeout a call is bounded to
// DefaultTimeout (2 s).
func TestDefaultDeadline(t *testing.T) {
	t.Parallel()
	if gcpkms.DefaultTimeout != 2*time.Second {
		t.Fatalf("DefaultTimeout = %v", gcpkms.DefaultTimeout)
	}
	p := provider(t, silentGRPC(t))
	failsWithin(t, gcpkms.DefaultTimeout, func() error {
		_, err := p.Unwrap(context.Background(), keyID, []byte("wrapped"), envelope.Context{"id": "1"})
		return err
	})
}
