// Package envelope holds the bytes-and-keys half of kmspostgres: data keys,
// the wrapped-key text stored in key columns, the canonical encryption
// context, the cell cipher and the typed plaintext codecs.
//
// It knows nothing of SQL or of any KMS. Every format here is versioned and
// documented byte by byte in the project README; golden vectors under
// testdata/ pin them.
package envelope
