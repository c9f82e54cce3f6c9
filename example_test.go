package kmspostgres_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"strings"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/providers"
)

// A Box encrypts data that does not live in a mapped table, such as a file
// or a message, under the same KMS and with its own audit context.
func ExampleBox() {
	ctx := context.Background()
	box, err := kmspostgres.NewBox("insecure-test-key")
	if err != nil {
		panic(err)
	}
	recordCtx := map[string]string{"model_name": "User", "model_id": "123"}
	ct, err := box.Encrypt(ctx, []byte("a secret note"), recordCtx)
	if err != nil {
		panic(err)
	}
	fmt.Println(strings.HasPrefix(ct, "kmsbox1:v1:"))
	pt, err := box.Decrypt(ctx, ct, recordCtx)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(pt))
	// Output:
	// true
	// a secret note
}

// ParseSchema reads the schema map and fills in every default.
func ExampleParseSchema() {
	s, err := kmspostgres.ParseSchema("schema.yaml", []byte(`
key_id: insecure-test-key
tables:
  users:
    columns:
      email: {}
      date_of_birth: {type: date}
`))
	if err != nil {
		panic(err)
	}
	users := s.Table("", "users")
	fmt.Println(users.PrimaryKey, users.Keys["kms_key"].Column, users.Columns["date_of_birth"].Type)
	// Output: [id] encrypted_kms_key date
}

// NewConnector opens a pool with options: here a schema map built in Go
// and an audit observer. (Not run: it needs a database.)
func ExampleNewConnector() {
	schema := &kmspostgres.Schema{KeyID: "insecure-test-key", Tables: map[string]*kmspostgres.Table{
		"users": {Columns: map[string]*kmspostgres.Column{"email": {}}},
	}}
	if err := schema.Validate(); err != nil {
		panic(err)
	}
	c, err := kmspostgres.NewConnector("postgres://app@localhost/app",
		kmspostgres.WithSchema(schema),
		kmspostgres.WithObserver(providers.ObserverFunc(func(e providers.Event) {
			log.Printf("kms %s key=%s context=%v took=%v err=%v", e.Op, e.KeyID, e.Context, e.Duration, e.Err)
		})))
	if err != nil {
		panic(err)
	}
	db := sql.OpenDB(c)
	defer db.Close()
}

// Rewrap moves rows to the current key version after the schema map
// switched master keys, KMSs or contexts. (Not run: it needs a database.)
func ExampleConnector_Rewrap() {
	c, err := kmspostgres.NewConnector("postgres://app@localhost/app?kms_schema=schema.yaml")
	if err != nil {
		panic(err)
	}
	st, err := c.Rewrap(context.Background(), "users", kmspostgres.RewrapOptions{})
	if err != nil {
		panic(err)
	}
	fmt.Printf("%d rows re-wrapped, %d changed meanwhile\n", st.Rewrapped, st.Changed)
}
