package rewrite

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
)

// BlindIndex is the blind-index column of an encrypted column: a keyed
// digest of its normalized plaintext that the database can compare.
type BlindIndex struct {
	Column string
	Bytea  bool // stored as bytea (raw 32 bytes) rather than text (base64)
	// Key names the index key ("table.column" of its owner): two columns
	// with one Key index equal values equally, so they can be compared.
	Key string
	// Rotate is the index column of the next index during a rotation
	// (empty: none): every write stores its value beside Column's;
	// lookups use Column. RotateBytea: it is bytea.
	Rotate      string
	RotateBytea bool
}

// Lookup is a value the driver computes for a blind-index comparison: the
// index value, under Table.Column's index, of Value, or with Array of each
// element of the array Value.
type Lookup struct {
	Table  *Table
	Column string
	Value  Value
	Array  bool
	// Verified, when not 0, marks a lookup that is not an index value but
	// the row versions the plan's prechecks verified (VerifiedCtids, …):
	// a text array the driver fills after running them.
	Verified int
}

// Check asks the driver to verify, for every result row, that the
// encrypted column read at result position At (with the row key of
// Sources[Source]) holds one of the operands of Lookups once normalized:
// a blind-index value copied from another row then fails the query
// rather than returning that row for a value it does not hold.
//
// A comparison that is not a term of the WHERE clause's top-level AND
// (under OR or NOT, beside other conditions) has Cond: the server's
// value of the rewritten comparison is read at CondAt, and the driver
// checks it equals the comparison's value on the decrypted cell (true,
// false or NULL, as PostgreSQL computes it). When every comparison agrees
// with the values, the WHERE clause selected the rows the values select.
type Check struct {
	At      int
	Source  int
	Table   *Table
	Column  string
	Lookups []int // indexes into Plan.Lookups

	Cond   bool
	CondAt int
	// Visible: At is a result column the caller reads (the compared column
	// is returned), whose value is decrypted before the check; otherwise
	// At is a hidden column of ciphertext read for the check alone.
	Visible bool
	// Negated: the comparison is <>, NOT IN or <> ALL. NullOperand: it
	// has a NULL literal among its operands.
	Negated, NullOperand bool

	// Pair: the comparison is of two blind-indexed columns that share one
	// index key (a join, a.email = b.email); it has no lookups, and always
	// Cond. The other column is read at PairAt with the row key of
	// Sources[PairSource]; the driver compares the two decrypted values.
	Pair       bool
	PairAt     int
	PairSource int
	PairTable  *Table
	PairColumn string
}

// blindCan says what a blind index can and cannot do, for refusals.
const blindCan = "its blind index answers only equality (=, <>, IN, NOT IN, = ANY, IS [NOT] NULL against parameters or literals), not LIKE, ranges, ORDER BY, functions or comparisons with other columns"

// lookupBase marks parameters that take a blind-index value computed by
// the driver (Plan.Lookups); renumber turns them into Arg.Lookup.
const lookupBase = 200000

func lookupParam(i int) *pg.Node { return pg.MakeParamRefNode(int32(lookupBase+1+i), -1) }

type blindState struct {
	rewrote bool // a comparison moved to an index column
	lookups []Lookup
	// preds are the rewritten predicates, for checks: positive ones (=,
	// IN, = ANY) a matching row must satisfy by value, negated ones (<>,
	// NOT IN, <> ALL) it must not.
	preds map[*pg.A_Expr]*blindPred
	// joins are the rewritten comparisons of two index columns.
	joins map[*pg.A_Expr]*blindJoinPred
	// checked: the comparisons the driver checks on the rows it reads;
	// settled: those settle has decided (checked, prechecked).
	checked, settled map[*pg.A_Expr]bool
	prechecks        []Precheck
	// verified: 1 + the index of the first Verified lookup, 0 for none.
	verified int
}

func (b *blindState) check(x *pg.A_Expr) {
	if b.checked == nil {
		b.checked = map[*pg.A_Expr]bool{}
	}
	b.checked[x] = true
}

type blindJoinPred struct {
	l, r    *encRef
	negated bool
}

type blindPred struct {
	enc      *encRef
	negated  bool
	nullOper bool // a NULL literal among the operands
	lookups  []int
}

func (a *analyzer) addLookup(e *encRef, v Value, array bool) int {
	a.blind.lookups = append(a.blind.lookups, Lookup{Table: e.table, Column: e.column, Value: v, Array: array})
	return len(a.blind.lookups) - 1
}

// blindCol returns the encrypted column with a blind index that n names
// directly, if any.
func (a *analyzer) blindCol(n *pg.Node, sc *scope) *encRef {
	cr := n.GetColumnRef()
	if cr == nil {
		return nil
	}
	names, star := fieldNames(cr)
	if star {
		return nil
	}
	o := a.resolve(sc, names)
	if o == nil || o.enc == nil {
		return nil
	}
	if _, ok := o.enc.table.Blind[o.enc.column]; !ok {
		return nil
	}
	return o.enc
}

