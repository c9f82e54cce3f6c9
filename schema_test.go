package kmspostgres

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/kmspostgres/kmspostgres/envelope"
)

func TestLoadSchemaFull(t *testing.T) {
	t.Setenv("KMSPG_TEST_KEY", "insecure-test-key")
	s, err := LoadSchema("testdata/schema_full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s.KeyID != "insecure-test-key" {
		t.Fatalf("key id %q", s.KeyID)
	}
	u := s.Table("", "USERS")
	if u == nil || s.Table("public", "users") != u {
		t.Fatal("users not found by unqualified or public name")
	}
	if !reflect.DeepEqual(u.PrimaryKey, []string{"id"}) {
		t.Fatalf("pk %v", u.PrimaryKey)
	}
	k := u.Keys["kms_key"]
	if k.Column != "encrypted_kms_key" || k.KeyID != "insecure-test-key" || k.Version != 1 {
		t.Fatalf("kms_key defaults: %+v", k)
	}
	kp := u.Keys["kms_key_phone"]
	if kp.Version != 2 || kp.KeyID != "alias/phone" || kp.PreviousVersions[1].KeyID != "alias/old-phone" {
		t.Fatalf("kms_key_phone: %+v", kp)
	}
	if u.Columns["email"].Key != "kms_key" || u.Columns["email"].Type != envelope.Text {
		t.Fatalf("email: %+v", u.Columns["email"])
	}
	if u.Columns["date_of_birth"].Type != envelope.Date || u.Columns["phone"].Key != "kms_key_phone" {
		t.Fatal("column types or keys wrong")
	}
	inv := s.Table("billing", "invoices")
	if inv == nil || s.Table("", "invoices") != nil {
		t.Fatal("schema-qualified table lookup wrong")
	}
	if !reflect.DeepEqual(inv.PrimaryKey, []string{"org_id", "id"}) {
		t.Fatalf("composite pk %v", inv.PrimaryKey)
	}

	// Default context, and the per-version template.
	id, c, err := u.contextFor(k, 1, []string{"42"})
	if err != nil || id != "insecure-test-key" || !reflect.DeepEqual(c, envelope.Context{"table": "users", "id": "42"}) {
		t.Fatalf("default context: %v %v %v", id, c, err)
	}
	id, c, err = u.contextFor(kp, 2, []string{"42"})
	if err != nil || id != "alias/phone" || !reflect.DeepEqual(c, envelope.Context{"model_name": "User", "model_id": "42"}) {
		t.Fatalf("template context: %v %v %v", id, c, err)
	}
	id, c, err = u.contextFor(kp, 1, []string{"42"})
	if err != nil || id != "alias/old-phone" || c["table"] != "users" {
		t.Fatalf("previous version context: %v %v %v", id, c, err)
	}
	if _, _, err := u.contextFor(kp, 3, []string{"42"}); !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "not active: 3") {
		t.Fatalf("inactive version: %v", err)
	}
	_, c, _ = inv.contextFor(inv.Keys["kms_key"], 1, []string{"7", "9"})
	canon, _ := c.Canonical()
	if string(canon) != `{"id":"9","org_id":"7","table":"billing.invoices"}` {
		t.Fatalf("composite context %s", canon)
	}
}

func TestSchemaKeyIDFromEnv(t *testing.T) {
	t.Setenv("KMS_KEY_ID", "insecure-test-key/encrypt")
	s, err := ParseSchema("s.yaml", []byte("tables: {users: {columns: {email: {}}}}"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Tables["users"].Keys["kms_key"].KeyID != "insecure-test-key/encrypt" {
		t.Fatal("KMS_KEY_ID not used")
	}
	// JSON is YAML.
	if _, err := ParseSchema("s.json", []byte(`{"key_id":"k","tables":{"t":{"columns":{"c":{"type":"bigint"}}}}}`)); err != nil {
		t.Fatal(err)
	}
}

func TestSchemaRejects(t *testing.T) {
	t.Setenv("KMS_KEY_ID", "")
	cases := map[string]string{
		"unknown field":     "key_id: k\ntables: {users: {columns: {email: {tpye: text}}}}",
		"unknown top":       "key_id: k\ntable: {}",
		"unknown type":      "key_id: k\ntables: {users: {columns: {email: {type: money}}}}",
		"missing key":       "key_id: k\ntables: {users: {columns: {email: {key: nope}}}}",
		"empty key id":      "tables: {users: {columns: {email: {}}}}",
		"no columns":        "key_id: k\ntables: {users: {}}",
		"no tables":         "key_id: k",
		"encrypted pk":      "key_id: k\ntables: {users: {columns: {id: {}}}}",
		"template non-pk":   "key_id: k\ntables: {users: {keys: {kms_key: {context: {e: '{email}'}}}, columns: {email: {}}}}",
		"prev template":     "key_id: k\ntables: {users: {keys: {kms_key: {version: 2, previous_versions: {1: {context: {e: '{x}'}}}}}, columns: {email: {}}}}",
		"prev is current":   "key_id: k\ntables: {users: {keys: {kms_key: {version: 2, previous_versions: {2: {}}}}, columns: {email: {}}}}",
		"bad version":       "key_id: k\ntables: {users: {keys: {kms_key: {version: -1}}, columns: {email: {}}}}",
		"shared key column": "key_id: k\ntables: {users: {keys: {a: {column: kc}, b: {column: kc}}, columns: {email: {key: a}}}}",
		"column is key col": "key_id: k\ntables: {users: {columns: {encrypted_kms_key: {}}}}",
		"bad ident":         "key_id: k\ntables: {\"us ers\": {columns: {email: {}}}}",
		"unbalanced brace":  "key_id: k\ntables: {users: {keys: {kms_key: {context: {e: '{id'}}}, columns: {email: {}}}}",
		"three-part name":   "key_id: k\ntables: {a.b.c: {columns: {email: {}}}}",
		"bad primary key":   "key_id: k\ntables: {users: {primary_key: {a: 1}, columns: {email: {}}}}",
	}
	for name, doc := range cases {
		_, err := ParseSchema("svc.yaml", []byte(doc))
		if !errors.Is(err, ErrSchema) {
			t.Errorf("%s: err = %v, want ErrSchema", name, err)
			continue
		}
		if !strings.Contains(err.Error(), "svc.yaml") {
			t.Errorf("%s: error does not name the file: %v", name, err)
		}
	}
	_, err := ParseSchema("svc.yaml", []byte("key_id: k\ntables: {users: {columns: {email: {key: nope}}}}"))
	if !strings.Contains(err.Error(), "users") || !strings.Contains(err.Error(), "email") {
		t.Errorf("error does not name table and column: %v", err)
	}
}

func TestSchemaBuiltInGo(t *testing.T) {
	s := &Schema{KeyID: "insecure-test-key", Tables: map[string]*Table{
		"patients": {Columns: map[string]*Column{"name": {}, "dob": {Type: envelope.Date}}},
	}}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	p := s.Table("", "patients")
	if p.Keys["kms_key"].Column != "encrypted_kms_key" || p.Columns["dob"].Type != envelope.Date || p.Columns["name"].Type != envelope.Text {
		t.Fatalf("defaults not filled: %+v", p)
	}
}
