package main

import (
	"database/sql"

	"bytes"
	"context"
	_ "github.com/jackc/pgx/v5/stdlib"
	"os"
	"strings"
	"testing"
)

func TestSqlcExample(t *testing.T) {
	dsn := os.Getenv("KMSPG_TEST_DATABASE_URL")
	if dsn == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("KMSPG_TEST_DATABASE_URL is not set under CI=true")
		}
		t.Skip("KMSPG_TEST_DATABASE_URL is not set")
	}
	t.Setenv("KMS_KEY_ID", "insecure-test-key")
	// Its own schema, so that it does not meet other tests' tables.
	var out bytes.Buffer
	if err := setup(dsn); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), &out, dsn+"&search_path=sqlc_example", appDir()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Mary Shelley (born 1797-08-30): Recovering well.") {
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