func opName(x *pg.A_Expr) string {
	if len(x.Name) == 0 {
		return ""
	}
	return x.Name[len(x.Name)-1].GetString_().GetSval()
}

// blindExpr rewrites an equality on a blind-indexed column into the same
// comparison of its index column with driver-computed index values:
//
//	email = $1            → t.email_bidx = $lookup
//	$1 = email            → t.email_bidx = $lookup
//	email IN ($1, 'a')    → t.email_bidx IN ($lookup, $lookup)
//	email = ANY($1)       → t.email_bidx = ANY($lookup array)
//
// and <>, NOT IN, <> ALL alike. handled is false when x compares no
// blind-indexed column; any other use of one is refused.
func (a *analyzer) blindExpr(x *pg.A_Expr, sc *scope) (handled bool, err error) {
	le, re := a.blindCol(x.Lexpr, sc), a.blindCol(x.Rexpr, sc)
	if le == nil && re == nil {
		return false, nil
	}
	e, other := le, x.Rexpr
	if le == nil {
		e, other = re, x.Lexpr
	}
	op := opName(x)
	refuseHere := func(reason string) error {
		return refuse(e.table, e.column, reason+"; "+blindCan, "compare it with a parameter or a literal, or filter in the application")
	}
	if le != nil && re != nil {
		return true, a.blindJoin(x, le, re, op)
	}
	if e.base == "" {
		return true, refuse(e.table, e.column, "a blind-index comparison must name the table's own column, not one passed through a subquery, CTE or set operation",
			"move the condition into the subquery or CTE that reads the table")
	}
	bi := e.table.Blind[e.column]
	idx := colRef(e.base, bi.Column)
	a.blind.rewrote = true
	switch {
	case x.Kind == pg.A_Expr_Kind_AEXPR_OP && (op == "=" || op == "<>"):
		v, ok := literal(other)
		if !ok {
			return true, refuseHere("only a parameter or a literal can be compared with it")
		}
		x.Lexpr, x.Rexpr = idx, a.lookupOperand(e, v)
		a.notePositive(x, op == "=", e)
	case x.Kind == pg.A_Expr_Kind_AEXPR_IN && le != nil && (op == "=" || op == "<>"):
		list := x.Rexpr.GetList()
		if list == nil {
			return true, refuseHere("IN takes a list of parameters or literals here")
		}
		for i, item := range list.Items {
			v, ok := literal(item)
			if !ok {
				return true, refuseHere("IN takes only parameters and literals here")
			}
			list.Items[i] = a.lookupOperand(e, v)
		}
		x.Lexpr = idx
		a.notePositive(x, op == "=", e)
	case (x.Kind == pg.A_Expr_Kind_AEXPR_OP_ANY && op == "=" || x.Kind == pg.A_Expr_Kind_AEXPR_OP_ALL && op == "<>") && le != nil:
		v, ok := literal(other)
		if !ok || v.Kind != ValParam {
			return true, refuseHere("= ANY and <> ALL take an array parameter here ($1, what sqlc generates for slices)")
		}
		x.Lexpr, x.Rexpr = idx, lookupParam(a.addLookup(e, v, true))
		a.notePositive(x, op == "=", e)
	default:
		return true, refuseHere("this comparison cannot run on ciphertext")
	}
	return true, nil
}

// blindJoin rewrites a comparison of two blind-indexed columns that share
// one index key (key_of in the map) to compare their index columns:
// a.email = b.email → a.email_bidx = b.email_bidx. Other pairs are
// refused: their index values are unrelated.
func (a *analyzer) blindJoin(x *pg.A_Expr, le, re *encRef, op string) error {
	lb, rb := le.table.Blind[le.column], re.table.Blind[re.column]
	key := func(e *encRef, b BlindIndex) string {
		if b.Key != "" {
			return b.Key
		}
		return e.table.Name + "." + e.column
	}
	switch {
	case key(le, lb) != key(re, rb):
		return refuse(le.table, le.column, fmt.Sprintf("comparing it with %s.%s is not supported: their blind indexes use different keys; %s", re.table.Name, re.column, blindCan),
			fmt.Sprintf("give one index the other's key (blind_index: {key_of: %s.%s} on %s.%s, then run kmspostgres reindex), or join on a plain column", le.table.Name, le.column, re.table.Name, re.column))
	case lb.Bytea != rb.Bytea:
		return refuse(le.table, le.column, fmt.Sprintf("its blind-index column and that of %s.%s are stored differently (text and bytea), so they cannot be compared", re.table.Name, re.column),
			"store both index columns as text, or both as bytea")
	case x.Kind != pg.A_Expr_Kind_AEXPR_OP || op != "=" && op != "<>":
		return refuse(le.table, le.column, "two blind-indexed columns compare only with = or <>; "+blindCan, "compare them with = or <>")
	case le.base == "" || re.base == "":
		return refuse(le.table, le.column, "a blind-index comparison must name the tables' own columns, not ones passed through a subquery, CTE or set operation",
			"move the condition into the subquery or CTE that reads the tables")
	}
	a.blind.rewrote = true
	x.Lexpr, x.Rexpr = colRef(le.base, lb.Column), colRef(re.base, rb.Column)
	if a.blind.joins == nil {
		a.blind.joins = map[*pg.A_Expr]*blindJoinPred{}
	}
	a.blind.joins[x] = &blindJoinPred{l: le, r: re, negated: op == "<>"}
	return nil
}

