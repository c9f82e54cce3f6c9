package blindindex_test

import (
	"fmt"
	"strings"

	"github.com/kmspostgres/kmspostgres/blindindex"
)

// The blind_index gem's own vector: a master key of 64 zeros, the index
// users.email_bidx, argon2id over the lower-cased email.
func Example() {
	master, err := blindindex.ParseMasterKey(strings.Repeat("0", 64))
	if err != nil {
		panic(err)
	}
	key, err := master.IndexKey("users", "email_bidx")
	if err != nil {
		panic(err)
	}
	lower, _ := blindindex.ParseExpression("lower")
	ix, err := blindindex.New(key, blindindex.Argon2id, lower)
	if err != nil {
		panic(err)
	}
	fmt.Println(ix.Text([]byte("Test@Example.org")))
	// Output: kSqBXqdAhgnZAvwGcZ/17SUCg+V6t7xnJ8CO/gRDSjU=
}
