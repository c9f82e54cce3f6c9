package rewrite

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
)

// Rewrite plans one SQL text against the catalog. A statement that touches
// no encrypted table (and no view over one) comes back as a passthrough
// plan with the SQL unchanged. A statement the driver cannot run safely
// comes back as an error wrapping ErrUnsupported.
func Rewrite(sql string, cat Catalog) (*Plan, error) {
	tree, err := pg.Parse(sql)
	if err != nil {
		return nil, &ParseError{Err: err}
	}
	p, err := rewriteTree(sql, tree, cat)
	if p != nil {
		configEffects(p, tree)
	}
	return p, err
}

func rewriteTree(sql string, tree *pg.ParseResult, cat Catalog) (*Plan, error) {
	var err error
	a := &analyzer{cat: cat, infos: map[*pg.SelectStmt]*selInfo{}, version: tree.Version}
	if pf, ok := cat.(Prefetcher); ok {
		if err := pf.Prefetch(relNames(tree)); err != nil {
			return nil, err
		}
	}
	inval, touched := false, false
	if err := parsingSettings(tree); err != nil {
		return nil, err
	}
	for _, rs := range tree.Stmts {
		if err := opaque(rs.Stmt); err != nil {
			return nil, err
		}
		ddl := invalidates(rs.Stmt)
		inval = inval || ddl
		t, err := a.touches(rs.Stmt)
		if err != nil {
			if ddl {
				// Migrations run before the schema map matches the
				// database; DDL writes no rows, so let it through.
				continue
			}
			return nil, err
		}
		touched = touched || t
	}
	pass := &Plan{Passthrough: true, SQL: sql, Invalidates: inval}
	if !touched {
		return pass, nil
	}
	if len(tree.Stmts) != 1 {
		// A migration file run in one Exec: schema changes write no rows,
		// so they pass as they would one by one.
		allDDL := true
		for _, rs := range tree.Stmts {
			allDDL = allDDL && schemaChange(rs.Stmt)
		}
		if allDDL {
			return pass, nil
		}
		return nil, &RefusalError{Table: a.touched, Reason: "a string of several statements touches an encrypted table", Fix: "send each statement on its own"}
	}
	stmt := tree.Stmts[0].Stmt
	var p *Plan
	switch x := stmt.Node.(type) {
	case *pg.Node_SelectStmt:
		p, err = a.topSelect(stmt, x.SelectStmt)
	case *pg.Node_InsertStmt:
		p, err = a.insert(stmt, x.InsertStmt)
	case *pg.Node_UpdateStmt:
		p, err = a.update(stmt, x.UpdateStmt)
	case *pg.Node_DeleteStmt:
		p, err = a.delete(stmt, x.DeleteStmt)
	case *pg.Node_CopyStmt:
		return nil, &RefusalError{Table: a.touched, Reason: "COPY into or out of an encrypted table would move ciphertext or plaintext past the driver", Fix: "use INSERT and SELECT through the driver"}
	case *pg.Node_ExplainStmt:
		for _, o := range x.ExplainStmt.Options {
			if d := o.GetDefElem(); d != nil && d.Defname == "analyze" {
				return nil, &RefusalError{Table: a.touched, Reason: "EXPLAIN ANALYZE runs the statement without the driver's encryption", Fix: "use EXPLAIN without ANALYZE"}
			}
		}
		return pass, nil
	case *pg.Node_CreateTableAsStmt:
		return nil, &RefusalError{Table: a.touched, Reason: "CREATE TABLE AS, SELECT INTO and materialized views would copy ciphertext past the driver", Fix: "create the table, then insert through the driver"}
	case *pg.Node_DeclareCursorStmt:
		return nil, &RefusalError{Table: a.touched, Reason: "cursors over encrypted tables would return ciphertext", Fix: "page with LIMIT and a plain key instead"}
	case *pg.Node_PrepareStmt, *pg.Node_ExecuteStmt:
		return nil, &RefusalError{Table: a.touched, Reason: "SQL-level PREPARE and EXECUTE bypass the driver's rewriting", Fix: "use database/sql's Prepare"}
	case *pg.Node_MergeStmt:
		return nil, &RefusalError{Table: a.touched, Reason: "MERGE on an encrypted table is not supported: the driver would not see the rows it inserts or updates",
			Fix: "use INSERT ... ON CONFLICT on the primary key, or UPDATE by primary key"}
	default:
		if schemaChange(stmt) || utility(stmt) {
			return pass, nil
		}
		// Default deny: a statement kind the driver does not plan, over an
		// encrypted table (or a relation that reaches one).
		return nil, &RefusalError{Table: a.touched, Reason: "this kind of statement (" + stmtKind(stmt) + ") is not planned by the driver and reaches an encrypted table",
			Fix: "use SELECT, INSERT, UPDATE or DELETE through the driver, or sql.Conn.Raw for administration"}
	}
	if err != nil {
		return nil, err
	}
	if err := a.settle(stmt); err != nil {
		return nil, err
	}
	if p.Prechecks, err = a.prechecks(); err != nil {
		return nil, err
	}
	if p.Passthrough && a.blind.rewrote {
		p.Passthrough = false // it compares blind indexes: run the rewritten SQL
	}
	p.Lookups = a.blind.lookups
	if p.Passthrough {
		// Checked and needing nothing: the caller's SQL runs as written.
		p.SQL = sql
	} else if err := a.finish(p, stmt); err != nil {
		return nil, err
	}
	p.Invalidates = inval
	return p, nil
}

