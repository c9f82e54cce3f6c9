package envelope

import "errors"

// ErrDecrypt reports that a ciphertext could not be opened: it was tampered
// with, truncated, moved to another row, column or table, or sealed under
// another key. It never says which, on purpose. Use errors.Is.
var ErrDecrypt = errors.New("kmspostgres: decryption failed")

// ErrFormat reports a value that is not in any format this version reads:
// a malformed wrapped key, an unknown cell version, a value of the wrong
// type for a column. Use errors.Is.
var ErrFormat = errors.New("kmspostgres: malformed value")
