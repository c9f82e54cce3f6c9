package kmspostgres

import (
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

type errValuer struct{}

func (errValuer) Value() (driver.Value, error) { return nil, errors.New("boom") }

type nestedValuer struct{ v driver.Valuer }

func (n nestedValuer) Value() (driver.Value, error) { return n.v, nil }

func TestResolveValue(t *testing.T) {
	s := "x"
	var nilStr *string
	var nilValuer *sql.NullString
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		in   any
		want any
	}{
		{"nil", nil, nil},
		{"plain", "a", "a"},
		{"pointer", &s, "x"},
		{"nil pointer", nilStr, nil},
		{"NullString invalid", sql.NullString{}, nil},
		{"NullString valid", sql.NullString{String: "v", Valid: true}, "v"},
		{"NullTime valid", sql.NullTime{Time: ts, Valid: true}, ts},
		{"nil pointer valuer", nilValuer, nil},
		{"pointer to valuer", &sql.NullInt64{Int64: 7, Valid: true}, int64(7)},
		{"nested valuer", nestedValuer{sql.NullString{String: "n", Valid: true}}, "n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolveValue(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("resolveValue(%#v) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
	if _, err := resolveValue(errValuer{}); err == nil {
		t.Fatal("a failing Valuer resolved")
	}
}

func TestPKText(t *testing.T) {
	tests := []struct {
		name string
		v    any
		typ  string
		want string
		err  bool
	}{
		{"bigint int64", int64(42), "bigint", "42", false},
		{"integer int", 7, "integer", "7", false},
		{"smallint negative", int64(-3), "smallint", "-3", false},
		{"bigint from string", "123", "bigint", "123", false},
		{"bigint garbage", "x", "bigint", "", true},
		{"uuid lower-cased", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", false},
		{"uuid bytes", []byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11}, "uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", false},
		{"text", "abc", "text", "abc", false},
		{"varchar", "abc", "character varying(10)", "abc", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pkText(tt.v, tt.typ)
			if (err != nil) != tt.err {
				t.Fatalf("pkText(%#v, %s) error = %v, want error %v", tt.v, tt.typ, err, tt.err)
			}
			if !tt.err && got != tt.want {
				t.Fatalf("pkText(%#v, %s) = %q, want %q", tt.v, tt.typ, got, tt.want)
			}
		})
	}
}

func TestCellErrorPrefixOnce(t *testing.T) {
	err := &CellError{Table: "users", Column: "email", PK: "id=1", Err: fmt.Errorf("%w: tag mismatch", ErrDecrypt)}
	if got := err.Error(); !strings.HasPrefix(got, "kmspostgres: users.email (id=1): ") {
		t.Fatalf("got %q", got)
	}
	if n := strings.Count(err.Error(), "kmspostgres:"); n != 1 {
		t.Fatalf("%q has the prefix %d times", err.Error(), n)
	}
	if !errors.Is(err, ErrDecrypt) {
		t.Fatal("errors.Is does not see through CellError")
	}
	keyErr := &CellError{Table: "users", PK: "id=1", Key: "kms_key", Err: ErrUnavailable}
	if got := keyErr.Error(); got != "kmspostgres: users (id=1), key kms_key: KMS unavailable" {
		t.Fatalf("got %q", got)
	}
}

// TestRowsNotColumnScanner keeps database/sql on rows.Next, which
// decrypts: from Go 1.27, a Rows with ScanColumn is no longer asked for
// Next, so a forwarded ScanColumn would read pgx's ciphertext.
func TestRowsNotColumnScanner(t *testing.T) {
	for _, m := range []string{"ScanColumn", "NextRow"} {
		if _, ok := reflect.TypeFor[*rows]().MethodByName(m); ok {
			t.Fatalf("*rows has %s: database/sql would bypass decryption", m)
		}
	}
}
