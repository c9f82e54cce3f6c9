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
	const (
		uuid = "1234abcd-12ab-34cd-56ef-1234567890ab"
		mrk  = "mrk-1234abcd12ab34cd56ef1234567890ab"
	)
	for _, tc := range []struct {
		id   string
		want providers.Kind
	}{
		{"insecure-test-key", providers.KindTest},
		{"insecure-test-key/encrypt", providers.KindTest},

		{"vault/my-key", providers.KindVault},
		{"vault/app", providers.KindVault},
		{"vault/a", providers.KindVault},
		{"vault/app_v2.key@prod", providers.KindVault},

		{"projects/p/locations/global/keyRings/r/cryptoKeys/k", providers.KindGCP},
		{"projects/my-project-123/locations/europe-west1/keyRings/ring_1/cryptoKeys/data-key", providers.KindGCP},
		{"projects/example.com:proj/locations/us/keyRings/r/cryptoKeys/k", providers.KindGCP},

		{uuid, providers.KindAWS},
		{"1234ABCD-12AB-34CD-56EF-1234567890AB", providers.KindAWS},
		{mrk, providers.KindAWS},
		{"arn:aws:kms:us-east-1:111122223333:key/" + uuid, providers.KindAWS},
		{"arn:aws:kms:eu-west-3:111122223333:key/" + mrk, providers.KindAWS},
		{"arn:aws-cn:kms:cn-north-1:111122223333:key/" + uuid, providers.KindAWS},
		{"arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/" + uuid, providers.KindAWS},
		{"arn:aws-iso-b:kms:us-isob-east-1:111122223333:key/" + uuid, providers.KindAWS},
		{"arn:aws:kms:us-east-1:111122223333:alias/app", providers.KindAWS},
		{"arn:aws-us-gov:kms:us-gov-east-1:111122223333:alias/team/app_key-1", providers.KindAWS},
		{"alias/app", providers.KindAWS},
		{"alias/aws/s3", providers.KindAWS},
		{"alias/Team_A/app-key/2", providers.KindAWS},
		{"alias/" + strings.Repeat("a", 250), providers.KindAWS},

		{"", providers.KindUnknown},
		{"k", providers.KindUnknown},
		{"foo/bar", providers.KindUnknown},
		{"my-key", providers.KindUnknown},
		{"insecure-test-key/other", providers.KindUnknown},
		{"insecure-test-key/", providers.KindUnknown},
		{"insecure-test-keys", providers.KindUnknown},
		{"Insecure-Test-Key", providers.KindUnknown},
		{"vault/", providers.KindUnknown},
		{"vault/a/b", providers.KindUnknown},
		{"vault/app ", providers.KindUnknown},
		{"vault/-app", providers.KindUnknown},
		{"vault/app?x=1", providers.KindUnknown},
		{"vault", providers.KindUnknown},
		{"transit/app", providers.KindUnknown},
		{"projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1", providers.KindUnknown},
		{"projects/p/locations/global/keyRings/r/cryptoKeys/", providers.KindUnknown},
		{"projects/p/locations//keyRings/r/cryptoKeys/k", providers.KindUnknown},
		{"projects/p/keyRings/r/cryptoKeys/k", providers.KindUnknown},
		{"projects/p/locations/global/keyRings/r/cryptoKeys/k x", providers.KindUnknown},
		{"projects/p/locations/global/keyRings/r", providers.KindUnknown},
		{"locations/global/keyRings/r/cryptoKeys/k", providers.KindUnknown},
		{"1234abcd-12ab-34cd-56ef-1234567890a", providers.KindUnknown},
		{"1234abcd-12ab-34cd-56ef-1234567890abc", providers.KindUnknown},
		{"1234abcd12ab34cd56ef1234567890ab", providers.KindUnknown},
		{"g234abcd-12ab-34cd-56ef-1234567890ab", providers.KindUnknown},
		{" " + uuid, providers.KindUnknown},
		{"mrk-1234", providers.KindUnknown},
		{"mrk-1234abcd12ab34cd56ef1234567890abcd", providers.KindUnknown},
		{"alias/", providers.KindUnknown},
		{"alias/app key", providers.KindUnknown},
		{"alias/app:1", providers.KindUnknown},
		{"alias/" + strings.Repeat("a", 251), providers.KindUnknown},
		{"alias", providers.KindUnknown},
		{"arn:aws:kms:us-east-1:111122223333:key/not-a-key", providers.KindUnknown},
		{"arn:aws:kms:us-east-1:111122223333:key/alias/app", providers.KindUnknown},
		{"arn:aws:kms:us-east-1:11112222333:key/" + uuid, providers.KindUnknown},
		{"arn:aws:kms::111122223333:key/" + uuid, providers.KindUnknown},
		{"arn:aws:kms:us-east-1::key/" + uuid, providers.KindUnknown},
		{"arn:aws:s3:us-east-1:111122223333:key/" + uuid, providers.KindUnknown},
		{"arn:gcp:kms:us-east-1:111122223333:key/" + uuid, providers.KindUnknown},
		{"arn:aws:kms:us-east-1:111122223333:" + uuid, providers.KindUnknown},
		{"arn:aws:kms:us-east-1:111122223333:alias/", providers.KindUnknown},
		{"arn:aws:kms:US-EAST-1:111122223333:key/" + uuid, providers.KindUnknown},
		{"arn:aws:kms:us-east-1:111122223333:key/" + uuid + "/x", providers.KindUnknown},
		{"arn:aws:kms:us-east-1:111122223333:key/" + uuid + "\n", providers.KindUnknown},
	} {
		if got := providers.KindOf(tc.id); got != tc.want {
			t.Errorf("KindOf(%q) = %s, want %s", tc.id, got, tc.want)
		}
		err := providers.ValidateKeyID(tc.id)
		if valid := tc.want != providers.KindUnknown; valid != (err == nil) {
			t.Errorf("ValidateKeyID(%q) = %v, want valid %v", tc.id, err, valid)
		}
		if err != nil && (!errors.Is(err, providers.ErrKeyID) || strings.Count(err.Error(), "kmspostgres:") != 1) {
			t.Errorf("ValidateKeyID(%q) = %v, want one error wrapping ErrKeyID", tc.id, err)
		}
	}
}

