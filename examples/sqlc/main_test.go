package main

import (
	"bytes"
	"context"
	"database/sql"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/kmspostgres/kmspostgres/internal/testenv"
)

func TestSqlcExample(t *testing.T) {
	dsn := testenv.DatabaseURL(t)
	t.Setenv("KMS_KEY_ID", "insecure-test-key")
	t.Setenv("BLIND_INDEX_MASTER_KEY", strings.Repeat("0123456789abcdef", 4))
	// Its own schema, so that it does not meet other tests' tables.
	var out bytes.Buffer
	if err := setup(dsn); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), &out, dsn+"&search_path=sqlc_example", appDir()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Mary Shelley (born 1797-08-30): Recovering well.") ||
		!strings.Contains(out.String(), "found by email: Mary Shelley <mary@example.org>") {
		t.Fatalf("output:\n%s", out.String())
	}
}

func setup(dsn string) error {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Exec("CREATE SCHEMA IF NOT EXISTS sqlc_example")
	return err
}
