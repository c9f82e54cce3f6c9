package kmspostgres

import (
	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/providers"
	"github.com/kmspostgres/kmspostgres/rewrite"
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
	// ErrUnsupported: the statement would need the database to compare,
	// sort, group or compute on an encrypted column, or the driver cannot
	// rewrite it safely. The error is a *RefusalError naming the column.
	ErrUnsupported = rewrite.ErrUnsupported
	// ErrNoProvider: no KMS provider is linked in for a key id.
	ErrNoProvider = providers.ErrNoProvider
)

// RefusalError is the error of a refused statement: Table and Column name
// the encrypted column, Reason says why, Fix what to do instead.
type RefusalError = rewrite.RefusalError
