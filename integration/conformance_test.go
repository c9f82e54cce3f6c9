package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/integration/gcpkmsfake"
	"github.com/kmspostgres/kmspostgres/providers"
	"github.com/kmspostgres/kmspostgres/providers/awskms"
	"github.com/kmspostgres/kmspostgres/providers/gcpkms"
	"github.com/kmspostgres/kmspostgres/providers/testkey"
	"github.com/kmspostgres/kmspostgres/providers/vault"
)

// kmsCase is one provider under the conformance suite.
type kmsCase struct {
	kind     providers.Kind
	keyID    string // a key the full provider may use
	otherKey string // another key, for foreign ciphertexts
	full     providers.Provider
	// encryptOnly wraps under keyID but may not unwrap; nil where the
	// server cannot express it.
	encryptOnly providers.Provider
	down, up    func() // cut and restore the KMS
	rotate      func() // rotate the master key on the KMS side
	// version reads the master-key version from a wrapped data key, where
	// the provider's ciphertext shows it.
	version  func(wrapped []byte) string
	requests func() int64
}

// defaultFactories are what each provider package registers.
var defaultFactories = map[providers.Kind]providers.Factory{
	providers.KindTest: func() (providers.Provider, error) { return testkey.New(), nil },
	providers.KindAWS: func() (providers.Provider, error) {
		return awskms.New(context.Background())
	},
	providers.KindGCP: func() (providers.Provider, error) {
		return gcpkms.New(context.Background())
	},
	providers.KindVault: func() (providers.Provider, error) { return vault.New() },
}

// useProvider routes the kind's key ids to p for the test, then restores
// the package's own factory.
func useProvider(t *testing.T, kind providers.Kind, p providers.Provider) {
	providers.Register(kind, func() (providers.Provider, error) { return p, nil })
	t.Cleanup(func() { providers.Register(kind, defaultFactories[kind]) })
}

// env is a fresh users table mapped to the case's key, with the kind's
// key ids routed to p.
func (c kmsCase) env(t *testing.T, p providers.Provider) *env {
	useProvider(t, c.kind, p)
	return newEnv(t, usersDDL, strings.Replace(usersMap, "key_id: insecure-test-key", "key_id: "+c.keyID, 1))
}

