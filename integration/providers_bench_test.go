package integration

import (
	"context"
	"testing"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/integration/gcpkmsfake"
	"github.com/kmspostgres/kmspostgres/providers"
	"github.com/kmspostgres/kmspostgres/providers/awskms"
	"github.com/kmspostgres/kmspostgres/providers/testkey"
	"github.com/kmspostgres/kmspostgres/providers/vault"
)

// BenchmarkUnwrap measures one data-key unwrap through each provider
// against its server on loopback.
func BenchmarkUnwrap(b *testing.B) {
	ctx := context.Background()
	run := func(b *testing.B, p providers.Provider, keyID string) {
		dk, _ := envelope.NewDataKey()
		c := envelope.Context{"table": "users", "id": "42"}
		w, err := p.Wrap(ctx, keyID, dk, c)
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := p.Unwrap(ctx, keyID, w, c); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("testkey", func(b *testing.B) { run(b, testkey.New(), testkey.KeyID) })
	b.Run("aws", func(b *testing.B) {
		l := startLocalKMS(b)
		awsEnv(b, l.url())
		p, err := awskms.New(ctx)
		if err != nil {
			b.Fatal(err)
		}
		run(b, p, "alias/kmspg")
	})
	b.Run("vault", func(b *testing.B) {
		v := startVault(b)
		run(b, vault.NewFromClient(v.client(b, v.addr, "root")), "vault/kp")
	})
	b.Run("gcp", func(b *testing.B) {
		srv, err := gcpkmsfake.Start()
		if err != nil {
			b.Fatal(err)
		}
		defer srv.Close()
		key := gcpkmsfake.KeyName("kmspg", "ring", "data")
		srv.CreateKey(key)
		run(b, googleClient(b, srv), key)
	})
}
