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
		{"email: {blind_index: {colum: x}}", "unknown field colum in table users, column email, blind_index; valid fields: column, algorithm, expression, key_of, master_key_env, rotate"},
		{"email: {blind_index: {column: id}}", "is a primary-key column"},
		{"email: {blind_index: {column: encrypted_kms_key}}", "is a key column"},
		{"email: {blind_index: {column: phone}}, phone: {}", "is an encrypted column"},
		{"email: {blind_index: {column: x}}, phone: {blind_index: {column: x}}", "columns email and phone share the blind_index column x"},
		{"email: {blind_index: {column: \"a b\"}}", "not a plain SQL identifier"},
		{"born: {type: date, blind_index: {}}", "text columns only"},
		// Rotations.
		{"email: {blind_index: {rotate: {}}}", "table users, column email: blind_index rotate needs a column (the new index column, such as email_bidx_v2)"},
		{"email: {blind_index: {rotate: {column: email_bidx}}}", "rotate column email_bidx is the current index column"},
		{"email: {blind_index: {rotate: {column: id}}}", "blind_index rotate column id is a primary-key column"},
		{"email: {blind_index: {rotate: {column: encrypted_kms_key}}}", "blind_index rotate column encrypted_kms_key is a key column"},
		{"email: {blind_index: {rotate: {column: phone}}}, phone: {}", "blind_index rotate column phone is an encrypted column"},
		{"email: {blind_index: {rotate: {column: x}}}, phone: {blind_index: {column: x}}", "columns email and phone share the blind_index column x"},
		{"email: {blind_index: {rotate: {column: x}}}, phone: {blind_index: {rotate: {column: x}}}", "columns email and phone share the blind_index column x"},
		{"email: {blind_index: {column: x}}, phone: {blind_index: {rotate: {column: x}}}", "columns email and phone share the blind_index column x"},
		{"email: {blind_index: {rotate: {column: \"a b\"}}}", "rotate column \"a b\" is not a plain SQL identifier"},
		{"email: {blind_index: {rotate: {column: v2, algorithm: sha1}}}", `blind_index rotate: blindindex: unknown algorithm "sha1"`},
		{"email: {blind_index: {rotate: {column: v2, expression: upper}}}", `blind_index rotate: blindindex: unknown expression "upper"`},
		{"email: {blind_index: {rotate: {column: v2, key_of: users.x}}}", "unknown field key_of in table users, column email, blind_index rotate; valid fields: column, algorithm, expression, master_key_env"},
		{"email: {blind_index: {rotate: {column: v2, master_key_env: \"A-B\"}}}", `rotate master_key_env "A-B" is not an environment variable name`},
		{"email: {blind_index: {master_key_env: \"1X\"}}", `master_key_env "1X" is not an environment variable name`},
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
	if _, err := newBlindIndexes(s, nil, nil); !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), "BLIND_INDEX_MASTER_KEY is not set") {
		t.Fatalf("no key: %v", err)
	}
	bad := strings.Repeat("ab", 31) + "x1"
	t.Setenv(blindindex.EnvMasterKey, bad)
	if _, err := newBlindIndexes(s, nil, nil); !errors.Is(err, blindindex.ErrKey) || strings.Contains(err.Error(), bad[:10]) {
		t.Fatalf("bad key: %v", err)
	}
	t.Setenv(blindindex.EnvMasterKey, strings.Repeat("0", 64))
	ix, err := newBlindIndexes(s, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The gem's vector: users.email_bidx under the zero key, lower-cased.
	if got := ix[blindKey{"users", "email", false}].Text([]byte("TEST@example.org")); got != "kSqBXqdAhgnZAvwGcZ/17SUCg+V6t7xnJ8CO/gRDSjU=" {
		t.Fatalf("users.email index = %s", got)
	}
	if len(ix) != 2 {
		t.Fatalf("%d indexes", len(ix))
	}
	// A map without blind indexes needs no master key.
	t.Setenv(blindindex.EnvMasterKey, "")
	plain, _ := ParseSchema("m", []byte("key_id: k\ntables: {users: {columns: {email: {}}}}"))
	if ix, err := newBlindIndexes(plain, nil, nil); err != nil || len(ix) != 0 {
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
	ix, err := newBlindIndexes(s, cfg.normalize, nil)
	if err != nil {
		t.Fatal(err)
	}
	ssn := ix[blindKey{"users", "ssn", false}]
	if ssn.Text([]byte("123-45-6789")) != ssn.Text([]byte("123 45 6789")) || ssn.Text([]byte("123-45-6789")) == ssn.Text([]byte("123-45-6780")) {
		t.Fatal("normalizer not applied")
	}
	WithBlindIndexNormalizer("users", "name", digits).applyConnector(&cfg)
	if _, err := newBlindIndexes(s, cfg.normalize, nil); !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), `"users", "name"`) {
		t.Fatalf("normalizer for a column without blind index: %v", err)
	}
}