// configEffects says whether statements may change settings (and so the
// search_path names resolve through), and whether they end a transaction.
func configEffects(p *Plan, tree *pg.ParseResult) {
	for _, rs := range tree.Stmts {
		switch x := rs.Stmt.Node.(type) {
		case *pg.Node_VariableSetStmt:
			p.SetsConfig = true
			p.LocalConfig = p.LocalConfig || x.VariableSetStmt.IsLocal
		case *pg.Node_DiscardStmt:
			p.SetsConfig = true
			p.DropsStatements = x.DiscardStmt.Target != pg.DiscardMode_DISCARD_TEMP && x.DiscardStmt.Target != pg.DiscardMode_DISCARD_SEQUENCES
		case *pg.Node_DeallocateStmt:
			p.DropsStatements = true
		case *pg.Node_TransactionStmt:
			switch x.TransactionStmt.Kind {
			case pg.TransactionStmtKind_TRANS_STMT_SAVEPOINT, pg.TransactionStmtKind_TRANS_STMT_RELEASE, pg.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
			default:
				p.TxControl = true
			}
			switch x.TransactionStmt.Kind {
			case pg.TransactionStmtKind_TRANS_STMT_COMMIT, pg.TransactionStmtKind_TRANS_STMT_ROLLBACK,
				pg.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO, pg.TransactionStmtKind_TRANS_STMT_COMMIT_PREPARED,
				pg.TransactionStmtKind_TRANS_STMT_ROLLBACK_PREPARED, pg.TransactionStmtKind_TRANS_STMT_PREPARE:
				p.EndsTx = true
			}
		}
	}
	walkMessages(tree, func(m proto.Message) bool {
		switch x := m.(type) {
		case *pg.FuncCall:
			var parts []string
			for _, n := range x.Funcname {
				parts = append(parts, strings.ToLower(n.GetString_().GetSval()))
			}
			if len(parts) > 0 {
				name := strings.Join(parts, ".")
				if !slices.Contains(p.Calls, name) {
					p.Calls = append(p.Calls, name)
				}
				if parts[len(parts)-1] == "set_config" {
					p.SetsConfig, p.LocalConfig = true, true
				}
			}
		case *pg.RangeVar:
			// UPDATE pg_settings SET setting = … is set_config by another
			// name.
			if strings.EqualFold(x.Relname, "pg_settings") {
				p.SetsConfig, p.LocalConfig = true, true
			}
		}
		return true
	})
}

