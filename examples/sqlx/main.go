// Command sqlx shows an sqlx code base on kmspostgres. Compared with the
// same program on pgx, three lines change: the driver name, kms_schema in
// the DSN, and the sqlxbind import (sqlx picks placeholders by driver
// name).
//
//	./scripts/with-postgres.sh go run ./examples/sqlx
package main

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"log"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	_ "github.com/kmspostgres/kmspostgres"          // change 1: the driver
	_ "github.com/kmspostgres/kmspostgres/sqlxbind" // change 2: $1 placeholders for sqlx
)

//go:embed schema.yaml
var schemaMap []byte

// Customer is the application's model, as it was before encryption.
type Customer struct {
	ID       int64     `db:"id"`
	Country  string    `db:"country"`
	FullName string    `db:"full_name"`
	IBAN     *string   `db:"iban"`
	Birthday time.Time `db:"birthday"`
}

func main() {
	log.SetFlags(0)
	dsn := os.Getenv("KMSPG_TEST_DATABASE_URL")
	if dsn == "" {
		dsn = os.Getenv("DATABASE_URL")
	}
	if dsn == "" {
		log.Fatal("set DATABASE_URL, or run: ./scripts/with-postgres.sh go run ./examples/sqlx")
	}
	if os.Getenv("KMS_KEY_ID") == "" {
		os.Setenv("KMS_KEY_ID", "insecure-test-key")
	}
	dir, err := os.MkdirTemp("", "kmspg-sqlx")
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

func run(ctx context.Context, w io.Writer, dsn, schemaPath string) error {
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	// change 3: the driver name and kms_schema.
	db, err := sqlx.Open("kmspostgres", dsn+sep+"kms_schema="+url.QueryEscape(schemaPath))
	if err != nil {
		return err
	}
	defer db.Close()
	db.MustExecContext(ctx, `DROP TABLE IF EXISTS customers`)
	db.MustExecContext(ctx, `CREATE TABLE customers (
		id bigserial PRIMARY KEY, country text NOT NULL,
		full_name text NOT NULL, iban text, birthday text NOT NULL,
		encrypted_kms_key text)`)

	iban := "DE89370400440532013000"
	people := []Customer{
		{Country: "DE", FullName: "Grete Weiss", IBAN: &iban, Birthday: time.Date(1988, 7, 1, 0, 0, 0, 0, time.UTC)},
		{Country: "FR", FullName: "Luc Martin", Birthday: time.Date(1975, 2, 14, 0, 0, 0, 0, time.UTC)},
	}
	if _, err := db.NamedExecContext(ctx, `INSERT INTO customers (country, full_name, iban, birthday)
		VALUES (:country, :full_name, :iban, :birthday)`, people); err != nil {
		return err
	}
	var all []Customer
	if err := db.SelectContext(ctx, &all, `SELECT * FROM customers ORDER BY id`); err != nil {
		return err
	}
	for _, c := range all {
		ib := "—"
		if c.IBAN != nil {
			ib = *c.IBAN
		}
		fmt.Fprintf(w, "%d %s %-12s %-24s %s\n", c.ID, c.Country, c.FullName, ib, c.Birthday.Format("2006-01-02"))
	}
	q, args, err := sqlx.In(`SELECT * FROM customers WHERE country IN (?)`, []string{"FR"})
	if err != nil {
		return err
	}
	var fr Customer
	if err := db.GetContext(ctx, &fr, db.Rebind(q), args...); err != nil {
		return err
	}
	fmt.Fprintf(w, "in France: %s\n", fr.FullName)
	var stored string
	if err := db.GetContext(ctx, &stored, `SELECT encrypted_kms_key FROM customers WHERE id = 1`); err != nil {
		return err
	}
	fmt.Fprintf(w, "row 1's wrapped data key: %.24s…\n", stored)
	return nil
}
