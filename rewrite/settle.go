package rewrite

import (
	"cmp"
	"slices"
	"strconv"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
)

// A blind-index comparison is trusted only where the driver can show that
// a forged index value (one copied from another row) cannot make the
// statement return or change a row for a value it does not hold. Two
// ways serve:
//
//   - Read checks: the comparisons of the rows the driver reads (the
//     outer SELECT, the target of an UPDATE or DELETE) are checked on each
//     row's decrypted value (blindChecks, targetChecks).
//   - Prechecks, for every other equality (inside subqueries and CTEs,
//     under aggregates, on the other tables of UPDATE … FROM, in an
//     upsert's DO UPDATE … WHERE): before the statement runs, the driver
//     reads every row whose index column holds one of the comparison's
//     index values, decrypts it and refuses the statement unless it holds
//     the value. The comparison is then restricted to the row versions
//     the driver read:
//
//     u.email_bidx = $h  →  (u.email_bidx = $h AND (u.ctid, u.tableoid,
//     u.xmin::text) IN (SELECT * FROM unnest($ctids, $oids, $xmins)))
//
//     so that an index value forged after the precheck (a race) selects
//     nothing. A row version (ctid, tableoid, xmin) is never rewritten in
//     place: an UPDATE makes a new one.
//
// A precheck shows only that the comparison is true for no row that does
// not hold the value. A forged value can still make it false for a row
// that does (hide the row); where the statement turns a hidden row into a
// selected one (NOT, NOT IN, NOT EXISTS, <> ALL, EXCEPT, an outer join's
// missing side) or uses the comparison's value in any other way, the
// comparison is refused, as is any <> or NOT IN and any comparison of two
// index columns outside the rows the driver reads.

// Precheck asks the driver to read, before the statement runs, the rows
// of Table whose index column of Column holds one of the index values of
// Lookups, and to refuse the statement unless each holds the operand that
// index value was computed from (normalized). SelectSQL takes the array of
// index values as $1 and returns each row's key column, primary key as
// text, cell, index value, and ctid, tableoid and xmin as text. The rows
// it verified become the values of the plan's Verified lookups.
type Precheck struct {
	Table     *Table
	Column    string
	Lookups   []int
	SelectSQL string
}

// The Verified kinds of a Lookup: the row versions the prechecks read.
const (
	VerifiedCtids     = 1
	VerifiedTableoids = 2
	VerifiedXmins     = 3
)

// polarity is how a comparison's value decides what a statement returns
// or changes.
type polarity int8

const (
	polOther polarity = iota // some other way: it cannot be prechecked
	polPos                   // true selects more rows (or a value)
	polNeg                   // true selects fewer: under NOT, NOT IN, …
)

func (p polarity) flip() polarity {
	switch p {
	case polPos:
		return polNeg
	case polNeg:
		return polPos
	}
	return polOther
}

type position struct {
	node *pg.Node // the node that holds the comparison
	pol  polarity
	why  string // where it is, for a refusal
}

// posWalker finds the position of every comparison of a statement.
type posWalker struct {
	at map[*pg.A_Expr]position
	// refs: the polarity of the places a plain relation name is read
	// from, for the CTEs of that name (conservatively: any relation of
	// that name, in any scope).
	refs map[string]polarity
	seen map[string]bool
}

const (
	whyNeg   = "under NOT, NOT IN, NOT EXISTS, <> ALL or EXCEPT"
	whyAgg   = "in an aggregating query whose aggregates select rows or are written (a subquery or CTE, HAVING, INSERT … SELECT): a hidden row changes them either way, count(*) = 0 turns true"
	whyOther = "whose value is used, not only its truth (in a select list, CASE, function, aggregate, ORDER BY or an outer join's condition)"
)

func positions(stmt *pg.Node) map[*pg.A_Expr]position {
	w := &posWalker{at: map[*pg.A_Expr]position{}, refs: map[string]polarity{}, seen: map[string]bool{}}
	switch x := stmt.Node.(type) {
	case *pg.Node_SelectStmt:
		w.top(x.SelectStmt)
	default:
		w.dml(stmt)
	}
	return w.at
}

