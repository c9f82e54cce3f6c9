package rewrite

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files")

// testCatalog is the rewriter's view of a fixed schema: users and notes are
// encrypted, orgs is plain, users_view exposes users.email.
type testCatalog struct{}

var (
	users = &Table{
		Name: "users", Schema: "public", Relname: "users", PrimaryKey: []string{"id"},
		Columns:   []string{"id", "org_id", "name", "email", "phone", "encrypted_kms_key", "encrypted_kms_key_phone"},
		Encrypted: map[string]EncColumn{"email": {Key: 0}, "phone": {Key: 1, Bytea: true}},
		Keys: []Key{{Name: "kms_key", Column: "encrypted_kms_key", Columns: []string{"email"}},
			{Name: "kms_key_phone", Column: "encrypted_kms_key_phone", Columns: []string{"phone"}}},
		PKGen: PKSequence, Sequence: "public.users_id_seq",
	}
	notes = &Table{
		Name: "notes", Schema: "public", Relname: "notes", PrimaryKey: []string{"org_id", "id"},
		Columns:   []string{"org_id", "id", "user_id", "body", "dob", "encrypted_kms_key"},
		Encrypted: map[string]EncColumn{"body": {Key: 0}, "dob": {Key: 0}},
		Keys:      []Key{{Name: "kms_key", Column: "encrypted_kms_key", Columns: []string{"body", "dob"}}},
	}
	// usersPart is a partition of users: encrypted and decrypted as users
	// (same Name, so the same context and cell binding), under its own
	// relation name; the catalog also knows it schema-qualified.
	usersPart = func() *Table { t := *users; t.Relname = "users_2026"; return &t }()
	plain     = map[string][]string{"orgs": {"id", "name"}, "users_view": {"id", "email"}, "users_view2": {"id", "contact"}}
)

func (testCatalog) Encrypted(schema, name string) (*Table, error) {
	if schema != "" && schema != "public" {
		return nil, nil
	}
	switch name {
	case "users":
		return users, nil
	case "users_2026":
		return usersPart, nil
	case "notes":
		return notes, nil
	}
	return nil, nil
}

func (testCatalog) Columns(schema, name string) ([]string, error) {
	if t, _ := (testCatalog{}).Encrypted(schema, name); t != nil {
		return t.Columns, nil
	}
	return plain[name], nil
}

func (testCatalog) ProtectedView(schema, name string) (string, error) {
	if name == "users_view" || name == "users_view2" { // users_view2: a view over users_view
		return "users.email", nil
	}
	return "", nil
}

func describe(p *Plan) string {
	var b strings.Builder
	if p.Passthrough {
		b.WriteString("passthrough")
		if p.Invalidates {
			b.WriteString(" invalidates")
		}
		return b.String()
	}
	fmt.Fprintf(&b, "sql: %s\nargs: %v", p.SQL, p.Args)
	if o := p.Out; o != nil {
		fmt.Fprintf(&b, "\nout: visible=%d names=%v", o.Visible, o.Names)
		for i, c := range o.Cols {
			if c.Table != nil {
				fmt.Fprintf(&b, " [%d]=%s.%s@src%d", i, c.Table.Name, c.Column, c.Source)
			}
		}
		for i, s := range o.Sources {
			fmt.Fprintf(&b, "\nsrc%d: %s key %s at %d pk at %v", i, s.Table.Name, s.Table.Keys[s.Key].Name, s.KeyAt, s.PKAt)
		}
	}
	if ip := p.Insert; ip != nil {
		fmt.Fprintf(&b, "\ninsert: slots=%d overriding=%v", ip.Slots, ip.OverridingSystem)
		for _, r := range ip.Rows {
			fmt.Fprintf(&b, "\n  row pk=%v pkslot=%v keyslot=%v cells=%v", r.PK, r.PKSlot, r.KeySlot, r.Cells)
		}
	}
	if up := p.Update; up != nil {
		fmt.Fprintf(&b, "\nupdate: select=%s\n  lock=%s\n  selargs=%v keys=%v cells=%v slots=%d", up.SelectSQL, up.LockSQL, up.SelectArgs, up.Keys, up.Cells, up.Slots)
	}
	return b.String()
}

