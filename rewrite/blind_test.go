package rewrite

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
)

// blindCatalog is testCatalog with blind indexes on users.email (text)
// and users.phone (bytea, under its own key).
type blindCatalog struct{ testCatalog }

var busers = &Table{
	Name: "users", Schema: "public", Relname: "users", PrimaryKey: []string{"id"},
	Columns:   []string{"id", "org_id", "name", "email", "phone", "encrypted_kms_key", "encrypted_kms_key_phone", "email_bidx", "phone_bidx"},
	Encrypted: map[string]EncColumn{"email": {Key: 0}, "phone": {Key: 1, Bytea: true}},
	Keys: []Key{{Name: "kms_key", Column: "encrypted_kms_key", Columns: []string{"email"}},
		{Name: "kms_key_phone", Column: "encrypted_kms_key_phone", Columns: []string{"phone"}}},
	Blind: map[string]BlindIndex{"email": {Column: "email_bidx"}, "phone": {Column: "phone_bidx", Bytea: true}},
	PKGen: PKSequence, Sequence: "public.users_id_seq",
}

func (blindCatalog) Encrypted(schema, name string) (*Table, error) {
	if name == "users" && (schema == "" || schema == "public") {
		return busers, nil
	}
	return testCatalog{}.Encrypted(schema, name)
}

func (blindCatalog) Columns(schema, name string) ([]string, error) {
	if name == "users" {
		return busers.Columns, nil
	}
	return testCatalog{}.Columns(schema, name)
}

func describeBlind(p *Plan) string {
	s := describe(p)
	if p.Passthrough {
		return s
	}
	var b strings.Builder
	b.WriteString(s)
	for i, l := range p.Lookups {
		if l.Verified != 0 {
			fmt.Fprintf(&b, "\nlookup L%d: verified %d", i+1, l.Verified)
			continue
		}
		fmt.Fprintf(&b, "\nlookup L%d: %s.%s value=%v array=%v", i+1, l.Table.Name, l.Column, l.Value, l.Array)
	}
	for _, pc := range p.Prechecks {
		fmt.Fprintf(&b, "\nprecheck %s.%s lookups=%v: %s", pc.Table.Name, pc.Column, pc.Lookups, pc.SelectSQL)
	}
	if p.Out != nil {
		for _, c := range p.Out.Checks {
			fmt.Fprintf(&b, "\ncheck: %s.%s at %d src%d lookups=%v", c.Table.Name, c.Column, c.At, c.Source, c.Lookups)
			describeCheckTail(&b, c)
		}
	}
	if p.Insert != nil {
		for _, r := range p.Insert.Rows {
			fmt.Fprintf(&b, "\n  row indexes=%v", r.Indexes)
		}
		for _, cc := range p.Insert.ConflictChecks {
			fmt.Fprintf(&b, "\n  conflict check %s: %s", cc.Column, cc.SelectSQL)
		}
	}
	if v := p.Verify; v != nil {
		fmt.Fprintf(&b, "\nverify: %s\n  selargs=%v slots=%d", v.SelectSQL, v.SelectArgs, v.Slots)
		for _, c := range v.Checks {
			fmt.Fprintf(&b, "\n  verify check: %s.%s at %d key %d lookups=%v", c.Table.Name, c.Column, c.At, c.Source, c.Lookups)
			describeCheckTail(&b, c)
		}
	}
	if p.Update != nil {
		fmt.Fprintf(&b, "\n  update indexes=%v", p.Update.Indexes)
		for _, c := range p.Update.Checks {
			fmt.Fprintf(&b, "\n  update check: %s.%s at %d key %d lookups=%v", c.Table.Name, c.Column, c.At, c.Source, c.Lookups)
			describeCheckTail(&b, c)
		}
	}
	return b.String()
}

// describeCheckTail prints what a check has beyond its cell: the pair's
// cell and the server's condition.
func describeCheckTail(b *strings.Builder, c Check) {
	if c.Visible {
		b.WriteString(" visible")
	}
	if c.Pair {
		fmt.Fprintf(b, " pair %s.%s at %d src%d", c.PairTable.Name, c.PairColumn, c.PairAt, c.PairSource)
	}
	if c.Cond {
		fmt.Fprintf(b, " cond at %d negated=%v null=%v", c.CondAt, c.Negated, c.NullOperand)
	}
}