// relNames lists the distinct relation names a parse tree mentions.
func relNames(tree *pg.ParseResult) []RelName {
	seen := map[RelName]bool{}
	var out []RelName
	walkMessages(tree, func(m proto.Message) bool {
		if rv, ok := m.(*pg.RangeVar); ok {
			n := RelName{Schema: rv.Schemaname, Name: rv.Relname}
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
		return true
	})
	return out
}

// parsingSettings refuses statements that would make the server read SQL
// differently from the driver's parser: standard_conforming_strings off
// (backslashes in literals), a client encoding other than UTF-8. SET,
// RESET and set_config are checked; set_config with a computed name is
// refused.
func parsingSettings(tree *pg.ParseResult) error {
	bad := func(name, value string) error {
		name, value = strings.ToLower(name), strings.ToLower(strings.Trim(value, "'"))
		switch name {
		case "standard_conforming_strings":
			if value != "on" && value != "true" && value != "1" && value != "" {
				return &RefusalError{Reason: "standard_conforming_strings = " + value + " would make the server read backslashes in string literals differently from the driver", Fix: "leave standard_conforming_strings on (the default since PostgreSQL 9.1)"}
			}
		case "client_encoding":
			if value != "utf8" && value != "utf-8" && value != "unicode" && value != "" {
				return &RefusalError{Reason: "client_encoding = " + value + ": the driver reads SQL as UTF-8", Fix: "leave client_encoding UTF8"}
			}
		}
		return nil
	}
	var err error
	walk(tree, func(n *pg.Node) bool {
		if err != nil {
			return false
		}
		switch x := n.Node.(type) {
		case *pg.Node_VariableSetStmt:
			v := ""
			for _, a := range x.VariableSetStmt.Args {
				if c := a.GetAConst(); c != nil {
					v += c.GetSval().GetSval()
					if iv := c.GetIval(); iv != nil {
						v += strconv.Itoa(int(iv.Ival))
					}
				}
			}
			if x.VariableSetStmt.Kind == pg.VariableSetKind_VAR_SET_VALUE {
				err = bad(x.VariableSetStmt.Name, v)
			}
		case *pg.Node_FuncCall:
			names := x.FuncCall.Funcname
			if len(names) == 0 || !strings.EqualFold(names[len(names)-1].GetString_().GetSval(), "set_config") || len(x.FuncCall.Args) < 2 {
				return true
			}
			name := x.FuncCall.Args[0].GetAConst().GetSval()
			if name == nil {
				err = &RefusalError{Reason: "set_config with a setting name computed in SQL: the driver cannot tell whether it changes how the server reads SQL", Fix: "name the setting as a literal"}
				return false
			}
			val := ""
			if v := x.FuncCall.Args[1].GetAConst().GetSval(); v != nil {
				val = v.Sval
			} else {
				val = "<computed>"
			}
			err = bad(name.Sval, val)
		}
		return true
	})
	return err
}

// opaque refuses statements that run code the driver cannot see (DO
// blocks, procedures): they may read or write encrypted tables whatever
// they name.
func opaque(n *pg.Node) error {
	switch n.Node.(type) {
	case *pg.Node_DoStmt:
		return &RefusalError{Reason: "a DO block runs code the driver cannot see, which could read or write encrypted tables past it",
			Fix: "send the block's statements through the driver one by one, or run it with sql.Conn.Raw as an administrator"}
	case *pg.Node_CallStmt:
		return &RefusalError{Reason: "CALL runs a procedure the driver cannot see, which could read or write encrypted tables past it",
			Fix: "send the procedure's statements through the driver, or run it with sql.Conn.Raw as an administrator"}
	}
	return nil
}

// utility reports statements that read and write no rows: transaction
// control, settings, locks, notifications, maintenance, EXPLAIN without
// ANALYZE.
func utility(n *pg.Node) bool {
	switch n.Node.(type) {
	case *pg.Node_TransactionStmt, *pg.Node_VariableSetStmt, *pg.Node_VariableShowStmt,
		*pg.Node_ExplainStmt, *pg.Node_LockStmt, *pg.Node_DiscardStmt,
		*pg.Node_ListenStmt, *pg.Node_NotifyStmt, *pg.Node_UnlistenStmt, *pg.Node_CheckPointStmt,
		*pg.Node_VacuumStmt:
		return true
	}
	return false
}

// stmtKind names a statement's kind for messages: "MergeStmt" → "MERGE".
func stmtKind(n *pg.Node) string {
	name := strings.TrimPrefix(fmt.Sprintf("%T", n.Node), "*pg_query.Node_")
	return strings.ToUpper(strings.TrimSuffix(name, "Stmt"))
}

// invalidates reports statements that may change what the catalog said.
func invalidates(n *pg.Node) bool {
	switch n.Node.(type) {
	case *pg.Node_SelectStmt, *pg.Node_InsertStmt, *pg.Node_UpdateStmt, *pg.Node_DeleteStmt,
		*pg.Node_TransactionStmt, *pg.Node_VariableSetStmt, *pg.Node_VariableShowStmt,
		*pg.Node_ExplainStmt, *pg.Node_LockStmt, *pg.Node_CopyStmt, *pg.Node_DiscardStmt,
		*pg.Node_ListenStmt, *pg.Node_NotifyStmt, *pg.Node_UnlistenStmt, *pg.Node_CheckPointStmt,
		*pg.Node_VacuumStmt, *pg.Node_CallStmt, *pg.Node_DoStmt, *pg.Node_MergeStmt,
		*pg.Node_ExecuteStmt, *pg.Node_FetchStmt, *pg.Node_ClosePortalStmt, *pg.Node_PrepareStmt,
		*pg.Node_DeallocateStmt, *pg.Node_DeclareCursorStmt:
		return false
	}
	return true
}

// schemaChange reports DDL that neither reads nor writes rows through the
// driver's view (CREATE TABLE AS and the like do, and are refused).
func schemaChange(n *pg.Node) bool {
	switch n.Node.(type) {
	case *pg.Node_CreateTableAsStmt, *pg.Node_DeclareCursorStmt, *pg.Node_PrepareStmt, *pg.Node_ExecuteStmt,
		*pg.Node_FetchStmt, *pg.Node_ClosePortalStmt:
		return false
	}
	return invalidates(n)
}

func (a *analyzer) finish(p *Plan, stmt *pg.Node) error {
	p.Args = renumber(stmt)
	sql, err := deparse(a.version, stmt)
	if err != nil {
		return &ParseError{Err: err}
	}
	p.SQL = sql
	return nil
}

func hasEnc(outs []*out) bool {
	return slices.ContainsFunc(outs, func(o *out) bool { return o.enc != nil })
}

func (a *analyzer) topSelect(stmt *pg.Node, sel *pg.SelectStmt) (*Plan, error) {
	info, err := a.selectStmt(sel, nil)
	if err != nil {
		return nil, err
	}
	groups := a.expose(sel, info)
	var checks []pendingCheck
	if checkable(sel) {
		groups, checks = a.blindChecks(sel, groups, info.outs)
	}
	if err := a.settle(stmt); err != nil {
		return nil, err
	}
	if err := a.outerJoinAbsence(sel); err != nil {
		return nil, err
	}
	if !hasEnc(info.outs) && len(checks) == 0 {
		return &Plan{Passthrough: true}, nil
	}
	out := output(info.outs, groups)
	addChecks(out, groups, checks)
	return &Plan{Out: out}, nil
}

// returning analyses a RETURNING list over sc and, when it reads encrypted
// columns, exposes their row keys.
func (a *analyzer) returning(list *[]*pg.Node, sc *scope) (*Output, error) {
	if len(*list) == 0 {
		return nil, nil
	}
	outs, _, err := a.targets(list, sc, "an expression in RETURNING")
	if err != nil {
		return nil, err
	}
	if !hasEnc(outs) {
		return nil, nil
	}
	return output(outs, a.exposeTargets(list, outs)), nil
}

// literal reads a value written to an encrypted or primary-key column.
func literal(n *pg.Node) (Value, bool) {
	switch x := n.GetNode().(type) {
	case *pg.Node_ParamRef:
		return Value{Kind: ValParam, Param: int(x.ParamRef.Number) - 1}, x.ParamRef.Number >= 1 && x.ParamRef.Number <= slotBase
	case *pg.Node_SetToDefault:
		return Value{Kind: ValNull}, true
	case *pg.Node_TypeCast:
		return literal(x.TypeCast.Arg)
	case *pg.Node_AConst:
		c := x.AConst
		if c.Isnull {
			return Value{Kind: ValNull}, true
		}
		switch v := c.Val.(type) {
		case *pg.A_Const_Sval:
			return Value{Kind: ValConst, Const: v.Sval.Sval}, true
		case *pg.A_Const_Ival:
			return Value{Kind: ValConst, Const: int64(v.Ival.Ival)}, true
		case *pg.A_Const_Fval:
			return Value{Kind: ValConst, Const: v.Fval.Fval}, true
		case *pg.A_Const_Boolval:
			return Value{Kind: ValConst, Const: v.Boolval.Boolval}, true
		}
	}
	return Value{}, false
}

func isTextType(typ string) bool {
	return typ == "text" || typ == "character varying" || strings.HasPrefix(typ, "character varying(")
}

// isNumericLiteral reports a number literal that is not a plain integer
// (1.50, 1e2), whose text PostgreSQL normalizes.
func isNumericLiteral(n *pg.Node) bool {
	if tc := n.GetTypeCast(); tc != nil {
		return isNumericLiteral(tc.Arg)
	}
	c := n.GetAConst()
	return c != nil && c.GetFval() != nil
}

func pkType(t *Table, i int) string {
	if i < len(t.PKTypes) {
		return t.PKTypes[i]
	}
	return ""
}

// pkCastOK accepts a primary-key value without a cast, or cast to a type
// that stores the same text as the column's own type.
func pkCastOK(n *pg.Node, colType string) bool {
	tc := n.GetTypeCast()
	if tc == nil {
		return true
	}
	if tc.TypeName == nil || len(tc.TypeName.Typmods) > 0 || len(tc.TypeName.ArrayBounds) > 0 || !pkCastOK(tc.Arg, colType) {
		return false
	}
	names := tc.TypeName.Names
	name := strings.ToLower(names[len(names)-1].GetString_().GetSval())
	switch colType {
	case "smallint", "integer", "bigint":
		return name == "int2" || name == "int4" || name == "int8" || name == "smallint" || name == "integer" || name == "int" || name == "bigint"
	case "uuid":
		return name == "uuid"
	case "text":
		return name == "text" || name == "varchar"
	}
	return false
}

func isKeyCol(t *Table, col string) int {
	for i, k := range t.Keys {
		if k.Column == col {
			return i
		}
	}
	return -1
}

func qualOf(rv *pg.RangeVar) string {
	if rv.Alias != nil {
		return rv.Alias.Aliasname
	}
	return rv.Relname
}

// target resolves the table an INSERT, UPDATE or DELETE writes, and the
// scope of its WITH clause. t is nil for a table that is not encrypted.
func (a *analyzer) target(rv *pg.RangeVar, w *pg.WithClause) (cs *scope, target *rel, t *Table, err error) {
	if cs, err = a.with(w, nil); err != nil {
		return nil, nil, nil, err
	}
	if target, err = a.rangeVar(rv, &scope{}); err != nil {
		return nil, nil, nil, err
	}
	if t, err = a.cat.Encrypted(rv.Schemaname, rv.Relname); err != nil {
		return nil, nil, nil, err
	}
	return cs, target, t, nil
}

// writeScope is the scope of an UPDATE's or DELETE's WHERE: the target and
// the FROM (USING) items. It checks the WHERE clause.
func (a *analyzer) writeScope(cs *scope, target *rel, from []*pg.Node, where *pg.Node) (*scope, error) {
	sc := &scope{parent: cs, rels: []*rel{target}}
	for _, f := range from {
		if err := a.fromItem(f, sc, cs); err != nil {
			return nil, err
		}
	}
	if err := duplicateNames(sc); err != nil {
		return nil, err
	}
	return sc, a.checkExpr(where, sc, "WHERE")
}

func (a *analyzer) insert(stmt *pg.Node, ins *pg.InsertStmt) (*Plan, error) {
	rv := ins.Relation
	cs, target, t, err := a.target(rv, ins.WithClause)
	if err != nil {
		return nil, err
	}
	src := ins.SelectStmt.GetSelectStmt()
	isValues := src != nil && len(src.ValuesLists) > 0 && src.Op == pg.SetOperation_SETOP_NONE

	var cols []string
	for _, c := range ins.Cols {
		rt := c.GetResTarget()
		if t != nil {
			if _, enc := t.Encrypted[rt.Name]; enc && len(rt.Indirection) > 0 {
				return nil, refuse(t, rt.Name, "writing part of an encrypted value (a subscript or field) is not supported", "write the whole value")
			}
			if isKeyCol(t, rt.Name) >= 0 {
				return nil, refuse(t, rt.Name, "the driver writes key columns itself", "leave "+rt.Name+" out of the INSERT")
			}
			if enc, ok := isBlindCol(t, rt.Name); ok {
				return nil, refuseBlindWrite(t, rt.Name, enc)
			}
		}
		cols = append(cols, rt.Name)
	}
	implicitCols := len(ins.Cols) == 0
	if implicitCols && t != nil {
		n := len(t.Columns)
		if isValues {
			n = min(n, len(src.ValuesLists[0].GetList().GetItems()))
		} else if src != nil {
			n = -1 // INSERT … SELECT without a column list: the SELECT decides
		}
		if n >= 0 {
			cols = t.Columns[:n]
		}
		for _, c := range cols {
			if isKeyCol(t, c) >= 0 {
				return nil, refuse(t, c, "an INSERT without a column list would write the key column", "list the columns")
			}
			if enc, ok := isBlindCol(t, c); ok {
				return nil, refuseBlindWrite(t, c, enc)
			}
		}
	}
	writesEnc := ""
	if t != nil {
		for _, c := range cols {
			if _, ok := t.Encrypted[c]; ok {
				writesEnc = c
				break
			}
		}
		if src != nil && !isValues && implicitCols && len(t.Encrypted) > 0 {
			writesEnc = t.Keys[0].Columns[0]
		}
	}

	sc := &scope{parent: cs, rels: []*rel{target}}
	if err := a.onConflict(ins, t, target, cs); err != nil {
		return nil, err
	}

	var ip *Insert
	switch {
	case src == nil:
	case !isValues:
		if writesEnc != "" {
			return nil, refuse(t, writesEnc, "INSERT ... SELECT cannot write an encrypted column: the driver never sees the values",
				"read the rows through the driver and insert them with VALUES and parameters")
		}
		info, err := a.selectStmt(src, cs)
		if err != nil {
			return nil, err
		}
		for _, o := range info.outs {
			if o.enc != nil {
				return nil, refuse(o.enc.table, o.enc.column, "INSERT ... SELECT would copy ciphertext into "+rv.Relname+", where it could not be read",
					"read the rows through the driver and insert the plaintext")
			}
		}
	case writesEnc == "":
		for _, l := range src.ValuesLists {
			if err := a.checkExpr(l, cs, "VALUES"); err != nil {
				return nil, err
			}
		}
	default:
		if ip, err = a.insertValues(ins, t, cols, implicitCols, src, cs); err != nil {
			return nil, err
		}
		if ip.ConflictChecks, err = a.conflictChecks(rv, t); err != nil {
			return nil, err
		}
		if len(ip.ConflictChecks) > 0 {
			a.restrictConflictUpdate(ins, ip, t)
		}
	}
	// An INSERT into an encrypted table without a column list names its
	// columns: by position it would follow the table's column order at
	// run time, which a migration may change after the plan was made
	// (values meant for a plain column landing in an encrypted one).
	named := false
	if t != nil && implicitCols && isValues && ip == nil {
		for _, c := range cols {
			ins.Cols = append(ins.Cols, &pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Name: c, Location: -1}}})
		}
		named = len(cols) > 0
	}
	out, err := a.returning(&ins.ReturningList, sc)
	if err != nil {
		return nil, err
	}
	if ip == nil && out == nil && !named {
		return &Plan{Passthrough: true}, nil
	}
	return &Plan{Insert: ip, Out: out}, nil
}

