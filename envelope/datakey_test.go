package envelope

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestWrappedKeyRoundTrip(t *testing.T) {
	w := WrappedKey{Version: 12, Ciphertext: []byte{0, 1, 2, 250, 251}}
	s := w.String()
	if s != "v12:AAEC+vs=" {
		t.Fatalf("String() = %q", s)
	}
	got, err := ParseWrappedKey(s)
	if err != nil || got.Version != 12 || !bytes.Equal(got.Ciphertext, w.Ciphertext) {
		t.Fatalf("parse = %+v, %v", got, err)
	}
}

func TestParseWrappedKeyRejects(t *testing.T) {
	for _, s := range []string{
		"", "v", "v1", "v1:", "1:AAAA", "x1:AAAA", "v0:AAAA", "v01:AAAA", "v-1:AAAA",
		"v1a:AAAA", "v:AAAA", "v1:AAA", "v1:AA A=", "v1:AAAA\n", "V1:AAAA",
		"v1234567890:AAAA", "v1:AAAB=", // non-canonical padding bits
	} {
		if _, err := ParseWrappedKey(s); !errors.Is(err, ErrFormat) {
			t.Errorf("ParseWrappedKey(%q) err = %v, want ErrFormat", s, err)
		}
	}
}

func TestNewDataKey(t *testing.T) {
	a, err := NewDataKey()
	if err != nil || len(a) != 32 {
		t.Fatal(len(a), err)
	}
	b, _ := NewDataKey()
	if bytes.Equal(a, b) {
		t.Fatal("two data keys are equal")
	}
}

func TestCanonicalContext(t *testing.T) {
	cases := []struct {
		in   Context
		want string
	}{
		{Context{"table": "users", "id": "42"}, `{"id":"42","table":"users"}`},
		{Context{}, `{}`},
		{Context{"model_name": "User", "model_id": ContextInt(123)}, `{"model_id":"123","model_name":"User"}`},
		{Context{"a": `q"b\s`, "b": "<&>/é\n\x01"}, `{"a":"q\"b\\s","b":"<&>/é\n\u0001"}`},
		{Context{"org_id": "7", "id": "9", "table": "billing.invoices"}, `{"id":"9","org_id":"7","table":"billing.invoices"}`},
	}
	for _, c := range cases {
		got, err := c.in.Canonical()
		if err != nil || string(got) != c.want {
			t.Errorf("Canonical(%v) = %s, %v; want %s", c.in, got, err, c.want)
		}
	}
	if _, err := (Context{"a": "\xff"}).Canonical(); err == nil {
		t.Error("invalid UTF-8 accepted")
	}
}

func FuzzParseWrappedKey(f *testing.F) {
	f.Add("v1:AAAA")
	f.Add("v2:" + strings.Repeat("A", 100))
	f.Add("v0:")
	f.Fuzz(func(t *testing.T, s string) {
		w, err := ParseWrappedKey(s)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v is not ErrFormat", err)
			}
			if strings.Contains(err.Error(), s) && len(s) > 8 {
				t.Fatalf("error quotes the input")
			}
			return
		}
		if w.Version < 1 || len(w.Ciphertext) == 0 {
			t.Fatalf("accepted %q as %+v", s, w)
		}
		if w.String() != s {
			t.Fatalf("not canonical: %q parsed and printed as %q", s, w.String())
		}
	})
}

func TestDecodeBase64Into(t *testing.T) {
	buf := make([]byte, 0, 64)
	b, err := DecodeBase64Into(buf, "aGVsbG8=")
	if err != nil || string(b) != "hello" || &b[0] != &buf[:1][0] {
		t.Fatalf("into a large enough buffer: %q, %v, same array %v", b, err, err == nil && &b[0] == &buf[:1][0])
	}
	if b, err := DecodeBase64Into(make([]byte, 0, 2), "aGVsbG8="); err != nil || string(b) != "hello" {
		t.Fatalf("into a small buffer: %q, %v", b, err)
	}
	if _, err := DecodeBase64Into(buf, "aGVs\nbG8="); err == nil {
		t.Fatal("a line break was accepted")
	}
}
