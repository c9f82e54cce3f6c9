package envelope

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"unsafe"
)

// DataKeySize is the length in bytes of every data key: AES-256.
const DataKeySize = 32

// NewDataKey returns a fresh random data key from crypto/rand.
func NewDataKey() ([]byte, error) {
	k := make([]byte, DataKeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("kmspostgres: reading random data key: %w", err)
	}
	return k, nil
}

// WrappedKey is a data key encrypted by a KMS, with the key version that
// says which master key (and context template) wrapped it.
type WrappedKey struct {
	Version    int
	Ciphertext []byte
}

// String renders the key column text: "v<version>:<base64 of the KMS
// ciphertext>", standard base64 with padding.
func (w WrappedKey) String() string {
	return "v" + strconv.Itoa(w.Version) + ":" + base64.StdEncoding.EncodeToString(w.Ciphertext)
}

// ParseWrappedKey parses the text of a key column. It accepts exactly
// "v<positive decimal, no leading zero>:<non-empty standard base64>".
// Anything else is an error wrapping ErrFormat; the error never quotes the
// value itself.
func ParseWrappedKey(s string) (WrappedKey, error) {
	if len(s) < 4 || s[0] != 'v' {
		return WrappedKey{}, fmt.Errorf("%w: wrapped key does not start with v<version>", ErrFormat)
	}
	colon := strings.IndexByte(s, ':')
	if colon < 2 {
		return WrappedKey{}, fmt.Errorf("%w: wrapped key has no v<version>: prefix", ErrFormat)
	}
	digits := s[1:colon]
	if len(digits) > 9 || digits[0] == '0' {
		return WrappedKey{}, fmt.Errorf("%w: wrapped key version is not a positive integer", ErrFormat)
	}
	v := 0
	for _, c := range digits {
		if c < '0' || c > '9' {
			return WrappedKey{}, fmt.Errorf("%w: wrapped key version is not a positive integer", ErrFormat)
		}
		v = v*10 + int(c-'0')
	}
	body := s[colon+1:]
	if body == "" {
		return WrappedKey{}, fmt.Errorf("%w: wrapped key v%d has no ciphertext", ErrFormat, v)
	}
	ct, err := DecodeBase64(body)
	if err != nil {
		return WrappedKey{}, fmt.Errorf("%w: wrapped key v%d is not valid base64", ErrFormat, v)
	}
	return WrappedKey{Version: v, Ciphertext: ct}, nil
}

// DecodeBase64 decodes strict standard base64 with padding, the encoding of
// wrapped keys and of cells in text columns. Unlike the standard library it
// also refuses line breaks, so one value has exactly one text form.
var strictBase64 = base64.StdEncoding.Strict()

func DecodeBase64(s string) ([]byte, error) {
	return DecodeBase64Into(nil, s)
}

// DecodeBase64Into is DecodeBase64 into buf's array when it is large
// enough (a new one otherwise).
func DecodeBase64Into(buf []byte, s string) ([]byte, error) {
	if strings.IndexByte(s, '\n') >= 0 || strings.IndexByte(s, '\r') >= 0 { // two SIMD scans, faster than ContainsAny
		return nil, fmt.Errorf("%w: base64 with a line break", ErrFormat)
	}
	n := base64.StdEncoding.DecodedLen(len(s))
	b := buf[:0]
	if cap(b) < n {
		b = make([]byte, n)
	}
	b = b[:n]
	// Read s in place: Decode only reads its source.
	n, err := strictBase64.Decode(b, unsafe.Slice(unsafe.StringData(s), len(s)))
	if err != nil {
		return nil, fmt.Errorf("%w: invalid base64", ErrFormat)
	}
	return b[:n], nil
}
