package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
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
	if code, out := cli("check", "-dsn", dsn); code != 0 || !strings.Contains(out, "schema map: accounts(iban)") || !strings.HasSuffix(out, "\nok: no problems found\n") {
		t.Fatalf("check: %d %s", code, out)
	}
	write("key_id: insecure-test-key\ntables:\n  accounts:\n    keys:\n      kms_key: {version: 2, previous_versions: {1: {}}}\n    columns:\n      iban: {}\n")
	if code, out := cli("check", "-dsn", dsn); code != 0 || !strings.Contains(out, "    v1 (previous)             2  rewrap moves these\n") {
		t.Fatalf("check before rewrap: %d %s", code, out)
	}
	// Flags after the table name.
	if code, out := cli("rewrap", "accounts", "-dsn", dsn); code != 0 || out != "accounts: 2 rewrapped\n" {
		t.Fatalf("rewrap: %d %s", code, out)
	}
	if code, out := cli("rewrap", "accounts", "-dsn", dsn); code != 0 || out != "accounts: nothing to rewrap\n" {
		t.Fatalf("rewrap again: %d %s", code, out)
	}
	// A table not in the map, or not in the database: refused before any
	// output, even after a good table.
	if code, out := cli("rewrap", "-dsn", dsn, "accounts", "acounts"); code != 2 || out != "kmspostgres rewrap: table acounts is not in the schema map (its tables: accounts); run 'kmspostgres rewrap -h'\n" {
		t.Fatalf("rewrap unknown table: %d %s", code, out)
	}
	var v string
	if err := raw.QueryRow("SELECT string_agg(DISTINCT left(encrypted_kms_key, 3), ',') FROM cli_test.accounts").Scan(&v); err != nil || v != "v2:" {
		t.Fatalf("versions %q %v", v, err)
	}
	write("key_id: insecure-test-key\ntables:\n  accounts:\n    keys:\n      kms_key: {version: 2, previous_versions: {1: {}}}\n    columns:\n      iban: {}\n  ghosts:\n    columns:\n      name: {}\n")
	if code, out := cli("rewrap", "-dsn", dsn, "accounts"); code != 1 || !strings.HasPrefix(out, "kmspostgres: invalid schema map: ") || !strings.Contains(out, "table ghosts: the database does not match: no such table") {
		t.Fatalf("rewrap with a table missing from the database: %d %s", code, out)
	}

	// Data problems: a plaintext row beside a NULL key, a corrupt key column.
	write("key_id: insecure-test-key\ntables:\n  accounts:\n    keys:\n      kms_key: {version: 3, previous_versions: {1: {}, 2: {}}}\n    columns:\n      iban: {}\n")
	for _, q := range []string{"INSERT INTO cli_test.accounts (id, iban) VALUES (3, 'GB29NWBK60161331926819')",
		"UPDATE cli_test.accounts SET encrypted_kms_key = 'corrupt' WHERE id = 1"} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	code, out := cli("check", "-dsn", dsn)
	if code != 1 || !strings.Contains(out, "2 problems:\n  - accounts.kms_key: 1 row with values in iban but a NULL encrypted_kms_key (id=3)") ||
		!strings.Contains(out, "1 row with a malformed encrypted_kms_key, not v<version>:<base64> (id=1): restore accounts.encrypted_kms_key of this row from a backup") {
		t.Fatalf("check with problems: %d %s", code, out)
	}
	if strings.Contains(out, "GB29") || strings.Contains(out, "corrupt") {
		t.Fatalf("check prints stored values: %s", out)
	}
	var stdout bytes.Buffer
	code = run(context.Background(), []string{"check", "-json", "-dsn", dsn}, &stdout, io.Discard)
	var rep struct {
		OK       bool     `json:"ok"`
		Problems []string `json:"problems"`
		Tables   []struct {
			Keys []struct {
				Unkeyed   int `json:"unkeyed"`
				Malformed int `json:"malformed"`
				Versions  []struct {
					Version int `json:"version"`
					Rows    int `json:"rows"`
				} `json:"versions"`
			} `json:"keys"`
		} `json:"tables"`
		KeyIDs []struct {
			KeyID, Wrap, Unwrap string
		} `json:"key_ids"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil || code != 1 || rep.OK || len(rep.Problems) != 2 {
		t.Fatalf("check -json: %d %v %s", code, err, stdout.String())
	}
	if k := rep.Tables[0].Keys[0]; k.Unkeyed != 1 || k.Malformed != 1 || len(k.Versions) != 1 || k.Versions[0].Rows != 1 || rep.KeyIDs[0].Unwrap != "ok" {
		t.Fatalf("check -json: %s", stdout.String())
	}
	code, out = cli("rewrap", "accounts", "-dsn", dsn, "-batch", "1")
	if code != 1 || !strings.HasPrefix(out, "accounts: 1 rewrapped, 1 skipped (their key column cannot be read, see below)\n  skipped: ") ||
		!strings.Contains(out, "accounts (id=1), key kms_key: ") ||
		!strings.Contains(out, "restore accounts.encrypted_kms_key of this row from a backup") {
		t.Fatalf("rewrap with a corrupt row: %d %s", code, out)
	}
	t.Logf("rewrap with a corrupt row:\n%s", out)
	if got := cliValues(t, raw, "SELECT string_agg(coalesce(left(encrypted_kms_key, 3), '-'), ',' ORDER BY id) FROM cli_test.accounts"); got != "cor,v3:,-" {
		t.Fatalf("key columns after rewrap: %s", got)
	}

	write("key_id: insecure-test-key\ntables:\n  accounts:\n    columns:\n      bic: {}\n")
	if code, out := cli("check", "-dsn", dsn); code != 1 || !strings.Contains(out, "encrypted column bic does not exist") {
		t.Fatalf("check mismatch: %d %s", code, out)
	}
	write("")
	if code, out := cli("check", "-dsn", dsn); code != 1 || !strings.Contains(out, "the file is empty") {
		t.Fatalf("check empty map: %d %s", code, out)
	}
	if code, _ := cli("nope"); code != 2 {
		t.Fatal("unknown command accepted")
	}
}

func cliValues(t *testing.T, db *sql.DB, q string) string {
	t.Helper()
	var s string
	if err := db.QueryRow(q).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}