func (w *posWalker) ref(name string, p polarity) {
	if w.seen[name] && w.refs[name] != p {
		p = polOther
	}
	w.seen[name], w.refs[name] = true, p
}

// with walks body, then each CTE of wc with the polarity of the places it
// is read from (a later CTE may read an earlier one, so last first).
func (w *posWalker) with(wc *pg.WithClause, body func()) {
	body()
	if wc == nil {
		return
	}
	for i := len(wc.Ctes) - 1; i >= 0; i-- {
		cte := wc.Ctes[i].GetCommonTableExpr()
		if cte == nil {
			continue
		}
		p := polPos // never read: a SELECT CTE does not run
		if w.seen[cte.Ctename] {
			p = w.refs[cte.Ctename]
		}
		if wc.Recursive {
			p = polOther
		}
		if s := cte.Ctequery.GetSelectStmt(); s != nil && p != polOther {
			w.sel(s, p)
		} else if s == nil {
			w.dml(cte.Ctequery) // a data-modifying CTE runs whether read or not
		} else {
			w.other(cte.Ctequery, whyOther)
		}
	}
}

func (w *posWalker) dml(n *pg.Node) {
	switch x := n.Node.(type) {
	case *pg.Node_UpdateStmt:
		u := x.UpdateStmt
		w.write(u.WithClause, u.FromClause, u.WhereClause, u.TargetList, u.ReturningList)
	case *pg.Node_DeleteStmt:
		d := x.DeleteStmt
		w.write(d.WithClause, d.UsingClause, d.WhereClause, d.ReturningList)
	case *pg.Node_InsertStmt:
		ins := x.InsertStmt
		w.with(ins.WithClause, func() {
			if s := ins.SelectStmt.GetSelectStmt(); s != nil {
				w.sel(s, polPos) // its values are written: an aggregate of it is not only handed out
			}
			if oc := ins.OnConflictClause; oc != nil {
				if oc.Infer != nil {
					w.other(oc.Infer, whyOther)
				}
				w.cond(oc.WhereClause, polPos)
				w.values(oc.TargetList, polPos)
			}
			w.values(ins.ReturningList, polPos)
		})
	default:
		w.other(n, whyOther)
	}
}

// write walks an UPDATE or DELETE: the rows of from that where selects,
// and the SET and RETURNING lists.
func (w *posWalker) write(wc *pg.WithClause, from []*pg.Node, where *pg.Node, lists ...[]*pg.Node) {
	w.with(wc, func() {
		for _, f := range from {
			w.from(f, polPos)
		}
		w.cond(where, polPos)
		for _, l := range lists {
			w.values(l, polPos)
		}
	})
}

// top walks the SELECT whose rows the statement returns: its aggregates
// are values it hands out, computed from the rows its comparisons select
// (a hidden row counts one fewer), unless a HAVING filters on them.
func (w *posWalker) top(s *pg.SelectStmt) {
	w.selAt(s, polPos, true)
}

// sel walks a SELECT whose rows feed another: a condition, a FROM list, a
// value. If it aggregates, a row a forged value hides changes its output
// in either direction (count(*) = 0 turns true): its comparisons are used
// some other way.
func (w *posWalker) sel(s *pg.SelectStmt, p polarity) {
	w.selAt(s, p, false)
}

