package rewrite

import (
	"fmt"
	"strconv"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
)

// out is one output column of a SELECT (or RETURNING) list.
type out struct {
	name string
	enc  *encRef // nil: plain
	// keyCol marks a key column: selectable by name, but left out of *,
	// so that adding it to a table changes no SELECT * and no model.
	keyCol bool
}

// encRef says that a value is an encrypted column's ciphertext, and where
// its row key can be read in the scope that holds it.
type encRef struct {
	table  *Table
	column string  // "*" for a whole-row reference
	src    *keySrc // nil for set operations, which expose by position
	base   string  // the table's name in scope when read from the table itself, else ""
	// excluded: the row an INSERT … ON CONFLICT writes (EXCLUDED), whose
	// index values the driver computes itself.
	excluded bool
}

// keySrc builds the expressions that read a row's wrapped key and primary
// key (as text) in one scope.
type keySrc struct {
	table   *Table
	key     int
	keyExpr func() *pg.Node
	pkExprs []func() *pg.Node
}

// rel is a relation in a FROM clause.
type rel struct {
	name      string
	cols      []*out
	opaque    bool // columns unknown
	hasHidden bool // a subquery that exposes hidden columns
}

func (r *rel) col(name string) *out {
	for _, c := range r.cols {
		if c.name == name {
			return c
		}
	}
	return nil
}

func (r *rel) firstEnc() *encRef {
	for _, c := range r.cols {
		if c.enc != nil {
			return c.enc
		}
	}
	return nil
}

type cteDef struct {
	outs   []*out
	groups []*group
	opaque bool
}

type scope struct {
	parent *scope
	rels   []*rel
	ctes   map[string]*cteDef
}

func (s *scope) cte(name string) *cteDef {
	for ; s != nil; s = s.parent {
		if d, ok := s.ctes[name]; ok {
			return d
		}
	}
	return nil
}

// group is one set of hidden columns: a wrapped key and its primary key.
type group struct {
	keyName string
	pkNames []string
	table   *Table
	key     int
	outs    []int   // the output positions this group serves
	src     *keySrc // where its columns are read, for plain selects
}

type selInfo struct {
	outs  []*out
	known bool
}

type analyzer struct {
	cat     Catalog
	infos   map[*pg.SelectStmt]*selInfo
	hidden  int
	version int32  // of the parse tree, for deparsing
	touched string // a relation that made touches true, for messages
	blind   blindState
	// conflictBlind: the blind-indexed columns whose index may decide an
	// INSERT's ON CONFLICT DO UPDATE.
	conflictBlind []string
	// conflictRotate: their rotation columns may decide it too.
	conflictRotate bool
}

func (a *analyzer) newGroup(t *Table, key int) *group {
	g := &group{table: t, key: key, keyName: "__kmspg_k" + strconv.Itoa(a.hidden)}
	for i := range t.PrimaryKey {
		g.pkNames = append(g.pkNames, "__kmspg_p"+strconv.Itoa(a.hidden)+"_"+strconv.Itoa(i))
	}
	a.hidden++
	return g
}

// baseRel is an encrypted table in a FROM clause under the name qual.
func baseRel(t *Table, qual string) *rel {
	r := &rel{name: qual}
	srcs := make([]*keySrc, len(t.Keys))
	for i, k := range t.Keys {
		col := k.Column
		src := &keySrc{table: t, key: i, keyExpr: func() *pg.Node { return colRef(qual, col) }}
		for _, p := range t.PrimaryKey {
			src.pkExprs = append(src.pkExprs, func() *pg.Node { return castText(colRef(qual, p)) })
		}
		srcs[i] = src
	}
	for _, c := range t.Columns {
		o := &out{name: c}
		for _, k := range t.Keys {
			o.keyCol = o.keyCol || k.Column == c
		}
		if _, bidx := isBlindCol(t, c); bidx {
			o.keyCol = true // left out of *, like key columns
		}
		if ec, ok := t.Encrypted[c]; ok {
			o.enc = &encRef{table: t, column: c, src: srcs[ec.Key], base: qual}
		}
		r.cols = append(r.cols, o)
	}
	return r
}