func conformance(t *testing.T, c kmsCase) {
	ctx := context.Background()
	rowCtx := envelope.Context{"table": "users", "id": "42"}
	dk, _ := envelope.NewDataKey()

	t.Run("round trip", func(t *testing.T) {
		w, err := c.full.Wrap(ctx, c.keyID, dk, rowCtx)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(w, dk) {
			t.Fatal("wrapped key contains the data key")
		}
		got, err := c.full.Unwrap(ctx, c.keyID, w, rowCtx)
		if err != nil || !bytes.Equal(got, dk) {
			t.Fatalf("unwrap: %v", err)
		}
	})
	t.Run("wrong context", func(t *testing.T) {
		w, err := c.full.Wrap(ctx, c.keyID, dk, rowCtx)
		if err != nil {
			t.Fatal(err)
		}
		for _, other := range []envelope.Context{{"table": "users", "id": "43"}, {"table": "admins", "id": "42"}, {}} {
			_, err := c.full.Unwrap(ctx, c.keyID, w, other)
			mustErrIs(t, err, providers.ErrDecrypt)
		}
	})
	t.Run("tampered and foreign ciphertext", func(t *testing.T) {
		w, err := c.full.Wrap(ctx, c.keyID, dk, rowCtx)
		if err != nil {
			t.Fatal(err)
		}
		bad := bytes.Clone(w)
		bad[len(bad)-3] ^= 0x01
		_, err = c.full.Unwrap(ctx, c.keyID, bad, rowCtx)
		mustErrIs(t, err, providers.ErrDecrypt)
		if c.otherKey != "" {
			fw, err := c.full.Wrap(ctx, c.otherKey, dk, rowCtx)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.full.Unwrap(ctx, c.keyID, fw, rowCtx)
			mustErrIs(t, err, providers.ErrDecrypt)
		}
	})
	t.Run("through the driver", func(t *testing.T) {
		e := c.env(t, c.full)
		db := e.openBare(kmspostgres.WithObserver(e.events))
		defer db.Close()
		for i := range 20 {
			if _, err := db.Exec("INSERT INTO users (name, email, phone) VALUES ($1, $2, $3)", "n", fmt.Sprintf("u%d@x", i), []byte("p")); err != nil {
				t.Fatal(err)
			}
		}
		if w := e.events.Count(providers.OpWrap); w != 40 {
			t.Fatalf("wraps: %d, want one per row and key (40)", w)
		}
		e.assertNoPlaintext("users", "u1@x", "u19@x")
		e.events.Reset()
		var before int64
		if c.requests != nil {
			before = c.requests()
		}
		got := strings.Count(stringsOf(t, db, "SELECT a.email, b.email, a.phone FROM users a JOIN users b ON a.id = b.id"), "@x")
		if got != 40 {
			t.Fatalf("read %d emails", got)
		}
		if u := e.events.Count(providers.OpUnwrap); u != 40 {
			t.Fatalf("unwraps: %d, want 40 (20 rows x 2 keys, deduplicated across the self-join)", u)
		}
		if c.requests != nil {
			t.Logf("%s: a 20-row SELECT of 2 keys per row made %d requests", c.kind, c.requests()-before)
		}
		if _, err := db.Exec("UPDATE users SET email = $1 WHERE id = 1", "new@x"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec("UPDATE users SET email = $1, dob = NULL, balance = NULL WHERE id = 2", "fresh@x"); err != nil {
			t.Fatal(err)
		}
		if s := stringsOf(t, db, "SELECT email FROM users WHERE id IN (1, 2) ORDER BY id"); s != "new@x|fresh@x" {
			t.Fatalf("after updates: %s", s)
		}
	})
	if c.encryptOnly != nil {
		t.Run("encrypt-only credentials", func(t *testing.T) {
			e := c.env(t, c.encryptOnly)
			db := e.openBare()
			defer db.Close()
			if _, err := db.Exec("INSERT INTO users (id, name, email) VALUES (1, 'a', 'a@x')"); err != nil {
				t.Fatalf("encrypt-only insert: %v", err)
			}
			var s string
			mustErrIs(t, db.QueryRow("SELECT email FROM users WHERE id = 1").Scan(&s), kmspostgres.ErrPermission)
			// The full credentials read what the encrypt-only ones wrote.
			full := e.openBare(kmspostgres.WithProvider(c.full))
			defer full.Close()
			if err := full.QueryRow("SELECT email FROM users WHERE id = 1").Scan(&s); err != nil || s != "a@x" {
				t.Fatalf("full read: %q %v", s, err)
			}
		})
	}
	t.Run("KMS down mid-test", func(t *testing.T) {
		e := c.env(t, c.full)
		db := e.openBare()
		defer db.Close()
		if _, err := db.Exec("INSERT INTO users (id, name, email) VALUES (1, 'a', 'a@x')"); err != nil {
			t.Fatal(err)
		}
		c.down()
		_, err := db.Exec("INSERT INTO users (id, name, email) VALUES (2, 'b', 'b@x')")
		if !errors.Is(err, kmspostgres.ErrUnavailable) {
			c.up()
			t.Fatalf("insert while down: %v", err)
		}
		var s string
		err = db.QueryRow("SELECT email FROM users WHERE id = 1").Scan(&s)
		c.up()
		mustErrIs(t, err, kmspostgres.ErrUnavailable)
		if n := e.rawValues("SELECT count(*)::text FROM users"); n[0] != "1" {
			t.Fatalf("rows written while down: %v", n)
		}
		if _, err := db.Exec("INSERT INTO users (id, name, email) VALUES (2, 'b', 'b@x')"); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
		if s := stringsOf(t, db, "SELECT email FROM users ORDER BY id"); s != "a@x|b@x" {
			t.Fatalf("after recovery: %s", s)
		}
	})
	if c.rotate != nil {
		t.Run("master key rotation", func(t *testing.T) {
			e := c.env(t, c.full)
			db := e.openBare()
			defer db.Close()
			if _, err := db.Exec("INSERT INTO users (id, name, email) VALUES (1, 'old', 'old@x')"); err != nil {
				t.Fatal(err)
			}
			before := e.rawValues("SELECT encrypted_kms_key FROM users WHERE id = 1")[0]
			c.rotate()
			useProvider(t, c.kind, c.full)
			db2 := e.openBare()
			defer db2.Close()
			if _, err := db2.Exec("INSERT INTO users (id, name, email) VALUES (2, 'new', 'new@x')"); err != nil {
				t.Fatal(err)
			}
			if s := stringsOf(t, db2, "SELECT email FROM users ORDER BY id"); s != "old@x|new@x" {
				t.Fatalf("after rotation: %s", s)
			}
			after := e.rawValues("SELECT encrypted_kms_key FROM users WHERE id = 1")[0]
			if before != after {
				t.Fatal("rotation changed a stored key")
			}
			if c.version != nil {
				oldV, newV := c.version(wrappedBytes(t, before)), c.version(wrappedBytes(t, e.rawValues("SELECT encrypted_kms_key FROM users WHERE id = 2")[0]))
				if oldV == newV {
					t.Fatalf("the new row was wrapped under the old master-key version %s", oldV)
				}
				t.Logf("%s: old row under master-key version %s, new row under %s", c.kind, oldV, newV)
			}
		})
	}
}

func wrappedBytes(t *testing.T, keyColumn string) []byte {
	t.Helper()
	wk, err := envelope.ParseWrappedKey(keyColumn)
	if err != nil {
		t.Fatal(err)
	}
	return wk.Ciphertext
}

func TestConformanceTestKey(t *testing.T) {
	full := testkey.New()
	conformance(t, kmsCase{
		kind:        providers.KindTest,
		keyID:       testkey.KeyID,
		full:        full,
		encryptOnly: encryptOnlyTestKey{full},
		down:        func() { full.SetUnavailable(true) },
		up:          func() { full.SetUnavailable(false) },
	})
}

// encryptOnlyTestKey presents the full test key as insecure-test-key/encrypt.
type encryptOnlyTestKey struct{ p *testkey.Provider }

func (e encryptOnlyTestKey) Wrap(ctx context.Context, _ string, dk []byte, c envelope.Context) ([]byte, error) {
	return e.p.Wrap(ctx, testkey.EncryptOnlyKeyID, dk, c)
}

func (e encryptOnlyTestKey) Unwrap(ctx context.Context, _ string, w []byte, c envelope.Context) ([]byte, error) {
	return e.p.Unwrap(ctx, testkey.EncryptOnlyKeyID, w, c)
}

func TestConformanceAWS(t *testing.T) {
	l := startLocalKMS(t)
	px := newProxy(t, l.url())
	// The provider is built from the SDK's default chain, as in production.
	awsEnv(t, px.srv.URL)
	full, err := awskms.New(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	arn := "arn:aws:kms:" + awsRegion + ":" + awsAcct + ":key/" + awsKeyA
	// Every key id form reaches the same key.
	for _, id := range []string{arn, "alias/kmspg", awsKeyA, "arn:aws:kms:" + awsRegion + ":" + awsAcct + ":alias/kmspg"} {
		if providers.KindOf(id) != providers.KindAWS {
			t.Fatalf("%s does not route to AWS", id)
		}
		w, err := full.Wrap(context.Background(), id, []byte("0123456789abcdef0123456789abcdef"), envelope.Context{"id": "1"})
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if _, err := full.Unwrap(context.Background(), arn, w, envelope.Context{"id": "1"}); err != nil {
			t.Fatalf("%s: unwrap: %v", id, err)
		}
	}
	conformance(t, kmsCase{
		kind:     providers.KindAWS,
		keyID:    "alias/kmspg",
		otherKey: awsKeyB,
		full:     full,
		// local-kms has no IAM: encrypt-only credentials cannot be
		// expressed, so that case runs on Vault, Google and the test key.
		down: func() { l.stop() },
		up:   func() { l.start(false, l.dataDir) },
		rotate: func() {
			// local-kms models rotation as a second backing key; old
			// ciphertexts name the first, which it keeps.
			l.stop()
			l.start(true, t.TempDir())
		},
		requests: px.requests.Load,
	})
}

func TestConformanceVault(t *testing.T) {
	v := startVault(t)
	px := newProxy(t, v.addr)
	t.Setenv("VAULT_ADDR", px.srv.URL)
	t.Setenv("VAULT_TOKEN", v.decToken+"-unused")
	full := vault.NewFromClient(v.client(t, px.srv.URL, "root"))
	conformance(t, kmsCase{
		kind:        providers.KindVault,
		keyID:       "vault/kp",
		otherKey:    "vault/other",
		full:        full,
		encryptOnly: vault.NewFromClient(v.client(t, px.srv.URL, v.encToken)),
		down:        func() { px.down.Store(true) },
		up:          func() { px.down.Store(false) },
		rotate:      func() { v.rotate(t, "kp") },
		version:     func(w []byte) string { return strings.SplitN(string(w), ":", 3)[1] },
		requests:    px.requests.Load,
	})
}

func TestConformanceGoogle(t *testing.T) {
	srv, err := gcpkmsfake.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	key := gcpkmsfake.KeyName("kmspg", "ring", "data")
	other := gcpkmsfake.KeyName("kmspg", "ring", "other")
	srv.CreateKey(key)
	srv.CreateKey(other)
	full := googleClient(t, srv)
	encOnlySrv, err := gcpkmsfake.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer encOnlySrv.Close()
	conformance(t, kmsCase{
		kind:        providers.KindGCP,
		keyID:       key,
		otherKey:    other,
		full:        full,
		encryptOnly: denyingDecrypt{full, srv, key},
		down:        func() { srv.SetFailure(codes.Unavailable) },
		up:          func() { srv.SetFailure(codes.OK) },
		rotate:      func() { srv.Rotate(key) },
		version:     func(w []byte) string { return fmt.Sprint(binary.BigEndian.Uint32(w)) },
		requests:    func() int64 { return srv.Encrypts.Load() + srv.Decrypts.Load() },
	})
}

// googleClient is the real Google client against the in-process server.
func googleClient(t testing.TB, srv *gcpkmsfake.Server) *gcpkms.Provider {
	t.Helper()
	p, err := gcpkms.New(context.Background(),
		option.WithEndpoint(srv.Addr()),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// denyingDecrypt is the Google provider for a service account that may only
// encrypt: the server answers its decrypts with PERMISSION_DENIED.
type denyingDecrypt struct {
	*gcpkms.Provider
	srv *gcpkmsfake.Server
	key string
}

func (d denyingDecrypt) Unwrap(ctx context.Context, keyID string, w []byte, c envelope.Context) ([]byte, error) {
	d.srv.DenyDecrypt(d.key, true)
	defer d.srv.DenyDecrypt(d.key, false)
	return d.Provider.Unwrap(ctx, keyID, w, c)
}