// lookupOperand is the node that replaces an operand: NULL stays NULL,
// anything else becomes a lookup parameter.
func (a *analyzer) lookupOperand(e *encRef, v Value) *pg.Node {
	if v.Kind == ValNull {
		return nullConst()
	}
	return lookupParam(a.addLookup(e, v, false))
}

// notePositive records the lookups a rewritten positive predicate added
// (those since the last call), for checks.
func (a *analyzer) notePositive(x *pg.A_Expr, positive bool, e *encRef) {
	if a.blind.preds == nil {
		a.blind.preds = map[*pg.A_Expr]*blindPred{}
	}
	p := &blindPred{enc: e, negated: !positive}
	// The lookups of x are those that name its parameters.
	walk(x, func(n *pg.Node) bool {
		if pr, ok := n.Node.(*pg.Node_ParamRef); ok && pr.ParamRef.Number > lookupBase {
			p.lookups = append(p.lookups, int(pr.ParamRef.Number-lookupBase-1))
		}
		if c := n.GetAConst(); c != nil && c.Isnull {
			p.nullOper = true
		}
		return true
	})
	a.blind.preds[x] = p
}

// isBlindCol reports whether col is the blind-index column of some
// encrypted column of t, and which.
func isBlindCol(t *Table, col string) (string, bool) {
	for enc, bi := range t.Blind {
		if bi.Column == col || bi.Rotate != "" && bi.Rotate == col {
			return enc, true
		}
	}
	return "", false
}

func refuseBlindWrite(t *Table, col, enc string) error {
	return refuse(t, col, "the driver writes blind-index columns itself (this one indexes "+enc+")", "write "+enc+" and leave "+col+" out")
}

// blindChecks adds to a top-level SELECT the encrypted columns that its
// blind-index comparisons compare, as hidden columns after the row keys,
// so that the driver can verify each returned row by value: the terms of
// the WHERE clause's top-level AND must hold on the values; every other
// comparison of the WHERE clause and of the JOIN … ON conditions (under OR
// or NOT, joins of two index columns, outer joins) is read as the
// server's boolean value beside its cells, which must agree with the
// values.
func (a *analyzer) blindChecks(sel *pg.SelectStmt, groups []*group, outs []*out) ([]*group, []pendingCheck) {
	var checks []pendingCheck
	groupFor := func(e *encRef) *group {
		for _, have := range groups {
			if have.src == e.src {
				return have // the row key is read already
			}
		}
		g := a.newGroup(e.table, e.table.Encrypted[e.column].Key)
		g.src = e.src
		appendHidden(&sel.TargetList, g, e.src)
		groups = append(groups, g)
		return g
	}
	covered := map[*pg.Node]bool{}
	for _, n := range conjuncts(sel.WhereClause) {
		p := a.positiveTerm(n)
		if p == nil || len(p.lookups) == 0 {
			continue
		}
		e := p.enc
		g := groupFor(e)
		checks = append(checks, pendingCheck{enc: e, group: g, lookups: p.lookups})
		covered[n] = true
		a.checkAll(n)
	}
	// The other comparisons, outside subqueries (which have their own
	// rows): the server's value of each is read beside the cells. Those
	// of the select list and ORDER BY too: a forged value must not make
	// the server report a row as matching, or pick it first.
	roots := qualRoots(sel)
	roots = append(roots, sel.TargetList...) // before the checks' columns are added
	roots = append(roots, sel.SortClause...)
	for _, root := range roots {
		walk(&pg.List{Items: []*pg.Node{root}}, func(n *pg.Node) bool { // the root itself is visited too
			if covered[n] || n.GetSubLink() != nil || n.GetRangeSubselect() != nil {
				return false
			}
			x := n.GetAExpr()
			if j := a.blind.joins[x]; j != nil && j.l.src != nil && j.r.src != nil {
				checks = append(checks, pendingCheck{enc: j.l, group: groupFor(j.l), pair: j.r, pairGroup: groupFor(j.r),
					cond: proto.Clone(n).(*pg.Node), negated: j.negated})
				a.blind.check(x)
				return false
			}
			p := a.blind.preds[x]
			if p == nil || len(p.lookups) == 0 {
				return true
			}
			checks = append(checks, pendingCheck{enc: p.enc, group: groupFor(p.enc), lookups: p.lookups,
				cond: proto.Clone(n).(*pg.Node), negated: p.negated, nullOper: p.nullOper})
			a.blind.check(x)
			return false
		})
	}
	for i := range checks {
		c := &checks[i]
		// A compared column the query returns from the same row is
		// checked on its decrypted value: not read twice.
		c.visibleAt = -1
		for oi, o := range outs {
			if o.enc != nil && o.enc.src == c.enc.src && o.enc.table == c.enc.table && o.enc.column == c.enc.column && o.enc.groupOf(groups, oi) == c.group {
				c.visibleAt = oi
				break
			}
		}
		if c.visibleAt < 0 {
			sel.TargetList = append(sel.TargetList, resTarget("__kmspg_c"+strconv.Itoa(i), colRef(c.enc.base, c.enc.column)))
		}
		if c.pair != nil {
			sel.TargetList = append(sel.TargetList, resTarget("__kmspg_j"+strconv.Itoa(i), colRef(c.pair.base, c.pair.column)))
		}
	}
	for i, c := range checks {
		if c.cond != nil {
			sel.TargetList = append(sel.TargetList, resTarget("__kmspg_b"+strconv.Itoa(i), c.cond))
		}
	}
	return groups, checks
}