// derivedRel is a subquery or CTE reference whose hidden columns are named
// by groups.
func derivedRel(qual string, outs []*out, groups []*group, opaque bool, aliases []*pg.Node) *rel {
	r := &rel{name: qual, opaque: opaque, hasHidden: len(groups) > 0}
	srcs := map[*group]*keySrc{}
	for i, o := range outs {
		c := &out{name: o.name}
		if i < len(aliases) {
			c.name = aliases[i].GetString_().GetSval()
		}
		if o.enc != nil {
			g := o.enc.groupOf(groups, i)
			src := srcs[g]
			if src == nil {
				keyName := g.keyName
				src = &keySrc{table: g.table, key: g.key, keyExpr: func() *pg.Node { return colRef(qual, keyName) }}
				for _, pn := range g.pkNames {
					src.pkExprs = append(src.pkExprs, func() *pg.Node { return colRef(qual, pn) })
				}
				srcs[g] = src
			}
			c.enc = &encRef{table: o.enc.table, column: o.enc.column, src: src}
		}
		r.cols = append(r.cols, c)
	}
	return r
}

// groupOf finds the hidden-column group that serves output i.
func (e *encRef) groupOf(groups []*group, i int) *group {
	for _, g := range groups {
		if g.servesOut(i) {
			return g
		}
	}
	panic("kmspostgres: rewrite: encrypted output without hidden key columns")
}

func (g *group) servesOut(i int) bool {
	for _, j := range g.outs {
		if j == i {
			return true
		}
	}
	return false
}

// resolve finds what a column reference names.
func (a *analyzer) resolve(sc *scope, names []string) *out {
	if len(names) == 0 {
		return nil
	}
	if len(names) == 1 {
		name := names[0]
		for s := sc; s != nil; s = s.parent {
			for _, r := range s.rels {
				if c := r.col(name); c != nil {
					return c
				}
			}
			for _, r := range s.rels {
				if r.name == name {
					if e := r.firstEnc(); e != nil {
						return &out{name: name, enc: &encRef{table: e.table, column: "*"}}
					}
					return nil
				}
			}
		}
		return nil
	}
	qual, name := names[len(names)-2], names[len(names)-1]
	for s := sc; s != nil; s = s.parent {
		for _, r := range s.rels {
			if r.name == qual {
				return r.col(name)
			}
		}
	}
	return nil
}

// duplicateNames refuses a FROM list that names two relations alike when
// one has encrypted columns: the server rejects it, and the driver must
// not guess which one a qualified column means.
func duplicateNames(sc *scope) error {
	seen := map[string]*rel{}
	for _, r := range sc.rels {
		if r.name == "" {
			continue
		}
		if o, dup := seen[r.name]; dup {
			if e := r.firstEnc(); e != nil || o.firstEnc() != nil {
				if e == nil {
					e = o.firstEnc()
				}
				return refuse(e.table, "", "the name "+r.name+" is given to two relations in one FROM list", "give each relation its own alias")
			}
		}
		seen[r.name] = r
	}
	return nil
}

func (a *analyzer) relNamed(sc *scope, qual string) *rel {
	for s := sc; s != nil; s = s.parent {
		for _, r := range s.rels {
			if r.name == qual {
				return r
			}
		}
	}
	return nil
}

