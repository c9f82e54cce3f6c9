package kmspostgres

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/kmspostgres/kmspostgres/internal/testenv"
	"github.com/kmspostgres/kmspostgres/providers"
	"github.com/kmspostgres/kmspostgres/providers/testkey"
)

func TestBox(t *testing.T) {
	ctx := context.Background()
	rec := &testenv.Recorder{}
	box, err := NewBox("insecure-test-key", WithObserver(rec))
	if err != nil {
		t.Fatal(err)
	}
	msg := bytes.Repeat([]byte("a large message "), 1<<12) // 64 KiB, over AWS's 4 KB limit
	bc := map[string]string{"model_name": "User", "model_id": "123"}
	ct, err := box.Encrypt(ctx, msg, bc)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ct, "kmsbox1:v1:") {
		t.Fatalf("ciphertext prefix: %.20s", ct)
	}
	got, err := box.Decrypt(ctx, ct, bc)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := box.Decrypt(ctx, ct, map[string]string{"model_name": "User", "model_id": "124"}); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("wrong context: %v", err)
	}
	i := strings.LastIndexByte(ct, ':')
	cell, _ := base64.StdEncoding.DecodeString(ct[i+1:])
	cell[20] ^= 1
	tampered := ct[:i+1] + base64.StdEncoding.EncodeToString(cell)
	if _, err := box.Decrypt(ctx, tampered, bc); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("tampered cell: %v", err)
	}
	for _, bad := range []string{"", "kmsbox1:", "kmsbox2:v1:AAAA:AAAA", "kmsbox1:v1:AAAA", "kmsbox1:v1:AAAA:%%%"} {
		if _, err := box.Decrypt(ctx, bad, bc); err == nil {
			t.Errorf("Decrypt(%q) succeeded", bad)
		}
	}
	events := rec.Events()
	if len(events) != 4 || events[0].Op != providers.OpWrap || events[1].Op != providers.OpUnwrap || events[2].Err == nil {
		t.Fatalf("events: %+v", events)
	}
	if events[0].Context["model_id"] != "123" || events[0].Version != 1 || events[0].KeyID != "insecure-test-key" {
		t.Fatalf("event fields: %+v", events[0])
	}
}

func TestBoxVersions(t *testing.T) {
	ctx := context.Background()
	c := map[string]string{"k": "v"}
	old, _ := NewBox("insecure-test-key")
	ct, err := old.Encrypt(ctx, []byte("x"), c)
	if err != nil {
		t.Fatal(err)
	}
	// Version 2 writes under the encrypt-only id and can read version 1.
	v2, err := NewBox("insecure-test-key/encrypt", WithKeyVersion(2), WithPreviousVersion(1, "insecure-test-key"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := v2.Decrypt(ctx, ct, c); err != nil || string(got) != "x" {
		t.Fatalf("previous version: %q %v", got, err)
	}
	ct2, err := v2.Encrypt(ctx, []byte("y"), c)
	if err != nil || !strings.HasPrefix(ct2, "kmsbox1:v2:") {
		t.Fatalf("v2 encrypt: %v", err)
	}
	if _, err := v2.Decrypt(ctx, ct2, c); !errors.Is(err, ErrPermission) {
		t.Fatalf("encrypt-only decrypt: %v", err)
	}
	if _, err := old.Decrypt(ctx, ct2, c); !errors.Is(err, ErrVersion) {
		t.Fatalf("unknown version: %v", err)
	}
	slow := testkey.New()
	slow.SetUnavailable(true)
	down, _ := NewBox("insecure-test-key", WithProvider(slow))
	if _, err := down.Encrypt(ctx, []byte("z"), c); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("unavailable: %v", err)
	}
	if _, err := NewBox("insecure-test-key", WithKeyVersion(1), WithPreviousVersion(1, "x")); err == nil {
		t.Fatal("clashing versions accepted")
	}
	t.Setenv("KMS_KEY_ID", "")
	if _, err := NewBox(""); err == nil {
		t.Fatal("empty key id accepted")
	}
}
