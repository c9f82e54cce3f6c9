package providers_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/providers"
	"github.com/kmspostgres/kmspostgres/providers/testkey"
)

func TestKindOf(t *testing.T) {
	for id, want := range map[string]providers.Kind{
		"insecure-test-key":         providers.KindTest,
		"insecure-test-key/encrypt": providers.KindTest,
		"vault/my-key":              providers.KindVault,
		"projects/p/locations/global/keyRings/r/cryptoKeys/k":                         providers.KindGCP,
		"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab": providers.KindAWS,
		"arn:aws:kms:us-east-1:111122223333:alias/app":                                providers.KindAWS,
		"alias/app":                            providers.KindAWS,
		"1234abcd-12ab-34cd-56ef-1234567890ab": providers.KindAWS,
	} {
		if got := providers.KindOf(id); got != want {
			t.Errorf("KindOf(%q) = %s, want %s", id, got, want)
		}
	}
}

func TestForKeyIDNamesMissingPackage(t *testing.T) {
	_, err := providers.ForKeyID("vault/my-key")
	if !errors.Is(err, providers.ErrNoProvider) || !strings.Contains(err.Error(), "providers/vault") {
		t.Fatalf("err = %v", err)
	}
	_, err = providers.ForKeyID("alias/x")
	if !errors.Is(err, providers.ErrNoProvider) || !strings.Contains(err.Error(), "providers/awskms") {
		t.Fatalf("err = %v", err)
	}
	if _, err := providers.ForKeyID(""); !errors.Is(err, providers.ErrNoProvider) {
		t.Fatalf("empty key id: %v", err)
	}
	p, err := providers.ForKeyID(testkey.KeyID)
	if err != nil || p == nil {
		t.Fatalf("test key not routed: %v", err)
	}
}

func TestTestKey(t *testing.T) {
	ctx := context.Background()
	p := testkey.New()
	c := envelope.Context{"table": "users", "id": "1"}
	dk := []byte("0123456789abcdef0123456789abcdef")
	w1, err := p.Wrap(ctx, testkey.KeyID, dk, c)
	if err != nil {
		t.Fatal(err)
	}
	w2, _ := p.Wrap(ctx, testkey.EncryptOnlyKeyID, dk, c)
	if string(w1) != string(w2) {
		t.Fatal("not deterministic, or the two ids are different keys")
	}
	got, err := p.Unwrap(ctx, testkey.KeyID, w2, c)
	if err != nil || string(got) != string(dk) {
		t.Fatalf("unwrap = %q, %v", got, err)
	}
	if _, err := p.Unwrap(ctx, testkey.KeyID, w1, envelope.Context{"table": "users", "id": "2"}); !errors.Is(err, providers.ErrDecrypt) {
		t.Fatalf("wrong context: %v", err)
	}
	bad := append([]byte{}, w1...)
	bad[len(bad)-1] ^= 1
	if _, err := p.Unwrap(ctx, testkey.KeyID, bad, c); !errors.Is(err, providers.ErrDecrypt) {
		t.Fatalf("tampered: %v", err)
	}
	if _, err := p.Unwrap(ctx, testkey.KeyID, []byte{1}, c); !errors.Is(err, providers.ErrDecrypt) {
		t.Fatalf("short: %v", err)
	}
	if _, err := p.Unwrap(ctx, testkey.EncryptOnlyKeyID, w1, c); !errors.Is(err, providers.ErrPermission) {
		t.Fatalf("encrypt-only unwrap: %v", err)
	}
	p.SetUnavailable(true)
	if _, err := p.Wrap(ctx, testkey.KeyID, dk, c); !errors.Is(err, providers.ErrUnavailable) {
		t.Fatalf("unavailable: %v", err)
	}
	p.SetUnavailable(false)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := testkey.New(testkey.WithLatency(1e9)).Unwrap(cctx, testkey.KeyID, w1, c); !errors.Is(err, providers.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	if _, err := p.Wrap(ctx, "insecure-test-key/other", dk, c); err == nil {
		t.Fatal("unknown test key id accepted")
	}
	if w, u := p.Calls(); w != 4 || u != 5 {
		t.Fatalf("calls = %d wraps, %d unwraps", w, u)
	}
}