// misuse is the refusal for an encrypted column found where the database
// would have to read its plaintext.
func misuse(e *encRef, where string) error {
	if e.column == "*" {
		return refuse(e.table, "", "a whole-row reference in "+where+" would expose encrypted columns as ciphertext",
			"select the columns by name")
	}
	reason := "encrypted columns cannot be used in " + where +
		": each value is encrypted under its own row key with a random nonce, so the database cannot compare or compute on it"
	fix := "read the column and compute in the application"
	switch where {
	case "WHERE", "HAVING", "JOIN ... ON", "JOIN ... USING", "a NATURAL JOIN", "ON CONFLICT ... WHERE", "a subquery expression":
		fix = "filter or join on a plain column (for lookups by value, add a blind-index column, such as an HMAC of the value, and filter on that); IS NULL and IS NOT NULL do work"
	case "ORDER BY":
		fix = "order by a plain column, or sort in the application after reading the rows"
	case "GROUP BY", "DISTINCT", "DISTINCT ON":
		fix = "group in the application after reading the rows"
	}
	if _, ok := e.table.Blind[e.column]; ok {
		reason += "; " + blindCan
	}
	return refuse(e.table, e.column, reason, fix)
}

// checkExpr refuses any encrypted column read inside an expression, except
// as the operand of IS [NOT] NULL.
func (a *analyzer) checkExpr(n *pg.Node, sc *scope, where string) error {
	if n == nil || n.Node == nil {
		return nil
	}
	var err error
	visit := func(n *pg.Node) bool {
		if err != nil {
			return false
		}
		switch x := n.Node.(type) {
		case *pg.Node_ColumnRef:
			names, star := fieldNames(x.ColumnRef)
			if star {
				if len(names) > 0 {
					if r := a.relNamed(sc, names[len(names)-1]); r != nil {
						if e := r.firstEnc(); e != nil {
							err = misuse(&encRef{table: e.table, column: "*"}, where)
						}
					}
				}
				return false
			}
			if o := a.resolve(sc, names); o != nil && o.enc != nil {
				err = misuse(o.enc, where)
			}
			return false
		case *pg.Node_NullTest:
			if _, ok := x.NullTest.Arg.GetNode().(*pg.Node_ColumnRef); ok {
				return false
			}
		case *pg.Node_AExpr:
			if handled, e := a.blindExpr(x.AExpr, sc); handled {
				err = e
				return false
			}
		case *pg.Node_SubLink:
			err = a.subLink(x.SubLink, sc, where)
			return false
		case *pg.Node_SelectStmt:
			_, err = a.selectStmt(x.SelectStmt, sc)
			return false
		}
		return true
	}
	if visit(n) {
		walk(n, visit)
	}
	return err
}

func (a *analyzer) subLink(sl *pg.SubLink, sc *scope, where string) error {
	if err := a.checkExpr(sl.Testexpr, sc, where); err != nil {
		return err
	}
	sub := sl.Subselect.GetSelectStmt()
	if sub == nil {
		return nil
	}
	info, err := a.selectStmt(sub, sc)
	if err != nil {
		return err
	}
	if sl.SubLinkType == pg.SubLinkType_EXISTS_SUBLINK {
		return nil
	}
	for _, o := range info.outs {
		if o.enc != nil {
			return misuse(o.enc, "a subquery expression")
		}
	}
	return nil
}

// checkSortish checks an ORDER BY, GROUP BY or DISTINCT ON item, which may
// name an output column by name or position.
func (a *analyzer) checkSortish(n *pg.Node, sc *scope, outs []*out, where string) error {
	if n == nil {
		return nil
	}
	switch x := n.Node.(type) {
	case *pg.Node_GroupingSet:
		// ROLLUP, CUBE, GROUPING SETS: each item, positions included.
		for _, c := range x.GroupingSet.Content {
			if err := a.checkSortish(c, sc, outs, where); err != nil {
				return err
			}
		}
		return nil
	case *pg.Node_List:
		for _, c := range x.List.Items {
			if err := a.checkSortish(c, sc, outs, where); err != nil {
				return err
			}
		}
		return nil
	case *pg.Node_RowExpr:
		for _, c := range x.RowExpr.Args {
			if err := a.checkSortish(c, sc, outs, where); err != nil {
				return err
			}
		}
		return nil
	}
	if c, ok := n.Node.(*pg.Node_AConst); ok {
		if iv, ok := c.AConst.Val.(*pg.A_Const_Ival); ok {
			if i := int(iv.Ival.Ival); i >= 1 && i <= len(outs) && outs[i-1].enc != nil {
				return misuse(outs[i-1].enc, where)
			}
			return nil
		}
	}
	if cr, ok := n.Node.(*pg.Node_ColumnRef); ok {
		if names, star := fieldNames(cr.ColumnRef); !star && len(names) == 1 {
			for _, o := range outs {
				if o.name == names[0] && o.enc != nil {
					return misuse(o.enc, where)
				}
			}
		}
	}
	return a.checkExpr(n, sc, where)
}

