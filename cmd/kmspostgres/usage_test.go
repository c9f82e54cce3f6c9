package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kmspostgres/kmspostgres"
)

func TestParseInterleaved(t *testing.T) {
	cases := []struct {
		args      []string
		pos       []string
		dsn       string
		batch     int
		all       bool
		wantError string
	}{
		{args: []string{"users"}, pos: []string{"users"}, batch: 500},
		{args: []string{"-dsn", "d", "users"}, pos: []string{"users"}, dsn: "d", batch: 500},
		{args: []string{"users", "-dsn", "d"}, pos: []string{"users"}, dsn: "d", batch: 500},
		{args: []string{"users", "-batch=7", "orders", "-all"}, pos: []string{"users", "orders"}, batch: 7, all: true},
		{args: []string{"-all", "users", "orders", "-dsn", "d"}, pos: []string{"users", "orders"}, dsn: "d", batch: 500, all: true},
		{args: []string{"users", "--", "-all"}, pos: []string{"users", "-all"}, batch: 500},
		{args: []string{}, batch: 500},
		{args: []string{"users", "-nope"}, wantError: "flag provided but not defined: -nope"},
		{args: []string{"users", "-batch"}, wantError: "flag needs an argument: -batch"},
		{args: []string{"users", "-h"}, wantError: "flag: help requested"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			fs := flag.NewFlagSet("rewrap", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			dsn := fs.String("dsn", "", "")
			batch := fs.Int("batch", 500, "")
			all := fs.Bool("all", false, "")
			pos, err := parseInterleaved(fs, tc.args)
			if tc.wantError != "" {
				if err == nil || err.Error() != tc.wantError {
					t.Fatalf("err = %v, want %q", err, tc.wantError)
				}
				return
			}
			if err != nil || !slices.Equal(pos, tc.pos) || *dsn != tc.dsn || *batch != tc.batch || *all != tc.all {
				t.Fatalf("got %q dsn=%q batch=%d all=%v err=%v", pos, *dsn, *batch, *all, err)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	cases := []struct {
		args   []string
		code   int
		stdout string // contained in stdout
		stderr string // equal to stderr, when set
	}{
		{args: nil, code: 0, stdout: "Examples:"},
		{args: []string{"help"}, code: 0, stdout: "Exit codes: 0 all good, 1 problems found"},
		{args: []string{"-h"}, code: 0, stdout: "kmspostgres check"},
		{args: []string{"--help"}, code: 0, stdout: "kmspostgres rewrap"},
		{args: []string{"help", "check"}, code: 0, stdout: "-wrap-only"},
		{args: []string{"check", "-h"}, code: 0, stdout: "Exit codes: 0 no problem found"},
		{args: []string{"rewrap", "--help"}, code: 0, stdout: "-batch int"},
		{args: []string{"rewrap", "users", "-h"}, code: 0, stdout: "Examples:"},
		{args: []string{"nope"}, code: 2, stderr: "kmspostgres: unknown command \"nope\" (commands: check, rewrap, encrypt, decrypt, reencrypt, context-hash, reindex, blind-index-key); run 'kmspostgres help'\n"},
		{args: []string{"help", "nope"}, code: 2, stderr: "kmspostgres: unknown command \"nope\"; run 'kmspostgres help'\n"},
		{args: []string{"-dsn", "x", "check"}, code: 2, stderr: "kmspostgres: the command comes first (check, rewrap, encrypt, …), then flags such as -dsn; run 'kmspostgres help'\n"},
		{args: []string{"check", "-nope"}, code: 2, stderr: "kmspostgres check: flag provided but not defined: -nope; run 'kmspostgres check -h'\n"},
		{args: []string{"check"}, code: 2, stderr: "kmspostgres check: no DSN: pass -dsn or set DATABASE_URL; run 'kmspostgres check -h'\n"},
		{args: []string{"check", "users"}, code: 2, stderr: "kmspostgres check: check takes no arguments, got \"users\"; run 'kmspostgres check -h'\n"},
		{args: []string{"rewrap", "-dsn", "x"}, code: 2, stderr: "kmspostgres rewrap: name at least one table; run 'kmspostgres rewrap -h'\n"},
		{args: []string{"rewrap", "users", "-batch", "0"}, code: 2, stderr: "kmspostgres rewrap: -batch must be at least 1, got 0; run 'kmspostgres rewrap -h'\n"},
		{args: []string{"rewrap", "users", "-batch", "-5", "-dsn", "x"}, code: 2, stderr: "kmspostgres rewrap: -batch must be at least 1, got -5; run 'kmspostgres rewrap -h'\n"},
		{args: []string{"help"}, code: 0, stdout: "kmspostgres context-hash [-dsn DSN]"},
		{args: []string{"help", "encrypt"}, code: 0, stdout: "-kms-rps float"},
		{args: []string{"encrypt", "-h"}, code: 0, stdout: "3 interrupted"},
		{args: []string{"decrypt", "-h"}, code: 0, stdout: "-yes"},
		{args: []string{"reencrypt", "users", "-h"}, code: 0, stdout: "-after string"},
		{args: []string{"context-hash", "-h"}, code: 0, stdout: "-device string"},
		{args: []string{"encrypt", "-dsn", "x"}, code: 2, stderr: "kmspostgres encrypt: name at least one table; run 'kmspostgres encrypt -h'\n"},
		{args: []string{"encrypt", "users"}, code: 2, stderr: "kmspostgres encrypt: no DSN: pass -dsn or set DATABASE_URL; run 'kmspostgres encrypt -h'\n"},
		{args: []string{"encrypt", "users", "-concurrency", "0"}, code: 2, stderr: "kmspostgres encrypt: -concurrency must be at least 1, got 0; run 'kmspostgres encrypt -h'\n"},
		{args: []string{"encrypt", "users", "-kms-rps", "-1"}, code: 2, stderr: "kmspostgres encrypt: -kms-rps must be 0 (no limit) or positive, got -1; run 'kmspostgres encrypt -h'\n"},
		{args: []string{"encrypt", "users", "-yes"}, code: 2, stderr: "kmspostgres encrypt: flag provided but not defined: -yes; run 'kmspostgres encrypt -h'\n"},
		{args: []string{"decrypt", "users", "-dsn", "x"}, code: 2, stderr: "kmspostgres decrypt: decrypt writes plaintext into the database: pass -yes to confirm (or -dry-run); run 'kmspostgres decrypt -h'\n"},
		{args: []string{"reencrypt", "users", "orders", "-after", "7"}, code: 2, stderr: "kmspostgres reencrypt: -after resumes one table; name only that table; run 'kmspostgres reencrypt -h'\n"},
		{args: []string{"context-hash", "users"}, code: 2, stderr: "kmspostgres context-hash: give a table and a primary key, got 1 arguments; run 'kmspostgres context-hash -h'\n"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errb)
			if code != tc.code || !strings.Contains(out.String(), tc.stdout) || (tc.stderr != "" && errb.String() != tc.stderr) {
				t.Fatalf("exit %d (want %d)\nstdout:\n%s\nstderr:\n%s", code, tc.code, out.String(), errb.String())
			}
			if tc.code == 0 && errb.Len() > 0 {
				t.Fatalf("help wrote to stderr: %s", errb.String())
			}
		})
	}
}

func TestHelpHidesDatabaseURL(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://app:s3cret@db/app")
	var out bytes.Buffer
	if code := run(context.Background(), []string{"check", "-h"}, &out, io.Discard); code != 0 || strings.Contains(out.String(), "s3cret") {
		t.Fatalf("exit %d, help shows the DSN:\n%s", code, out.String())
	}
}

// An error before a report still gives -json readers an object.
func TestCheckJSONError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "schema.yaml")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"check", "-json", "-dsn", "postgres://nowhere.invalid/db?kms_schema=" + path}, &out, &errb)
	var got struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || code != 1 || got.OK || !strings.Contains(got.Error, "the file is empty") || !strings.Contains(errb.String(), "the file is empty") {
		t.Fatalf("exit %d, %v\nstdout: %s\nstderr: %s", code, err, out.String(), errb.String())
	}
}

