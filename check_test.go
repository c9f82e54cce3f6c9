package kmspostgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kmspostgres/kmspostgres/envelope"
)

func TestKeyColumnHint(t *testing.T) {
	malformed := fmt.Errorf("users (id=1), key kms_key: %w", envelope.ErrFormat)
	cases := []struct {
		err      error
		skip     bool
		contains string
	}{
		{malformed, true, "the key column is corrupt: restore users.encrypted_kms_key of this row from a backup; the encrypted cells are intact"},
		{fmt.Errorf("x: %w", ErrDecrypt), true, "add that key id and context to the key's previous_versions under the version in its key column, and rewrap), or its key column or primary key was altered (then restore users.encrypted_kms_key"},
		{fmt.Errorf("x: %w", ErrVersion), true, "x: kmspostgres: key version not active"},
		{fmt.Errorf("x: %w", ErrUnavailable), false, "x: kmspostgres: KMS unavailable"},
		{fmt.Errorf("x: %w", ErrPermission), false, "permission denied"},
	}
	for _, tc := range cases {
		if rowFailure(tc.err) != tc.skip {
			t.Errorf("rowFailure(%v) = %v", tc.err, !tc.skip)
		}
		got := keyColumnHint(tc.err, "users", "encrypted_kms_key")
		if !strings.Contains(got.Error(), tc.contains) || !errors.Is(got, errors.Unwrap(tc.err)) {
			t.Errorf("keyColumnHint(%v) = %v", tc.err, got)
		}
	}
}

// The key id checks need no database: a provider that is not linked in
// (only the test key is, in this package) and an encrypt-only key.
func TestInspectKeyIDsOffline(t *testing.T) {
	s := &Schema{KeyID: "insecure-test-key", Tables: map[string]*Table{
		"users": {Keys: map[string]*Key{"kms_key": {Version: 2, PreviousVersions: map[int]*KeyVersion{1: {KeyID: "alias/old"}}}},
			Columns: map[string]*Column{"email": {}}},
		"cards": {Keys: map[string]*Key{"kms_key": {KeyID: "insecure-test-key/encrypt"}}, Columns: map[string]*Column{"pan": {}}},
	}}
	c, err := NewConnector("postgres://nowhere.invalid/db", WithSchema(s))
	if err != nil {
		t.Fatal(err)
	}
	for _, wrapOnly := range []bool{false, true} {
		r := &Report{}
		c.inspectKeyIDs(context.Background(), InspectOptions{WrapOnly: wrapOnly, KMSTimeout: time.Second}, r)
		var got []string
		for _, k := range r.KeyIDs {
			got = append(got, fmt.Sprintf("%s %s linked=%v %s/%s", k.KeyID, strings.Join(k.UsedBy, ","), k.Linked, short(k.Wrap), short(k.Unwrap)))
		}
		want := "alias/old users.kms_key v1 linked=false error/skipped|" +
			"insecure-test-key users.kms_key v2 linked=true ok/ok|" +
			"insecure-test-key/encrypt cards.kms_key v1 linked=true ok/error"
		if wrapOnly {
			want = strings.ReplaceAll(want, "ok/ok", "ok/skipped")
			want = strings.ReplaceAll(want, "ok/error", "ok/skipped")
		}
		if strings.Join(got, "|") != want {
			t.Fatalf("wrapOnly=%v:\n%s\nwant\n%s", wrapOnly, strings.Join(got, "\n"), strings.ReplaceAll(want, "|", "\n"))
		}
		if !strings.Contains(r.Problems[0], "key id alias/old (users.kms_key v1): kmspostgres: no KMS provider for key id: \"alias/old\" is a aws key; add import _ \"github.com/kmspostgres/kmspostgres/providers/awskms\"") {
			t.Fatalf("problems: %q", r.Problems)
		}
		if n := len(r.Problems); (wrapOnly && n != 1) || (!wrapOnly && n != 2) {
			t.Fatalf("wrapOnly=%v: problems: %q", wrapOnly, r.Problems)
		}
	}
}

func short(s string) string {
	if s == "ok" || s == "skipped" {
		return s
	}
	return "error"
}