// TestValidateKeyIDSaysWhatToUse: the error names the key id and the shapes
// of the family it looks like, or all of them.
func TestValidateKeyIDSaysWhatToUse(t *testing.T) {
	for id, want := range map[string][]string{
		"foo/bar":                  {`"foo/bar"`, "alias/<name>", "vault/<key name>", "cryptoKeys/<key>", "insecure-test-key"},
		"vault/a/b":                {`"vault/a/b"`, "vault/<key name>", "without a slash"},
		"insecure-test-key/other":  {"insecure-test-key/encrypt"},
		"projects/p/keyRings/r":    {"keyRings/<ring>/cryptoKeys/<key>"},
		"arn:aws:kms:us-east-1:1:": {"arn:aws:kms:<region>:<account>:key/<key id>", "mrk-"},
		"":                         {"empty", "KMS_KEY_ID"},
	} {
		err := providers.ValidateKeyID(id)
		if err == nil {
			t.Fatalf("%q accepted", id)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("ValidateKeyID(%q) = %q, want it to mention %q", id, err, w)
			}
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

// TestForKeyIDRefusesUnknownShapes: a key id of no known shape is refused
// as such, not sent to a provider or taken for a missing AWS package.
func TestForKeyIDRefusesUnknownShapes(t *testing.T) {
	for _, id := range []string{"foo/bar", "insecure-test-key/other", "vault/a/b"} {
		_, err := providers.ForKeyID(id)
		if !errors.Is(err, providers.ErrKeyID) || errors.Is(err, providers.ErrNoProvider) || strings.Contains(err.Error(), "awskms") {
			t.Errorf("ForKeyID(%q) = %v, want ErrKeyID", id, err)
		}
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