// with analyses a WITH clause and returns the scope its CTEs live in.
func (a *analyzer) with(w *pg.WithClause, parent *scope) (*scope, error) {
	if w == nil {
		return parent, nil
	}
	cs := &scope{parent: parent, ctes: map[string]*cteDef{}}
	for _, n := range w.Ctes {
		cte := n.GetCommonTableExpr()
		if cte == nil {
			continue
		}
		sel := cte.Ctequery.GetSelectStmt()
		if sel == nil {
			// A data-modifying CTE.
			if touched, err := a.touches(cte.Ctequery); err != nil {
				return nil, err
			} else if touched {
				return nil, refuse(nil, "", "a data-modifying WITH query on an encrypted table is not supported",
					"run the INSERT, UPDATE or DELETE as its own statement")
			}
			cs.ctes[cte.Ctename] = &cteDef{opaque: true}
			continue
		}
		info, err := a.selectStmt(sel, cs)
		if err != nil {
			return nil, err
		}
		if w.Recursive {
			for _, o := range info.outs {
				if o.enc != nil {
					return nil, refuse(o.enc.table, o.enc.column, "a recursive WITH query cannot pass an encrypted column through",
						"select the encrypted column outside the recursive query, joined on a plain key")
				}
			}
		}
		groups := a.expose(sel, info)
		outs := info.outs
		if len(cte.Aliascolnames) > 0 {
			renamed := make([]*out, len(outs))
			for i, o := range outs {
				c := *o
				if i < len(cte.Aliascolnames) {
					c.name = cte.Aliascolnames[i].GetString_().GetSval()
				}
				renamed[i] = &c
			}
			outs = renamed
		}
		cs.ctes[cte.Ctename] = &cteDef{outs: outs, groups: groups, opaque: !info.known}
	}
	return cs, nil
}

// touches reports whether any relation named under n is encrypted or a
// protected view. A catalog error is returned: the statement may touch an
// encrypted table that the driver cannot resolve.
func (a *analyzer) touches(n *pg.Node) (bool, error) {
	found := false
	var err error
	walkMessages(n, func(m proto.Message) bool {
		if rv, ok := m.(*pg.RangeVar); ok {
			t, e := a.cat.Encrypted(rv.Schemaname, rv.Relname)
			if e != nil {
				err = e
				return false
			}
			if t != nil {
				found = true
				a.touched = t.Name
			}
			v, e := a.cat.ProtectedView(rv.Schemaname, rv.Relname)
			if e != nil {
				err = e
				return false
			}
			if v != "" {
				found = true
				a.touched = rv.Relname
			}
		}
		return !found
	})
	return found, err
}