func (a *analyzer) insertValues(ins *pg.InsertStmt, t *Table, cols []string, implicitCols bool, src *pg.SelectStmt, cs *scope) (*Insert, error) {
	ip := &Insert{Table: t}
	pkPos := map[string]int{}
	for i, p := range t.PrimaryKey {
		pkPos[p] = i
	}
	var missing []string
	for _, p := range t.PrimaryKey {
		if !slices.Contains(cols, p) {
			missing = append(missing, p)
		}
	}
	canGen := len(t.PrimaryKey) == 1 && t.PKGen != PKNone
	noPK := func() error {
		return refuse(t, "", "the INSERT must give the primary key ("+strings.Join(t.PrimaryKey, ", ")+"): it is part of each row's encryption context",
			"pass it as a parameter, or give the column a sequence, identity or uuid type so that the driver can take one before inserting")
	}
	if len(missing) > 0 && !canGen {
		return nil, noPK()
	}
	// Keys written by this statement, in table order.
	var keys []int
	for _, c := range cols {
		if ec, ok := t.Encrypted[c]; ok && !slices.Contains(keys, ec.Key) {
			keys = append(keys, ec.Key)
		}
	}
	slices.Sort(keys)
	if implicitCols {
		for _, c := range cols {
			ins.Cols = append(ins.Cols, &pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Name: c, Location: -1}}})
		}
	}
	for _, m := range missing {
		ins.Cols = append(ins.Cols, &pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Name: m, Location: -1}}})
	}
	for _, k := range keys {
		ins.Cols = append(ins.Cols, &pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Name: t.Keys[k].Column, Location: -1}}})
	}
	indexed := blindWritten(t, cols)
	for _, c := range indexColumns(t, indexed) {
		ins.Cols = append(ins.Cols, &pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Name: c, Location: -1}}})
	}
	generated := false
	for _, rowNode := range src.ValuesLists {
		list := rowNode.GetList()
		if len(list.Items) != len(cols) {
			return nil, refuse(t, "", "each VALUES row must have one value per column", "list a value for every column")
		}
		row := InsertRow{PK: make([]Value, len(t.PrimaryKey)), PKSlot: make([]int, len(t.PrimaryKey)), KeySlot: make([]int, len(t.Keys))}
		for i := range row.PKSlot {
			row.PKSlot[i] = -1
		}
		for i := range row.KeySlot {
			row.KeySlot[i] = -1
		}
		for ci, col := range cols {
			v := list.Items[ci]
			if ec, ok := t.Encrypted[col]; ok {
				val, ok := literal(v)
				if !ok {
					return nil, refuse(t, col, "only parameters, literals, NULL and DEFAULT can be written to an encrypted column: the database only ever sees its ciphertext",
						"compute the value in the application and pass it as a parameter")
				}
				if val.Kind == ValNull {
					list.Items[ci] = nullConst()
					continue
				}
				row.Cells = append(row.Cells, Cell{Column: col, Key: ec.Key, Value: val, Slot: ip.Slots})
				list.Items[ci] = slotParam(ip.Slots)
				ip.Slots++
				continue
			}
			if pi, ok := pkPos[col]; ok {
				val, ok := literal(v)
				if ok && isTextType(pkType(t, pi)) && isNumericLiteral(v) {
					return nil, refuse(t, col, "a numeric literal for a text primary key is stored in PostgreSQL's normal form (1e2 becomes 100), and the context must be the stored value",
						"quote it as a string literal, or pass it as a parameter")
				}
				if ok && !pkCastOK(v, pkType(t, pi)) {
					return nil, refuse(t, col, "a cast on the primary key can change the value PostgreSQL stores, and the context must be the stored value",
						"pass the primary key as a parameter or a plain literal")
				}
				if !ok {
					return nil, refuse(t, col, "the primary key must be a parameter or a literal: it is part of each row's encryption context",
						"pass it as a parameter, or leave it out and let the driver take it from the sequence")
				}
				if val.Kind == ValNull {
					if !canGen {
						return nil, noPK()
					}
					val = Value{Kind: ValGenerated}
					row.PKSlot[pi] = ip.Slots
					list.Items[ci] = slotParam(ip.Slots)
					ip.Slots++
					generated = true
				}
				row.PK[pi] = val
				continue
			}
			if err := a.checkExpr(v, cs, "VALUES"); err != nil {
				return nil, err
			}
		}
		for _, m := range missing {
			pi := pkPos[m]
			row.PK[pi] = Value{Kind: ValGenerated}
			row.PKSlot[pi] = ip.Slots
			list.Items = append(list.Items, slotParam(ip.Slots))
			ip.Slots++
			generated = true
		}
		for _, k := range keys {
			used := slices.ContainsFunc(row.Cells, func(c Cell) bool { return c.Key == k })
			if !used {
				list.Items = append(list.Items, nullConst())
				continue
			}
			row.KeySlot[k] = ip.Slots
			list.Items = append(list.Items, slotParam(ip.Slots))
			ip.Slots++
		}
		ip.addIndexes(&row, list, t, indexed)
		ip.Rows = append(ip.Rows, row)
	}
	if generated && t.PKGen == PKIdentityAlways && ins.Override != pg.OverridingKind_OVERRIDING_SYSTEM_VALUE {
		ins.Override = pg.OverridingKind_OVERRIDING_SYSTEM_VALUE
		ip.OverridingSystem = true
	}
	return ip, nil
}