func (w *posWalker) selAt(s *pg.SelectStmt, p polarity, top bool) {
	if s == nil {
		return
	}
	if (!top || s.HavingClause != nil) && aggregating(s) {
		w.other(s, whyAgg)
		return
	}
	if p == polOther {
		w.other(s, whyOther)
		return
	}
	w.with(s.WithClause, func() {
		if s.Op != pg.SetOperation_SETOP_NONE {
			w.selAt(s.Larg, p, top)
			if s.Op == pg.SetOperation_SETOP_EXCEPT {
				w.selAt(s.Rarg, p.flip(), top)
			} else {
				w.selAt(s.Rarg, p, top)
			}
		}
		for _, f := range s.FromClause {
			w.from(f, p)
		}
		w.cond(s.WhereClause, p)
		w.values(s.TargetList, p)
		for _, l := range s.ValuesLists {
			if list := l.GetList(); list != nil {
				for _, item := range list.Items {
					w.value(item, p)
				}
			}
		}
		for _, n := range [][]*pg.Node{s.GroupClause, s.SortClause, s.DistinctClause, s.WindowClause, {s.HavingClause, s.LimitOffset, s.LimitCount}} {
			for _, x := range n {
				if x != nil {
					w.other(x, whyOther)
				}
			}
		}
	})
}

// values walks a select list, SET list or RETURNING list: a subquery that
// is the whole value gives its value (or none, for a hidden row).
func (w *posWalker) values(list []*pg.Node, p polarity) {
	for _, n := range list {
		if rt := n.GetResTarget(); rt != nil && rt.Val != nil {
			w.value(rt.Val, p)
		} else {
			w.other(n, whyOther)
		}
	}
}

func (w *posWalker) value(n *pg.Node, p polarity) {
	for n.GetTypeCast() != nil {
		n = n.GetTypeCast().Arg
	}
	if sl := n.GetSubLink(); sl != nil && (sl.SubLinkType == pg.SubLinkType_EXPR_SUBLINK || sl.SubLinkType == pg.SubLinkType_ARRAY_SUBLINK || sl.SubLinkType == pg.SubLinkType_EXISTS_SUBLINK) {
		w.sel(sl.Subselect.GetSelectStmt(), p)
		return
	}
	w.other(n, whyOther)
}

func (w *posWalker) from(n *pg.Node, p polarity) {
	switch x := n.Node.(type) {
	case *pg.Node_RangeVar:
		if x.RangeVar.Schemaname == "" {
			w.ref(x.RangeVar.Relname, p)
		}
	case *pg.Node_RangeSubselect:
		w.sel(x.RangeSubselect.Subquery.GetSelectStmt(), p)
	case *pg.Node_JoinExpr:
		j := x.JoinExpr
		l, r := p, p
		switch j.Jointype {
		case pg.JoinType_JOIN_INNER:
			w.cond(j.Quals, p)
		case pg.JoinType_JOIN_LEFT:
			r = polOther
		case pg.JoinType_JOIN_RIGHT:
			l = polOther
		default:
			l, r = polOther, polOther
		}
		if j.Jointype != pg.JoinType_JOIN_INNER && j.Quals != nil {
			w.other(j.Quals, whyOther)
		}
		w.from(j.Larg, l)
		w.from(j.Rarg, r)
	default:
		w.other(n, "inside a function in FROM")
	}
}

