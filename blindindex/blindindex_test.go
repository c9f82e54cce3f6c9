package blindindex

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

var zeroMaster = strings.Repeat("0", 64)

func mustIndexKey(t testing.TB, master, table, column string) [KeySize]byte {
	t.Helper()
	m, err := ParseMasterKey(master)
	if err != nil {
		t.Fatal(err)
	}
	k, err := m.IndexKey(table, column)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestIndexKeyGem is the blind_index gem's own test vector (test_index_key).
func TestIndexKeyGem(t *testing.T) {
	k := mustIndexKey(t, zeroMaster, "users", "email_bidx")
	if got, want := hex.EncodeToString(k[:]), "289737bab72fa97b1f4b081cef00d7b7d75034bcf3183c363feaf3e6441777bc"; got != want {
		t.Fatalf("index key = %s, want %s", got, want)
	}
}

// TestGolden pins values computed independently by testdata/reference.py
// (Python hashlib and the reference libargon2).
func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		table, column string
		alg           Algorithm
		norm          string
		value, want   string
	}{
		{"users", "email_bidx", Argon2id, "", "test@example.org", "kSqBXqdAhgnZAvwGcZ/17SUCg+V6t7xnJ8CO/gRDSjU="},
		{"users", "email_bidx", Argon2id, "lower_trim", "  Test@Example.ORG\t", "kSqBXqdAhgnZAvwGcZ/17SUCg+V6t7xnJ8CO/gRDSjU="},
		{"users", "email_bidx", Argon2id, "", "123-45-6789", "T1K2dnDNgYfW4RVrOfGj/z5SIg7vMrEQc+QzlzTJtKU="},
		{"users", "ssn_lookup", HMACSHA256, "", "123-45-6789", "KukeB3yh7x1tvOceQJYXORDVDSjtocifD1LAGlY5Azw="},
	} {
		n, err := ParseExpression(tc.norm)
		if err != nil {
			t.Fatal(err)
		}
		ix, err := New(mustIndexKey(t, zeroMaster, tc.table, tc.column), tc.alg, n)
		if err != nil {
			t.Fatal(err)
		}
		if got := ix.Text([]byte(tc.value)); got != tc.want {
			t.Errorf("%s.%s %v(%q) = %s, want %s", tc.table, tc.column, tc.alg, tc.value, got, tc.want)
		}
	}
}

func TestKeysDifferPerTableAndColumn(t *testing.T) {
	seen := map[[KeySize]byte]string{}
	for _, tc := range [][2]string{{"users", "email_bidx"}, {"users", "phone_bidx"}, {"admins", "email_bidx"}, {"users", "email_bidx_v2"}} {
		k := mustIndexKey(t, zeroMaster, tc[0], tc[1])
		if prev, dup := seen[k]; dup {
			t.Fatalf("%v and %s share a key", tc, prev)
		}
		seen[k] = tc[0] + "." + tc[1]
	}
	other := mustIndexKey(t, strings.Repeat("1", 64), "users", "email_bidx")
	if other == mustIndexKey(t, zeroMaster, "users", "email_bidx") {
		t.Fatal("two master keys give the same index key")
	}
}

func TestParseMasterKey(t *testing.T) {
	secret := strings.Repeat("ab", 31) + "zz"
	for _, s := range []string{"", strings.Repeat("0", 63), strings.Repeat("0", 65), secret, strings.Repeat("0", 62) + " 0"} {
		_, err := ParseMasterKey(s)
		if !errors.Is(err, ErrKey) {
			t.Errorf("ParseMasterKey(%q) = %v, want ErrKey", s, err)
		}
		if err != nil && len(s) > 8 && strings.Contains(err.Error(), s[:8]) {
			t.Errorf("error %q quotes the key", err)
		}
	}
	if _, err := ParseMasterKey(strings.Repeat("Ab", 32)); err != nil {
		t.Fatalf("upper-case hex refused: %v", err)
	}
}

