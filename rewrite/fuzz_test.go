package rewrite

import (
	"errors"
	"testing"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// isEnc reports whether a column reference names an encrypted column of
// the test catalog, given the qualifiers (alias → table) of the encrypted
// tables in the statement. No plain table there has these column names.
func isEnc(names []string, quals map[string]string) bool {
	if len(names) == 0 {
		return false
	}
	col := names[len(names)-1]
	if len(names) == 1 {
		for _, t := range quals {
			if _, ok := testTables[t].Encrypted[col]; ok {
				return true
			}
		}
		return false
	}
	t, ok := quals[names[len(names)-2]]
	if !ok {
		return false
	}
	_, enc := testTables[t].Encrypted[col]
	return enc
}

var testTables = map[string]*Table{"users": users, "users_2026": usersPart, "notes": notes}

// isTestEnc reports whether a relation is an encrypted table of the test
// catalog: its tables live in public, so a.users is another, plain table.
func isTestEnc(rv *pg.RangeVar) bool {
	return rv != nil && testTables[rv.Relname] != nil && (rv.Schemaname == "" || rv.Schemaname == "public")
}

func encQualifiers(stmt *pg.Node) map[string]string {
	quals := map[string]string{}
	walkMessages(stmt, func(m proto.Message) bool {
		if rv, ok := m.(*pg.RangeVar); ok && isTestEnc(rv) {
			quals[qualOf(rv)] = rv.Relname
		}
		return true
	})
	return quals
}

// unprotectedRefs returns encrypted-column references of a statement that
// the database would have to compute on: anything but a bare column in a
// select list (which only carries the ciphertext along) or the operand of
// IS [NOT] NULL.
func unprotectedRefs(stmt *pg.Node) []string {
	quals := encQualifiers(stmt)
	exempt := map[*pg.ColumnRef]bool{}
	walkMessages(stmt, func(m proto.Message) bool {
		switch x := m.(type) {
		case *pg.SelectStmt:
			exemptBare(exempt, x.TargetList)
		case *pg.InsertStmt:
			exemptBare(exempt, x.ReturningList)
		case *pg.UpdateStmt:
			exemptBare(exempt, x.ReturningList)
		case *pg.DeleteStmt:
			exemptBare(exempt, x.ReturningList)
		case *pg.OnConflictClause:
			exemptBare(exempt, x.TargetList) // only EXCLUDED.col gets past the rewriter
		}
		return true
	})
	var out []string
	// depth counts the enclosing statements whose own FROM (or target)
	// names an encrypted table: only there can an unqualified name be an
	// encrypted column.
	var rec func(m protoreflect.Message, depth int)
	rec = func(m protoreflect.Message, depth int) {
		switch x := m.Interface().(type) {
		case *pg.SelectStmt:
			if directlyEncrypted(x.FromClause) {
				depth++
			}
		case *pg.UpdateStmt:
			if isTestEnc(x.GetRelation()) || directlyEncrypted(x.FromClause) {
				depth++
			}
		case *pg.DeleteStmt:
			if isTestEnc(x.GetRelation()) || directlyEncrypted(x.UsingClause) {
				depth++
			}
		case *pg.NullTest:
			if x.Arg.GetColumnRef() != nil {
				return
			}
		case *pg.ColumnRef:
			names, _ := fieldNames(x)
			if !exempt[x] && (len(names) > 1 || depth > 0) && isEnc(names, quals) {
				out = append(out, names[len(names)-1])
			}
			return
		}
		fields := m.Descriptor().Fields()
		for i := 0; i < fields.Len(); i++ {
			fd := fields.Get(i)
			if fd.Kind() != protoreflect.MessageKind || fd.IsMap() || !m.Has(fd) {
				continue
			}
			if fd.IsList() {
				l := m.Get(fd).List()
				for j := 0; j < l.Len(); j++ {
					rec(l.Get(j).Message(), depth)
				}
			} else {
				rec(m.Get(fd).Message(), depth)
			}
		}
	}
	rec(stmt.ProtoReflect(), 0)
	return out
}

// directlyEncrypted reports whether a FROM list names an encrypted table
// itself (through joins, not subqueries).
func directlyEncrypted(from []*pg.Node) bool {
	for _, n := range from {
		switch x := n.Node.(type) {
		case *pg.Node_RangeVar:
			if isTestEnc(x.RangeVar) {
				return true
			}
		case *pg.Node_JoinExpr:
			if directlyEncrypted([]*pg.Node{x.JoinExpr.Larg, x.JoinExpr.Rarg}) {
				return true
			}
		}
	}
	return false
}

func exemptBare(exempt map[*pg.ColumnRef]bool, list []*pg.Node) {
	for _, n := range list {
		if cr := n.GetResTarget().GetVal().GetColumnRef(); cr != nil {
			exempt[cr] = true
		}
	}
}

func touchesTestTables(stmt *pg.Node) bool {
	found := false
	walkMessages(stmt, func(m proto.Message) bool {
		if rv, ok := m.(*pg.RangeVar); ok && (rv.Relname == "users" || rv.Relname == "notes" || rv.Relname == "users_view") {
			found = true
		}
		return !found
	})
	return found
}

// FuzzRewrite: on any SQL the rewriter returns a plan or an error, never
// panics, and never lets an encrypted column through unprotected: a
// passthrough plan over an encrypted table reads no encrypted column
// except under IS [NOT] NULL, and a rewritten plan decrypts every result
// column that is a bare encrypted column.
func FuzzRewrite(f *testing.F) {
	for _, c := range cases {
		f.Add(c)
	}
	f.Add("SELECT email FROM (SELECT * FROM users) u WHERE u.id IN (SELECT user_id FROM notes)")
	f.Add("WITH RECURSIVE r AS (SELECT id, email FROM users UNION ALL SELECT id, email FROM r) SELECT * FROM r")
	f.Add("SELECT (u).email FROM users u")
	// Partitions are their table; views over views reach it too; names
	// schema-qualified as the server resolves them.
	f.Add("SELECT p.email, u.email FROM users_2026 p JOIN public.users u ON u.id = p.id")
	f.Add("INSERT INTO public.users_2026 (id, email) VALUES ($1, $2) RETURNING email")
	f.Add("UPDATE users_2026 SET email = $1 WHERE id = $2 RETURNING *")
	f.Add("SELECT contact FROM users_view2 WHERE id = 1")
	f.Add("SELECT email FROM users_2026 GROUP BY ROLLUP (1)")
	f.Add("SELECT * FROM users, LATERAL (SELECT email) x")
	f.Fuzz(func(t *testing.T, sql string) {
		p, err := Rewrite(sql, testCatalog{})
		if err != nil {
			var pe *ParseError
			if !errors.Is(err, ErrUnsupported) && !errors.As(err, &pe) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		checkPlan(t, sql, p)
	})
}

// checkPlan is the fuzzers' oracle: the plan's SQL parses, the database
// computes on no encrypted column, and every bare encrypted result column
// is decrypted (or is a blind-index check column the driver verifies).
func checkPlan(t *testing.T, sql string, p *Plan) {
	t.Helper()
	tree, perr := pg.Parse(p.SQL)
	if perr != nil {
		t.Fatalf("plan SQL does not parse: %q: %v", p.SQL, perr)
	}
	checkAt := map[int]bool{}
	if p.Out != nil {
		for _, c := range p.Out.Checks {
			checkAt[c.At] = true
			if c.Pair {
				checkAt[c.PairAt] = true
			}
		}
	}
	for _, rs := range tree.Stmts {
		if !touchesTestTables(rs.Stmt) {
			continue
		}
		if refs := unprotectedRefs(rs.Stmt); len(refs) > 0 {
			t.Fatalf("the database would compute on encrypted columns %v: %q", refs, sql)
		}
		sel := rs.Stmt.GetSelectStmt()
		if sel == nil || sel.Op != pg.SetOperation_SETOP_NONE {
			continue
		}
		quals := encQualifiers(rs.Stmt)
		for i, n := range sel.TargetList {
			cr := n.GetResTarget().GetVal().GetColumnRef()
			names, star := fieldNames(cr)
			if cr == nil || star || !isEnc(names, quals) || (len(names) == 1 && !directlyEncrypted(sel.FromClause)) || checkAt[i] {
				continue
			}
			if p.Out == nil || i >= p.Out.Visible || p.Out.Cols[i].Table == nil {
				t.Fatalf("result column %d (%s) is encrypted but not decrypted: %q", i, names[len(names)-1], sql)
			}
		}
	}
}