// qualRoots returns the conditions of a SELECT whose columns the select
// list can name: its WHERE clause, and the ON conditions of the joins of
// its FROM list, except inside a join with an alias (which hides its
// tables' names) or a subquery.
func qualRoots(sel *pg.SelectStmt) []*pg.Node {
	var roots []*pg.Node
	if sel.WhereClause != nil {
		roots = append(roots, sel.WhereClause)
	}
	var from func(n *pg.Node)
	from = func(n *pg.Node) {
		j := n.GetJoinExpr()
		if j == nil || j.Alias != nil {
			return
		}
		if j.Quals != nil {
			roots = append(roots, j.Quals)
		}
		from(j.Larg)
		from(j.Rarg)
	}
	for _, n := range sel.FromClause {
		from(n)
	}
	return roots
}

// positiveTerm returns the blind-index predicate a WHERE term is: one
// positive comparison, or an OR of positive comparisons of the same
// column (their operands together); nil otherwise.
func (a *analyzer) positiveTerm(n *pg.Node) *blindPred {
	if x := n.GetAExpr(); x != nil {
		if p := a.blind.preds[x]; p != nil && !p.negated {
			return p
		}
		return nil
	}
	b := n.GetBoolExpr()
	if b == nil || b.Boolop != pg.BoolExprType_OR_EXPR {
		return nil
	}
	var out *blindPred
	for _, arg := range b.Args {
		p := a.positiveTerm(arg)
		if p == nil || out != nil && (p.enc.src != out.enc.src || p.enc.column != out.enc.column) {
			return nil
		}
		if out == nil {
			out = &blindPred{enc: p.enc}
		}
		out.lookups = append(out.lookups, p.lookups...)
	}
	return out
}

type pendingCheck struct {
	enc     *encRef
	group   *group
	lookups []int
	// cond: the comparison, read as a boolean column (see Check.Cond).
	cond              *pg.Node
	negated, nullOper bool
	// pair: the other column of a comparison of two index columns.
	pair      *encRef
	pairGroup *group
	// visibleAt: the result column that returns the compared cell, or -1.
	visibleAt int
}

// addChecks places the checks in the output after its hidden key columns.
func addChecks(o *Output, groups []*group, checks []pendingCheck) {
	pos := o.Visible + o.keyColumns()
	source := func(g *group) int {
		return slices.Index(groups, g)
	}
	for _, c := range checks {
		ch := Check{At: pos, Source: source(c.group), Table: c.enc.table, Column: c.enc.column, Lookups: c.lookups,
			Cond: c.cond != nil, Negated: c.negated, NullOperand: c.nullOper}
		if c.visibleAt >= 0 {
			ch.At, ch.Visible = c.visibleAt, true
		} else {
			pos++
		}
		if c.pair != nil {
			ch.Pair, ch.PairAt, ch.PairSource, ch.PairTable, ch.PairColumn = true, pos, source(c.pairGroup), c.pair.table, c.pair.column
			pos++
		}
		o.Checks = append(o.Checks, ch)
	}
	for i := range o.Checks {
		if o.Checks[i].Cond {
			o.Checks[i].CondAt = pos
			pos++
		}
	}
}