func (a *analyzer) onConflict(ins *pg.InsertStmt, t *Table, target *rel, cs *scope) error {
	oc := ins.OnConflictClause
	if oc == nil {
		return nil
	}
	// EXCLUDED has the target's columns, read from the row being written.
	excluded := &rel{name: "excluded", opaque: target.opaque}
	for _, c := range target.cols {
		cc := *c
		if c.enc != nil {
			e := *c.enc
			e.base, e.excluded = "excluded", true
			cc.enc = &e
		}
		excluded.cols = append(excluded.cols, &cc)
	}
	sc := &scope{parent: cs, rels: []*rel{target, excluded}}
	var inferCols []string
	if inf := oc.Infer; inf != nil {
		for _, e := range inf.IndexElems {
			ie := e.GetIndexElem()
			if ie == nil {
				continue
			}
			if ie.Expr != nil {
				if err := a.checkExpr(ie.Expr, sc, "an ON CONFLICT target"); err != nil {
					return err
				}
				inferCols = append(inferCols, "")
				continue
			}
			if t != nil {
				if bi, ok := t.Blind[ie.Name]; ok {
					ie.Name = bi.Column // its unique blind index decides
				} else if _, enc := t.Encrypted[ie.Name]; enc {
					return refuse(t, ie.Name, "an encrypted column cannot be a conflict target: its ciphertexts are never equal", "use a plain unique column, or give the column a blind index with a UNIQUE index on it")
				}
			}
			inferCols = append(inferCols, ie.Name)
		}
		if err := a.checkExpr(inf.WhereClause, sc, "ON CONFLICT ... WHERE"); err != nil {
			return err
		}
	}
	if err := a.checkExpr(oc.WhereClause, sc, "ON CONFLICT ... WHERE"); err != nil {
		return err
	}
	if oc.Action != pg.OnConflictAction_ONCONFLICT_UPDATE {
		return nil
	}
	if t != nil {
		// The blind indexes that may decide the conflict: those named as
		// its target, or all of them behind a constraint name.
		anyIndex := oc.Infer == nil || oc.Infer.Conname != "" || slices.Contains(inferCols, "")
		for c, bi := range t.Blind {
			rotate := bi.Rotate != "" && (anyIndex || slices.Contains(inferCols, bi.Rotate))
			if anyIndex || slices.Contains(inferCols, bi.Column) || rotate {
				a.conflictBlind = append(a.conflictBlind, c)
			}
			a.conflictRotate = a.conflictRotate || rotate
		}
		slices.Sort(a.conflictBlind)
	}
	onPK := t != nil && oc.Infer != nil && oc.Infer.Conname == "" && len(inferCols) == len(t.PrimaryKey)
	if onPK {
		for _, p := range t.PrimaryKey {
			if !slices.Contains(inferCols, p) {
				onPK = false
			}
		}
	}
	set := map[string]bool{}
	keys := map[int]bool{}
	for _, n := range oc.TargetList {
		rt := n.GetResTarget()
		if rt == nil {
			continue
		}
		kind, ec, err := a.setTarget(t, rt, sc, "ON CONFLICT ... DO UPDATE SET")
		if err != nil {
			return err
		}
		switch kind {
		case setKey:
			return refuse(t, rt.Name, "the driver writes key columns itself", "leave "+rt.Name+" out of DO UPDATE SET")
		case setEncrypted:
			names, star := fieldNames(rt.Val.GetColumnRef())
			if rt.Val.GetColumnRef() == nil || star || len(names) != 2 || names[0] != "excluded" || names[1] != rt.Name {
				return refuse(t, rt.Name, "ON CONFLICT DO UPDATE can only set an encrypted column to EXCLUDED."+rt.Name,
					"set it from EXCLUDED, or update the row with a separate UPDATE")
			}
			if !onPK {
				return refuse(t, rt.Name, "ON CONFLICT DO UPDATE of an encrypted column needs the primary key ("+strings.Join(t.PrimaryKey, ", ")+") as conflict target: on another target the existing row keeps its own id, which the new row key was not wrapped for",
					"use ON CONFLICT ("+strings.Join(t.PrimaryKey, ", ")+"), or update the existing row with a separate UPDATE")
			}
			keys[ec.Key] = true
		}
		set[rt.Name] = true
	}
	if t == nil {
		return nil
	}
	for k := range len(t.Keys) {
		if !keys[k] {
			continue
		}
		for _, c := range t.Keys[k].Columns {
			if !set[c] {
				return refuse(t, c, "ON CONFLICT DO UPDATE sets some columns under key "+t.Keys[k].Name+" but not "+c+", which would be left under the old row key",
					"also set "+c+" = EXCLUDED."+c)
			}
		}
		kc := t.Keys[k].Column
		oc.TargetList = append(oc.TargetList, resTarget(kc, colRef("excluded", kc)))
		for _, c := range t.Keys[k].Columns {
			if _, ok := t.Blind[c]; ok {
				for _, ic := range indexColumns(t, []string{c}) {
					oc.TargetList = append(oc.TargetList, resTarget(ic, colRef("excluded", ic)))
				}
			}
		}
	}
	return nil
}

