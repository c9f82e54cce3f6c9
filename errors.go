package kmspostgres

import (
	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/providers"
)

// The sentinels callers branch on with errors.Is. They are the same values
// as in the envelope and providers packages.
var (
	// ErrDecrypt: a data key or a cell did not decrypt (wrong context,
	// tampered or moved ciphertext, wrong key).
	ErrDecrypt = envelope.ErrDecrypt
	// ErrFormat: a stored value is not in a format this version reads.
	ErrFormat = envelope.ErrFormat
	// ErrUnavailable: the KMS could not be reached in time.
	ErrUnavailable = providers.ErrUnavailable
	// ErrPermission: the KMS credentials may not do this (an encrypt-only
	// server reading).
	ErrPermission = providers.ErrPermission
)
