package integration

import (
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/kmspostgres/kmspostgres"
	_ "github.com/kmspostgres/kmspostgres/sqlxbind"
)

const membersDDL = `CREATE TABLE members (
	id bigserial PRIMARY KEY,
	team text NOT NULL,
	name text NOT NULL,
	email text,
	dob text,
	score text,
	encrypted_kms_key text)`

const membersMap = `key_id: insecure-test-key
tables:
  members:
    columns:
      name: {}
      email: {}
      dob: {type: date}
      score: {type: numeric}
`

type member struct {
	ID    int64          `db:"id"`
	Team  string         `db:"team"`
	Name  string         `db:"name"`
	Email *string        `db:"email"`
	DOB   sql.NullTime   `db:"dob"`
	Score sql.NullString `db:"score"`
}

func TestSqlx(t *testing.T) {
	e := newEnv(t, membersDDL, membersMap)
	if got := sqlx.BindType(kmspostgres.DriverName); got != sqlx.DOLLAR {
		t.Fatalf("bind type %d: sqlxbind did not register the driver", got)
	}
	db, err := sqlx.Open("kmspostgres", e.dsn())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	t.Setenv("KMS_KEY_ID", "insecure-test-key")

	// NamedExec with a struct and with a map.
	email := "ada@example.com"
	ada := member{Team: "red", Name: "Ada", Email: &email, DOB: sql.NullTime{Time: time.Date(1815, 12, 10, 0, 0, 0, 0, time.UTC), Valid: true}, Score: sql.NullString{String: "99.5", Valid: true}}
	if _, err := db.NamedExec(`INSERT INTO members (team, name, email, dob, score) VALUES (:team, :name, :email, :dob, :score)`, ada); err != nil {
		t.Fatal(err)
	}
	if _, err := db.NamedExec(`INSERT INTO members (team, name, email, dob, score) VALUES (:team, :name, :email, :dob, :score)`,
		map[string]any{"team": "red", "name": "Bob", "email": nil, "dob": nil, "score": nil}); err != nil {
		t.Fatal(err)
	}
	// Batch NamedExec with a slice of structs.
	batch := []member{{Team: "blue", Name: "Cy"}, {Team: "blue", Name: "Di"}}
	if _, err := db.NamedExec(`INSERT INTO members (team, name) VALUES (:team, :name)`, batch); err != nil {
		t.Fatal(err)
	}
	e.assertNoPlaintext("members", "Ada", "ada@example.com", "99.5", "1815")

	// Get and Select into structs; encrypted NULLs into pointers and sql.Null*.
	// SELECT * fits the struct: the driver leaves its key column out of *.
	var got member
	if err := db.Get(&got, "SELECT * FROM members WHERE id = $1", 1); err != nil {
		t.Fatal(err)
	}
	if got.Name != "Ada" || got.Email == nil || *got.Email != email || !got.DOB.Valid || got.DOB.Time.Year() != 1815 || got.Score.String != "99.5" {
		t.Fatalf("Get: %+v", got)
	}
	var reds []member
	if err := db.Select(&reds, "SELECT id, team, name, email, dob, score FROM members WHERE team = $1 ORDER BY id", "red"); err != nil {
		t.Fatal(err)
	}
	if len(reds) != 2 || reds[1].Name != "Bob" || reds[1].Email != nil || reds[1].DOB.Valid || reds[1].Score.Valid {
		t.Fatalf("Select: %+v", reds)
	}

	// NamedQuery with a map.
	rows, err := db.NamedQuery(`SELECT id, team, name, email, dob, score FROM members WHERE team = :team ORDER BY id`, map[string]any{"team": "blue"})
	if err != nil {
		t.Fatal(err)
	}
	var blues []string
	for rows.Next() {
		var m member
		if err := rows.StructScan(&m); err != nil {
			t.Fatal(err)
		}
		blues = append(blues, m.Name)
	}
	rows.Close()
	if strings.Join(blues, ",") != "Cy,Di" {
		t.Fatalf("NamedQuery: %v", blues)
	}

	// sqlx.In with Rebind on a plain column.
	q, args, err := sqlx.In("SELECT name FROM members WHERE id IN (?) ORDER BY id", []int64{1, 3})
	if err != nil {
		t.Fatal(err)
	}
	q = db.Rebind(q)
	if !strings.Contains(q, "$2") {
		t.Fatalf("Rebind kept placeholders: %s", q)
	}
	var names []string
	if err := db.Select(&names, q, args...); err != nil || strings.Join(names, ",") != "Ada,Cy" {
		t.Fatalf("In: %v %v", names, err)
	}

	// MustBegin, Tx and Preparex.
	tx := db.MustBegin()
	tx.MustExec("UPDATE members SET email = $1 WHERE name IS NOT NULL AND id = $2", "bob@example.com", 2)
	st, err := tx.Preparex("SELECT email FROM members WHERE id = $1")
	if err != nil {
		t.Fatal(err)
	}
	var em sql.NullString
	if err := st.Get(&em, 2); err != nil || em.String != "bob@example.com" {
		t.Fatalf("Preparex in tx: %v %v", em, err)
	}
	st.Close()
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := db.Get(&em, "SELECT email FROM members WHERE id = 2"); err != nil || em.Valid {
		t.Fatalf("after rollback: %v %v", em, err)
	}
	tx = db.MustBegin()
	tx.MustExec("UPDATE members SET email = $1 WHERE id = $2", "bob@example.com", 2)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := db.Get(&em, "SELECT email FROM members WHERE id = 2"); err != nil || em.String != "bob@example.com" {
		t.Fatalf("after commit: %v %v", em, err)
	}

	// The refusal reaches sqlx callers as is.
	err = db.Get(&got, "SELECT id, team, name, email, dob, score FROM members WHERE email = $1", email)
	mustErrIs(t, err, kmspostgres.ErrUnsupported)
}