var blindCases = []string{
	// Reads.
	"SELECT id FROM users WHERE email = $1",
	"SELECT id, email FROM users WHERE email = $1",
	"SELECT * FROM users WHERE $1 = email AND org_id = $2",
	"SELECT id FROM users WHERE email = 'a@x' OR email = $1",
	"SELECT id FROM users WHERE (email = $1 OR email IN ($2, $3)) AND org_id = $4",
	"SELECT id FROM users WHERE email = $1 OR phone = $2",
	"SELECT id FROM users WHERE email = $1 OR org_id = $2",
	"SELECT id, name FROM users u WHERE u.email IN ($1, 'b@x', NULL)",
	"SELECT id FROM users WHERE email = ANY($1)",
	"SELECT id FROM users WHERE email = ANY($1::text[])",
	"SELECT id FROM users WHERE email <> $1",
	"SELECT id FROM users WHERE email NOT IN ($1, $2)",
	"SELECT id FROM users WHERE email <> ALL($1)",
	"SELECT id FROM users WHERE email IS NULL",
	"SELECT id FROM users WHERE phone = $1 AND email = $2",
	"SELECT count(*) FROM users WHERE email = $1",
	"INSERT INTO orgs (id) SELECT org_id FROM users WHERE email = $1",
	"SELECT u.id FROM users u CROSS JOIN LATERAL generate_series(1, (u.email = $1)::int) g",
	"SELECT id FROM orgs WHERE id IN (SELECT org_id FROM users WHERE email = $1)",
	"WITH u AS (SELECT id, email FROM users WHERE email = $1) SELECT id, email FROM u",
	"SELECT o.name, u.email FROM orgs o JOIN users u ON u.org_id = o.id AND u.email = $1",
	"SELECT id FROM users WHERE email = $1::text",
	// Refusals: what a blind index cannot do.
	"SELECT id FROM users WHERE email LIKE $1",
	"SELECT id FROM users WHERE email > $1",
	"SELECT id FROM users WHERE email BETWEEN $1 AND $2",
	"SELECT id FROM users ORDER BY email",
	"SELECT id FROM users WHERE lower(email) = $1",
	"SELECT id FROM users WHERE email = name",
	"SELECT a.id FROM users a JOIN users b ON a.email = b.email",
	"SELECT a.id, b.id FROM users a LEFT JOIN users b ON a.email = b.email OR b.email = $1 WHERE a.id = 1",
	"SELECT a.id FROM users a, users b WHERE a.email <> b.email",
	"SELECT id, email, (SELECT count(*) FROM orgs o WHERE o.id = users.org_id) FROM users WHERE email = $1",
	"SELECT id, lower(name), (email = $1) AS is_it FROM users ORDER BY (email = $2) DESC LIMIT 1",
	"SELECT count(*) FROM users WHERE email = $1",
	"SELECT a.id FROM users a WHERE EXISTS (SELECT 1 FROM users b WHERE a.email = b.email AND b.id <> a.id)",
	"SELECT id FROM users WHERE email = ANY('{a,b}')",
	"WITH u AS (SELECT id, email FROM users) SELECT id FROM u WHERE email = $1",
	"SELECT id FROM users WHERE email_bidx = $1",
	// Outside the rows the driver reads: prechecked, or refused.
	"SELECT id, email FROM users WHERE id IN (SELECT id FROM users WHERE email = $1)",
	"SELECT EXISTS (SELECT 1 FROM users WHERE email = $1) AS taken",
	"SELECT id FROM orgs WHERE id = (SELECT org_id FROM users u WHERE u.email = ANY($1))",
	"SELECT id FROM orgs WHERE id IN (SELECT org_id FROM users WHERE email = $1 UNION SELECT org_id FROM users WHERE phone IN ($2, $3))",
	"SELECT DISTINCT org_id FROM users WHERE email = $1 OR phone = $2",
	"SELECT id, email FROM users WHERE id NOT IN (SELECT id FROM users WHERE email = $1)",
	"SELECT id FROM orgs WHERE NOT EXISTS (SELECT 1 FROM users WHERE users.org_id = orgs.id AND email = $1)",
	"SELECT id FROM orgs WHERE id IN (SELECT org_id FROM users WHERE email <> $1)",
	"WITH u AS (SELECT id FROM users WHERE email = $1) SELECT id, email FROM users WHERE id NOT IN (SELECT id FROM u)",
	"WITH u AS (SELECT id FROM users WHERE email = $1) SELECT id, email FROM users WHERE id IN (SELECT id FROM u)",
	"SELECT org_id FROM users WHERE email = $1 EXCEPT SELECT org_id FROM users WHERE phone = $2",
	"SELECT id FROM orgs WHERE id IN (SELECT org_id FROM users WHERE (email = $1) IS NOT TRUE)",
	"SELECT id FROM orgs o WHERE EXISTS (SELECT 1 FROM orgs p LEFT JOIN users u ON u.org_id = p.id AND u.email = $1 WHERE p.id = o.id)",
	"SELECT count(*) FILTER (WHERE email = $1) FROM users",
	"SELECT id, email FROM users WHERE email = $1 UNION ALL SELECT id, email FROM users WHERE email = $2",
	"DELETE FROM orgs WHERE id IN (SELECT org_id FROM users WHERE email = $1)",
	"UPDATE orgs SET name = $1 FROM users WHERE users.org_id = orgs.id AND users.email = $2",
	"UPDATE users SET name = CASE WHEN email = $1 THEN 'x' ELSE name END WHERE id = $2",
	"DELETE FROM users WHERE id = $1 RETURNING (email = $2) AS was",
	"UPDATE users SET name = $1 WHERE org_id IN (SELECT org_id FROM users u2 WHERE u2.email = $2)",
	"UPDATE users SET email = $1 WHERE id = (SELECT id FROM users u2 WHERE u2.email = $2)",
	"INSERT INTO users (id, name, email) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name WHERE users.email = $4",
	"INSERT INTO users (id, name, email) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name WHERE excluded.email = $4",
	"INSERT INTO orgs (id, name) VALUES ((SELECT org_id FROM users WHERE email = $1), $2)",
	"INSERT INTO orgs (id, name) SELECT $2, 'new' WHERE (SELECT count(*) FROM users WHERE email = $1) = 0",
	"SELECT id FROM orgs WHERE id IN (SELECT org_id FROM users WHERE email = $1 GROUP BY org_id HAVING count(*) < 2)",
	"SELECT org_id, count(*) FROM users WHERE email = $1 GROUP BY org_id",
	"SELECT o.id FROM orgs o LEFT JOIN users u ON u.org_id = o.id AND u.email = $1 WHERE u.id IS NULL",
	"SELECT o.id FROM orgs o LEFT JOIN users u ON u.org_id = o.id AND u.email = $1 ORDER BY u.id NULLS FIRST LIMIT 1",
	"SELECT o.id, coalesce(u.name, '-') FROM orgs o LEFT JOIN users u ON u.org_id = o.id AND u.email = $1",
	"SELECT 'free' FROM users WHERE email = $1 HAVING count(*) = 0",
	"INSERT INTO orgs (id) SELECT max(org_id) FROM users WHERE email = $1",
	"SELECT o.id, u.email FROM orgs o LEFT JOIN users u ON u.org_id = o.id AND u.email = $1 WHERE o.id > 0",
	"SELECT a.id FROM users a LEFT JOIN users b ON b.email = a.email AND b.id <> a.id WHERE b.id IS NULL",
	// Writes.
	"INSERT INTO users (name, email) VALUES ($1, $2)",
	"INSERT INTO users (name, email, phone) VALUES ($1, $2, $3), ('b', NULL, 'p')",
	"INSERT INTO users (id, name, email) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, name = EXCLUDED.name",
	"INSERT INTO users (name, email) VALUES ($1, $2) ON CONFLICT (email) DO NOTHING",
	"INSERT INTO users (name, email) VALUES ($1, $2) ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name",
	"INSERT INTO users (name, email, email_bidx) VALUES ($1, $2, $3)",
	"UPDATE users SET email = $1 WHERE id = $2",
	"UPDATE users SET email = NULL WHERE email = $1",
	"UPDATE users SET name = $1 WHERE email = $2",
	"UPDATE users SET phone = $1 WHERE email = $2 AND org_id = $3",
	"UPDATE users SET email_bidx = $1 WHERE id = $2",
	"DELETE FROM users WHERE email = $1 RETURNING id",
	"DELETE FROM users WHERE email IN ($1, $2)",
	"DELETE FROM users WHERE email = $1 OR id = $2",
	"UPDATE users SET name = $1 WHERE NOT (email <> $2) AND id > 0",
	"UPDATE users SET email = $1 WHERE email = $2 OR email IS NULL",
	"DELETE FROM users u WHERE u.email = $1 AND org_id = $2 RETURNING u.id, u.email",
	"UPDATE users SET name = $1 WHERE email = $2 RETURNING *",
}

