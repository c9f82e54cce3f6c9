package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/kmspostgres/kmspostgres/internal/testenv"
)

// tool returns the path of a binary built by scripts/build-tools.sh.
func tool(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(testenv.ToolsDir(t), name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return p
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitPort(t testing.TB, port int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on 127.0.0.1:%d", port)
}

// proxy stands between a client and a KMS on loopback: it counts requests
// and can cut traffic, as an outage would.
type proxy struct {
	srv      *httptest.Server
	requests atomic.Int64
	down     atomic.Bool
}

func newProxy(t testing.TB, target string) *proxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.down.Load() {
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		p.requests.Add(1)
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// localKMS is a real local-kms process.
type localKMS struct {
	t       testing.TB
	bin     string
	port    int
	dataDir string
	cmd     *exec.Cmd
}

const (
	awsKeyA   = "bc436485-5092-42b8-92a3-0aa8b93536dc"
	awsKeyB   = "49c5492b-b1bc-42a8-9a5c-b2015e810c1c"
	awsAcct   = "111122223333"
	awsRegion = "us-east-1"
)

func awsSeed(rotated bool) string {
	backing := "          - 34743777217A25432A46294A404E635266556A586E3272357538782F413F4428\n"
	if rotated {
		backing += "          - 614E645267556B58703273357638792F423F4528472B4B6250655368566D5971\n"
	}
	return `Keys:
  Symmetric:
    Aes:
      - Metadata:
          KeyId: ` + awsKeyA + `
        BackingKeys:
` + backing + `      - Metadata:
          KeyId: ` + awsKeyB + `
        BackingKeys:
          - 5cdaead27fe7da2de47945d73cd6d79e36494e73802f3cd3869f1d2cb0b5d7a9
Aliases:
  - AliasName: alias/kmspg
    TargetKeyId: ` + awsKeyA + `
`
}

// awsEnv points the AWS SDK's default chain at a local-kms endpoint, as a
// deployment's environment would point it at AWS.
func awsEnv(t testing.TB, endpoint string) {
	t.Setenv("AWS_ENDPOINT_URL_KMS", endpoint)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_REGION", awsRegion)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

func startLocalKMS(t testing.TB) *localKMS {
	l := &localKMS{t: t, bin: tool(t, "local-kms"), port: freePort(t)}
	l.start(false, t.TempDir())
	t.Cleanup(l.stop)
	return l
}

// start runs local-kms with a seed; a rotated seed adds a backing key to
// key A, which is how local-kms models a rotated master key. A fresh data
// directory is needed for a new seed to apply.
func (l *localKMS) start(rotated bool, dataDir string) {
	l.t.Helper()
	seed := filepath.Join(l.t.TempDir(), "seed.yaml")
	if err := os.WriteFile(seed, []byte(awsSeed(rotated)), 0o644); err != nil {
		l.t.Fatal(err)
	}
	l.dataDir = dataDir
	l.cmd = exec.Command(l.bin)
	l.cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(l.port), "KMS_SEED_PATH="+seed, "KMS_DATA_PATH="+dataDir,
		"KMS_REGION="+awsRegion, "KMS_ACCOUNT_ID="+awsAcct)
	if err := l.cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	waitPort(l.t, l.port)
}

func (l *localKMS) stop() {
	if l.cmd != nil && l.cmd.Process != nil {
		l.cmd.Process.Kill()
		l.cmd.Wait()
		l.cmd = nil
	}
}

func (l *localKMS) url() string { return "http://127.0.0.1:" + strconv.Itoa(l.port) }

// vaultServer is a real Vault dev server (in memory).
type vaultServer struct {
	cmd  *exec.Cmd
	addr string
	root *vaultapi.Client
	// Tokens for the derived key "kp": encrypt-only and decrypt-only.
	encToken, decToken string
	auditLog           string
}

func startVault(t testing.TB) *vaultServer {
	t.Helper()
	port := freePort(t)
	v := &vaultServer{addr: "http://127.0.0.1:" + strconv.Itoa(port)}
	v.cmd = exec.Command(tool(t, "vault"), "server", "-dev", "-dev-root-token-id=root",
		"-dev-listen-address=127.0.0.1:"+strconv.Itoa(port), "-dev-no-store-token")
	v.cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "VAULT_DISABLE_MLOCK=true")
	logf, _ := os.Create(filepath.Join(t.TempDir(), "vault.log"))
	v.cmd.Stdout, v.cmd.Stderr = logf, logf
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.cmd.Process.Kill(); v.cmd.Wait() })
	waitPort(t, port)
	cfg := vaultapi.DefaultConfig()
	cfg.Address = v.addr
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken("root")
	v.root = c
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		h, err := c.Sys().HealthWithContext(ctx)
		if err == nil && h.Initialized && !h.Sealed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vault not ready: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Sys().MountWithContext(ctx, "transit", &vaultapi.MountInput{Type: "transit"}))
	_, err = c.Logical().WriteWithContext(ctx, "transit/keys/kp", map[string]any{"derived": true})
	must(err)
	_, err = c.Logical().WriteWithContext(ctx, "transit/keys/other", map[string]any{"derived": true})
	must(err)
	_, err = c.Logical().WriteWithContext(ctx, "transit/keys/notderived", map[string]any{})
	must(err)
	must(c.Sys().PutPolicyWithContext(ctx, "encrypt", `path "transit/encrypt/kp" { capabilities = ["create", "update"] }`))
	must(c.Sys().PutPolicyWithContext(ctx, "decrypt", `path "transit/decrypt/kp" { capabilities = ["create", "update"] }`))
	for _, p := range []string{"encrypt", "decrypt"} {
		s, err := c.Auth().Token().CreateWithContext(ctx, &vaultapi.TokenCreateRequest{Policies: []string{p}, NoDefaultPolicy: true})
		must(err)
		if p == "encrypt" {
			v.encToken = s.Auth.ClientToken
		} else {
			v.decToken = s.Auth.ClientToken
		}
	}
	v.auditLog = filepath.Join(t.TempDir(), "audit.log")
	must(c.Sys().EnableAuditWithOptionsWithContext(ctx, "file", &vaultapi.EnableAuditOptions{Type: "file", Options: map[string]string{"file_path": v.auditLog}}))
	return v
}

// client returns a Vault client with a token, through addr.
func (v *vaultServer) client(t testing.TB, addr, token string) *vaultapi.Client {
	t.Helper()
	cfg := vaultapi.DefaultConfig()
	cfg.Address = addr
	cfg.MaxRetries = 0
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	return c
}

func (v *vaultServer) rotate(t testing.TB, key string) {
	t.Helper()
	if _, err := v.root.Logical().Write(fmt.Sprintf("transit/keys/%s/rotate", key), nil); err != nil {
		t.Fatal(err)
	}
}
