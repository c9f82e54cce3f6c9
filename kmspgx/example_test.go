package kmspgx_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kmspostgres/kmspostgres/kmspgx"
)

// A pool is made where pgxpool.New was called; everything that used the
// pgxpool (sqlc's pgx/v5 Queries, pgx.CollectRows, batches, COPY) takes
// it as it is.
func ExampleNewPool() {
	ctx := context.Background()
	pool, err := kmspgx.NewPool(ctx, os.Getenv("DATABASE_URL")+"&kms_schema=schema.yaml")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	// email is encrypted: it is written sealed under the row's own data
	// key and reads back as text.
	var id int64
	err = pool.QueryRow(ctx, "INSERT INTO users (name, email) VALUES ($1, $2) RETURNING id", "Ada", "ada@example.org").Scan(&id)
	if err != nil {
		log.Fatal(err)
	}
	var email pgtype.Text
	if err := pool.QueryRow(ctx, "SELECT email FROM users WHERE id = $1", id).Scan(&email); err != nil {
		log.Fatal(err)
	}
	fmt.Println(email.String)
}

// CopyFrom into an encrypted table gives every row its own data key.
func ExamplePool_CopyFrom() {
	ctx := context.Background()
	pool, err := kmspgx.NewPool(ctx, os.Getenv("DATABASE_URL")+"&kms_schema=schema.yaml")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	rows := [][]any{{"Ada", "ada@example.org"}, {"Grace", "grace@example.org"}}
	n, err := pool.CopyFrom(ctx, pgx.Identifier{"users"}, []string{"name", "email"}, pgx.CopyFromRows(rows))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(n, "rows")
}
