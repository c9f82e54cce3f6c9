package kmspostgres

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/kmspostgres/kmspostgres/envelope"
)

// boxPrefix starts every Box ciphertext; the digit is the Box format
// version.
const boxPrefix = "kmsbox1:"

// Box encrypts messages of any size outside tables, with a fresh data key
// per message wrapped by the KMS under the caller's context: kms_encrypted's
// Box, with envelope encryption instead of sending the message to the KMS.
//
// Its output is one string: "kmsbox1:v<version>:<base64 wrapped key>:<base64
// cell>", where the cell is a version-1 cell (see the README) whose
// associated data is 0x02 followed by the canonical context JSON.
type Box struct {
	keyID   string
	version int
	prev    map[int]string
	kr      *keyring
}

// NewBox returns a Box that writes under keyID (empty: the KMS_KEY_ID
// environment variable). Options: WithKeyVersion, WithPreviousVersion,
// WithProvider, WithObserver.
func NewBox(keyID string, opts ...BoxOption) (*Box, error) {
	var c boxConfig
	for _, o := range opts {
		o.applyBox(&c)
	}
	if keyID == "" {
		keyID = os.Getenv("KMS_KEY_ID")
	}
	if keyID == "" {
		return nil, errors.New("kmspostgres: NewBox: empty key id; pass one or set KMS_KEY_ID")
	}
	if c.version == 0 {
		c.version = 1
	}
	if c.version < 1 {
		return nil, fmt.Errorf("kmspostgres: NewBox: version %d must be positive", c.version)
	}
	if _, clash := c.previous[c.version]; clash {
		return nil, fmt.Errorf("kmspostgres: NewBox: version %d is both current and previous", c.version)
	}
	return &Box{keyID: keyID, version: c.version, prev: c.previous, kr: newKeyring(c.kms)}, nil
}

func boxAAD(c envelope.Context) ([]byte, error) {
	canon, err := c.Canonical()
	if err != nil {
		return nil, err
	}
	return append([]byte{0x02}, canon...), nil
}

// Encrypt seals plaintext under a fresh data key wrapped with the
// encryption context encCtx.
func (b *Box) Encrypt(ctx context.Context, plaintext []byte, encCtx map[string]string) (string, error) {
	ec := envelope.Context(encCtx)
	aad, err := boxAAD(ec)
	if err != nil {
		return "", err
	}
	dk, err := envelope.NewDataKey()
	if err != nil {
		return "", err
	}
	ck, err := envelope.NewCellKey(dk)
	if err != nil {
		return "", err
	}
	wrapped, err := b.kr.wrap(ctx, b.keyID, b.version, ec, dk)
	if err != nil {
		return "", err
	}
	cell, err := ck.Seal(aad, plaintext)
	if err != nil {
		return "", err
	}
	return boxPrefix + wrapped + ":" + base64.StdEncoding.EncodeToString(cell), nil
}

// Decrypt opens what Encrypt returned, with the same encryption context. Data written
// under a previous version is read with that version's key id. A wrong
// context or a tampered message fails with ErrDecrypt.
func (b *Box) Decrypt(ctx context.Context, ciphertext string, encCtx map[string]string) ([]byte, error) {
	rest, ok := strings.CutPrefix(ciphertext, boxPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: not a kmsbox1 ciphertext", ErrFormat)
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return nil, fmt.Errorf("%w: kmsbox1 ciphertext has no cell", ErrFormat)
	}
	wk, err := envelope.ParseWrappedKey(rest[:i])
	if err != nil {
		return nil, err
	}
	cell, err := envelope.DecodeBase64(rest[i+1:])
	if err != nil {
		return nil, fmt.Errorf("kmsbox1 cell: %w", err)
	}
	keyID := b.keyID
	if wk.Version != b.version {
		var ok bool
		if keyID, ok = b.prev[wk.Version]; !ok {
			return nil, fmt.Errorf("%w: %d (the box writes version %d; add WithPreviousVersion to read it)", ErrVersion, wk.Version, b.version)
		}
	}
	ec := envelope.Context(encCtx)
	aad, err := boxAAD(ec)
	if err != nil {
		return nil, err
	}
	dk, err := b.kr.unwrap(ctx, keyID, wk.Version, ec, wk.Ciphertext)
	if err != nil {
		return nil, err
	}
	ck, err := envelope.NewCellKey(dk)
	if err != nil {
		return nil, err
	}
	return ck.Open(aad, cell)
}