// Hidden is how many result columns follow the visible ones: row keys,
// primary keys, check cells and check conditions.
func (o *Output) Hidden() int {
	n := o.keyColumns()
	for _, c := range o.Checks {
		if !c.Visible {
			n++
		}
		if c.Pair {
			n++
		}
		if c.Cond {
			n++
		}
	}
	return n
}

// keyColumns is how many hidden columns the row keys take: each source's
// key column and primary key.
func (o *Output) keyColumns() int {
	n := 0
	for _, s := range o.Sources {
		n += 1 + len(s.PKAt)
	}
	return n
}

// checkable reports whether hidden columns can be added to a SELECT
// without changing its rows: no set operation, grouping, DISTINCT, window
// or aggregate. Other function calls and subqueries in the select list
// are computed per row, so they do not stop the checks. (An aggregate the
// driver does not know by name, a user-defined one, makes the server
// refuse the hidden columns: the query fails rather than go unchecked.)
func checkable(sel *pg.SelectStmt) bool {
	return sel.Op == pg.SetOperation_SETOP_NONE && len(sel.DistinctClause) == 0 && len(sel.ValuesLists) == 0 && !aggregating(sel)
}

// aggregating reports whether a SELECT's rows are computed from groups of
// its input rows (GROUP BY, HAVING, an aggregate or window function in the
// select list), rather than one from each.
func aggregating(sel *pg.SelectStmt) bool {
	if len(sel.GroupClause) > 0 || sel.HavingClause != nil || len(sel.WindowClause) > 0 {
		return true
	}
	found := false
	for _, t := range sel.TargetList {
		walk(t, func(n *pg.Node) bool {
			if n.GetSubLink() != nil {
				return false // the subquery's own aggregates are its own
			}
			if f := n.GetFuncCall(); f != nil && (f.AggStar || f.AggDistinct || f.AggFilter != nil || f.AggWithinGroup ||
				len(f.AggOrder) > 0 || f.Over != nil || aggregates[strings.ToLower(lastName(f.Funcname))]) {
				found = true
			}
			return !found
		})
	}
	return found
}

// aggregates are PostgreSQL's built-in aggregate functions, by name.
var aggregates = map[string]bool{}

func init() {
	for _, n := range strings.Fields(`array_agg avg bit_and bit_or bit_xor bool_and bool_or count every json_agg jsonb_agg
		json_object_agg jsonb_object_agg json_objectagg json_arrayagg max min range_agg range_intersect_agg string_agg sum
		xmlagg any_value corr covar_pop covar_samp regr_avgx regr_avgy regr_count regr_intercept regr_r2 regr_slope
		regr_sxx regr_sxy regr_syy stddev stddev_pop stddev_samp variance var_pop var_samp mode percentile_cont
		percentile_disc rank dense_rank percent_rank cume_dist grouping`) {
		aggregates[n] = true
	}
}

func lastName(names []*pg.Node) string {
	if len(names) == 0 {
		return ""
	}
	return names[len(names)-1].GetString_().GetSval()
}

// blindWritten lists the blind-indexed columns among cols, in order.
func blindWritten(t *Table, cols []string) []string {
	var out []string
	for _, c := range cols {
		if _, ok := t.Blind[c]; ok {
			out = append(out, c)
		}
	}
	return out
}

// indexColumns lists the index columns an INSERT writes for the indexed
// columns, in the order addIndexes adds their values: each index column,
// then its rotation's.
func indexColumns(t *Table, indexed []string) []string {
	var out []string
	for _, c := range indexed {
		bi := t.Blind[c]
		out = append(out, bi.Column)
		if bi.Rotate != "" {
			out = append(out, bi.Rotate)
		}
	}
	return out
}

// addIndexes appends to a VALUES row the index value of each indexed
// column it writes, and of its rotation: a slot for a value, NULL for
// NULL.
func (ip *Insert) addIndexes(row *InsertRow, list *pg.List, t *Table, indexed []string) {
	for _, c := range indexed {
		var cell *Cell
		for i := range row.Cells {
			if row.Cells[i].Column == c {
				cell = &row.Cells[i]
			}
		}
		n := 1
		if t.Blind[c].Rotate != "" {
			n = 2
		}
		for i := range n {
			if cell == nil {
				list.Items = append(list.Items, nullConst())
				continue
			}
			ic := Cell{Column: c, Key: cell.Key, Value: cell.Value, Slot: ip.Slots}
			if i == 0 {
				row.Indexes = append(row.Indexes, ic)
			} else {
				row.Rotations = append(row.Rotations, ic)
			}
			list.Items = append(list.Items, slotParam(ip.Slots))
			ip.Slots++
		}
	}
}

