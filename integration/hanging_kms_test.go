package integration

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	vaultapi "github.com/hashicorp/vault/api"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/internal/testenv"
	"github.com/kmspostgres/kmspostgres/providers"
	"github.com/kmspostgres/kmspostgres/providers/awskms"
	"github.com/kmspostgres/kmspostgres/providers/gcpkms"
	"github.com/kmspostgres/kmspostgres/providers/vault"
)

// hangingTimeout is the per-call deadline of the providers under test.
const hangingTimeout = 300 * time.Millisecond

// hangingKMS is each provider, with its real client, pointed at a server
// that accepts connections and never answers.
func hangingKMS(t *testing.T) []struct {
	kind  providers.Kind
	keyID string
	p     providers.Provider
} {
	addr := testenv.HangingServer(t)
	vcfg := vaultapi.DefaultConfig()
	vcfg.Address = "http://" + addr
	vc, err := vaultapi.NewClient(vcfg)
	if err != nil {
		t.Fatal(err)
	}
	vc.SetToken("test-token")
	ac := kms.New(kms.Options{
		Region:       awsRegion,
		BaseEndpoint: aws.String("http://" + addr),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "AKIDTEST", SecretAccessKey: "test-secret"}, nil
		}),
	})
	ap, err := awskms.New(context.Background(), awskms.WithClient(ac), awskms.WithTimeout(hangingTimeout))
	if err != nil {
		t.Fatal(err)
	}
	gp, err := gcpkms.New(context.Background(), option.WithEndpoint(addr), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gp.Close() })
	return []struct {
		kind  providers.Kind
		keyID string
		p     providers.Provider
	}{
		{providers.KindVault, "vault/kp", vault.NewFromClient(vc, vault.WithTimeout(hangingTimeout))},
		{providers.KindAWS, "alias/kmspg", ap},
		{providers.KindGCP, "projects/p/locations/global/keyRings/r/cryptoKeys/k", gp.WithTimeout(hangingTimeout)},
	}
}

// TestProviderHangingKMS: with a KMS that accepts connections and never
// answers, a statement that needs it fails with ErrUnavailable at about
// the provider's deadline, writes nothing, and leaves the connection and
// its transaction usable.
func TestProviderHangingKMS(t *testing.T) {
	for _, k := range hangingKMS(t) {
		t.Run(string(k.kind), func(t *testing.T) {
			useProvider(t, k.kind, k.p)
			e := newEnv(t, usersDDL, strings.Replace(usersMap, "key_id: insecure-test-key", "key_id: "+k.keyID, 1))
			// Two rows written before the outage.
			e.storeOpaqueRow(t)
			e.storeOpaqueRow(t)
			db := e.openBare()
			defer db.Close()
			ctx := context.Background()
			conn, err := db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()

			bounded := func(what string, f func() error) {
				t.Helper()
				start := time.Now()
				err := f()
				took := time.Since(start)
				mustErrIs(t, err, kmspostgres.ErrUnavailable)
				if took > hangingTimeout+3*time.Second {
					t.Fatalf("%s failed after %v, want about %v", what, took, hangingTimeout)
				}
				t.Logf("%s: failed after %v: %v", what, took.Round(time.Millisecond), err)
			}
			bounded("INSERT", func() error {
				_, err := conn.ExecContext(ctx, "INSERT INTO users (name, email, phone) VALUES ('c', 'c@x', '\\x01')")
				return err
			})
			bounded("SELECT", func() error {
				rows, err := conn.QueryContext(ctx, "SELECT email, phone FROM users ORDER BY id")
				if err != nil {
					return err
				}
				defer rows.Close()
				for rows.Next() {
				}
				return rows.Err()
			})
			if n := e.rawValues("SELECT count(*)::text FROM users"); n[0] != "2" {
				t.Fatalf("rows after the failed INSERT: %v, want 2", n)
			}

			// The same connection, in a transaction: the failed statement
			// sent nothing to PostgreSQL, so the transaction goes on.
			tx, err := conn.BeginTx(ctx, nil)
			if err != nil {
				t.Fatalf("connection unusable: %v", err)
			}
			bounded("UPDATE in a transaction", func() error {
				_, err := tx.ExecContext(ctx, "UPDATE users SET email = 'd@x' WHERE id = 1")
				return err
			})
			if _, err := tx.ExecContext(ctx, "UPDATE users SET name = 'renamed' WHERE id = 1"); err != nil {
				t.Fatalf("transaction unusable after the KMS failure: %v", err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatalf("commit: %v", err)
			}
			var name string
			if err := conn.QueryRowContext(ctx, "SELECT name FROM users WHERE id = 1").Scan(&name); err != nil || name != "renamed" {
				t.Fatalf("after the transaction: %q, %v", name, err)
			}
		})
	}
}

// storeOpaqueRow stores a row shaped as the driver writes one: key columns
// holding a version and a wrapped key, opaque cells. Reading it needs the
// KMS.
func (e *env) storeOpaqueRow(t *testing.T) {
	t.Helper()
	wrapped := "v1:" + base64.StdEncoding.EncodeToString([]byte("vault:v1:not-a-real-wrapped-key-for-this-test"))
	if _, err := e.raw.Exec(context.Background(),
		"INSERT INTO users (name, email, phone, encrypted_kms_key, encrypted_kms_key_phone) VALUES ('a', 'AQID', '\\x010203', $1, $1)", wrapped); err != nil {
		t.Fatal(err)
	}
}
