package integration

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kmspostgres/kmspostgres"
)

// Code written for pgx's stdlib.OpenDB and RegisterConnConfig switches to
// kmspostgres.OpenDB and kmspostgres.RegisterConnConfig; the connection
// behind sql.Conn.Raw is reached through an interface, not *stdlib.Conn.
func TestOpenDBAndRegisteredConfig(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap)
	cfg, err := pgx.ParseConfig(e.base)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("KMSPOSTGRES_SCHEMA", e.schema)
	db, err := kmspostgres.OpenDB(*cfg, kmspostgres.WithProvider(e.kms))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("INSERT INTO users (id, name, email) VALUES (1, 'a', 'a@x')"); err != nil {
		t.Fatal(err)
	}
	e.assertNoPlaintext("users", "a@x")

	name := kmspostgres.RegisterConnConfig(cfg, kmspostgres.WithProvider(e.kms))
	defer kmspostgres.UnregisterConnConfig(name)
	db2, err := sql.Open("kmspostgres", name)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if got := stringsOf(t, db2, "SELECT email FROM users"); got != "a@x" {
		t.Fatalf("through a registered config: %s", got)
	}

	conn, err := db2.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	err = conn.Raw(func(dc any) error {
		pc := dc.(interface{ Conn() *pgx.Conn }).Conn()
		var stored string
		if err := pc.QueryRow(context.Background(), "SELECT email FROM users").Scan(&stored); err != nil {
			return err
		}
		if stored == "a@x" {
			t.Fatal("the raw connection should see ciphertext")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Code written for stdlib.OpenDBFromPool switches to
// kmspostgres.OpenDBFromPool: database/sql over a pgxpool, encrypted.
func TestOpenDBFromPool(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap)
	pool, err := pgxpool.New(context.Background(), e.base)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	t.Setenv("KMSPOSTGRES_SCHEMA", e.schema)
	db, err := kmspostgres.OpenDBFromPool(pool, kmspostgres.WithProvider(e.kms))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("INSERT INTO users (id, name, email) VALUES (7, 'p', 'pooled@x')"); err != nil {
		t.Fatal(err)
	}
	e.assertNoPlaintext("users", "pooled@x")
	if got := stringsOf(t, db, "SELECT email FROM users WHERE id = 7"); got != "pooled@x" {
		t.Fatalf("read %q", got)
	}
	if _, err := db.Query("SELECT id FROM users WHERE email = 'pooled@x'"); !errors.Is(err, kmspostgres.ErrUnsupported) {
		t.Fatalf("filter on an encrypted column: %v", err)
	}
	db.Close()
	if st := pool.Stat(); st.AcquiredConns() != 0 {
		t.Fatalf("%d pool connections still held after db.Close", st.AcquiredConns())
	}
}