// cond walks a condition whose truth selects rows (p = polPos).
func (w *posWalker) cond(n *pg.Node, p polarity) {
	if n == nil {
		return
	}
	switch x := n.Node.(type) {
	case *pg.Node_BoolExpr:
		q := p
		if x.BoolExpr.Boolop == pg.BoolExprType_NOT_EXPR {
			q = p.flip()
		}
		for _, arg := range x.BoolExpr.Args {
			w.cond(arg, q)
		}
		return
	case *pg.Node_AExpr:
		why := whyOther
		if p == polNeg {
			why = whyNeg
		}
		w.at[x.AExpr] = position{node: n, pol: p, why: why}
		// A scalar subquery compared with a strict operator: a hidden row
		// makes it NULL, which selects nothing even under NOT. And
		// = ANY (ARRAY(SELECT …)), which is IN (SELECT …).
		for _, o := range []*pg.Node{x.AExpr.Lexpr, x.AExpr.Rexpr} {
			if o == nil {
				continue
			}
			sl := o.GetSubLink()
			switch {
			case sl != nil && sl.SubLinkType == pg.SubLinkType_EXPR_SUBLINK && x.AExpr.Kind == pg.A_Expr_Kind_AEXPR_OP && p == polPos:
				w.sel(sl.Subselect.GetSelectStmt(), polPos)
			case sl != nil && sl.SubLinkType == pg.SubLinkType_ARRAY_SUBLINK && o == x.AExpr.Rexpr && x.AExpr.Kind == pg.A_Expr_Kind_AEXPR_OP_ANY && opName(x.AExpr) == "=":
				w.sel(sl.Subselect.GetSelectStmt(), p)
			default:
				w.other(o, whyOther)
			}
		}
		return
	case *pg.Node_SubLink:
		sl := x.SubLink
		if sl.Testexpr != nil {
			w.other(sl.Testexpr, whyOther)
		}
		switch sl.SubLinkType {
		case pg.SubLinkType_EXISTS_SUBLINK, pg.SubLinkType_ANY_SUBLINK:
			w.sel(sl.Subselect.GetSelectStmt(), p)
		case pg.SubLinkType_ALL_SUBLINK:
			w.sel(sl.Subselect.GetSelectStmt(), p.flip())
		default:
			w.other(sl.Subselect, whyOther)
		}
		return
	}
	w.other(n, whyOther)
}

// other records every comparison under m as used some other way.
func (w *posWalker) other(m proto.Message, why string) {
	if n, ok := m.(*pg.Node); ok {
		m = &pg.List{Items: []*pg.Node{n}} // walk visits what is under m
	}
	walk(m, func(n *pg.Node) bool {
		switch x := n.Node.(type) {
		case *pg.Node_AExpr:
			if _, ok := w.at[x.AExpr]; !ok || w.at[x.AExpr].pol != polOther {
				w.at[x.AExpr] = position{node: n, pol: polOther, why: why}
			}
		case *pg.Node_RangeVar:
			if x.RangeVar.Schemaname == "" {
				w.ref(x.RangeVar.Relname, polOther)
			}
		}
		return true
	})
}

// settle decides every blind-index comparison not yet decided: one the
// driver checks on the rows it reads (checked) stays as it is; an
// equality whose truth only selects rows gets a precheck and is restricted
// to the rows it verifies; any other is refused. It may run more than
// once (before a statement's WHERE is copied into a row finder, then at
// the end).
func (a *analyzer) settle(stmt *pg.Node) error {
	checked := func(x *pg.A_Expr) bool { return a.blind.checked[x] }
	if len(a.blind.preds) == 0 && len(a.blind.joins) == 0 {
		return nil
	}
	if a.blind.settled == nil {
		a.blind.settled = map[*pg.A_Expr]bool{}
	}
	pos := positions(stmt)
	byPlace := func(m map[*pg.A_Expr]bool) []*pg.A_Expr {
		var xs []*pg.A_Expr
		for x := range m {
			xs = append(xs, x)
		}
		slices.SortFunc(xs, func(p, q *pg.A_Expr) int { return cmp.Compare(p.Location, q.Location) })
		return xs
	}
	joins, preds := map[*pg.A_Expr]bool{}, map[*pg.A_Expr]bool{}
	for x := range a.blind.joins {
		joins[x] = true
	}
	for x := range a.blind.preds {
		preds[x] = true
	}
	for _, x := range byPlace(joins) {
		if a.blind.settled[x] {
			continue
		}
		if !checked(x) {
			j := a.blind.joins[x]
			return refuse(j.l.table, j.l.column, "a comparison of two blind-indexed columns is checked only where the driver reads both rows (the outer SELECT's WHERE or JOIN … ON), and this one is elsewhere",
				"move the comparison to the outer query, or compare each column with a parameter")
		}
		a.blind.settled[x] = true
	}
	for _, x := range byPlace(preds) {
		if a.blind.settled[x] {
			continue
		}
		p := a.blind.preds[x]
		if checked(x) || p.enc.excluded { // EXCLUDED's index values are the driver's own
			a.blind.settled[x] = true
			continue
		}
		if len(p.lookups) == 0 {
			a.blind.settled[x] = true
			continue // = NULL, <> NULL: not true for any row, whatever its index
		}
		at, ok := pos[x]
		switch {
		case !ok:
			return refuse(p.enc.table, p.enc.column, "internal: a blind-index comparison was not found in the statement it was planned for", "report this; compare the column in the outer query")
		case p.negated:
			return refuse(p.enc.table, p.enc.column, "<>, NOT IN and <> ALL on a blind index are checked only in the rows the driver reads (the outer SELECT, or the rows an UPDATE or DELETE changes), not inside a subquery, CTE or aggregate query",
				"move the comparison to the outer query, or select the rows that are equal and exclude them in the outer query")
		case at.pol != polPos:
			return refuse(p.enc.table, p.enc.column, "a blind-index comparison "+at.why+", outside the rows the driver reads, cannot be checked against forged index values (there only an equality whose truth selects rows can be)",
				"compare the column with = or IN in WHERE or JOIN … ON (of the outer query, or of a subquery it selects from)")
		}
		a.blind.settled[x] = true
		a.precheck(at.node, p)
	}
	return nil
}