func TestMasterKeyFromEnv(t *testing.T) {
	t.Setenv(EnvMasterKey, "")
	if _, ok, err := MasterKeyFromEnv(); ok || err != nil {
		t.Fatalf("unset: ok=%v err=%v", ok, err)
	}
	t.Setenv(EnvMasterKey, "short")
	if _, ok, err := MasterKeyFromEnv(); !ok || !errors.Is(err, ErrKey) {
		t.Fatalf("bad: ok=%v err=%v", ok, err)
	}
	t.Setenv(EnvMasterKey, zeroMaster)
	if k, ok, err := MasterKeyFromEnv(); !ok || err != nil || k != (MasterKey{}) {
		t.Fatalf("zero key: %x ok=%v err=%v", k, ok, err)
	}
}

func TestParse(t *testing.T) {
	if _, err := ParseAlgorithm("sha1"); err == nil {
		t.Fatal("unknown algorithm accepted")
	}
	if _, err := ParseExpression("upper"); err == nil {
		t.Fatal("unknown expression accepted")
	}
	for _, a := range []Algorithm{Argon2id, HMACSHA256} {
		if b, err := ParseAlgorithm(a.String()); err != nil || b != a {
			t.Fatalf("%v does not round-trip: %v %v", a, b, err)
		}
	}
	if _, err := New([KeySize]byte{}, 0, nil); err == nil {
		t.Fatal("algorithm 0 accepted")
	}
	for expr, want := range map[string]string{"": " A b ", "none": " A b ", "lower": " a b ", "trim": "A b", "lower_trim": "a b"} {
		n, err := ParseExpression(expr)
		if err != nil {
			t.Fatal(err)
		}
		ix, _ := New([KeySize]byte{}, HMACSHA256, n)
		if got := ix.Normalize(" A b "); got != want {
			t.Errorf("%q: %q, want %q", expr, got, want)
		}
	}
}

// FuzzIndex checks, for any value, that the HMAC index is exactly
// HMAC-SHA256 of the normalized value under the per-index key, that values
// which normalize alike index alike, and that the text form is strict
// base64 of the raw form.
func FuzzIndex(f *testing.F) {
	key := mustIndexKey(f, zeroMaster, "users", "email_bidx")
	n, _ := ParseExpression("lower_trim")
	ix, _ := New(key, HMACSHA256, n)
	f.Add([]byte("test@example.org"))
	f.Add([]byte(" Test@Example.org\n"))
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xfe})
	f.Fuzz(func(t *testing.T, v []byte) {
		mac := hmac.New(sha256.New, key[:])
		mac.Write([]byte(strings.ToLower(strings.TrimSpace(string(v)))))
		want := mac.Sum(nil)
		got := ix.Sum(v)
		if !bytes.Equal(got, want) {
			t.Fatalf("Sum(%q) = %x, want %x", v, got, want)
		}
		if again := ix.Sum([]byte(ix.Normalize(string(v)))); !bytes.Equal(again, got) {
			t.Fatalf("normalized value indexes differently")
		}
		raw, err := base64.StdEncoding.Strict().DecodeString(ix.Text(v))
		if err != nil || !bytes.Equal(raw, got) {
			t.Fatalf("Text is not strict base64 of Sum: %v", err)
		}
	})
}

// FuzzParseMasterKey: exactly 64 hex characters are accepted, and what is
// accepted round-trips.
func FuzzParseMasterKey(f *testing.F) {
	f.Add(zeroMaster)
	f.Add(strings.Repeat("g", 64))
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseMasterKey(s)
		valid := len(s) == 64 && strings.Trim(strings.ToLower(s), "0123456789abcdef") == ""
		if valid != (err == nil) {
			t.Fatalf("ParseMasterKey(%q): err %v, valid %v", s, err, valid)
		}
		if err == nil && hex.EncodeToString(k[:]) != strings.ToLower(s) {
			t.Fatalf("does not round-trip")
		}
		if err != nil && !errors.Is(err, ErrKey) {
			t.Fatalf("error %v is not ErrKey", err)
		}
	})
}

func BenchmarkIndex(b *testing.B) {
	key := mustIndexKey(b, zeroMaster, "users", "email_bidx")
	for _, a := range []Algorithm{HMACSHA256, Argon2id} {
		ix, _ := New(key, a, nil)
		b.Run(a.String(), func(b *testing.B) {
			for b.Loop() {
				ix.Text([]byte("test@example.org"))
			}
		})
	}
}
