package main

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"

	_ "github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/internal/testenv"
)

func TestCLI(t *testing.T) {
	base := testenv.DatabaseURL(t)
	raw, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, q := range []string{"DROP SCHEMA IF EXISTS cli_test CASCADE", "CREATE SCHEMA cli_test",
		"CREATE TABLE cli_test.accounts (id bigserial PRIMARY KEY, iban text, encrypted_kms_key text)"} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	schema := filepath.Join(dir, "schema.yaml")
	write := func(doc string) {
		if err := os.WriteFile(schema, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("key_id: insecure-test-key\ntables:\n  accounts:\n    columns:\n      iban: {}\n")
	dsn := base + "&search_path=cli_test&kms_schema=" + schema
	db, err := sql.Open("kmspostgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, iban := range []string{"DE89370400440532013000", "FR1420041010050500013M02606"} {
		if _, err := db.Exec("INSERT INTO accounts (iban) VALUES ($1)", iban); err != nil {
			t.Fatal(err)
		}
	}
	cli := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := run(context.Background(), args, &out, &errb)
		return code, out.String() + errb.String()
	}
	if code, out := cli("check", "-dsn", dsn); code != 0 || !strings.Contains(out, "ok: accounts(iban)") {
		t.Fatalf("check: %d %s", code, out)
	}
	write("key_id: insecure-test-key\ntables:\n  accounts:\n    keys:\n      kms_key: {version: 2, previous_versions: {1: {}}}\n    columns:\n      iban: {}\n")
	if code, out := cli("rewrap", "-dsn", dsn, "accounts"); code != 0 || !strings.Contains(out, "accounts: 2 rewrapped") {
		t.Fatalf("rewrap: %d %s", code, out)
	}
	var v string
	if err := raw.QueryRow("SELECT string_agg(DISTINCT left(encrypted_kms_key, 3), ',') FROM cli_test.accounts").Scan(&v); err != nil || v != "v2:" {
		t.Fatalf("versions %q %v", v, err)
	}
	write("key_id: insecure-test-key\ntables:\n  accounts:\n    columns:\n      bic: {}\n")
	if code, out := cli("check", "-dsn", dsn); code != 1 || !strings.Contains(out, "encrypted column bic does not exist") {
		t.Fatalf("check mismatch: %d %s", code, out)
	}
	if code, _ := cli("nope"); code != 2 {
		t.Fatal("unknown command accepted")
	}
}
