package rewrite

import (
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
		pm.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
				return true
			}
			if fd.IsList() {
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					visit(l.Get(i).Message())
				}
			} else {
				visit(v.Message())
			}
			return true
		})
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

// renumber gives the parameters of m consecutive numbers in order of first
// appearance and returns where each comes from.
func renumber(m proto.Message) []Arg {
	var args []Arg
	seen := map[int32]int32{}
	walk(m, func(n *pg.Node) bool {
		p, ok := n.Node.(*pg.Node_ParamRef)
		if !ok {
			return true
		}
		old := p.ParamRef.Number
		nw, ok := seen[old]
		if !ok {
			nw = int32(len(args) + 1)
			seen[old] = nw
			if old > slotBase {
				args = append(args, Arg{Orig: -1, Slot: int(old - slotBase - 1)})
			} else {
				args = append(args, Arg{Orig: int(old - 1), Slot: -1})
			}
		}
		p.ParamRef.Number = nw
		return true
	})
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