// precheck adds the lookups of a comparison to its column's precheck and
// restricts it to the row versions the prechecks verify.
func (a *analyzer) precheck(node *pg.Node, p *blindPred) {
	var pc *Precheck
	for i := range a.blind.prechecks {
		if a.blind.prechecks[i].Table == p.enc.table && a.blind.prechecks[i].Column == p.enc.column {
			pc = &a.blind.prechecks[i]
		}
	}
	if pc == nil {
		a.blind.prechecks = append(a.blind.prechecks, Precheck{Table: p.enc.table, Column: p.enc.column})
		pc = &a.blind.prechecks[len(a.blind.prechecks)-1]
	}
	pc.Lookups = append(pc.Lookups, p.lookups...)
	if a.blind.verified == 0 {
		a.blind.lookups = append(a.blind.lookups, Lookup{Verified: VerifiedCtids}, Lookup{Verified: VerifiedTableoids}, Lookup{Verified: VerifiedXmins})
		a.blind.verified = len(a.blind.lookups) - 3 + 1
	}
	param := func(k int) string { return "$" + strconv.Itoa(lookupBase+a.blind.verified+k) }
	in := parseOne("SELECT 1 WHERE (q.ctid, q.tableoid, q.xmin::text) IN (SELECT * FROM unnest(" + param(0) + "::text[]::tid[], " + param(1) + "::text[]::oid[], " + param(2) + "::text[]))").GetSelectStmt().WhereClause
	row := in.GetSubLink().Testexpr.GetRowExpr()
	base := p.enc.base
	row.Args[0], row.Args[1], row.Args[2] = colRef(base, "ctid"), colRef(base, "tableoid"), castText(colRef(base, "xmin"))
	cmpNode := &pg.Node{Node: node.Node}
	node.Node = &pg.Node_BoolExpr{BoolExpr: &pg.BoolExpr{Boolop: pg.BoolExprType_AND_EXPR, Args: []*pg.Node{cmpNode, in}, Location: -1}}
}

// prechecks finishes the plan's prechecks: the query each runs.
func (a *analyzer) prechecks() ([]Precheck, error) {
	out := a.blind.prechecks
	for i := range out {
		t := out[i].Table
		rv := &pg.RangeVar{Schemaname: t.Schema, Relname: t.Relname, Inh: true, Relpersistence: "p", Location: -1}
		sql, err := a.indexedRowsSQL(rv, t, out[i].Column, t.Blind[out[i].Column].Column, false)
		if err != nil {
			return nil, err
		}
		out[i].SelectSQL = sql
	}
	return out, nil
}