func TestBlindGolden(t *testing.T) {
	var b strings.Builder
	for _, sql := range blindCases {
		p, err := Rewrite(sql, blindCatalog{})
		fmt.Fprintf(&b, "== %s\n", sql)
		if err != nil {
			fmt.Fprintf(&b, "error: %v (unsupported=%v)\n\n", err, errors.Is(err, ErrUnsupported))
			continue
		}
		b.WriteString(describeBlind(p) + "\n\n")
	}
	checkGolden(t, "blind.golden", b.String())
}

// TestBlindNoPlainComparison: no rewritten statement still has an
// encrypted column as an operand of a comparison; every comparison moved
// to its index column.
func TestBlindNoPlainComparison(t *testing.T) {
	checked := 0
	for _, sql := range blindCases {
		p, err := Rewrite(sql, blindCatalog{})
		if err != nil || p.Passthrough {
			continue
		}
		for _, s := range []string{p.SQL, updateSelect(p)} {
			if s == "" {
				continue
			}
			tree, err := pg.Parse(s)
			if err != nil {
				t.Fatalf("%s: rewritten SQL does not parse: %v", sql, err)
			}
			walk(tree, func(n *pg.Node) bool {
				x := n.GetAExpr()
				if x == nil {
					return true
				}
				checked++
				for _, side := range []*pg.Node{x.Lexpr, x.Rexpr} {
					if cr := side.GetColumnRef(); cr != nil {
						names, _ := fieldNames(cr)
						if last := names[len(names)-1]; last == "email" || last == "phone" {
							t.Errorf("%s: rewritten %q compares %s", sql, s, last)
						}
					}
				}
				return true
			})
		}
	}
	if checked < 20 {
		t.Fatalf("only %d comparisons checked", checked)
	}
}
func updateSelect(p *Plan) string {
	if p.Update == nil {
		return ""
	}
	return p.Update.SelectSQL
}