// updateIndexes sets the index column of each indexed column an UPDATE
// writes, and its rotation's, to one value for every row (the value is
// the same).
func updateIndexes(up *Update, upd *pg.UpdateStmt, t *Table, cells []setCell) {
	for _, c := range cells {
		bi, ok := t.Blind[c.name]
		if !ok {
			continue
		}
		up.Indexes = append(up.Indexes, Cell{Column: c.name, Key: c.ec.Key, Value: c.val, Slot: up.Slots})
		upd.TargetList = append(upd.TargetList, resTarget(bi.Column, slotParam(up.Slots)))
		up.Slots++
		if bi.Rotate != "" {
			up.Rotations = append(up.Rotations, Cell{Column: c.name, Key: c.ec.Key, Value: c.val, Slot: up.Slots})
			upd.TargetList = append(upd.TargetList, resTarget(bi.Rotate, slotParam(up.Slots)))
			up.Slots++
		}
	}
}

// String prints an Arg as {Orig Slot}, with the lookup when there is one.
func (a Arg) String() string {
	if a.Lookup > 0 {
		return fmt.Sprintf("{%d %d L%d}", a.Orig, a.Slot, a.Lookup)
	}
	return fmt.Sprintf("{%d %d}", a.Orig, a.Slot)
}

// conjuncts returns the top-level AND terms of a WHERE clause.
func conjuncts(n *pg.Node) []*pg.Node {
	if n == nil {
		return nil
	}
	if b := n.GetBoolExpr(); b != nil && b.Boolop == pg.BoolExprType_AND_EXPR {
		var out []*pg.Node
		for _, arg := range b.Args {
			out = append(out, conjuncts(arg)...)
		}
		return out
	}
	return []*pg.Node{n}
}

// returningChecks adds to the RETURNING list of a DELETE, or of an UPDATE
// that writes no encrypted column, the checks of its WHERE clause's
// blind-index equalities, when it returns encrypted columns: a row whose
// index value was forged is then not returned in plaintext (the statement
// has run; the error says so, and a transaction can be rolled back).
func (a *analyzer) returningChecks(list *[]*pg.Node, where *pg.Node, out *Output) {
	if out == nil {
		return
	}
	pos := out.Visible + out.keyColumns()
	var checks []pendingCheck
	var srcs []int
	for _, n := range conjuncts(where) {
		p := a.positiveTerm(n)
		if p == nil || len(p.lookups) == 0 {
			continue
		}
		e := p.enc
		g := a.newGroup(e.table, e.table.Encrypted[e.column].Key)
		appendHidden(list, g, e.src)
		s := Source{Table: e.table, Key: g.key, KeyAt: pos}
		pos++
		for range g.pkNames {
			s.PKAt = append(s.PKAt, pos)
			pos++
		}
		srcs = append(srcs, len(out.Sources))
		out.Sources = append(out.Sources, s)
		checks = append(checks, pendingCheck{enc: e, group: g, lookups: p.lookups})
	}
	for i, c := range checks {
		*list = append(*list, resTarget("__kmspg_c"+strconv.Itoa(i), colRef(c.enc.base, c.enc.column)))
		out.Checks = append(out.Checks, Check{At: pos, Source: srcs[i], Table: c.enc.table, Column: c.enc.column, Lookups: c.lookups})
		pos++
	}
}

// targetChecks returns the blind-index comparisons of a DELETE's or
// UPDATE's WHERE clause on the columns of its target table t (named qual
// in the statement), outside subqueries: the top-level AND terms, which
// must hold on the values, and the others (under OR or NOT, <>), which
// are read as the server's value. Comparisons of other tables' columns
// (FROM, USING) are not checked: the driver does not read those rows.
func (a *analyzer) targetChecks(where *pg.Node, t *Table, qual string) ([]pendingCheck, error) {
	var checks []pendingCheck
	covered := map[*pg.Node]bool{}
	on := func(e *encRef) bool { return e.table == t && e.base == qual }
	// A comparison of the target's index column with another index column
	// cannot be checked row by row here: refused.
	for x, j := range a.blind.joins {
		if on(j.l) || on(j.r) {
			if where == nil || !contains(where, x) {
				continue
			}
			e := j.l
			if !on(e) {
				e = j.r
			}
			return nil, refuse(t, e.column, "an UPDATE or DELETE that compares it with another blind-indexed column cannot be checked against forged index values",
				"select the rows with the join first, then update or delete them by primary key")
		}
	}
	for _, n := range conjuncts(where) {
		if p := a.positiveTerm(n); p != nil && len(p.lookups) > 0 && on(p.enc) {
			checks = append(checks, pendingCheck{enc: p.enc, lookups: p.lookups})
			covered[n] = true
		}
	}
	if where == nil {
		return checks, nil
	}
	walk(&pg.List{Items: []*pg.Node{where}}, func(n *pg.Node) bool {
		if covered[n] || n.GetSubLink() != nil {
			return false
		}
		p := a.blind.preds[n.GetAExpr()]
		if p == nil || len(p.lookups) == 0 || !on(p.enc) {
			return true
		}
		checks = append(checks, pendingCheck{enc: p.enc, lookups: p.lookups, cond: proto.Clone(n).(*pg.Node), negated: p.negated, nullOper: p.nullOper})
		return false
	})
	return checks, nil
}

