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

func TestSchemaMessages(t *testing.T) {
	t.Setenv("KMS_KEY_ID", "")
	cases := []struct{ name, doc, want string }{
		{"table field", "key_id: k\ntables:\n  users:\n    colums:\n      email: {}\n",
			"svc.yaml: line 4: unknown field colums in table users; valid fields: primary_key, keys, columns, migrating"},
		{"top field", "key_id: k\ntable: {}\n",
			"svc.yaml: line 2: unknown field table at the top level; valid fields: key_id, cache, blind_index_master_key, tables"},
		{"column field", "key_id: k\ntables: {users: {columns: {email: {tpye: text}}}}",
			"line 2: unknown field tpye in table users, column email; valid fields: key, type"},
		{"key field", "key_id: k\ntables:\n  users:\n    keys:\n      kms_key: {verison: 2}\n    columns: {email: {}}\n",
			"line 5: unknown field verison in table users, key kms_key; valid fields: column, key_id, version, context, previous_versions"},
		{"previous version field", "key_id: k\ntables: {users: {keys: {kms_key: {version: 2, previous_versions: {1: {keyid: a}}}}, columns: {email: {}}}}",
			"unknown field keyid in table users, key kms_key, previous version 1; valid fields: key_id, context"},
		{"empty", "", "svc.yaml: the file is empty"},
		{"only comments", "# nothing yet\n", "svc.yaml: the file is empty"},
		{"null document", "---\n", "svc.yaml: the file is empty"},
		{"no tables", "key_id: k\n", "svc.yaml: no tables; list the encrypted tables in a tables: section"},
		{"empty tables", "key_id: k\ntables: {}\n", "no tables"},
		{"table not a mapping", "key_id: k\ntables:\n  users: [email]\n", "line 3: table users must be a mapping of fields (primary_key, keys, columns, migrating)"},
		{"tables not a mapping", "key_id: k\ntables: [users]\n", "line 2: tables must be a mapping of names"},
		{"not a number", "key_id: k\ntables: {users: {keys: {kms_key: {version: two}}, columns: {email: {}}}}", "into int"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSchema("svc.yaml", []byte(tc.doc))
			if !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v\nwant it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "kmspostgres.yaml") || strings.Contains(err.Error(), "EOF") {
				t.Fatalf("internal names in %v", err)
			}
		})
	}
	// Anchors and merge keys still work.
	doc := "key_id: k\ndefaults: &col {type: text}\ntables:\n  users:\n    columns:\n      email: *col\n      phone: {<<: *col}\n"
	if _, err := ParseSchema("svc.yaml", []byte(doc)); err == nil || !strings.Contains(err.Error(), "unknown field defaults") {
		t.Fatalf("anchor at the top: %v", err)
	}
	doc = "key_id: k\ntables:\n  users:\n    columns:\n      email: &col {type: date}\n      phone: {<<: *col}\n      fax: *col\n"
	if s, err := ParseSchema("svc.yaml", []byte(doc)); err != nil || s.Tables["users"].Columns["phone"].Type != envelope.Date {
		t.Fatalf("merge key: %v", err)
	}
}

func TestSchemaCache(t *testing.T) {
	s, err := ParseSchema("m.yaml", []byte("key_id: insecure-test-key\ncache:\n  max_age: 5m\n  max_uses: 100000\n  max_keys: 50000\ntables:\n  users:\n    columns:\n      email: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Cache == nil || s.Cache.MaxAge.Minutes() != 5 || s.Cache.MaxUses != 100000 || s.Cache.MaxKeys != 50000 {
		t.Fatalf("cache %+v", s.Cache)
	}
	for _, bad := range []string{"cache:\n  max_uses: 5\n", "cache:\n  max_age: soon\n", "cache:\n  max_age: 5m\n  max_size: 1\n"} {
		if _, err := ParseSchema("m.yaml", []byte("key_id: insecure-test-key\n"+bad+"tables:\n  users:\n    columns:\n      email: {}\n")); !errors.Is(err, ErrSchema) {
			t.Errorf("%q: err = %v, want ErrSchema", bad, err)
		}
	}
}

func TestSchemaMigrating(t *testing.T) {
	s, err := ParseSchema("m.yaml", []byte("key_id: insecure-test-key\ntables:\n  users:\n    migrating: true\n    columns: {email: {}}\n  orders:\n    columns: {note: {}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !s.Tables["users"].Migrating || s.Tables["orders"].Migrating {
		t.Fatalf("migrating: users %v, orders %v", s.Tables["users"].Migrating, s.Tables["orders"].Migrating)
	}
	_, err = ParseSchema("m.yaml", []byte("key_id: insecure-test-key\ntables:\n  users:\n    migrating: yes please\n    columns: {email: {}}\n"))
	if err == nil {
		t.Fatal("migrating: a string was accepted")
	}
}
