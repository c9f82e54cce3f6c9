package gcpkms_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/internal/testenv"
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
			testenv.WrapAndUnwrapUnavailable(t, provider(t, addr).WithTimeout(d), keyID, d)
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
	testenv.Unavailable(t, gcpkms.DefaultTimeout, func() error {
		_, err := p.Unwrap(context.Background(), keyID, []byte("wrapped"), envelope.Context{"id": "1"})
		return err
	})
}