// contains reports whether x is within n.
func contains(n *pg.Node, x *pg.A_Expr) bool {
	found := false
	walk(&pg.List{Items: []*pg.Node{n}}, func(m *pg.Node) bool {
		if m.GetAExpr() == x {
			found = true
		}
		return !found
	})
	return found
}

// addTargetChecks appends to a row finder's select list, per check, the
// row's key column, the compared cell and, for a condition, the server's
// value of it, and returns the checks with their positions.
func addTargetChecks(sel *pg.SelectStmt, t *Table, qual string, pending []pendingCheck) []Check {
	var out []Check
	for _, c := range pending {
		key := t.Encrypted[c.enc.column].Key
		sel.TargetList = append(sel.TargetList, resTarget("", colRef(qual, t.Keys[key].Column)), resTarget("", colRef(qual, c.enc.column)))
		ch := Check{At: len(sel.TargetList) - 1, Source: key, Table: t, Column: c.enc.column, Lookups: c.lookups,
			Cond: c.cond != nil, Negated: c.negated, NullOperand: c.nullOper}
		if c.cond != nil {
			sel.TargetList = append(sel.TargetList, resTarget("", c.cond))
			ch.CondAt = len(sel.TargetList) - 1
		}
		out = append(out, ch)
	}
	return out
}

// updateChecks adds to the row finder of an UPDATE that writes encrypted
// columns the checks of its WHERE clause (targetChecks), so that the
// driver can verify each locked row by value before writing it.
func (a *analyzer) updateChecks(up *Update, sel *pg.SelectStmt, where *pg.Node, t *Table, qual string) error {
	pending, err := a.targetChecks(where, t, qual)
	up.Checks = addTargetChecks(sel, t, qual, pending)
	return err
}

// preVerify plans the check of a DELETE's or UPDATE's rows when its WHERE
// clause has blind-index equalities on the target table t: a SELECT … FOR
// UPDATE of the rows with their key and encrypted columns, and a WHERE
// restricted to the rows the driver found to match by value.
func (a *analyzer) preVerify(rv *pg.RangeVar, t *Table, with *pg.WithClause, from []*pg.Node, where **pg.Node) (*Verify, error) {
	if t == nil || *where == nil {
		return nil, nil
	}
	qual := qualOf(rv)
	sel := &pg.SelectStmt{
		TargetList:  []*pg.Node{resTarget("", castText(colRef(qual, "ctid"))), resTarget("", castText(colRef(qual, "tableoid")))},
		FromClause:  []*pg.Node{{Node: &pg.Node_RangeVar{RangeVar: proto.Clone(rv).(*pg.RangeVar)}}},
		WhereClause: proto.Clone(*where).(*pg.Node),
		LockingClause: []*pg.Node{{Node: &pg.Node_LockingClause{LockingClause: &pg.LockingClause{
			Strength: pg.LockClauseStrength_LCS_FORUPDATE, WaitPolicy: pg.LockWaitPolicy_LockWaitBlock,
			LockedRels: []*pg.Node{{Node: &pg.Node_RangeVar{RangeVar: &pg.RangeVar{Relname: qual, Inh: true, Relpersistence: "p", Location: -1}}}}}}}},
	}
	for _, f := range from {
		sel.FromClause = append(sel.FromClause, proto.Clone(f).(*pg.Node))
	}
	if with != nil {
		sel.WithClause = proto.Clone(with).(*pg.WithClause)
	}
	for _, p := range t.PrimaryKey {
		sel.TargetList = append(sel.TargetList, resTarget("", castText(colRef(qual, p))))
	}
	v := &Verify{Table: t, CtidSlot: 0, TableoidSlot: 1, Slots: 2}
	pending, err := a.targetChecks(*where, t, qual)
	if err != nil {
		return nil, err
	}
	v.Checks = addTargetChecks(sel, t, qual, pending)
	if len(v.Checks) == 0 {
		return nil, nil
	}
	node := &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: sel}}
	v.SelectArgs = renumber(node)
	if v.SelectSQL, err = deparse(a.version, node); err != nil {
		return nil, &ParseError{Err: err}
	}
	// … AND (q.ctid, q.tableoid) IN (SELECT * FROM unnest($ctids::tid[], $toids::oid[]))
	in := parseOne("SELECT 1 WHERE (q.ctid, q.tableoid) IN (SELECT * FROM unnest($" + strconv.Itoa(slotBase+1) + "::text[]::tid[], $" + strconv.Itoa(slotBase+2) + "::text[]::oid[]))").GetSelectStmt().WhereClause
	sub := in.GetSubLink()
	row := sub.Testexpr.GetRowExpr()
	row.Args[0], row.Args[1] = colRef(qual, "ctid"), colRef(qual, "tableoid")
	*where = pg.MakeBoolExprNode(pg.BoolExprType_AND_EXPR, []*pg.Node{*where, in}, -1)
	return v, nil
}