// setKind is what one SET target of an UPDATE or ON CONFLICT DO UPDATE
// writes.
type setKind int

const (
	setPlain     setKind = iota // a plain column (its value checked)
	setEncrypted                // an encrypted column
	setKey                      // a key column
)

// setTarget checks one SET target over t (nil: a table that is not
// encrypted) and says what it writes. Primary-key columns, multiple-column
// assignments and partial writes of encrypted, key or primary-key columns
// are refused; a plain column's value is checked in sc.
func (a *analyzer) setTarget(t *Table, rt *pg.ResTarget, sc *scope, where string) (setKind, EncColumn, error) {
	if t == nil {
		return setPlain, EncColumn{}, a.checkExpr(rt.Val, sc, where)
	}
	ec, enc := t.Encrypted[rt.Name]
	k := isKeyCol(t, rt.Name)
	isPK := slices.Contains(t.PrimaryKey, rt.Name)
	if _, multi := rt.Val.GetNode().(*pg.Node_MultiAssignRef); multi && (enc || k >= 0 || isPK) {
		return 0, ec, refuse(t, rt.Name, "multiple-column assignment is not supported for encrypted, key or primary-key columns", "assign each column on its own")
	}
	if encCol, ok := isBlindCol(t, rt.Name); ok {
		return 0, ec, refuseBlindWrite(t, rt.Name, encCol)
	}
	switch {
	case isPK:
		return 0, ec, refuse(t, rt.Name, "primary-key columns of an encrypted table are part of each row's encryption context and cannot change", "insert a new row and delete the old one")
	case k >= 0:
		return setKey, ec, nil
	case !enc:
		return setPlain, ec, a.checkExpr(rt.Val, sc, where)
	case len(rt.Indirection) > 0:
		return 0, ec, refuse(t, rt.Name, "writing part of an encrypted value (a subscript or field) is not supported", "write the whole value")
	}
	return setEncrypted, ec, nil
}

type setCell struct {
	rt   *pg.ResTarget
	name string
	ec   EncColumn
	val  Value
}