// FuzzRewriteBlind is FuzzRewrite's oracle over a catalog with blind
// indexes: whatever the SQL, the database never computes on an encrypted
// column (comparisons moved to index columns), and every bare encrypted
// result column is decrypted or is a check column the driver verifies.
func FuzzRewriteBlind(f *testing.F) {
	for _, c := range append(append([]string{}, blindCases...), cases...) {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		p, err := Rewrite(sql, blindCatalog{})
		if err != nil {
			var pe *ParseError
			if !errors.Is(err, ErrUnsupported) && !errors.As(err, &pe) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		tree, perr := pg.Parse(p.SQL)
		if perr != nil {
			t.Fatalf("plan SQL does not parse: %q: %v", p.SQL, perr)
		}
		if otherSchema(tree) {
			return // the oracle knows tables by name only: other.users is not encrypted
		}
		checkPlan(t, sql, p)
		// Every lookup parameter the SQL takes is planned.
		for _, a := range p.Args {
			if a.Lookup > len(p.Lookups) {
				t.Fatalf("arg %v refers to lookup %d of %d", a, a.Lookup, len(p.Lookups))
			}
		}
	})
}

// otherSchema reports whether a tree names a relation in a schema other
// than public.
func otherSchema(tree *pg.ParseResult) bool {
	found := false
	walkMessages(tree, func(m proto.Message) bool {
		if rv, ok := m.(*pg.RangeVar); ok && rv.Schemaname != "" && rv.Schemaname != "public" {
			found = true
		}
		return !found
	})
	return found
}

// rotCatalog is blindCatalog with users.email rotating to email_bidx_v2.
type rotCatalog struct{ testCatalog }

var rusers = func() *Table {
	t := *busers
	t.Columns = append(slices.Clone(busers.Columns), "email_bidx_v2")
	t.Blind = map[string]BlindIndex{"email": {Column: "email_bidx", Rotate: "email_bidx_v2", RotateBytea: true}, "phone": busers.Blind["phone"]}
	return &t
}()