// fromItem adds the relations of one FROM item to sc.
func (a *analyzer) fromItem(n *pg.Node, sc *scope, outer *scope) error {
	switch x := n.Node.(type) {
	case *pg.Node_RangeVar:
		r, err := a.rangeVar(x.RangeVar, sc)
		if err != nil {
			return err
		}
		sc.rels = append(sc.rels, r)
	case *pg.Node_RangeSubselect:
		rs := x.RangeSubselect
		sub := rs.Subquery.GetSelectStmt()
		if sub == nil {
			return nil
		}
		parent := outer
		if rs.Lateral {
			parent = sc
		}
		info, err := a.selectStmt(sub, parent)
		if err != nil {
			return err
		}
		groups := a.expose(sub, info)
		qual := ""
		var aliases []*pg.Node
		if rs.Alias != nil {
			qual, aliases = rs.Alias.Aliasname, rs.Alias.Colnames
		}
		sc.rels = append(sc.rels, derivedRel(qual, info.outs, groups, !info.known, aliases))
	case *pg.Node_JoinExpr:
		j := x.JoinExpr
		before := len(sc.rels)
		if err := a.fromItem(j.Larg, sc, outer); err != nil {
			return err
		}
		mid := len(sc.rels)
		if err := a.fromItem(j.Rarg, sc, outer); err != nil {
			return err
		}
		left, right := sc.rels[before:mid], sc.rels[mid:]
		if err := a.checkExpr(j.Quals, sc, "JOIN ... ON"); err != nil {
			return err
		}
		for _, u := range j.UsingClause {
			name := u.GetString_().GetSval()
			for _, r := range sc.rels[before:] {
				if c := r.col(name); c != nil && c.enc != nil {
					return misuse(c.enc, "JOIN ... USING")
				}
			}
		}
		if j.IsNatural {
			for _, l := range left {
				for _, c := range l.cols {
					for _, r := range right {
						if rc := r.col(c.name); rc != nil && (c.enc != nil || rc.enc != nil) {
							e := c.enc
							if e == nil {
								e = rc.enc
							}
							return misuse(e, "a NATURAL JOIN")
						}
					}
				}
			}
		}
		if j.Alias != nil {
			for _, r := range sc.rels[before:] {
				if e := r.firstEnc(); e != nil {
					return refuse(e.table, "", "an alias on a JOIN of an encrypted table is not supported", "alias the tables instead of the join")
				}
			}
		}
	case *pg.Node_RangeFunction:
		rf := x.RangeFunction
		for _, f := range rf.Functions {
			if err := a.checkExpr(f, sc, "a function in FROM"); err != nil {
				return err
			}
		}
		name := ""
		if rf.Alias != nil {
			name = rf.Alias.Aliasname
		}
		sc.rels = append(sc.rels, &rel{name: name, opaque: true})
	case *pg.Node_RangeTableSample:
		if err := a.fromItem(x.RangeTableSample.Relation, sc, outer); err != nil {
			return err
		}
	default:
		if err := a.checkExpr(n, sc, "FROM"); err != nil {
			return err
		}
		sc.rels = append(sc.rels, &rel{opaque: true})
	}
	return nil
}

func (a *analyzer) rangeVar(rv *pg.RangeVar, sc *scope) (*rel, error) {
	qual := rv.Relname
	if rv.Alias != nil {
		qual = rv.Alias.Aliasname
	}
	if rv.Schemaname == "" {
		if d := sc.cte(rv.Relname); d != nil {
			var aliases []*pg.Node
			if rv.Alias != nil {
				aliases = rv.Alias.Colnames
			}
			return derivedRel(qual, d.outs, d.groups, d.opaque, aliases), nil
		}
	}
	if v, err := a.cat.ProtectedView(rv.Schemaname, rv.Relname); err != nil {
		return nil, err
	} else if v != "" {
		return nil, &RefusalError{Table: rv.Relname, Reason: "this view exposes the encrypted column " + v + " as ciphertext",
			Fix: "select from the table itself, or leave the encrypted column out of the view"}
	}
	t, err := a.cat.Encrypted(rv.Schemaname, rv.Relname)
	if err != nil {
		return nil, err
	}
	if t != nil {
		if rv.Alias != nil && len(rv.Alias.Colnames) > 0 {
			return nil, refuse(t, "", "column aliases on an encrypted table are not supported", "alias the columns in the select list")
		}
		return baseRel(t, qual), nil
	}
	cols, err := a.cat.Columns(rv.Schemaname, rv.Relname)
	if err != nil {
		return nil, err
	}
	if cols == nil {
		return &rel{name: qual, opaque: true}, nil
	}
	r := &rel{name: qual}
	for i, c := range cols {
		name := c
		if rv.Alias != nil && i < len(rv.Alias.Colnames) {
			name = rv.Alias.Colnames[i].GetString_().GetSval()
		}
		r.cols = append(r.cols, &out{name: name})
	}
	return r, nil
}

