// Package blindindex computes blind indexes: keyed, deterministic digests of
// a column's normalized plaintext, stored beside the ciphertext so that the
// database can find rows by equality without ever seeing the value.
//
// It knows nothing of SQL or of any KMS. Its key hierarchy and its argon2id
// values are byte for byte those of the Ruby blind_index gem: an index that a
// Rails application built with the same master key can be searched from Go,
// and the other way round.
//
// A blind index leaks equality: anyone who reads the table sees which rows
// share a value, and how often each value occurs. Argon2id makes guessing
// values from a leaked index key slow; HMAC-SHA256 does not.
//
// Index values carry no version prefix, so that they stay the gem's: a new
// version of an index is a new index column (the gem's email_bidx_v2),
// whose name is part of its key.
package blindindex

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"strings"
	"sync"

	"golang.org/x/crypto/argon2"
)

// KeySize is the length in bytes of master keys and per-index keys.
const KeySize = 32

// Size is the length in bytes of every index value before encoding.
const Size = 32

// EnvMasterKey is the environment variable that holds the master key as 64
// hex characters, as for the blind_index gem.
const EnvMasterKey = "BLIND_INDEX_MASTER_KEY"

// ErrKey reports a master key that is not 32 bytes written as 64 hex
// characters. The error never quotes the key. Use errors.Is.
var ErrKey = errors.New("blindindex: master key must be 32 bytes written as 64 hex characters")

// MasterKey is the root of every per-index key.
type MasterKey [KeySize]byte

// ParseMasterKey parses a master key written as exactly 64 hex characters
// (either case).
func ParseMasterKey(s string) (MasterKey, error) {
	var k MasterKey
	if len(s) != 2*KeySize {
		return k, fmt.Errorf("%w (got %d characters)", ErrKey, len(s))
	}
	if _, err := hex.Decode(k[:], []byte(s)); err != nil {
		return MasterKey{}, fmt.Errorf("%w (not hex)", ErrKey)
	}
	return k, nil
}

// MasterKeyFromEnv parses the BLIND_INDEX_MASTER_KEY environment variable.
// ok is false when it is unset or empty.
func MasterKeyFromEnv() (k MasterKey, ok bool, err error) {
	s := os.Getenv(EnvMasterKey)
	if s == "" {
		return MasterKey{}, false, nil
	}
	k, err = ParseMasterKey(s)
	if err != nil {
		return MasterKey{}, true, fmt.Errorf("%s: %w", EnvMasterKey, err)
	}
	return k, true, nil
}

// IndexKey derives the key of the index stored in column indexColumn of
// table, as the blind_index gem does (a key hierarchy ported from
// CipherSweet):
//
//	root = HKDF-SHA384(ikm = master, salt = table, info = 32×0x7E ‖ indexColumn, 32 bytes)
//	key  = HMAC-SHA256(root, pack(table, indexColumn, indexColumn))
//
// where pack is a little-endian uint32 count followed by each piece as a
// little-endian uint64 length and its bytes. Two columns or two tables never
// share a key, so equal values in them have unrelated index values.
func (m MasterKey) IndexKey(table, indexColumn string) ([KeySize]byte, error) {
	var out [KeySize]byte
	if table == "" || indexColumn == "" {
		return out, errors.New("blindindex: empty table or index column name")
	}
	info := strings.Repeat("\x7e", 32) + indexColumn
	root, err := hkdf.Key(sha512.New384, m[:], []byte(table), info, KeySize)
	if err != nil {
		return out, fmt.Errorf("blindindex: deriving index key: %w", err)
	}
	mac := hmac.New(sha256.New, root)
	mac.Write(pack(table, indexColumn, indexColumn))
	copy(out[:], mac.Sum(nil))
	return out, nil
}

// pack is the gem's length-prefixed encoding of a list of strings.
func pack(pieces ...string) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(pieces)))
	for _, p := range pieces {
		b = binary.LittleEndian.AppendUint64(b, uint64(len(p)))
		b = append(b, p...)
	}
	return b
}

// Algorithm is how an index value is computed from the per-index key and
// the normalized value.
type Algorithm int

