package providers

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
)

// Kind names a family of key ids, each served by one provider package.
type Kind string

// The kinds of key id, as kms_encrypted routes them.
const (
	KindUnknown Kind = "unknown" // none of the shapes below; refused
	KindTest    Kind = "test"    // insecure-test-key, insecure-test-key/encrypt
	KindVault   Kind = "vault"   // vault/<key name>
	KindGCP     Kind = "gcp"     // projects/…/locations/…/keyRings/…/cryptoKeys/…
	KindAWS     Kind = "aws"     // key id, mrk- key id, key ARN, alias/<name>, alias ARN
)

var importPaths = map[Kind]string{
	KindTest:  "github.com/kmspostgres/kmspostgres/providers/testkey",
	KindVault: "github.com/kmspostgres/kmspostgres/providers/vault",
	KindGCP:   "github.com/kmspostgres/kmspostgres/providers/gcpkms",
	KindAWS:   "github.com/kmspostgres/kmspostgres/providers/awskms",
}

// The shapes of key id. AWS's are those its API documents for KeyId
// (https://docs.aws.amazon.com/kms/latest/APIReference/API_Encrypt.html);
// a Vault transit key name is Vault's GenericNameRegex; a Google key ring
// or key id is 1 to 63 of [a-zA-Z0-9_-].
var (
	awsKeyID   = `(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|mrk-[0-9a-fA-F]{32})`
	awsAlias   = `alias/[a-zA-Z0-9/_-]{1,250}`
	awsARN     = `arn:aws(?:-[a-z]+)*:kms:[a-z]{2}(?:-[a-z]+)+-[0-9]+:[0-9]{12}:`
	awsShape   = regexp.MustCompile(`^(?:` + awsKeyID + `|` + awsAlias + `|` + awsARN + `(?:key/` + awsKeyID + `|` + awsAlias + `))$`)
	vaultShape = regexp.MustCompile(`^vault/\w(?:[\w.@-]*\w)?$`)
	gcpShape   = regexp.MustCompile(`^projects/[^/\s]+/locations/[^/\s]+/keyRings/[a-zA-Z0-9_-]{1,63}/cryptoKeys/[a-zA-Z0-9_-]{1,63}$`)
)

// KindOf routes a key id to its kind by its shape, and returns KindUnknown
// for a key id of no known shape; ValidateKeyID says why.
func KindOf(keyID string) Kind {
	switch {
	case keyID == "insecure-test-key" || keyID == "insecure-test-key/encrypt":
		return KindTest
	case vaultShape.MatchString(keyID):
		return KindVault
	case gcpShape.MatchString(keyID):
		return KindGCP
	case awsShape.MatchString(keyID):
		return KindAWS
	default:
		return KindUnknown
	}
}

// ErrKeyID: a key id has none of the shapes a provider serves. The shapes
// are AWS KMS's key id (1234abcd-12ab-34cd-56ef-1234567890ab), multi-Region
// key id (mrk- and 32 hex digits), key ARN, alias name (alias/<name>) and
// alias ARN; vault/<key name>; projects/<project>/locations/<location>/
// keyRings/<ring>/cryptoKeys/<key>; insecure-test-key and
// insecure-test-key/encrypt. Use errors.Is.
var ErrKeyID = errors.New("kmspostgres: key id of unknown shape")

const keyIDShapes = "use an AWS KMS key id, key ARN (arn:aws:kms:<region>:<account>:key/<key id>), " +
	"alias/<name> or alias ARN; vault/<key name>; " +
	"projects/<project>/locations/<location>/keyRings/<ring>/cryptoKeys/<key>; " +
	"or insecure-test-key"

// ValidateKeyID checks that a key id has the shape of a key some provider
// serves (see ErrKeyID), without any KMS call and whether or not that
// provider is linked in. It returns nil or an error wrapping ErrKeyID
// that names the key id and the accepted shapes. Call it where key ids
// enter (opening a connector, validating a schema map, the check command)
// so that a typo fails there rather than on the first row.
func ValidateKeyID(keyID string) error {
	if KindOf(keyID) != KindUnknown {
		return nil
	}
	hint := keyIDShapes
	switch {
	case keyID == "":
		return fmt.Errorf("%w: the key id is empty; set key_id in the schema map or KMS_KEY_ID", ErrKeyID)
	case strings.HasPrefix(keyID, "insecure-test-key"):
		hint = "the test key ids are insecure-test-key and insecure-test-key/encrypt"
	case strings.HasPrefix(keyID, "vault/"):
		hint = "a Vault key id is vault/<key name>, the name of letters, digits and _.@- without a slash"
	case strings.HasPrefix(keyID, "projects/"):
		hint = "a Google key id is projects/<project>/locations/<location>/keyRings/<ring>/cryptoKeys/<key>, without a version"
	case strings.HasPrefix(keyID, "arn:"), strings.HasPrefix(keyID, "alias/"), strings.HasPrefix(keyID, "mrk-"):
		hint = "an AWS key id is a key id (1234abcd-12ab-34cd-56ef-1234567890ab or mrk-<32 hex digits>), " +
			"a key ARN (arn:aws:kms:<region>:<account>:key/<key id>), alias/<name> or an alias ARN (arn:aws:kms:<region>:<account>:alias/<name>)"
	}
	return fmt.Errorf("%w: %q; %s", ErrKeyID, keyID, hint)
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
// first use. A key id of unknown shape gets ValidateKeyID's error (wrapping
// ErrKeyID); a key id whose provider package is not linked in gets an error
// wrapping ErrNoProvider that names the package to import.
func ForKeyID(keyID string) (Provider, error) {
	if keyID == "" {
		return nil, fmt.Errorf("%w: the key id is empty; set key_id in the schema map or KMS_KEY_ID", ErrNoProvider)
	}
	kind := KindOf(keyID)
	if kind == KindUnknown {
		return nil, ValidateKeyID(keyID)
	}
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
