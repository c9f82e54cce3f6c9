package main

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmspostgres/kmspostgres/blindindex"
	"github.com/kmspostgres/kmspostgres/internal/testenv"
)

func TestCLIBlindIndex(t *testing.T) {
	base := testenv.DatabaseURL(t)
	t.Setenv(blindindex.EnvMasterKey, strings.Repeat("ab", 32))
	raw, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, q := range []string{"DROP SCHEMA IF EXISTS cli_bidx CASCADE", "CREATE SCHEMA cli_bidx",
		"CREATE TABLE cli_bidx.people (id bigserial PRIMARY KEY, email text, encrypted_kms_key text, email_bidx text)"} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	schema := filepath.Join(t.TempDir(), "schema.yaml")
	write := func(doc string) {
		if err := os.WriteFile(schema, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Rows written before the column had a blind index.
	write("key_id: insecure-test-key\ntables:\n  people:\n    columns:\n      email: {}\n")
	dsn := base + "&search_path=cli_bidx&kms_schema=" + schema
	db, err := sql.Open("kmspostgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []string{"a@example.com", "b@example.com", "c@example.com"} {
		if _, err := db.Exec("INSERT INTO people (email) VALUES ($1)", e); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	write("key_id: insecure-test-key\ntables:\n  people:\n    columns:\n      email: {blind_index: {algorithm: hmac_sha256}}\n")
	cli := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := run(context.Background(), args, &out, &errb)
		return code, out.String() + errb.String()
	}
	if code, out := cli("reindex", "-dsn", dsn, "people"); code != 0 || !strings.Contains(out, "people: 3 rows reindexed") {
		t.Fatalf("reindex: %d %s", code, out)
	}
	if code, out := cli("check", "-dsn", dsn); code != 0 || !strings.Contains(out, "blind index people.email: column email_bidx, hmac_sha256, no UNIQUE index") {
		t.Fatalf("check: %d %s", code, out)
	}
	var n int
	if err := raw.QueryRow("SELECT count(DISTINCT email_bidx) FROM cli_bidx.people").Scan(&n); err != nil || n != 3 {
		t.Fatalf("%d distinct index values, %v", n, err)
	}
	if code, out := cli("blind-index-key", "insecure-test-key"); code != 0 || !strings.Contains(out, `blind_index_master_key: {wrapped: "v1:`) {
		t.Fatalf("blind-index-key: %d %s", code, out)
	}
}
