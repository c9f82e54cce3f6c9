// Package providers defines the small interface a key management service
// implements for kmspostgres, the errors callers branch on, and the routing
// of key ids to providers.
//
// Each real KMS lives in its own sub-package (awskms, gcpkms, vault) that
// registers itself when imported, so a program links only the SDKs it uses.
// The insecure test key (package testkey) needs no network.
package providers

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/kmspostgres/kmspostgres/envelope"
)

// Provider wraps and unwraps data keys under a master key. The context is
// bound to the wrapped key by the KMS: unwrapping with another context fails
// with ErrDecrypt. Implementations must be safe for concurrent use, honour
// ctx, and map their errors onto ErrDecrypt, ErrUnavailable and
// ErrPermission.
type Provider interface {
	Wrap(ctx context.Context, keyID string, dataKey []byte, encCtx envelope.Context) ([]byte, error)
	Unwrap(ctx context.Context, keyID string, wrapped []byte, encCtx envelope.Context) ([]byte, error)
}

// UnwrapRequest is one item of a batch unwrap.
type UnwrapRequest struct {
	Wrapped []byte
	Context envelope.Context
}

// Result is one item of a batch answer: a data key or that item's error.
type Result struct {
	Key []byte
	Err error
}

// BatchUnwrapper is implemented by providers that can unwrap many keys in
// one request (Vault transit's batch_input). Callers use it when present
// and fall back to concurrent Unwrap calls otherwise. The error return is
// for a failure of the whole request; per-item failures go in Result.Err.
type BatchUnwrapper interface {
	UnwrapBatch(ctx context.Context, keyID string, reqs []UnwrapRequest) ([]Result, error)
}

// ErrDecrypt: the KMS refused the ciphertext (wrong context, tampered or
// foreign ciphertext, wrong key). It is envelope.ErrDecrypt, so one
// errors.Is check covers data keys and cells alike.
var ErrDecrypt = envelope.ErrDecrypt

// ErrUnavailable: the KMS could not be reached or did not answer in time.
// Retrying later may succeed.
var ErrUnavailable = errors.New("kmspostgres: KMS unavailable")

// ErrPermission: the credentials may not do this, such as an encrypt-only
// server trying to decrypt.
var ErrPermission = errors.New("kmspostgres: KMS permission denied")

// ErrNoProvider: no provider is linked in for a key id.
var ErrNoProvider = errors.New("kmspostgres: no KMS provider for key id")

// Error is a provider failure: which operation on which key, and the cause
// (which wraps one of the sentinels above).
type Error struct {
	Op    Op // OpWrap or OpUnwrap
	KeyID string
	Err   error
}

// prefix starts every message of this module; an error chain prints it once.
const prefix = "kmspostgres: "

// Error renders "kmspostgres: <op> with key <key id>: <cause>", the cause
// without its own "kmspostgres: " prefix, so the chain carries it once.
func (e *Error) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("%s%s with key %s failed", prefix, e.Op, e.KeyID)
	}
	return fmt.Sprintf("%s%s with key %s: %s", prefix, e.Op, e.KeyID, strings.TrimPrefix(e.Err.Error(), prefix))
}

func (e *Error) Unwrap() error { return e.Err }
