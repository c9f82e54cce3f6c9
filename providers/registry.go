package providers

import (
	"fmt"
	"strings"
	"sync"
)

// Kind names a family of key ids, each served by one provider package.
type Kind string

// The kinds of key id, as kms_encrypted routes them.
const (
	KindTest  Kind = "test"  // insecure-test-key, insecure-test-key/encrypt
	KindVault Kind = "vault" // vault/<key name>
	KindGCP   Kind = "gcp"   // projects/…/locations/…/keyRings/…/cryptoKeys/…
	KindAWS   Kind = "aws"   // arn:aws:kms:…, alias/…, bare key ids
)

var importPaths = map[Kind]string{
	KindTest:  "github.com/kmspostgres/kmspostgres/providers/testkey",
	KindVault: "github.com/kmspostgres/kmspostgres/providers/vault",
	KindGCP:   "github.com/kmspostgres/kmspostgres/providers/gcpkms",
	KindAWS:   "github.com/kmspostgres/kmspostgres/providers/awskms",
}

// KindOf routes a key id to its kind. It never fails: anything that is not
// the test key, a Vault key or a Google key name is taken as AWS, like a
// bare AWS key id.
func KindOf(keyID string) Kind {
	switch {
	case keyID == "insecure-test-key" || strings.HasPrefix(keyID, "insecure-test-key/"):
		return KindTest
	case strings.HasPrefix(keyID, "vault/"):
		return KindVault
	case strings.HasPrefix(keyID, "projects/") && strings.Contains(keyID, "/cryptoKeys/"):
		return KindGCP
	default:
		return KindAWS
	}
}

// Factory builds the default provider of a kind, from the environment
// (credentials, addresses). It is called once, on first use.
type Factory func() (Provider, error)

var (
	regMu     sync.Mutex
	factories = map[Kind]Factory{}
	instances = map[Kind]Provider{}
)

// Register makes a provider package available for key id routing. Provider
// packages call it from init.
func Register(kind Kind, f Factory) {
	regMu.Lock()
	defer regMu.Unlock()
	factories[kind] = f
	delete(instances, kind)
}

// ForKeyID returns the registered provider for a key id, building it on
// first use. A key id whose provider package is not linked in gets an error
// wrapping ErrNoProvider that names the package to import.
func ForKeyID(keyID string) (Provider, error) {
	if keyID == "" {
		return nil, fmt.Errorf("%w: the key id is empty; set key_id in the schema map or KMS_KEY_ID", ErrNoProvider)
	}
	kind := KindOf(keyID)
	regMu.Lock()
	defer regMu.Unlock()
	if p, ok := instances[kind]; ok {
		return p, nil
	}
	f, ok := factories[kind]
	if !ok {
		return nil, fmt.Errorf("%w: %q is a %s key; add import _ %q", ErrNoProvider, keyID, kind, importPaths[kind])
	}
	p, err := f()
	if err != nil {
		return nil, fmt.Errorf("kmspostgres: starting the %s provider: %w", kind, err)
	}
	instances[kind] = p
	return p, nil
}