// indexedRowsSQL is the query that reads the rows of rv whose index column
// idx (of col: its index, or its rotation's) holds one of the index values
// $1: key column, primary key as text, cell, index value, ctid, tableoid
// and xmin as text; locked FOR UPDATE with lock.
func (a *analyzer) indexedRowsSQL(rv *pg.RangeVar, t *Table, col, idx string, lock bool) (string, error) {
	qual := qualOf(rv)
	sel := &pg.SelectStmt{
		TargetList: []*pg.Node{resTarget("", colRef(qual, t.Keys[t.Encrypted[col].Key].Column))},
		FromClause: []*pg.Node{{Node: &pg.Node_RangeVar{RangeVar: proto.Clone(rv).(*pg.RangeVar)}}},
		WhereClause: pg.MakeAExprNode(pg.A_Expr_Kind_AEXPR_OP_ANY, []*pg.Node{str("=")}, colRef(qual, idx),
			pg.MakeParamRefNode(1, -1), -1),
	}
	if lock {
		sel.LockingClause = []*pg.Node{{Node: &pg.Node_LockingClause{LockingClause: &pg.LockingClause{
			Strength: pg.LockClauseStrength_LCS_FORUPDATE, WaitPolicy: pg.LockWaitPolicy_LockWaitBlock}}}}
	}
	for _, p := range t.PrimaryKey {
		sel.TargetList = append(sel.TargetList, resTarget("", castText(colRef(qual, p))))
	}
	sel.TargetList = append(sel.TargetList, resTarget("", colRef(qual, col)), resTarget("", colRef(qual, idx)),
		resTarget("", castText(colRef(qual, "ctid"))), resTarget("", castText(colRef(qual, "tableoid"))), resTarget("", castText(colRef(qual, "xmin"))))
	sql, err := deparse(a.version, &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: sel}})
	if err != nil {
		return "", &ParseError{Err: err}
	}
	return sql, nil
}