// selectStmt analyses a SELECT and records what it outputs.
func (a *analyzer) selectStmt(sel *pg.SelectStmt, parent *scope) (*selInfo, error) {
	if sel.Op != pg.SetOperation_SETOP_NONE {
		return a.setOp(sel, parent)
	}
	cs, err := a.with(sel.WithClause, parent)
	if err != nil {
		return nil, err
	}
	sc := &scope{parent: cs}
	for _, f := range sel.FromClause {
		if err := a.fromItem(f, sc, cs); err != nil {
			return nil, err
		}
	}
	if err := duplicateNames(sc); err != nil {
		return nil, err
	}
	info := &selInfo{known: true}
	if len(sel.ValuesLists) > 0 {
		for i, l := range sel.ValuesLists {
			if err := a.checkExpr(l, sc, "VALUES"); err != nil {
				return nil, err
			}
			if i == 0 {
				for j := range l.GetList().GetItems() {
					info.outs = append(info.outs, &out{name: "column" + strconv.Itoa(j+1)})
				}
			}
		}
	} else {
		outs, known, err := a.targets(&sel.TargetList, sc, "an expression in the select list")
		if err != nil {
			return nil, err
		}
		info.outs, info.known = outs, known
	}
	if err := a.checkExpr(sel.WhereClause, sc, "WHERE"); err != nil {
		return nil, err
	}
	for _, g := range sel.GroupClause {
		if err := a.checkSortish(g, sc, info.outs, "GROUP BY"); err != nil {
			return nil, err
		}
	}
	if err := a.checkExpr(sel.HavingClause, sc, "HAVING"); err != nil {
		return nil, err
	}
	for _, w := range sel.WindowClause {
		if err := a.checkExpr(w, sc, "a window definition"); err != nil {
			return nil, err
		}
	}
	if len(sel.DistinctClause) == 1 && sel.DistinctClause[0].GetNode() == nil {
		for _, o := range info.outs {
			if o.enc != nil {
				return nil, misuse(o.enc, "DISTINCT")
			}
		}
	} else {
		for _, d := range sel.DistinctClause {
			if err := a.checkSortish(d, sc, info.outs, "DISTINCT ON"); err != nil {
				return nil, err
			}
		}
	}
	if err := a.sortClause(sel, sc, info.outs); err != nil {
		return nil, err
	}
	if sel.IntoClause != nil {
		for _, o := range info.outs {
			if o.enc != nil {
				return nil, refuse(o.enc.table, o.enc.column, "SELECT INTO would copy ciphertext into a table the driver does not know", "insert the rows through the driver instead")
			}
		}
	}
	a.infos[sel] = info
	return info, nil
}

func (a *analyzer) sortClause(sel *pg.SelectStmt, sc *scope, outs []*out) error {
	for _, s := range sel.SortClause {
		if sb := s.GetSortBy(); sb != nil {
			if err := a.checkSortish(sb.Node, sc, outs, "ORDER BY"); err != nil {
				return err
			}
		}
	}
	if err := a.checkExpr(sel.LimitCount, sc, "LIMIT"); err != nil {
		return err
	}
	return a.checkExpr(sel.LimitOffset, sc, "OFFSET")
}

