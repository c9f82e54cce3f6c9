// Command quickstart shows kmspostgres end to end with no cloud account: it
// creates a table, writes and reads it through the driver, and prints what
// the application sees beside what the table holds.
//
//	./scripts/with-postgres.sh go run ./examples/quickstart
//
// It uses the database in KMSPG_TEST_DATABASE_URL (or DATABASE_URL) and, if
// KMS_KEY_ID is unset, the insecure test key.
package main

import (
	"context"
	"database/sql"
	_ "embed"
	"fmt"
	"io"
	"log"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver, to show the raw table

	_ "github.com/kmspostgres/kmspostgres" // registers "kmspostgres"
)

//go:embed schema.yaml
var schemaMap []byte

func main() {
	log.SetFlags(0)
	dsn := os.Getenv("KMSPG_TEST_DATABASE_URL")
	if dsn == "" {
		dsn = os.Getenv("DATABASE_URL")
	}
	if dsn == "" {
		log.Fatal("set DATABASE_URL, or run: ./scripts/with-postgres.sh go run ./examples/quickstart")
	}
	if os.Getenv("KMS_KEY_ID") == "" {
		os.Setenv("KMS_KEY_ID", "insecure-test-key")
	}
	dir, err := os.MkdirTemp("", "kmspg-quickstart")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "schema.yaml")
	if err := os.WriteFile(path, schemaMap, 0o600); err != nil {
		log.Fatal(err)
	}
	if err := run(context.Background(), os.Stdout, dsn, path); err != nil {
		log.Fatal(err)
	}
}

func withParam(dsn, key, value string) string {
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + key + "=" + url.QueryEscape(value)
}

func run(ctx context.Context, w io.Writer, dsn, schemaPath string) error {
	// The only change an application makes: the driver name and kms_schema.
	db, err := sql.Open("kmspostgres", withParam(dsn, "kms_schema", schemaPath))
	if err != nil {
		return err
	}
	defer db.Close()
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		return err
	}
	defer raw.Close()

	for _, ddl := range []string{
		`DROP TABLE IF EXISTS patients`,
		`CREATE TABLE patients (
			id bigserial PRIMARY KEY,
			ward text,
			name text,
			diagnosis text,
			date_of_birth text,
			encrypted_kms_key text)`,
	} {
		if _, err := db.ExecContext(ctx, ddl); err != nil {
			return err
		}
	}
	patients := []struct {
		ward, name, diagnosis string
		dob                   time.Time
	}{
		{"cardiology", "Ada Lovelace", "arrhythmia", time.Date(1815, 12, 10, 0, 0, 0, 0, time.UTC)},
		{"oncology", "Alan Turing", "in remission", time.Date(1912, 6, 23, 0, 0, 0, 0, time.UTC)},
	}
	for _, p := range patients {
		if _, err := db.ExecContext(ctx, `INSERT INTO patients (ward, name, diagnosis, date_of_birth) VALUES ($1, $2, $3, $4)`,
			p.ward, p.name, p.diagnosis, p.dob); err != nil {
			return err
		}
	}
	if _, err := db.ExecContext(ctx, `UPDATE patients SET diagnosis = $1 WHERE ward = $2`, "stable", "cardiology"); err != nil {
		return err
	}

	fmt.Fprintln(w, "What the application sees (kmspostgres):")
	rows, err := db.QueryContext(ctx, `SELECT id, ward, name, diagnosis, date_of_birth FROM patients ORDER BY id`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var id int64
		var ward, name, diagnosis string
		var dob time.Time
		if err := rows.Scan(&id, &ward, &name, &diagnosis, &dob); err != nil {
			return err
		}
		fmt.Fprintf(w, "  %d  %-10s  %-12s  %-12s  %s\n", id, ward, name, diagnosis, dob.Format("2006-01-02"))
	}
	if err := rows.Close(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nWhat the table holds (plain pgx):")
	rows, err = raw.QueryContext(ctx, `SELECT id, ward, name, diagnosis, date_of_birth, encrypted_kms_key FROM patients ORDER BY id`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var id int64
		var ward, name, diagnosis, dob, key string
		if err := rows.Scan(&id, &ward, &name, &diagnosis, &dob, &key); err != nil {
			return err
		}
		fmt.Fprintf(w, "  %d  %-10s  name=%.24s…  diagnosis=%.24s…  date_of_birth=%.20s…  encrypted_kms_key=%.24s…\n", id, ward, name, diagnosis, dob, key)
	}
	if err := rows.Close(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nAnd what the driver refuses (the database only sees ciphertext):")
	_, err = db.QueryContext(ctx, `SELECT id FROM patients WHERE diagnosis = 'stable'`)
	fmt.Fprintf(w, "  %v\n", err)
	return nil
}