// outerJoinAbsence refuses a SELECT that compares a blind-indexed column
// on the nullable side of an outer join (in its ON) and reads that side
// anywhere but in that join's own conditions or in the select list: in
// its WHERE (the anti-join, LEFT JOIN users u ON … AND u.email = $1 WHERE
// u.id IS NULL), a later JOIN … ON, a LATERAL subquery, ORDER BY, GROUP
// BY, HAVING, DISTINCT ON. A forged index value can
// hide a row from the comparison; it comes back null-extended, where no
// check sees it, and a statement that reads the null-extension would
// select (or pick first) its outer row as unmatched.
func (a *analyzer) outerJoinAbsence(sel *pg.SelectStmt) error {
	if len(a.blind.preds)+len(a.blind.joins) == 0 {
		return nil
	}
	// madeBy: each relation name on a nullable side, and the outer join
	// that makes it nullable (the lowest).
	madeBy := map[string]*pg.JoinExpr{}
	var names func(n *pg.Node, out *[]string)
	names = func(n *pg.Node, out *[]string) {
		switch x := n.Node.(type) {
		case *pg.Node_RangeVar:
			*out = append(*out, qualOf(x.RangeVar))
		case *pg.Node_RangeSubselect:
			if x.RangeSubselect.Alias != nil {
				*out = append(*out, x.RangeSubselect.Alias.Aliasname)
			}
		case *pg.Node_RangeFunction:
			if x.RangeFunction.Alias != nil {
				*out = append(*out, x.RangeFunction.Alias.Aliasname)
			}
		case *pg.Node_JoinExpr:
			if x.JoinExpr.Alias != nil {
				*out = append(*out, x.JoinExpr.Alias.Aliasname)
			}
			names(x.JoinExpr.Larg, out)
			names(x.JoinExpr.Rarg, out)
		}
	}
	var mark func(n *pg.Node)
	mark = func(n *pg.Node) {
		j := n.GetJoinExpr()
		if j == nil {
			return
		}
		mark(j.Larg) // lower joins first: they are the lowest that make a name nullable
		mark(j.Rarg)
		var sides []*pg.Node
		switch j.Jointype {
		case pg.JoinType_JOIN_LEFT:
			sides = []*pg.Node{j.Rarg}
		case pg.JoinType_JOIN_RIGHT:
			sides = []*pg.Node{j.Larg}
		case pg.JoinType_JOIN_FULL:
			sides = []*pg.Node{j.Larg, j.Rarg}
		}
		for _, side := range sides {
			var ns []string
			names(side, &ns)
			for _, n := range ns {
				if madeBy[n] == nil {
					madeBy[n] = j
				}
			}
		}
	}
	for _, f := range sel.FromClause {
		mark(f)
	}
	if len(madeBy) == 0 {
		return nil
	}
	// A blind-index comparison of a nullable side, in the FROM list.
	var hit *encRef
	walk(&pg.List{Items: sel.FromClause}, func(n *pg.Node) bool {
		x := n.GetAExpr()
		if x == nil || hit != nil {
			return hit == nil
		}
		if p := a.blind.preds[x]; p != nil && madeBy[p.enc.base] != nil {
			hit = p.enc
		} else if j := a.blind.joins[x]; j != nil && (madeBy[j.l.base] != nil || madeBy[j.r.base] != nil) {
			hit = j.l
			if madeBy[j.l.base] == nil {
				hit = j.r
			}
		}
		return hit == nil
	})
	if hit == nil {
		return nil
	}
	// Does the statement read a nullable side outside the conditions of
	// the joins at or below the one that makes it nullable? Unqualified
	// columns count (they may be the nullable side's).
	reads := false
	readsIn := func(m proto.Message, inside []*pg.JoinExpr) {
		walk(m, func(n *pg.Node) bool {
			cr := n.GetColumnRef()
			if cr == nil || reads {
				return !reads
			}
			ns, _ := fieldNames(cr)
			if len(ns) == 1 {
				reads = true // a whole row, or an unqualified column
				return false
			}
			if o := madeBy[ns[len(ns)-2]]; o != nil && !slices.Contains(inside, o) {
				reads = true
			}
			return false
		})
	}
	var from func(n *pg.Node, above []*pg.JoinExpr)
	from = func(n *pg.Node, above []*pg.JoinExpr) {
		if j := n.GetJoinExpr(); j != nil {
			// Its conditions may read what it, or a join above it, makes
			// nullable: they decide matching. (above holds j's ancestors
			// and j, those whose nullable sides contain j.)
			inside := append(slices.Clone(above), j)
			if j.Quals != nil {
				readsIn(&pg.List{Items: []*pg.Node{j.Quals}}, inside)
			}
			from(j.Larg, inside)
			from(j.Rarg, inside)
			return
		}
		readsIn(&pg.List{Items: []*pg.Node{n}}, nil) // LATERAL subqueries and functions
	}
	for _, f := range sel.FromClause {
		from(f, nil)
	}
	// The select list only hands values out (NULL, or coalesce's default,
	// for a hidden row): it selects no row.
	for _, l := range [][]*pg.Node{{sel.WhereClause, sel.HavingClause}, sel.SortClause, sel.GroupClause, sel.DistinctClause, sel.WindowClause} {
		for _, n := range l {
			if n != nil {
				readsIn(&pg.List{Items: []*pg.Node{n}}, nil)
			}
		}
	}
	if !reads {
		return nil
	}
	return refuse(hit.table, hit.column, "a blind-index comparison on the nullable side of an outer join, in a statement that reads that side elsewhere than its select list (WHERE, ORDER BY, another join, a LATERAL subquery, GROUP BY), cannot be checked against forged index values: a row a forged value hides comes back null-extended, where no check sees it, and the statement would select its outer row as unmatched",
		"write the condition as EXISTS or IN (SELECT … WHERE "+hit.column+" = $1), which the driver prechecks, or return the outer join's columns as they are and filter in the application")
}
