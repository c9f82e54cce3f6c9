package integration

import (
	"strings"
	"testing"
)

const usersDDL = `
CREATE TABLE users (
	id bigserial PRIMARY KEY,
	org_id bigint,
	name text,
	email text,
	phone bytea,
	dob text,
	balance text,
	encrypted_kms_key text,
	encrypted_kms_key_phone text
);
CREATE TABLE orgs (id bigint PRIMARY KEY, name text);
`

const usersMap = `
key_id: insecure-test-key
tables:
  users:
    keys:
      kms_key: {}
      kms_key_phone: {}
    columns:
      email: {}
      phone: {key: kms_key_phone}
      dob: {type: date}
      balance: {type: numeric}
`

func TestSmoke(t *testing.T) {
	e := newEnv(t, usersDDL, usersMap)
	e.exec("INSERT INTO users (name, email, phone, dob, balance) VALUES ($1, $2, $3, $4, $5)", "Ada", "ada@example.com", []byte("+44 1234"), "1815-12-10", "1234.50")
	var name, email, dob, bal string
	var phone []byte
	err := e.db.QueryRow("SELECT name, email, phone, dob, balance FROM users WHERE name = $1", "Ada").Scan(&name, &email, &phone, &dob, &bal)
	if err != nil {
		t.Fatal(err)
	}
	if email != "ada@example.com" || string(phone) != "+44 1234" || !strings.HasPrefix(dob, "1815-12-10") || bal != "1234.50" {
		t.Fatalf("got %q %q %q %q", email, phone, dob, bal)
	}
	e.assertNoPlaintext("users", "ada@example.com", "+44 1234", "1234.50", "1815")
	for _, k := range e.rawValues("SELECT encrypted_kms_key FROM users") {
		if !strings.HasPrefix(k, "v1:") {
			t.Fatalf("key column %q", k)
		}
	}
}