func TestPrintReport(t *testing.T) {
	r := &kmspostgres.Report{
		Schema: `users(email) key_id="alias/app"`,
		Layout: "kmspostgres: invalid schema map: s.yaml: table cards: the database does not match: no such table",
		Tables: []*kmspostgres.TableReport{
			{Table: "cards", Error: "no such table"},
			{Table: "users", Keys: []*kmspostgres.KeyReport{{
				Key: "kms_key", Column: "encrypted_kms_key", Columns: []string{"email", "phone"}, CurrentVersion: 2,
				Rows: 1234567, NullKey: 3, Unkeyed: 2, Malformed: 1, Rewrap: 10, Inactive: 1,
				Versions: []kmspostgres.VersionCount{
					{Version: 1, Rows: 10, Status: "previous"}, {Version: 2, Rows: 1234552, Status: "current"}, {Version: 3, Rows: 1, Status: "inactive"},
				},
			}}},
		},
		KeyIDs: []*kmspostgres.KeyIDReport{
			{KeyID: "alias/app", Kind: "aws", UsedBy: []string{"users.kms_key v2", "users.kms_key v1"}, Linked: true, Wrap: "ok", Unwrap: "kmspostgres: unwrap with key alias/app: kmspostgres: KMS permission denied"},
			{KeyID: "vault/app", Kind: "vault", UsedBy: []string{"cards.kms_key v1"}, Wrap: "kmspostgres: no KMS provider for key id", Unwrap: "skipped"},
		},
		Problems: []string{"one", "two"},
	}
	var out bytes.Buffer
	printReport(&out, r)
	want := `schema map: users(email) key_id="alias/app"
layout: does not match (see problems)

table cards
  not scanned: no such table

table users
  key kms_key: column encrypted_kms_key, current version 2, encrypts email, phone
    rows                1234567
    v1 (previous)            10  rewrap moves these
    v2 (current)        1234552
    v3 (inactive)             1  cannot be read: not in previous_versions
    NULL key                  3  2 with values in encrypted columns (plaintext)
    malformed key             1

key ids
  alias/app (aws; users.kms_key v2, users.kms_key v1): wrap ok, unwrap FAILED
  vault/app (vault; cards.kms_key v1): no provider

2 problems:
  - one
  - two
`
	if out.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}
