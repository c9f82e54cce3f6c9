package rewrite

import (
	"fmt"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// InsertTargets reads a rewritten single-row INSERT … VALUES (the plan of
// a COPY, see CopyPlan): its target columns, and for each the 0-based
// parameter that gives its value, or -1 for NULL. Any other shape is an
// error: a COPY row can only carry values.
func InsertTargets(sql string) (cols []string, params []int, err error) {
	tree, err := pg.Parse(sql)
	if err != nil {
		return nil, nil, err
	}
	bad := fmt.Errorf("kmspostgres: internal: %q is not a one-row INSERT of parameters", sql)
	if len(tree.Stmts) != 1 {
		return nil, nil, bad
	}
	ins := tree.Stmts[0].Stmt.GetInsertStmt()
	if ins == nil || ins.SelectStmt == nil || ins.OnConflictClause != nil || len(ins.ReturningList) > 0 || ins.WithClause != nil {
		return nil, nil, bad
	}
	sel := ins.SelectStmt.GetSelectStmt()
	if sel == nil || len(sel.ValuesLists) != 1 {
		return nil, nil, bad
	}
	items := sel.ValuesLists[0].GetList().GetItems()
	if len(items) != len(ins.Cols) {
		return nil, nil, bad
	}
	for i, c := range ins.Cols {
		rt := c.GetResTarget()
		if rt == nil || len(rt.Indirection) > 0 {
			return nil, nil, bad
		}
		cols = append(cols, rt.Name)
		switch {
		case items[i].GetParamRef() != nil:
			params = append(params, int(items[i].GetParamRef().Number)-1)
		case isNullConst(items[i]):
			params = append(params, -1)
		default:
			return nil, nil, bad
		}
	}
	return cols, params, nil
}

func isNullConst(n *pg.Node) bool {
	c := n.GetAConst()
	return c != nil && c.Isnull
}

// CopyPlan repeats the one-row INSERT plan p for n rows of k arguments
// each: row r takes arguments [r*k, (r+1)*k) and its own slots, and the
// plan's Args list row after row. The driver runs it to key and seal a
// batch of COPY rows at once (one id block, KMS calls in parallel); its
// SQL is not run.
func CopyPlan(p *Plan, n, k int) *Plan {
	ip := p.Insert
	s := ip.Slots
	out := &Plan{Insert: &Insert{Table: ip.Table, Slots: s * n, OverridingSystem: ip.OverridingSystem}}
	slot := func(v, r int) int {
		if v < 0 {
			return v
		}
		return v + r*s
	}
	val := func(v Value, r int) Value {
		if v.Kind == ValParam {
			v.Param += r * k
		}
		return v
	}
	cells := func(cs []Cell, r int) []Cell {
		out := make([]Cell, len(cs))
		for i, c := range cs {
			c.Value, c.Slot = val(c.Value, r), slot(c.Slot, r)
			out[i] = c
		}
		return out
	}
	for r := range n {
		for _, row := range ip.Rows {
			nr := InsertRow{PK: make([]Value, len(row.PK)), PKSlot: make([]int, len(row.PKSlot)), KeySlot: make([]int, len(row.KeySlot)),
				Cells: cells(row.Cells, r), Indexes: cells(row.Indexes, r), Rotations: cells(row.Rotations, r)}
			for i, v := range row.PK {
				nr.PK[i] = val(v, r)
			}
			for i, v := range row.PKSlot {
				nr.PKSlot[i] = slot(v, r)
			}
			for i, v := range row.KeySlot {
				nr.KeySlot[i] = slot(v, r)
			}
			out.Insert.Rows = append(out.Insert.Rows, nr)
		}
		for _, a := range p.Args {
			if a.Orig >= 0 {
				a.Orig += r * k
			}
			a.Slot = slot(a.Slot, r)
			out.Args = append(out.Args, a)
		}
	}
	return out
}