// TestBlindIndexRotationNormalizer: WithBlindIndexRotationNormalizer sets
// the rotation's normalizer, not the current index's; it is refused on an
// index without rotate, and a Go normalizer on a key_of pair is refused.
func TestBlindIndexRotationNormalizer(t *testing.T) {
	t.Setenv(blindindex.EnvMasterKey, strings.Repeat("0", 64))
	digits := func(s string) string { return strings.Trim(s, "-") }
	s, err := ParseSchema("m", []byte(`
key_id: k
tables:
  users:
    columns:
      ssn: {blind_index: {rotate: {column: ssn_bidx_v2}}}
      email: {blind_index: {}}
      alt_email: {blind_index: {key_of: users.email}}
`))
	if err != nil {
		t.Fatal(err)
	}
	var cfg connectorConfig
	WithBlindIndexRotationNormalizer("users", "ssn", digits).applyConnector(&cfg)
	ix, err := newBlindIndexes(s, nil, cfg.rotateNormalize)
	if err != nil {
		t.Fatal(err)
	}
	cur, next := ix[blindKey{"users", "ssn", false}], ix[blindKey{"users", "ssn", true}]
	if cur.Normalize("-1-") != "-1-" || next.Normalize("-1-") != "1" {
		t.Fatalf("normalizers: current %q, rotation %q", cur.Normalize("-1-"), next.Normalize("-1-"))
	}
	for _, o := range []Option{WithBlindIndexRotationNormalizer("users", "email", digits), WithBlindIndexNormalizer("users", "email", digits), WithBlindIndexNormalizer("users", "alt_email", digits)} {
		var c connectorConfig
		o.applyConnector(&c)
		if _, err := newBlindIndexes(s, c.normalize, c.rotateNormalize); !errors.Is(err, ErrSchema) {
			t.Errorf("%v: %v, want ErrSchema", c, err)
		}
	}
}

func TestBlindIndexRotateSchema(t *testing.T) {
	s, err := ParseSchema("m.yaml", []byte(`
key_id: k
tables:
  users:
    columns:
      email:
        blind_index:
          column: email_bidx
          algorithm: hmac_sha256
          expression: lower
          rotate: {column: email_bidx_v2, algorithm: argon2id, expression: lower_trim, master_key_env: BLIND_INDEX_MASTER_KEY_V2}
      phone:
        blind_index: {expression: trim, master_key_env: PHONE_KEY, rotate: {column: phone_bidx_v2}}
      ssn:
        blind_index: {expression: lower_trim, rotate: {column: ssn_bidx_v2, expression: none}}
`))
	if err != nil {
		t.Fatal(err)
	}
	// expression: none rotates to no normalization (not to the current one).
	if r := s.Tables["users"].Columns["ssn"].BlindIndex.Rotate; r == nil || r.inherit || r.normalize != nil {
		t.Fatalf("ssn rotate to none: %+v", r)
	}
	e := s.Tables["users"].Columns["email"].BlindIndex.Rotate
	if e == nil || e.Column != "email_bidx_v2" || e.Algorithm != blindindex.Argon2id || e.Expression != "lower_trim" || e.MasterKeyEnv != "BLIND_INDEX_MASTER_KEY_V2" || e.inherit || e.normalize == nil {
		t.Fatalf("email rotate: %+v", e)
	}
	// Defaults: the current index's algorithm, expression and master key.
	p := s.Tables["users"].Columns["phone"].BlindIndex.Rotate
	if p == nil || p.Column != "phone_bidx_v2" || p.Algorithm != blindindex.Argon2id || p.Expression != "trim" || !p.inherit || p.MasterKeyEnv != "PHONE_KEY" {
		t.Fatalf("phone rotate: %+v", p)
	}
}