func (a *analyzer) update(stmt *pg.Node, upd *pg.UpdateStmt) (*Plan, error) {
	rv := upd.Relation
	cs, target, t, err := a.target(rv, upd.WithClause)
	if err != nil {
		return nil, err
	}
	sc, err := a.writeScope(cs, target, upd.FromClause, upd.WhereClause)
	if err != nil {
		return nil, err
	}
	cells, keyColsSet, err := a.updateTargets(upd, t, sc)
	if err != nil {
		return nil, err
	}
	// RETURNING sees the FROM items too.
	retScope := sc
	if len(cells) == 0 {
		for k := range keyColsSet {
			return nil, refuse(t, t.Keys[k].Column, "setting a key column on its own would leave the row's encrypted columns unreadable", "set every column under the key too, or leave the key column alone")
		}
		out, err := a.returning(&upd.ReturningList, retScope)
		if err != nil {
			return nil, err
		}
		a.returningChecks(&upd.ReturningList, upd.WhereClause, out)
		a.checkTarget(upd.WhereClause, t, qualOf(rv))
		if err := a.settle(stmt); err != nil {
			return nil, err
		}
		v, err := a.preVerify(rv, t, upd.WithClause, upd.FromClause, &upd.WhereClause)
		if err != nil {
			return nil, err
		}
		if out == nil && v == nil {
			return &Plan{Passthrough: true}, nil
		}
		return &Plan{Out: out, Verify: v}, nil
	}
	if err := checkUpdateShape(upd, t, cells[0].name); err != nil {
		return nil, err
	}
	up, err := updateKeys(upd, t, cells, keyColsSet)
	if err != nil {
		return nil, err
	}
	updateIndexes(up, upd, t, cells)
	// The row finder copies the WHERE clause: its comparisons are settled
	// first.
	a.checkTarget(upd.WhereClause, t, qualOf(rv))
	if err := a.settle(stmt); err != nil {
		return nil, err
	}
	if err := a.rowFinder(up, upd, rv, t); err != nil {
		return nil, err
	}
	a.joinPerRowValues(up, upd, t, cells, qualOf(rv))
	out, err := a.returning(&upd.ReturningList, retScope)
	if err != nil {
		return nil, err
	}
	return &Plan{Update: up, Out: out}, nil
}

// updateTargets sorts an UPDATE's SET list: the encrypted columns it
// writes, with their values, and the key columns it names.
func (a *analyzer) updateTargets(upd *pg.UpdateStmt, t *Table, sc *scope) ([]setCell, map[int]*pg.ResTarget, error) {
	var cells []setCell
	keyColsSet := map[int]*pg.ResTarget{}
	for _, n := range upd.TargetList {
		rt := n.GetResTarget()
		if rt == nil {
			continue
		}
		kind, ec, err := a.setTarget(t, rt, sc, "SET")
		if err != nil {
			return nil, nil, err
		}
		switch kind {
		case setKey:
			keyColsSet[isKeyCol(t, rt.Name)] = rt
		case setEncrypted:
			val, ok := literal(rt.Val)
			if !ok {
				return nil, nil, refuse(t, rt.Name, "only parameters, literals, NULL and DEFAULT can be written to an encrypted column: the database only ever sees its ciphertext",
					"compute the value in the application and pass it as a parameter")
			}
			cells = append(cells, setCell{rt: rt, name: rt.Name, ec: ec, val: val})
		}
	}
	return cells, keyColsSet, nil
}

// checkUpdateShape refuses the UPDATE forms whose rows the driver cannot
// key one by one.
func checkUpdateShape(upd *pg.UpdateStmt, t *Table, col string) error {
	if len(upd.FromClause) > 0 || upd.WithClause != nil {
		return refuse(t, col, "UPDATE ... FROM or WITH that writes an encrypted column is not supported", "read the values first, then update by primary key")
	}
	hasCurrentOf := false
	walk(upd, func(n *pg.Node) bool {
		if _, ok := n.Node.(*pg.Node_CurrentOfExpr); ok {
			hasCurrentOf = true
		}
		return true
	})
	if hasCurrentOf {
		return refuse(t, col, "WHERE CURRENT OF is not supported", "update by primary key")
	}
	return nil
}

// updateKeys decides, per key the UPDATE writes under, whether each row
// gets a fresh data key (every column under the key is set) or keeps its
// own, checks the caller's key-column assignments (only NULL, with every
// column under the key set) and drops them: the driver writes key columns.
func updateKeys(upd *pg.UpdateStmt, t *Table, cells []setCell, keyColsSet map[int]*pg.ResTarget) (*Update, error) {
	set := map[string]bool{}
	var keyIdx []int
	for _, c := range cells {
		set[c.name] = true
		if !slices.Contains(keyIdx, c.ec.Key) {
			keyIdx = append(keyIdx, c.ec.Key)
		}
	}
	slices.Sort(keyIdx)
	fresh := func(k int) bool {
		for _, c := range t.Keys[k].Columns {
			if !set[c] {
				return false
			}
		}
		return true
	}
	for k, rt := range keyColsSet {
		if v, ok := literal(rt.Val); !ok || v.Kind != ValNull || !fresh(k) {
			return nil, refuse(t, rt.Name, "the driver writes key columns itself", "set every column under the key and leave "+rt.Name+" out; the driver then mints a new data key")
		}
	}
	upd.TargetList = slices.DeleteFunc(upd.TargetList, func(n *pg.Node) bool {
		rt := n.GetResTarget()
		return rt != nil && isKeyCol(t, rt.Name) >= 0
	})
	up := &Update{Table: t, CtidSlot: 0, TableoidSlot: 1, Slots: 2}
	for _, c := range cells {
		up.Cells = append(up.Cells, Cell{Column: c.name, Key: c.ec.Key, Value: c.val, Slot: up.Slots})
		up.Slots++
	}
	for _, k := range keyIdx {
		up.Keys = append(up.Keys, UpdateKey{Key: k, Fresh: fresh(k), Slot: up.Slots})
		up.Slots++
	}
	return up, nil
}

