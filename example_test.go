package kmspostgres_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/kmspostgres/kmspostgres"
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
