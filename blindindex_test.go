package kmspostgres

import (
	"errors"
	"strings"
	"testing"

	"github.com/kmspostgres/kmspostgres/blindindex"
)

const bidxMap = `
key_id: insecure-test-key
tables:
  users:
    columns:
      email:
        blind_index: {expression: lower, algorithm: argon2id}
      ssn:
        blind_index: {column: ssn_lookup, algorithm: hmac_sha256}
      name: {}
`

func TestBlindIndexSchema(t *testing.T) {
	s, err := ParseSchema("map.yaml", []byte(bidxMap))
	if err != nil {
		t.Fatal(err)
	}
	u := s.Tables["users"]
	e, n := u.Columns["email"].BlindIndex, u.Columns["ssn"].BlindIndex
	if e == nil || e.Column != "email_bidx" || e.Algorithm != blindindex.Argon2id || e.normalize == nil {
		t.Fatalf("email: %+v", e)
	}
	if n == nil || n.Column != "ssn_lookup" || n.Algorithm != blindindex.HMACSHA256 || n.normalize != nil {
		t.Fatalf("ssn: %+v", n)
	}
	if u.Columns["name"].BlindIndex != nil {
		t.Fatal("name got a blind index")
	}
	d, err := ParseSchema("m", []byte("key_id: k\ntables: {users: {columns: {email: {blind_index: {}}}}}"))
	if err != nil {
		t.Fatal(err)
	}
	if b := d.Tables["users"].Columns["email"].BlindIndex; b.Column != "email_bidx" || b.Algorithm != blindindex.Argon2id {
		t.Fatalf("defaults: %+v", b)
	}
}

func TestBlindIndexSchemaErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"email: {blind_index: {algorithm: sha1}}", `unknown algorithm "sha1"`},
		{"email: {blind_index: {expression: upper}}", `unknown expression "upper"`},
		{"email: {blind_index: {colum: x}}", "unknown field colum in table users, column email, blind_index; valid fields: column, algorithm, expression, key_of"},
		{"email: {blind_index: {column: id}}", "is a primary-key column"},
		{"email: {blind_index: {column: encrypted_kms_key}}", "is a key column"},
		{"email: {blind_index: {column: phone}}, phone: {}", "is an encrypted column"},
		{"email: {blind_index: {column: x}}, phone: {blind_index: {column: x}}", "columns email and phone share the blind_index column x"},
		{"email: {blind_index: {column: \"a b\"}}", "not a plain SQL identifier"},
		{"born: {type: date, blind_index: {}}", "text columns only"},
	} {
		_, err := ParseSchema("m.yaml", []byte("key_id: k\ntables: {users: {columns: {"+tc.yaml+"}}}"))
		if !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrSchema with %q", tc.yaml, err, tc.want)
		}
	}
}

func TestBlindIndexMasterKey(t *testing.T) {
	s, err := ParseSchema("map.yaml", []byte(bidxMap))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(blindindex.EnvMasterKey, "")
	if _, err := newBlindIndexes(s, nil); !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), "BLIND_INDEX_MASTER_KEY is not set") {
		t.Fatalf("no key: %v", err)
	}
	bad := strings.Repeat("ab", 31) + "x1"
	t.Setenv(blindindex.EnvMasterKey, bad)
	if _, err := newBlindIndexes(s, nil); !errors.Is(err, blindindex.ErrKey) || strings.Contains(err.Error(), bad[:10]) {
		t.Fatalf("bad key: %v", err)
	}
	t.Setenv(blindindex.EnvMasterKey, strings.Repeat("0", 64))
	ix, err := newBlindIndexes(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The gem's vector: users.email_bidx under the zero key, lower-cased.
	if got := ix[[2]string{"users", "email"}].Text([]byte("TEST@example.org")); got != "kSqBXqdAhgnZAvwGcZ/17SUCg+V6t7xnJ8CO/gRDSjU=" {
		t.Fatalf("users.email index = %s", got)
	}
	if len(ix) != 2 {
		t.Fatalf("%d indexes", len(ix))
	}
	// A map without blind indexes needs no master key.
	t.Setenv(blindindex.EnvMasterKey, "")
	plain, _ := ParseSchema("m", []byte("key_id: k\ntables: {users: {columns: {email: {}}}}"))
	if ix, err := newBlindIndexes(plain, nil); err != nil || len(ix) != 0 {
		t.Fatalf("plain map: %v %v", ix, err)
	}
}

func TestParseTextArray(t *testing.T) {
	str := func(s string) *string { return &s }
	for in, want := range map[string][]*string{
		`{}`:                         {},
		`{a}`:                        {str("a")},
		`{a,b}`:                      {str("a"), str("b")},
		`{"a b","c,d",NULL,"NULL"}`:  {str("a b"), str("c,d"), nil, str("NULL")},
		`{"x\"y","back\\slash", e }`: {str(`x"y`), str(`back\slash`), str("e")},
		`{"",a@x.org}`:               {str(""), str("a@x.org")},
	} {
		got, err := parseTextArray(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if len(got) != len(want) {
			t.Errorf("%s: %d elements, want %d", in, len(got), len(want))
			continue
		}
		for i := range got {
			if (got[i] == nil) != (want[i] == nil) || got[i] != nil && *got[i] != *want[i] {
				t.Errorf("%s: element %d differs", in, i)
			}
		}
	}
	for _, bad := range []string{``, `a,b`, `{{a},{b}}`, `{"a}`, `{"a"b}`} {
		if _, err := parseTextArray(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

func TestWithBlindIndexNormalizer(t *testing.T) {
	t.Setenv(blindindex.EnvMasterKey, strings.Repeat("0", 64))
	digits := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r >= '0' && r <= '9' {
				return r
			}
			return -1
		}, s)
	}
	s, _ := ParseSchema("map.yaml", []byte(bidxMap))
	var cfg connectorConfig
	WithBlindIndexNormalizer("users", "ssn", digits).applyConnector(&cfg)
	ix, err := newBlindIndexes(s, cfg.normalize)
	if err != nil {
		t.Fatal(err)
	}
	ssn := ix[[2]string{"users", "ssn"}]
	if ssn.Text([]byte("123-45-6789")) != ssn.Text([]byte("123 45 6789")) || ssn.Text([]byte("123-45-6789")) == ssn.Text([]byte("123-45-6780")) {
		t.Fatal("normalizer not applied")
	}
	WithBlindIndexNormalizer("users", "name", digits).applyConnector(&cfg)
	if _, err := newBlindIndexes(s, cfg.normalize); !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), `"users", "name"`) {
		t.Fatalf("normalizer for a column without blind index: %v", err)
	}
}