func (a *analyzer) setOp(sel *pg.SelectStmt, parent *scope) (*selInfo, error) {
	cs, err := a.with(sel.WithClause, parent)
	if err != nil {
		return nil, err
	}
	li, err := a.selectStmt(sel.Larg, cs)
	if err != nil {
		return nil, err
	}
	ri, err := a.selectStmt(sel.Rarg, cs)
	if err != nil {
		return nil, err
	}
	info := &selInfo{known: li.known && ri.known}
	for i, l := range li.outs {
		var r *out
		if i < len(ri.outs) {
			r = ri.outs[i]
		}
		o := &out{name: l.name}
		switch {
		case l.enc == nil && (r == nil || r.enc == nil):
		case l.enc != nil && r != nil && r.enc != nil && l.enc.table == r.enc.table && l.enc.column == r.enc.column && l.enc.column != "*":
			if !(sel.Op == pg.SetOperation_SETOP_UNION && sel.All) {
				return nil, refuse(l.enc.table, l.enc.column, "UNION, INTERSECT and EXCEPT compare rows, and encrypted values cannot be compared",
					"use UNION ALL, and remove duplicates in the application")
			}
			o.enc = &encRef{table: l.enc.table, column: l.enc.column}
		default:
			e := l.enc
			if e == nil {
				e = r.enc
			}
			return nil, refuse(e.table, e.column, fmt.Sprintf("column %d of a set operation mixes an encrypted column with other values", i+1),
				"make every arm select the same encrypted column in that position")
		}
		info.outs = append(info.outs, o)
	}
	if !info.known {
		for _, o := range info.outs {
			if o.enc != nil {
				return nil, refuse(o.enc.table, o.enc.column, "a set operation over relations with unknown columns", "list the columns instead of *")
			}
		}
	}
	if err := a.sortClause(sel, &scope{parent: cs}, info.outs); err != nil {
		return nil, err
	}
	a.infos[sel] = info
	return info, nil
}

// targets analyses a select or RETURNING list, expanding stars when
// encrypted columns or hidden columns are involved.
func (a *analyzer) targets(tl *[]*pg.Node, sc *scope, exprWhere string) ([]*out, bool, error) {
	type star struct {
		at   int
		rels []*rel
	}
	var outs []*out
	var stars []star
	known := true
	for i, t := range *tl {
		rt := t.GetResTarget()
		if rt == nil {
			continue
		}
		name := rt.Name
		switch v := rt.Val.GetNode().(type) {
		case *pg.Node_ColumnRef:
			names, isStar := fieldNames(v.ColumnRef)
			if isStar {
				var rels []*rel
				if len(names) == 0 {
					rels = sc.rels
				} else if r := a.relNamed(sc, names[len(names)-1]); r != nil {
					rels = []*rel{r}
				} else {
					known = false
				}
				for _, r := range rels {
					if r.opaque {
						known = false
					}
					for _, c := range r.cols {
						if !c.keyCol {
							outs = append(outs, c)
						}
					}
				}
				stars = append(stars, star{at: i, rels: rels})
				continue
			}
			o := a.resolve(sc, names)
			if name == "" && len(names) > 0 {
				name = names[len(names)-1]
			}
			if o != nil && o.enc != nil && o.enc.column == "*" {
				return nil, false, misuse(o.enc, "the select list")
			}
			no := &out{name: name}
			if o != nil {
				no.enc = o.enc
			}
			outs = append(outs, no)
			continue
		case *pg.Node_NullTest:
			if _, ok := v.NullTest.Arg.GetNode().(*pg.Node_ColumnRef); ok {
				if name == "" {
					name = "?column?"
				}
				outs = append(outs, &out{name: name})
				continue
			}
		}
		if err := a.checkExpr(rt.Val, sc, exprWhere); err != nil {
			return nil, false, err
		}
		if name == "" {
			name = figureName(rt.Val)
		}
		outs = append(outs, &out{name: name})
	}
	need := false
	for _, o := range outs {
		if o.enc != nil {
			need = true
		}
	}
	for _, s := range stars {
		for _, r := range s.rels {
			if r.hasHidden {
				need = true
			}
		}
	}
	if !need || len(stars) == 0 {
		return outs, known, nil
	}
	if !known {
		return nil, false, refuse(nil, "", "SELECT * over a relation whose columns the driver cannot see, together with encrypted columns",
			"list the columns instead of *")
	}
	// Expand the stars in place, last first so indexes stay valid.
	for k := len(stars) - 1; k >= 0; k-- {
		s := stars[k]
		var repl []*pg.Node
		for _, r := range s.rels {
			if r.name == "" {
				return nil, false, refuse(nil, "", "SELECT * over a subquery without an alias", "give the subquery an alias")
			}
			seen := map[string]bool{}
			for _, c := range r.cols {
				if c.keyCol {
					continue
				}
				if seen[c.name] {
					return nil, false, refuse(nil, "", "SELECT * over "+r.name+", which has two columns named "+c.name, "give its columns distinct names")
				}
				seen[c.name] = true
				repl = append(repl, pg.MakeResTargetNodeWithVal(colRef(r.name, c.name), -1))
			}
		}
		nl := append([]*pg.Node{}, (*tl)[:s.at]...)
		nl = append(nl, repl...)
		*tl = append(nl, (*tl)[s.at+1:]...)
	}
	return outs, known, nil
}