// conflictChecks plans the ConflictChecks of an INSERT … ON CONFLICT DO
// UPDATE into t (written as rv) whose conflict a blind index may decide:
// SELECT key, pk::text…, col, idx, … FROM rv WHERE idx = ANY($1) FOR UPDATE.
func (a *analyzer) conflictChecks(rv *pg.RangeVar, t *Table) ([]ConflictCheck, error) {
	var out []ConflictCheck
	for _, c := range a.conflictBlind {
		for _, rotate := range []bool{false, true} {
			bi := t.Blind[c]
			idx := bi.Column
			if rotate {
				// A unique index on the rotation's column decides conflicts
				// too (ON CONSTRAINT, or the column named as the target).
				if idx = bi.Rotate; idx == "" || !a.conflictRotate {
					continue
				}
			}
			sql, err := a.indexedRowsSQL(rv, t, c, idx, true)
			if err != nil {
				return nil, err
			}
			out = append(out, ConflictCheck{Column: c, Rotate: rotate, SelectSQL: sql})
		}
	}
	return out, nil
}

// checkAll marks the comparisons under n as checked on the rows read.
func (a *analyzer) checkAll(n *pg.Node) {
	walk(&pg.List{Items: []*pg.Node{n}}, func(m *pg.Node) bool {
		if x := m.GetAExpr(); x != nil && a.blind.preds[x] != nil {
			a.blind.check(x)
		}
		return true
	})
}

// checkTarget marks the comparisons targetChecks checks in an UPDATE's or
// DELETE's WHERE clause: those on the target t (named qual), outside
// subqueries. The others are settled by prechecks or refused.
func (a *analyzer) checkTarget(where *pg.Node, t *Table, qual string) {
	if t == nil || where == nil {
		return
	}
	walk(&pg.List{Items: []*pg.Node{where}}, func(n *pg.Node) bool {
		if n.GetSubLink() != nil {
			return false
		}
		x := n.GetAExpr()
		if p := a.blind.preds[x]; p != nil && p.enc.table == t && p.enc.base == qual {
			a.blind.check(x)
		}
		return true
	})
}

// restrictConflictUpdate adds to an upsert's DO UPDATE, for each index
// its checks cover: … AND (q.idx IS DISTINCT FROM excluded.idx OR
// (q.ctid, q.tableoid) IN (the rows the checks read)). A conflicting row
// whose index equals the new row's is then updated only if the check read
// it: one whose index was forged after the check (a race with a raw
// writer) is left alone, and nothing is inserted for it either.
func (a *analyzer) restrictConflictUpdate(ins *pg.InsertStmt, ip *Insert, t *Table) {
	oc := ins.OnConflictClause
	qual := qualOf(ins.Relation)
	ip.CheckedCtidSlot, ip.CheckedTableoidSlot = ip.Slots, ip.Slots+1
	ip.Slots += 2
	conds := []*pg.Node{}
	if oc.WhereClause != nil {
		conds = append(conds, oc.WhereClause)
	}
	for _, cc := range ip.ConflictChecks {
		idx := t.Blind[cc.Column].Column
		if cc.Rotate {
			idx = t.Blind[cc.Column].Rotate
		}
		in := parseOne("SELECT 1 WHERE (q.ctid, q.tableoid) IN (SELECT * FROM unnest($" + strconv.Itoa(slotBase+1+ip.CheckedCtidSlot) + "::text[]::tid[], $" + strconv.Itoa(slotBase+1+ip.CheckedTableoidSlot) + "::text[]::oid[]))").GetSelectStmt().WhereClause
		row := in.GetSubLink().Testexpr.GetRowExpr()
		row.Args[0], row.Args[1] = colRef(qual, "ctid"), colRef(qual, "tableoid")
		distinct := &pg.Node{Node: &pg.Node_AExpr{AExpr: &pg.A_Expr{Kind: pg.A_Expr_Kind_AEXPR_DISTINCT, Name: []*pg.Node{str("=")},
			Lexpr: colRef(qual, idx), Rexpr: colRef("excluded", idx), Location: -1}}}
		conds = append(conds, pg.MakeBoolExprNode(pg.BoolExprType_OR_EXPR, []*pg.Node{distinct, in}, -1))
	}
	if len(conds) == 1 {
		oc.WhereClause = conds[0]
	} else {
		oc.WhereClause = pg.MakeBoolExprNode(pg.BoolExprType_AND_EXPR, conds, -1)
	}
}
