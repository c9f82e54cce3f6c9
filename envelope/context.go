package envelope

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"unicode/utf8"
)

// Context is an encryption context: what a KMS binds a wrapped data key to,
// and what its audit log records. kmspostgres uses the table name and the
// row's primary key.
type Context map[string]string

// Canonical renders the context as compact JSON with keys sorted and every
// value a string: {"id":"42","table":"users"}. The bytes match what
// kms_encrypted sends, so the same context yields the same bytes for every
// provider. Only '"', '\\' and control characters are escaped; all other
// UTF-8 is written as is (unlike encoding/json, which escapes <, > and &).
func (c Context) Canonical() ([]byte, error) {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	n := 2
	for _, k := range keys {
		n += len(k) + len(c[k]) + 6
	}
	out := make([]byte, 0, n)
	out = append(out, '{')
	for i, k := range keys {
		if i > 0 {
			out = append(out, ',')
		}
		var err error
		if out, err = appendJSONString(out, k); err != nil {
			return nil, err
		}
		out = append(out, ':')
		if out, err = appendJSONString(out, c[k]); err != nil {
			return nil, err
		}
	}
	return append(out, '}'), nil
}

var errContextUTF8 = errors.New("kmspostgres: encryption context is not valid UTF-8")

func appendJSONString(out []byte, s string) ([]byte, error) {
	if !utf8.ValidString(s) {
		return nil, errContextUTF8
	}
	out = append(out, '"')
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b == '"' || b == '\\':
			out = append(out, '\\', b)
		case b == '\n':
			out = append(out, '\\', 'n')
		case b == '\r':
			out = append(out, '\\', 'r')
		case b == '\t':
			out = append(out, '\\', 't')
		case b == '\b':
			out = append(out, '\\', 'b')
		case b == '\f':
			out = append(out, '\\', 'f')
		case b < 0x20:
			out = append(out, fmt.Sprintf(`\u%04x`, b)...)
		default:
			out = append(out, b)
		}
	}
	return append(out, '"'), nil
}

// ContextInt renders an integer context value in decimal, as kms_encrypted
// does for integer ids.
func ContextInt(i int64) string { return strconv.FormatInt(i, 10) }