// expose appends to sel the hidden columns that carry the row keys of its
// encrypted outputs, and returns them. Plain selects share one group per
// row key; set operations expose by position, the same names in each arm.
func (a *analyzer) expose(sel *pg.SelectStmt, info *selInfo) []*group {
	if sel.Op == pg.SetOperation_SETOP_NONE {
		return a.exposeTargets(&sel.TargetList, info.outs)
	}
	var groups []*group
	for i, o := range info.outs {
		if o.enc == nil {
			continue
		}
		g := a.newGroup(o.enc.table, o.enc.table.Encrypted[o.enc.column].Key)
		g.outs = []int{i}
		a.exposeArm(sel, i, g)
		groups = append(groups, g)
	}
	return groups
}

func (a *analyzer) exposeArm(sel *pg.SelectStmt, i int, g *group) {
	if sel.Op != pg.SetOperation_SETOP_NONE {
		a.exposeArm(sel.Larg, i, g)
		a.exposeArm(sel.Rarg, i, g)
		return
	}
	src := a.infos[sel].outs[i].enc.src
	appendHidden(&sel.TargetList, g, src)
}

func appendHidden(tl *[]*pg.Node, g *group, src *keySrc) {
	*tl = append(*tl, resTarget(g.keyName, src.keyExpr()))
	for j, pn := range g.pkNames {
		*tl = append(*tl, resTarget(pn, src.pkExprs[j]()))
	}
}

func (a *analyzer) exposeTargets(tl *[]*pg.Node, outs []*out) []*group {
	var groups []*group
	bySrc := map[*keySrc]*group{}
	for i, o := range outs {
		if o.enc == nil {
			continue
		}
		g := bySrc[o.enc.src]
		if g == nil {
			g = a.newGroup(o.enc.table, o.enc.src.key)
			g.src = o.enc.src
			bySrc[o.enc.src] = g
			appendHidden(tl, g, o.enc.src)
			groups = append(groups, g)
		}
		g.outs = append(g.outs, i)
	}
	return groups
}

// output builds the decryption map of a top-level result.
func output(outs []*out, groups []*group) *Output {
	o := &Output{Visible: len(outs)}
	pos := len(outs)
	srcIndex := map[*group]int{}
	for _, g := range groups {
		s := Source{Table: g.table, Key: g.key, KeyAt: pos}
		pos++
		for range g.pkNames {
			s.PKAt = append(s.PKAt, pos)
			pos++
		}
		srcIndex[g] = len(o.Sources)
		o.Sources = append(o.Sources, s)
	}
	for i, c := range outs {
		o.Names = append(o.Names, c.name)
		oc := OutCol{}
		if c.enc != nil {
			g := c.enc.groupOf(groups, i)
			oc = OutCol{Table: c.enc.table, Column: c.enc.column, Source: srcIndex[g]}
		}
		o.Cols = append(o.Cols, oc)
	}
	return o
}