const (
	// Argon2id is memory-hard (t = 3, m = 4 MiB, p = 1, 32 bytes, salt =
	// per-index key), the gem's default: use it for values of low entropy
	// (phone numbers, national ids, birth dates, most emails), whose index
	// values could otherwise be reversed by guessing once the index key
	// leaks. It costs milliseconds per value.
	Argon2id Algorithm = iota + 1
	// HMACSHA256 is HMAC-SHA256 keyed with the per-index key: microseconds
	// per value, for values of high entropy (random tokens, long
	// identifiers) that cannot be guessed anyway.
	HMACSHA256
)

// Argon2id cost parameters, those of the blind_index gem's default.
const (
	argonTime    = 3
	argonMemory  = 4 * 1024 // KiB
	argonThreads = 1
)

// ParseAlgorithm parses an algorithm name as written in a schema map:
// "argon2id" or "hmac_sha256".
func ParseAlgorithm(s string) (Algorithm, error) {
	switch s {
	case "argon2id":
		return Argon2id, nil
	case "hmac_sha256":
		return HMACSHA256, nil
	}
	return 0, fmt.Errorf("blindindex: unknown algorithm %q (use argon2id or hmac_sha256)", s)
}

// String returns the name ParseAlgorithm reads.
func (a Algorithm) String() string {
	switch a {
	case Argon2id:
		return "argon2id"
	case HMACSHA256:
		return "hmac_sha256"
	}
	return fmt.Sprintf("Algorithm(%d)", int(a))
}

// Normalizer maps a value to the form that is indexed: values that
// normalize to the same string find each other.
type Normalizer func(string) string

// ParseExpression returns the normalizer named by a schema map's
// expression: "" (none), "lower", "trim" or "lower_trim". lower is Go's
// strings.ToLower (the same as Ruby's downcase on ASCII); trim removes
// leading and trailing Unicode white space.
func ParseExpression(s string) (Normalizer, error) {
	switch s {
	case "", "none":
		return nil, nil
	case "lower":
		return strings.ToLower, nil
	case "trim":
		return strings.TrimSpace, nil
	case "lower_trim":
		return func(v string) string { return strings.ToLower(strings.TrimSpace(v)) }, nil
	}
	return nil, fmt.Errorf("blindindex: unknown expression %q (use lower, trim, lower_trim or none, or a Go normalizer)", s)
}

// Index computes the values of one blind index.
type Index struct {
	key       [KeySize]byte
	algorithm Algorithm
	normalize Normalizer
	// macs holds keyed HMAC-SHA256 states: Reset returns one to the
	// keyed state, so the key is not set up again per value.
	macs sync.Pool
}

// New returns the index with the given per-index key, algorithm and
// normalizer (nil: none).
func New(key [KeySize]byte, a Algorithm, n Normalizer) (*Index, error) {
	if a != Argon2id && a != HMACSHA256 {
		return nil, fmt.Errorf("blindindex: unknown algorithm %v", a)
	}
	ix := &Index{key: key, algorithm: a, normalize: n}
	ix.macs.New = func() any { return hmac.New(sha256.New, ix.key[:]) }
	return ix, nil
}

// Algorithm returns the index's algorithm.
func (ix *Index) Algorithm() Algorithm { return ix.algorithm }

// Normalize applies the index's normalizer.
func (ix *Index) Normalize(v string) string {
	if ix.normalize == nil {
		return v
	}
	return ix.normalize(v)
}

// Sum returns the raw 32-byte index value of v after normalization, for a
// bytea index column.
func (ix *Index) Sum(v []byte) []byte {
	if ix.normalize != nil {
		v = []byte(ix.normalize(string(v)))
	}
	switch ix.algorithm {
	case Argon2id:
		return argon2.IDKey(v, ix.key[:], argonTime, argonMemory, argonThreads, Size)
	default:
		mac := ix.macs.Get().(hash.Hash)
		mac.Write(v)
		sum := mac.Sum(make([]byte, 0, Size))
		mac.Reset()
		ix.macs.Put(mac)
		return sum
	}
}

// Text returns the index value of v as strict standard base64 with padding,
// for a text index column: what the gem stores.
func (ix *Index) Text(v []byte) string {
	return base64.StdEncoding.EncodeToString(ix.Sum(v))
}
