package main

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmspostgres/kmspostgres/internal/testenv"
)

func TestQuickstart(t *testing.T) {
	dsn := testenv.DatabaseURL(t)
	t.Setenv("KMS_KEY_ID", "insecure-test-key")
	path := filepath.Join(t.TempDir(), "schema.yaml")
	if err := os.WriteFile(path, schemaMap, 0o600); err != nil {
		t.Fatal(err)
	}
	// Its own schema, so that it does not meet other tests' tables.
	dsn = withParam(dsn, "search_path", "quickstart_test")
	var out bytes.Buffer
	if err := setupSchema(dsn); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), &out, dsn, path); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	app, table, _ := strings.Cut(got, "What the table holds")
	for _, want := range []string{"Ada Lovelace", "stable", "1815-12-10", "Alan Turing", "in remission"} {
		if !strings.Contains(app, want) {
			t.Errorf("the application view lacks %q:\n%s", want, got)
		}
		if strings.Contains(table, want) {
			t.Errorf("the table holds plaintext %q:\n%s", want, got)
		}
	}
	if !strings.Contains(table, "encrypted_kms_key=v1:") || !strings.Contains(got, "patients.diagnosis") {
		t.Errorf("output:\n%s", got)
	}
}

func setupSchema(dsn string) error {
	db, err := sqlOpenPgx(dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Exec("CREATE SCHEMA IF NOT EXISTS quickstart_test")
	return err
}

func sqlOpenPgx(dsn string) (*sql.DB, error) { return sql.Open("pgx", dsn) }