func (rotCatalog) Encrypted(schema, name string) (*Table, error) {
	if name == "users" && (schema == "" || schema == "public") {
		return rusers, nil
	}
	return testCatalog{}.Encrypted(schema, name)
}

func (rotCatalog) Columns(schema, name string) ([]string, error) {
	if name == "users" {
		return rusers.Columns, nil
	}
	return testCatalog{}.Columns(schema, name)
}

// TestBlindRotate: during a rotation every write of the column writes
// both index columns (NULL for NULL), lookups use the current one, and
// writing the rotation column is refused like the index column.
func TestBlindRotate(t *testing.T) {
	for sql, want := range map[string][]string{
		"INSERT INTO users (name, email, phone) VALUES ($1, $2, $3), ('b', NULL, 'p')": {
			"INSERT INTO users (name, email, phone, id, encrypted_kms_key, encrypted_kms_key_phone, email_bidx, email_bidx_v2, phone_bidx) VALUES",
			", NULL, NULL, $"},
		"INSERT INTO users (id, name, email) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, name = EXCLUDED.name": {
			"email_bidx = excluded.email_bidx, email_bidx_v2 = excluded.email_bidx_v2"},
		"UPDATE users SET email = $1 WHERE id = $2": {"email_bidx = $", "email_bidx_v2 = $"},
		"SELECT id FROM users WHERE email = $1":     {"WHERE users.email_bidx = $"},
	} {
		p, err := Rewrite(sql, rotCatalog{})
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		for _, w := range want {
			if !strings.Contains(p.SQL, w) {
				t.Errorf("%s:\n%s\nwant %q", sql, p.SQL, w)
			}
		}
		if strings.HasPrefix(sql, "SELECT") && strings.Contains(p.SQL, "v2") {
			t.Errorf("%s: a lookup reads the rotation column: %s", sql, p.SQL)
		}
		switch {
		case p.Insert != nil:
			for i, r := range p.Insert.Rows {
				var emails []Cell
				for _, c := range r.Indexes {
					if c.Column == "email" {
						emails = append(emails, c)
					}
				}
				if len(emails) != len(r.Rotations) {
					t.Errorf("%s: row %d: indexes %v, rotations %v", sql, i, r.Indexes, r.Rotations)
				}
				for j := range r.Rotations {
					if r.Rotations[j].Column != "email" || r.Rotations[j].Value != emails[j].Value || r.Rotations[j].Slot == emails[j].Slot {
						t.Errorf("%s: rotation %v beside index %v", sql, r.Rotations[j], emails[j])
					}
				}
			}
			if len(p.Insert.Rows[0].Rotations) != 1 {
				t.Errorf("%s: first row writes %d rotations", sql, len(p.Insert.Rows[0].Rotations))
			}
		case p.Update != nil:
			if len(p.Update.Rotations) != 1 || p.Update.Rotations[0].Value != p.Update.Indexes[0].Value {
				t.Errorf("%s: rotations %v, indexes %v", sql, p.Update.Rotations, p.Update.Indexes)
			}
		}
	}
	// COPY repeats the rotation cells per row.
	p, err := Rewrite("INSERT INTO users (id, name, email) VALUES ($1, $2, $3)", rotCatalog{})
	if err != nil {
		t.Fatal(err)
	}
	cp := CopyPlan(p, 2, 3)
	if r := cp.Insert.Rows[1]; len(r.Rotations) != 1 || r.Rotations[0].Value.Param != 5 || r.Rotations[0].Slot != p.Insert.Rows[0].Rotations[0].Slot+p.Insert.Slots {
		t.Errorf("copy row 1 rotations %v", r.Rotations)
	}
	for _, sql := range []string{
		"INSERT INTO users (name, email, email_bidx_v2) VALUES ($1, $2, $3)",
		"UPDATE users SET email_bidx_v2 = $1 WHERE id = $2",
		"INSERT INTO users (id, name, email) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET email_bidx_v2 = EXCLUDED.email_bidx_v2",
	} {
		_, err := Rewrite(sql, rotCatalog{})
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "write email and leave email_bidx_v2 out") {
			t.Errorf("%s: %v, want a refusal", sql, err)
		}
	}
	// SELECT * leaves the rotation column out.
	p, err = Rewrite("SELECT * FROM users", rotCatalog{})
	if err != nil || strings.Contains(p.SQL, "v2") {
		t.Errorf("SELECT *: %v %v", p, err)
	}
}
