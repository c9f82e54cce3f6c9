package integration

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/providers"
)

// connector builds a Connector on the environment's current schema file.
func (e *env) connector(opts ...kmspostgres.Option) *kmspostgres.Connector {
	e.t.Helper()
	c, err := kmspostgres.NewConnector(e.dsn(), opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func TestRewrap(t *testing.T) {
	e := newEnv(t, usersDDL+`CREATE TABLE notes (org text, id int, body text, encrypted_kms_key text, PRIMARY KEY (org, id));`,
		usersMap+"  notes:\n    primary_key: [org, id]\n    columns:\n      body: {}\n")
	for i := 1; i <= 25; i++ {
		e.exec("INSERT INTO users (id, name, email, phone) VALUES ($1, 'n', $2, $3)", i, fmt.Sprintf("u%d@x", i), []byte("p"))
		e.exec("INSERT INTO notes (org, id, body) VALUES ($1, $2, $3)", fmt.Sprint("o", i%3), i, fmt.Sprintf("note %d", i))
	}
	cellsBefore := e.rawValues("SELECT email FROM users ORDER BY id")
	// Version 2 of kms_key, with a new context; kms_key_phone stays at 1.
	v2 := strings.Replace(usersMap, "      kms_key: {}", `      kms_key:
        version: 2
        context: {model: User, model_id: "{id}"}
        previous_versions:
          1: {}`, 1) + "  notes:\n    primary_key: [org, id]\n    keys:\n      kms_key: {version: 3, previous_versions: {1: {}}}\n    columns:\n      body: {}\n"
	if err := os.WriteFile(e.schema, []byte(v2), 0o644); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	c := e.connector(kmspostgres.WithProvider(e.kms), kmspostgres.WithObserver(rec))
	ctx := context.Background()
	st, err := c.Rewrap(ctx, "users", kmspostgres.RewrapOptions{BatchSize: 7})
	if err != nil {
		t.Fatal(err)
	}
	if st.Rewrapped != 25 || st.Changed != 0 {
		t.Fatalf("users: %+v", st)
	}
	if rec.Count(providers.OpUnwrap) != 25 || rec.Count(providers.OpWrap) != 25 {
		t.Fatalf("KMS calls: %d unwraps, %d wraps", rec.Count(providers.OpUnwrap), rec.Count(providers.OpWrap))
	}
	if st, err := c.Rewrap(ctx, "notes", kmspostgres.RewrapOptions{BatchSize: 4}); err != nil || st.Rewrapped != 25 {
		t.Fatalf("notes: %+v %v", st, err)
	}
	if got := e.rawValues("SELECT DISTINCT left(encrypted_kms_key, 3) || left(encrypted_kms_key_phone, 3) FROM users"); strings.Join(got, ",") != "v2:v1:" {
		t.Fatalf("key versions: %v", got)
	}
	if got := e.rawValues("SELECT DISTINCT left(encrypted_kms_key, 3) FROM notes"); strings.Join(got, ",") != "v3:" {
		t.Fatalf("notes versions: %v", got)
	}
	// The cells were not touched, and everything reads under the new map.
	if got := e.rawValues("SELECT email FROM users ORDER BY id"); strings.Join(got, ",") != strings.Join(cellsBefore, ",") {
		t.Fatal("rewrap changed cells")
	}
	db := e.openBare(kmspostgres.WithProvider(e.kms))
	defer db.Close()
	if got := stringsOf(t, db, "SELECT email, phone FROM users WHERE id IN (1, 25) ORDER BY id"); got != "u1@x,p|u25@x,p" {
		t.Fatalf("after rewrap: %s", got)
	}
	if got := stringsOf(t, db, "SELECT body FROM notes WHERE org = 'o1' AND id = 7"); got != "note 7" {
		t.Fatalf("notes after rewrap: %s", got)
	}
	// Nothing left to do; All re-wraps everything again.
	if st, err := c.Rewrap(ctx, "users", kmspostgres.RewrapOptions{}); err != nil || st.Rewrapped != 0 {
		t.Fatalf("second run: %+v %v", st, err)
	}
	if st, err := c.Rewrap(ctx, "users", kmspostgres.RewrapOptions{All: true}); err != nil || st.Rewrapped != 50 {
		t.Fatalf("all: %+v %v", st, err)
	}
	if _, err := c.Rewrap(ctx, "nope", kmspostgres.RewrapOptions{}); err == nil {
		t.Fatal("unknown table accepted")
	}
}