var cases = []string{
	// Plain statements pass through untouched.
	"SELECT 1",
	"SELECT * FROM orgs WHERE id = $1",
	"CREATE TABLE t (id int)",
	"SELECT email FROM orgs_archive",
	// SELECT shapes.
	"SELECT id, email FROM users WHERE id = $1",
	"SELECT * FROM users",
	"SELECT u.* FROM users u",
	"SELECT u.email AS e, o.name FROM users u JOIN orgs o ON o.id = u.org_id ORDER BY o.name LIMIT $1 OFFSET $2",
	"SELECT a.email, b.email FROM users a JOIN users b ON a.org_id = b.org_id",
	"SELECT u.email, n.body, n.dob FROM users u JOIN notes n ON n.user_id = u.id",
	"SELECT x.e FROM (SELECT email AS e FROM users) x",
	"SELECT * FROM (SELECT id, email FROM users) x",
	"WITH c AS (SELECT id, email FROM users) SELECT c.email FROM c WHERE c.id > 3",
	"SELECT email FROM users UNION ALL SELECT email FROM users WHERE id = 1",
	"SELECT id FROM users WHERE email IS NOT NULL",
	"SELECT email IS NULL AS missing FROM users",
	"SELECT id FROM users WHERE EXISTS (SELECT 1 FROM notes WHERE notes.user_id = users.id)",
	"SELECT id, name FROM users WHERE id = ANY($1::bigint[])",
	"SELECT count(*) FROM users",
	"SELECT phone FROM users",
	// Refusals.
	"SELECT id FROM users WHERE email = $1",
	"SELECT id FROM users ORDER BY email",
	"SELECT email FROM users ORDER BY 1",
	"SELECT email, count(*) FROM users GROUP BY email",
	"SELECT DISTINCT email FROM users",
	"SELECT lower(email) FROM users",
	"SELECT email || 'x' FROM users",
	"SELECT email::text FROM users",
	"SELECT max(email) FROM users",
	"SELECT u.id FROM users u JOIN notes n ON n.body = u.email",
	"SELECT id FROM orgs WHERE name IN (SELECT email FROM users)",
	"SELECT (SELECT email FROM users LIMIT 1)",
	"SELECT email FROM users UNION SELECT email FROM users",
	"SELECT email FROM users UNION ALL SELECT name FROM users",
	"SELECT u FROM users u",
	"SELECT row_to_json(u.*) FROM users u",
	"SELECT * FROM users_view",
	"COPY users TO STDOUT",
	"SELECT 1; SELECT email FROM users",
	"ALTER TABLE users ADD COLUMN nickname text; CREATE INDEX ON users (org_id); COMMENT ON TABLE users IS 'x'",
	"ALTER TABLE users ADD COLUMN nickname text; INSERT INTO users (email) VALUES ('x')",
	"SELECT email INTO t2 FROM users",
	"EXPLAIN ANALYZE INSERT INTO users (email) VALUES ('x')",
	// INSERT.
	"INSERT INTO users (name, email) VALUES ($1, $2)",
	"INSERT INTO users (name, email, phone) VALUES ($1, $2, $3), ('b', 'b@x', NULL) RETURNING id, email",
	"INSERT INTO users (id, name, email) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, name = EXCLUDED.name",
	"INSERT INTO users (id, email) VALUES ($1, $2) ON CONFLICT DO NOTHING",
	"INSERT INTO users (name) VALUES ($1) RETURNING *",
	"INSERT INTO notes (org_id, id, body, dob) VALUES ($1, $2, $3, $4::date)",
	"INSERT INTO users (id, name, email) VALUES (DEFAULT, 'n', 'e')",
	"INSERT INTO users VALUES ($1, $2, $3, $4)",
	"INSERT INTO users (name, email) VALUES ($1, lower($2))",
	"INSERT INTO users (name, email) SELECT name, email FROM users",
	"INSERT INTO orgs (name) SELECT email FROM users",
	"INSERT INTO notes (body) VALUES ($1)",
	"INSERT INTO users (name, email, encrypted_kms_key) VALUES ($1, $2, $3)",
	"INSERT INTO users (id, name, email) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET email = EXCLUDED.email",
	"INSERT INTO users (id, name, email) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET email = 'x'",
	"INSERT INTO users (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name WHERE users.email IS NULL",
	// UPDATE.
	"UPDATE users SET email = $1, name = $2 WHERE id = $3",
	"UPDATE users u SET email = $2 WHERE u.org_id = $1 RETURNING u.id, u.email",
	"UPDATE notes SET body = $1 WHERE user_id = $2",
	"UPDATE notes SET body = $1, dob = NULL WHERE user_id = $2",
	"UPDATE users SET name = $1 WHERE id = $2 RETURNING email",
	"UPDATE users SET email = email WHERE id = 1",
	"UPDATE users SET id = 5 WHERE id = 1",
	"UPDATE users SET encrypted_kms_key = NULL WHERE id = 1",
	"UPDATE users SET email = $1 FROM orgs WHERE orgs.id = users.org_id",
	"UPDATE users SET name = 'x' WHERE email = 'y'",
	// DELETE.
	"DELETE FROM users WHERE id = $1 RETURNING email, name",
	"DELETE FROM users WHERE id = $1",
	"DELETE FROM users WHERE email = $1",
	// Default deny: statement kinds the driver does not plan.
	"MERGE INTO users u USING orgs o ON u.id = o.id WHEN NOT MATCHED THEN INSERT (id, email) VALUES (o.id, $1)",
	"MERGE INTO orgs o USING orgs p ON o.id = p.id WHEN MATCHED THEN UPDATE SET name = p.name",
	"DO $$ BEGIN INSERT INTO users (id, email) VALUES (1, 'x'); END $$",
	"SELECT 1; DO $$ BEGIN NULL; END $$",
	"CALL refresh_users()",
	"EXECUTE p(1)",
	"FETCH 10 FROM c",
	// Settings that change how the server reads SQL.
	"SET standard_conforming_strings = off",
	"SET standard_conforming_strings TO on",
	"SELECT set_config('standard_conforming_strings', 'off', false)",
	"SELECT set_config($1, 'off', false)",
	"SET client_encoding = 'SJIS'",
	"SET search_path = app, public",
	"SELECT set_config('search_path', 'billing', true)",
	// Grouping constructs by position.
	"SELECT email FROM users GROUP BY GROUPING SETS ((1))",
	"SELECT email FROM users GROUP BY ROLLUP (1)",
	"SELECT email, count(*) FROM users GROUP BY CUBE (email)",
	"SELECT id FROM orgs WHERE EXISTS (SELECT email FROM users GROUP BY GROUPING SETS ((1)))",
	// RETURNING over FROM and USING items.
	"UPDATE orgs SET name = 'x' FROM users u WHERE u.org_id = orgs.id RETURNING u.email",
	"DELETE FROM orgs USING users u WHERE u.org_id = orgs.id RETURNING u.email",
	"DELETE FROM orgs USING users u WHERE u.org_id = orgs.id RETURNING *",
}

func TestRewriteGolden(t *testing.T) {
	var b strings.Builder
	for _, sql := range cases {
		p, err := Rewrite(sql, testCatalog{})
		fmt.Fprintf(&b, "== %s\n", sql)
		if err != nil {
			fmt.Fprintf(&b, "error: %v (unsupported=%v)\n\n", err, errors.Is(err, ErrUnsupported))
			continue
		}
		b.WriteString(describe(p) + "\n\n")
	}
	checkGolden(t, "rewrite.golden", b.String())
}

// checkGolden compares got with testdata/name, or writes it there with
// -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(strings.Split(string(want), "\n"), strings.Split(got, "\n")); diff != "" {
		t.Fatalf("rewrite output differs (-want +got):\n%s\nrun go test ./rewrite -update and review the diff", diff)
	}
}
