package kmspostgres

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/rewrite"
)

// adoptInfo is a table whose column c has type typ, stored as text or
// bytea.
func adoptInfo(typ envelope.Type, bytea bool) *tableInfo {
	return &tableInfo{
		table: &rewrite.Table{Name: "t", Encrypted: map[string]rewrite.EncColumn{"c": {Bytea: bytea}}},
		entry: &Table{Name: "t", Columns: map[string]*Column{"c": {Name: "c", Type: typ}}},
	}
}

// Decrypt writes what the migrating read path reads back to the same
// plaintext, for every type, in text and bytea columns.
func TestPlainStoredRoundTrip(t *testing.T) {
	cases := []struct {
		typ  envelope.Type
		in   any
		text string // what Decrypt stores in a text column
	}{
		{envelope.Text, "Ada Lovelace", "Ada Lovelace"},
		{envelope.Bytea, []byte{0, 1, 0xff}, `\x0001ff`},
		{envelope.Smallint, int64(-7), "-7"},
		{envelope.Integer, int64(2147483647), "2147483647"},
		{envelope.Bigint, int64(-9223372036854775808), "-9223372036854775808"},
		{envelope.Real, 1.5, "1.5"},
		{envelope.Double, 0.1, "0.1"},
		{envelope.Double, "-Infinity", "-Infinity"},
		{envelope.Numeric, "12.50", "12.50"},
		{envelope.Boolean, true, "true"},
		{envelope.Date, "1815-12-10", "1815-12-10"},
		{envelope.Timestamp, "2020-01-02 03:04:05.123456", "2020-01-02 03:04:05.123456"},
		{envelope.Timestamptz, "2020-01-02 03:04:05.5+02", "2020-01-02 01:04:05.5+00:00"},
		{envelope.Time, "23:59:59.999999", "23:59:59.999999"},
		{envelope.UUID, "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{envelope.JSONB, `{"a": [1, 2]}`, `{"a": [1, 2]}`},
	}
	for _, tc := range cases {
		for _, bytea := range []bool{false, true} {
			ti := adoptInfo(tc.typ, bytea)
			pt, err := tc.typ.Encode(tc.in)
			if err != nil {
				t.Fatalf("%s %v: %v", tc.typ, tc.in, err)
			}
			stored, err := plainStored(ti, "c", pt)
			if err != nil {
				t.Fatalf("%s: %v", tc.typ, err)
			}
			want := any(tc.text)
			if bytea {
				want = []byte(tc.text)
				if tc.typ == envelope.Bytea {
					want = tc.in
				}
			}
			if s, ok := stored.(string); ok && s != want || !ok && !bytes.Equal(stored.([]byte), want.([]byte)) {
				t.Errorf("%s (bytea %v): stored %q, want %q", tc.typ, bytea, stored, want)
			}
			back, err := legacyPlaintext(ti, "c", "k", stored)
			if err != nil || !bytes.Equal(back, pt) {
				t.Errorf("%s (bytea %v): read back %x %v, want %x", tc.typ, bytea, back, err, pt)
			}
		}
	}
}

func TestLegacyPlaintextRefusesCells(t *testing.T) {
	ck, err := envelope.NewCellKey(make([]byte, envelope.DataKeySize))
	if err != nil {
		t.Fatal(err)
	}
	cell, _ := ck.Seal(envelope.CellAAD("t", "c"), []byte("secret value"))
	empty, _ := ck.Seal(envelope.CellAAD("t", "c"), nil)
	for name, stored := range map[string]any{
		"base64 cell":       base64.StdEncoding.EncodeToString(cell),
		"base64 empty cell": base64.StdEncoding.EncodeToString(empty),
		"raw cell":          cell,
	} {
		_, err := legacyPlaintext(adoptInfo(envelope.Text, false), "c", "encrypted_kms_key", stored)
		if !errors.Is(err, ErrDecrypt) || bytes.Contains([]byte(err.Error()), []byte("secret")) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Plaintext that merely looks like base64, or starts with 0x01 but is
	// short, is plaintext.
	for _, stored := range []any{"QUJD", base64.StdEncoding.EncodeToString([]byte("\x02 twenty-eight bytes or more....")), []byte{1, 2, 3}} {
		if _, err := legacyPlaintext(adoptInfo(envelope.Text, false), "c", "k", stored); err != nil {
			t.Errorf("%q: %v", stored, err)
		}
	}
	// A value that is not its type's text form is an error that does not
	// quote it.
	_, err = legacyPlaintext(adoptInfo(envelope.Date, false), "c", "k", "not-a-date-1234")
	if !errors.Is(err, ErrFormat) || bytes.Contains([]byte(err.Error()), []byte("1234")) {
		t.Errorf("bad date: %v", err)
	}
}

func TestRateLimit(t *testing.T) {
	if err := (*rateLimit)(nil).wait(context.Background(), 5); err != nil {
		t.Fatal(err)
	}
	l := newRateLimit(1000) // 1 ms apart
	start := time.Now()
	for range 5 {
		if err := l.wait(context.Background(), 10); err != nil {
			t.Fatal(err)
		}
	}
	// 50 calls at 1000/s: the last batch starts 40 ms after the first.
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Fatalf("50 calls at 1000/s took %v", d)
	}
	slow := newRateLimit(0.001)
	if err := slow.wait(context.Background(), 1); err != nil {
		t.Fatalf("first call: %v", err) // the first call never waits
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	if err := slow.wait(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
}
