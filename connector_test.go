package kmspostgres

import (
	"errors"
	"testing"
)

func TestNewConnectorRefusesUnknownKeyIDShape(t *testing.T) {
	for _, id := range []string{"foo/bar", "vault/a/b", "arn:aws:kms:eu-west-1:123:thing/x"} {
		t.Run(id, func(t *testing.T) {
			s, err := ParseSchema("m.yaml", []byte("key_id: "+id+"\ntables:\n  users:\n    columns:\n      email: {}\n"))
			if err != nil {
				t.Fatal(err)
			}
			_, err = NewConnector("postgres://localhost/db", WithSchema(s))
			if !errors.Is(err, ErrKeyID) || !errors.Is(err, ErrSchema) {
				t.Fatalf("err = %v, want ErrKeyID and ErrSchema", err)
			}
		})
	}
	s, _ := ParseSchema("m.yaml", []byte("key_id: alias/app\ntables:\n  users:\n    columns:\n      email: {}\n"))
	if _, err := NewConnector("postgres://localhost/db", WithSchema(s)); err != nil {
		t.Fatalf("alias/app refused: %v", err)
	}
}
