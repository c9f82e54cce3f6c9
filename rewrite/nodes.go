package rewrite

import (
	"slices"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// walk calls f for every Node below m (not m itself), depth first. When f
// returns false, walk does not descend into that node.
func walk(m proto.Message, f func(*pg.Node) bool) {
	walkMessages(m, func(pm proto.Message) bool {
		if n, ok := pm.(*pg.Node); ok {
			return f(n)
		}
		return true
	})
}

// walkMessages calls f for every message below m, wrapped in a Node or not
// (InsertStmt.Relation is a bare RangeVar), depth first. When f returns
// false, it does not descend into that message.
func walkMessages(m proto.Message, f func(proto.Message) bool) {
	var rec func(protoreflect.Message)
	visit := func(pm protoreflect.Message) {
		if !pm.IsValid() || !f(pm.Interface()) {
			return
		}
		rec(pm)
	}
	rec = func(pm protoreflect.Message) {
		// Fields in declaration order, so that plans are deterministic
		// (Range's order is undefined).
		fields := pm.Descriptor().Fields()
		for i := 0; i < fields.Len(); i++ {
			fd := fields.Get(i)
			if fd.Kind() != protoreflect.MessageKind || fd.IsMap() || !pm.Has(fd) {
				continue
			}
			v := pm.Get(fd)
			if fd.IsList() {
				l := v.List()
				for j := 0; j < l.Len(); j++ {
					visit(l.Get(j).Message())
				}
			} else {
				visit(v.Message())
			}
		}
	}
	if m != nil {
		rec(m.ProtoReflect())
	}
}

func str(s string) *pg.Node { return pg.MakeStrNode(s) }

func colRef(qual, name string) *pg.Node {
	if qual == "" {
		return pg.MakeColumnRefNode([]*pg.Node{str(name)}, -1)
	}
	return pg.MakeColumnRefNode([]*pg.Node{str(qual), str(name)}, -1)
}

func typeName(name string, array bool) *pg.TypeName {
	tn := &pg.TypeName{Names: []*pg.Node{str(name)}, Typemod: -1, Location: -1}
	if array {
		tn.ArrayBounds = []*pg.Node{pg.MakeIntNode(-1)}
	}
	return tn
}

func castText(n *pg.Node) *pg.Node {
	return &pg.Node{Node: &pg.Node_TypeCast{TypeCast: &pg.TypeCast{Arg: n, TypeName: typeName("text", false), Location: -1}}}
}

func resTarget(name string, val *pg.Node) *pg.Node {
	return pg.MakeResTargetNodeWithNameAndVal(name, val, -1)
}

// slotBase marks parameters that the driver fills in; they are renumbered
// after the caller's before the SQL is deparsed.
const slotBase = 100000

func slotParam(slot int) *pg.Node { return pg.MakeParamRefNode(int32(slotBase+1+slot), -1) }

func nullConst() *pg.Node {
	return &pg.Node{Node: &pg.Node_AConst{AConst: &pg.A_Const{Isnull: true, Location: -1}}}
}

// fieldNames returns the names of a column reference and whether it ends
// in a star.
func fieldNames(cr *pg.ColumnRef) (names []string, star bool) {
	for _, f := range cr.GetFields() {
		switch x := f.Node.(type) {
		case *pg.Node_String_:
			names = append(names, x.String_.Sval)
		case *pg.Node_AStar:
			star = true
		}
	}
	return names, star
}

// figureName guesses the output name PostgreSQL gives an expression, as
// FigureColname does, for the cases that matter to name resolution.
func figureName(n *pg.Node) string {
	switch x := n.GetNode().(type) {
	case *pg.Node_ColumnRef:
		names, star := fieldNames(x.ColumnRef)
		if !star && len(names) > 0 {
			return names[len(names)-1]
		}
	case *pg.Node_TypeCast:
		if name := figureName(x.TypeCast.Arg); name != "?column?" {
			return name
		}
		if tn := x.TypeCast.TypeName; tn != nil && len(tn.Names) > 0 {
			return tn.Names[len(tn.Names)-1].GetString_().GetSval()
		}
	case *pg.Node_FuncCall:
		if fn := x.FuncCall.Funcname; len(fn) > 0 {
			return fn[len(fn)-1].GetString_().GetSval()
		}
	}
	return "?column?"
}

// renumber gives the parameters of m consecutive numbers, the caller's in
// their original order and then the driver's slots, and returns where each
// comes from. A statement that keeps all of the caller's parameters and
// adds none keeps its numbering.
func renumber(m proto.Message) []Arg {
	var refs []*pg.ParamRef
	used := map[int32]bool{}
	walk(m, func(n *pg.Node) bool {
		if p, ok := n.Node.(*pg.Node_ParamRef); ok {
			refs = append(refs, p.ParamRef)
			used[p.ParamRef.Number] = true
		}
		return true
	})
	nums := make([]int32, 0, len(used))
	for n := range used {
		nums = append(nums, n)
	}
	slices.Sort(nums)
	newNum := make(map[int32]int32, len(nums))
	args := make([]Arg, len(nums))
	for i, old := range nums {
		newNum[old] = int32(i + 1)
		if old > lookupBase {
			args[i] = Arg{Orig: -1, Slot: -1, Lookup: int(old - lookupBase)}
		} else if old > slotBase {
			args[i] = Arg{Orig: -1, Slot: int(old - slotBase - 1)}
		} else {
			args[i] = Arg{Orig: int(old - 1), Slot: -1}
		}
	}
	for _, r := range refs {
		r.Number = newNum[r.Number]
	}
	return args
}

func deparse(version int32, stmt *pg.Node) (string, error) {
	return pg.Deparse(&pg.ParseResult{Version: version, Stmts: []*pg.RawStmt{{Stmt: stmt}}})
}

// parseOne parses a snippet of SQL this package wrote itself.
func parseOne(sql string) *pg.Node {
	r, err := pg.Parse(sql)
	if err != nil || len(r.Stmts) != 1 {
		panic("kmspostgres: internal SQL snippet does not parse: " + sql)
	}
	return r.Stmts[0].Stmt
}
