package kmspostgres

import (
	"errors"
	"fmt"
)

// rowFailure reports whether an error concerns one row's key column only
// (it does not parse, does not unwrap, or is at an inactive version), so
// that a table-wide job can skip the row and go on.
func rowFailure(err error) bool {
	return errors.Is(err, ErrFormat) || errors.Is(err, ErrDecrypt) || errors.Is(err, ErrVersion)
}

// keyColumnHint adds the way out to the error of a row whose key column
// cannot be read: the key column is the only thing to restore.
func keyColumnHint(err error, table, keyColumn string) error {
	switch {
	case errors.Is(err, ErrFormat):
		return fmt.Errorf("%w; the key column is corrupt: %s", err, restoreHint(table, keyColumn))
	case errors.Is(err, ErrDecrypt):
		return fmt.Errorf("%w; if the schema map still has the key id and context this row was written with, its key column was altered: %s", err, restoreHint(table, keyColumn))
	}
	return err
}

// restoreHint says how to recover a row whose key column is corrupt.
func restoreHint(table, keyColumn string) string {
	return "restore " + table + "." + keyColumn + " of this row from a backup; the encrypted cells are intact and decrypt again once it holds its old value"
}