// rowFinder builds the queries that read the rows an UPDATE will change:
// SELECT ctid, tableoid, primary key, key columns, and per key whether
// the columns under it that the UPDATE leaves alone hold values, FROM rel
// WHERE …; and the same with FOR NO KEY UPDATE.
func (a *analyzer) rowFinder(up *Update, upd *pg.UpdateStmt, rv *pg.RangeVar, t *Table) error {
	qual := qualOf(rv)
	sel := &pg.SelectStmt{
		TargetList: []*pg.Node{resTarget("", castText(colRef(qual, "ctid"))), resTarget("", castText(colRef(qual, "tableoid")))},
		FromClause: []*pg.Node{{Node: &pg.Node_RangeVar{RangeVar: proto.Clone(rv).(*pg.RangeVar)}}},
	}
	if upd.WhereClause != nil {
		sel.WhereClause = proto.Clone(upd.WhereClause).(*pg.Node)
	}
	for _, p := range t.PrimaryKey {
		sel.TargetList = append(sel.TargetList, resTarget("", castText(colRef(qual, p))))
	}
	for _, k := range up.Keys {
		sel.TargetList = append(sel.TargetList, resTarget("", colRef(qual, t.Keys[k.Key].Column)))
	}
	// Per key: do the columns under it that the UPDATE leaves alone hold
	// values? A row without a data key whose other columns do must not get
	// a key for some of them only.
	set := map[string]bool{}
	for _, c := range up.Cells {
		set[c.Column] = true
	}
	for _, k := range up.Keys {
		var any *pg.Node
		for _, c := range t.Keys[k.Key].Columns {
			if set[c] {
				continue
			}
			nn := &pg.Node{Node: &pg.Node_NullTest{NullTest: &pg.NullTest{Arg: colRef(qual, c), Nulltesttype: pg.NullTestType_IS_NOT_NULL, Location: -1}}}
			if any == nil {
				any = nn
			} else {
				any = pg.MakeBoolExprNode(pg.BoolExprType_OR_EXPR, []*pg.Node{any, nn}, -1)
			}
		}
		if any == nil {
			any = &pg.Node{Node: &pg.Node_AConst{AConst: &pg.A_Const{Val: &pg.A_Const_Boolval{Boolval: &pg.Boolean{Boolval: false}}, Location: -1}}}
		}
		sel.TargetList = append(sel.TargetList, resTarget("", any))
	}
	if err := a.updateChecks(up, sel, upd.WhereClause, t, qual); err != nil {
		return err
	}
	lock := proto.Clone(sel).(*pg.SelectStmt)
	lock.LockingClause = []*pg.Node{{Node: &pg.Node_LockingClause{LockingClause: &pg.LockingClause{
		Strength: pg.LockClauseStrength_LCS_FORNOKEYUPDATE, WaitPolicy: pg.LockWaitPolicy_LockWaitBlock}}}}
	selNode := &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: sel}}
	lockNode := &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: lock}}
	up.SelectArgs = renumber(selNode)
	renumber(lockNode)
	var err error
	if up.SelectSQL, err = deparse(a.version, selNode); err != nil {
		return &ParseError{Err: err}
	}
	if up.LockSQL, err = deparse(a.version, lockNode); err != nil {
		return &ParseError{Err: err}
	}
	return nil
}

// joinPerRowValues rewrites the UPDATE to take one value per row:
// UPDATE … SET c = __kmspg_v.c0, key = __kmspg_v.k0 FROM unnest(arrays)
// AS __kmspg_v(ctid, toid, c0, …, k0, …) WHERE q.ctid = __kmspg_v.ctid
// AND q.tableoid = __kmspg_v.toid.
func (a *analyzer) joinPerRowValues(up *Update, upd *pg.UpdateStmt, t *Table, cells []setCell, qual string) {
	colNames := []string{"ctid", "toid"}
	types := []string{"text[]::tid[]", "text[]::oid[]"}
	for i, c := range cells {
		name := "c" + strconv.Itoa(i)
		colNames = append(colNames, name)
		if c.ec.Bytea {
			types = append(types, "bytea[]")
		} else {
			types = append(types, "text[]")
		}
		c.rt.Val = colRef("__kmspg_v", name)
	}
	for i, k := range up.Keys {
		name := "k" + strconv.Itoa(i)
		colNames = append(colNames, name)
		types = append(types, "text[]")
		upd.TargetList = append(upd.TargetList, resTarget(t.Keys[k.Key].Column, colRef("__kmspg_v", name)))
	}
	var args []string
	for i, ty := range types {
		args = append(args, "$"+strconv.Itoa(slotBase+1+i)+"::"+ty)
	}
	snippet := parseOne("SELECT FROM unnest(" + strings.Join(args, ", ") + ") AS __kmspg_v(" + strings.Join(colNames, ", ") + ")").GetSelectStmt()
	upd.FromClause = snippet.FromClause
	// ctid alone is not unique on a partitioned or inherited table.
	upd.WhereClause = pg.MakeBoolExprNode(pg.BoolExprType_AND_EXPR, []*pg.Node{
		pg.MakeAExprNode(pg.A_Expr_Kind_AEXPR_OP, []*pg.Node{str("=")}, colRef(qual, "ctid"), colRef("__kmspg_v", "ctid"), -1),
		pg.MakeAExprNode(pg.A_Expr_Kind_AEXPR_OP, []*pg.Node{str("=")}, colRef(qual, "tableoid"), colRef("__kmspg_v", "toid"), -1),
	}, -1)
}

func (a *analyzer) delete(stmt *pg.Node, del *pg.DeleteStmt) (*Plan, error) {
	cs, target, t, err := a.target(del.Relation, del.WithClause)
	if err != nil {
		return nil, err
	}
	// RETURNING sees the USING items too.
	sc, err := a.writeScope(cs, target, del.UsingClause, del.WhereClause)
	if err != nil {
		return nil, err
	}
	out, err := a.returning(&del.ReturningList, sc)
	if err != nil {
		return nil, err
	}
	a.returningChecks(&del.ReturningList, del.WhereClause, out)
	a.checkTarget(del.WhereClause, t, qualOf(del.Relation))
	if err := a.settle(stmt); err != nil {
		return nil, err
	}
	v, err := a.preVerify(del.Relation, t, del.WithClause, del.UsingClause, &del.WhereClause)
	if err != nil {
		return nil, err
	}
	if out == nil && v == nil {
		return &Plan{Passthrough: true}, nil
	}
	return &Plan{Out: out, Verify: v}, nil
}
