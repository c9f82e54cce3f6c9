package kmspostgres

import (
	"errors"
	"strings"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/providers"
	"github.com/kmspostgres/kmspostgres/rewrite"
)

// The sentinels callers branch on with errors.Is. Those shared with the
// envelope, providers and rewrite packages are the same values there.
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
	// ErrKeyID: a key id has none of the shapes a provider serves.
	ErrKeyID = providers.ErrKeyID
	// ErrSchema: the schema map is invalid, or does not match the
	// database.
	ErrSchema = errors.New("kmspostgres: invalid schema map")
	// ErrVersion: a wrapped key's version is neither the key's current
	// version nor in its previous_versions.
	ErrVersion = errors.New("kmspostgres: key version not active")
	// ErrDecryptHalted: decryption is halted on this connector, by
	// HaltDecryption, the halt file or the decrypt-rate breaker
	// (WithDecryptLimit). Reads of encrypted columns fail until
	// ResumeDecryption (or the breaker's cool-down); writes still work.
	ErrDecryptHalted = errors.New("kmspostgres: decryption halted")
)

// RefusalError is the error of a refused statement: Table and Column name
// the encrypted column, Reason says why, Fix what to do instead.
type RefusalError = rewrite.RefusalError

// CellError is a failure to encrypt or decrypt the cells of one row: which
// table, column (empty when the row's data key itself failed), row and
// key. Err is the cause; it wraps the sentinels above (ErrDecrypt,
// ErrUnavailable, …), so errors.Is sees through a CellError.
type CellError struct {
	Table  string // table as written in the schema map
	Column string // encrypted column, or "" for the row's data key
	PK     string // primary key as column=value pairs: "id=42"
	Key    string // key name in the schema map ("kms_key"), when known
	KeyID  string // master key id, when known
	Err    error
}

func (e *CellError) Error() string {
	var b strings.Builder
	b.WriteString("kmspostgres: ")
	b.WriteString(e.Table)
	if e.Column != "" {
		b.WriteString("." + e.Column)
	}
	if e.PK != "" {
		b.WriteString(" (" + e.PK + ")")
	}
	if e.Column == "" && e.Key != "" {
		b.WriteString(", key " + e.Key)
	}
	b.WriteString(": ")
	b.WriteString(causeText(e.Err))
	return b.String()
}

func (e *CellError) Unwrap() error { return e.Err }

// causeText renders a cause without the "kmspostgres: " prefix it may
// carry, so that an error chain prints the prefix once.
func causeText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return strings.TrimPrefix(err.Error(), "kmspostgres: ")
}