// TestBlindIndexRotateKeys: a rotation's values are exactly those of the
// current index of the map switched to it, so the switch needs no
// reindex; master_key_env takes the key from that variable.
func TestBlindIndexRotateKeys(t *testing.T) {
	old, v2 := strings.Repeat("0", 64), strings.Repeat("ab", 32)
	t.Setenv(blindindex.EnvMasterKey, old)
	t.Setenv("BIDX_V2", v2)
	during, err := ParseSchema("m", []byte(`
key_id: k
tables:
  users:
    columns:
      email: {blind_index: {algorithm: hmac_sha256, expression: lower, rotate: {column: email_bidx_v2, algorithm: argon2id, expression: lower_trim, master_key_env: BIDX_V2}}}
      ssn: {blind_index: {algorithm: hmac_sha256, rotate: {column: ssn_v2}}}
`))
	if err != nil {
		t.Fatal(err)
	}
	after, err := ParseSchema("m", []byte(`
key_id: k
tables:
  users:
    columns:
      email: {blind_index: {column: email_bidx_v2, algorithm: argon2id, expression: lower_trim, master_key_env: BIDX_V2}}
      ssn: {blind_index: {column: ssn_v2, algorithm: hmac_sha256}}
`))
	if err != nil {
		t.Fatal(err)
	}
	dix, err := newBlindIndexes(during, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	aix, err := newBlindIndexes(after, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(dix) != 4 || len(aix) != 2 {
		t.Fatalf("%d indexes during, %d after", len(dix), len(aix))
	}
	for _, col := range []string{"email", "ssn"} {
		for _, v := range []string{" Alice@Example.com", "bob"} {
			rot, cur := dix[blindKey{"users", col, true}].Text([]byte(v)), aix[blindKey{"users", col, false}].Text([]byte(v))
			if rot != cur {
				t.Errorf("%s %q: rotation %s, switched map %s", col, v, rot, cur)
			}
			if old := dix[blindKey{"users", col, false}].Text([]byte(v)); old == rot {
				t.Errorf("%s %q: the rotation computes the current index", col, v)
			}
		}
	}
	// By hand: the new key from BIDX_V2 and the new column's name.
	m, _ := blindindex.ParseMasterKey(v2)
	k, _ := m.IndexKey("users", "email_bidx_v2")
	want, _ := blindindex.New(k, blindindex.Argon2id, func(s string) string { return strings.ToLower(strings.TrimSpace(s)) })
	if got := dix[blindKey{"users", "email", true}].Text([]byte("X@y.org ")); got != want.Text([]byte("x@y.org")) {
		t.Errorf("email rotation %s, want %s", got, want.Text([]byte("x@y.org")))
	}
	// A missing variable is refused at open, naming it.
	t.Setenv("BIDX_V2", "")
	if _, err := newBlindIndexes(during, nil, nil); !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), "table users, column email: blind_index rotate: master_key_env BIDX_V2 is not set") {
		t.Fatalf("unset BIDX_V2: %v", err)
	}
}

func TestBlindIndexRotateKeyOf(t *testing.T) {
	for _, c := range []struct{ users, invites, want string }{
		{"rotate: {column: v2}", "key_of: users.email", "key_of users.email, which is rotating to v2: add a rotate to this index too"},
		{"", "key_of: users.email, rotate: {column: v2}", "rotate on an index with key_of users.email: rotate users.email too"},
		{"rotate: {column: v2}", "key_of: users.email, rotate: {column: v2, expression: lower}", "needs the same algorithm, expression and master_key_env as the rotate of users.email"},
		{"master_key_env: K", "key_of: users.email", "takes its key from users.email's master key"},
	} {
		_, err := ParseSchema("m.yaml", []byte(`
key_id: k
tables:
  users:
    columns:
      email: {blind_index: {algorithm: hmac_sha256, `+c.users+`}}
  invites:
    columns:
      email: {blind_index: {algorithm: hmac_sha256, `+c.invites+`}}
`))
		if !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s / %s: %v, want %q", c.users, c.invites, err, c.want)
		}
	}
	// Rotating together: the invites rotation takes the users rotation's key.
	t.Setenv(blindindex.EnvMasterKey, strings.Repeat("1", 64))
	s, err := ParseSchema("m.yaml", []byte(`
key_id: k
tables:
  users:
    columns:
      email: {blind_index: {algorithm: hmac_sha256, rotate: {column: email_v2}}}
  invites:
    columns:
      email: {blind_index: {algorithm: hmac_sha256, key_of: users.email, rotate: {column: email_v2}}}
`))
	if err != nil {
		t.Fatal(err)
	}
	ix, err := newBlindIndexes(s, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	u, i := ix[blindKey{"users", "email", true}].Text([]byte("a")), ix[blindKey{"invites", "email", true}].Text([]byte("a"))
	if u != i || u == ix[blindKey{"users", "email", false}].Text([]byte("a")) {
		t.Fatalf("rotations: users %s, invites %s", u, i)
	}
}
