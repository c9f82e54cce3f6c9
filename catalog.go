package kmspostgres

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/rewrite"
)

// tableInfo joins a schema-map table with what pg_catalog says of it.
type tableInfo struct {
	rt  *rewrite.Table
	st  *Table
	oid uint32
}

// catalog resolves the schema map against the database once per
// connector, and answers the rewriter's questions about other relations.
// DDL run through the driver resets it.
type catalog struct {
	schema *Schema

	mu      sync.Mutex
	loaded  bool
	tables  map[string]*tableInfo // by schema-map name
	byOID   map[uint32]*tableInfo
	encAttr map[[2]uint32]string // (table oid, attnum) of encrypted columns → table.column
	views   map[string]string    // view name (and schema.name) → table.column it exposes
	cols    map[string][]string  // other relations' columns; nil: none
}

func newCatalog(s *Schema) *catalog { return &catalog{schema: s} }

func (c *catalog) reset() {
	c.mu.Lock()
	c.loaded = false
	c.tables, c.byOID, c.encAttr, c.views, c.cols = nil, nil, nil, nil, nil
	c.mu.Unlock()
}

// boundCatalog answers the rewriter through one connection.
type boundCatalog struct {
	c    *catalog
	ctx  context.Context
	conn *pgx.Conn
}

func (b boundCatalog) ensure() error {
	c := b.c
	if c.loaded {
		return nil
	}
	// Errors are not cached: the schema may be fixed (by a migration in
	// another process) at any time.
	err := c.load(b.ctx, b.conn)
	c.loaded = err == nil
	return err
}

func (b boundCatalog) Encrypted(schema, name string) (*rewrite.Table, error) {
	st := b.c.schema.Table(schema, name)
	if st == nil {
		return nil, nil
	}
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	if err := b.ensure(); err != nil {
		return nil, err
	}
	return b.c.tables[st.Name].rt, nil
}

func (b boundCatalog) Columns(schema, name string) ([]string, error) {
	if t, err := b.Encrypted(schema, name); t != nil || err != nil {
		if t == nil {
			return nil, err
		}
		return t.Columns, nil
	}
	key := strings.ToLower(schema) + "." + name
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	if cols, ok := b.c.cols[key]; ok {
		return cols, nil
	}
	ident := pgx.Identifier{name}
	if schema != "" {
		ident = pgx.Identifier{schema, name}
	}
	rows, err := b.conn.Query(b.ctx, `SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, ident.Sanitize())
	if err != nil {
		return nil, fmt.Errorf("kmspostgres: reading the columns of %s: %w", ident.Sanitize(), err)
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("kmspostgres: reading the columns of %s: %w", ident.Sanitize(), err)
	}
	if b.c.cols == nil {
		b.c.cols = map[string][]string{}
	}
	b.c.cols[key] = cols
	return cols, nil
}

func (b boundCatalog) ProtectedView(schema, name string) (string, error) {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	if err := b.ensure(); err != nil {
		return "", err
	}
	if schema != "" {
		return b.c.views[strings.ToLower(schema)+"."+name], nil
	}
	return b.c.views[name], nil
}

var nextvalRe = regexp.MustCompile(`^nextval\('([^']+)'::regclass\)$`)

func (c *catalog) mismatch(t string, format string, args ...any) error {
	where := c.schema.source
	if where == "" {
		where = "schema map"
	}
	return fmt.Errorf("%w: %s: table %s: the database does not match: %s", ErrSchema, where, t, fmt.Sprintf(format, args...))
}

// load resolves every schema-map table. Called with c.mu held.
func (c *catalog) load(ctx context.Context, conn *pgx.Conn) error {
	c.tables = map[string]*tableInfo{}
	c.byOID = map[uint32]*tableInfo{}
	c.encAttr = map[[2]uint32]string{}
	c.views = map[string]string{}
	for _, name := range sortedKeys(c.schema.Tables) {
		st := c.schema.Tables[name]
		var oid uint32
		var nsp, rel string
		err := conn.QueryRow(ctx, `SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')`, name).Scan(&oid, &nsp, &rel)
		if err == pgx.ErrNoRows {
			return c.mismatch(name, "no such table")
		}
		if err != nil {
			return fmt.Errorf("kmspostgres: resolving table %s: %w", name, err)
		}
		type attr struct {
			num               int16
			name, typ         string
			identity          string
			hasDef            bool
			serialSeq, defExp string
		}
		rows, err := conn.Query(ctx, `SELECT a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attidentity::text, a.atthasdef,
				COALESCE(pg_get_serial_sequence($2, a.attname), ''), COALESCE(pg_get_expr(d.adbin, d.adrelid), '')
			FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
			WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, oid, pgx.Identifier{nsp, rel}.Sanitize())
		if err != nil {
			return fmt.Errorf("kmspostgres: reading columns of %s: %w", name, err)
		}
		attrs := map[string]attr{}
		var order []string
		for rows.Next() {
			var a attr
			if err := rows.Scan(&a.num, &a.name, &a.typ, &a.identity, &a.hasDef, &a.serialSeq, &a.defExp); err != nil {
				rows.Close()
				return fmt.Errorf("kmspostgres: reading columns of %s: %w", name, err)
			}
			attrs[a.name] = a
			order = append(order, a.name)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("kmspostgres: reading columns of %s: %w", name, err)
		}
		rt := &rewrite.Table{Name: name, Schema: nsp, Relname: rel, PrimaryKey: st.PrimaryKey, Columns: order, Encrypted: map[string]rewrite.EncColumn{}}
		ti := &tableInfo{rt: rt, st: st, oid: oid}
		for _, p := range st.PrimaryKey {
			a, ok := attrs[p]
			if !ok {
				return c.mismatch(name, "primary-key column %s does not exist", p)
			}
			switch a.typ {
			case "smallint", "integer", "bigint", "uuid", "text", "character varying":
			default:
				if !strings.HasPrefix(a.typ, "character varying(") {
					return c.mismatch(name, "primary-key column %s is %s; supported: smallint, integer, bigint, uuid, text, varchar", p, a.typ)
				}
			}
			rt.PKTypes = append(rt.PKTypes, a.typ)
		}
		keyNames := sortedKeys(st.Keys)
		keyIndex := map[string]int{}
		for i, kn := range keyNames {
			k := st.Keys[kn]
			a, ok := attrs[k.Column]
			if !ok {
				return c.mismatch(name, "key column %s (key %s) does not exist; add it: ALTER TABLE %s ADD COLUMN %s text", k.Column, kn, name, k.Column)
			}
			if a.typ != "text" && a.typ != "character varying" {
				return c.mismatch(name, "key column %s is %s; it must be text", k.Column, a.typ)
			}
			rt.Keys = append(rt.Keys, rewrite.Key{Name: kn, Column: k.Column})
			keyIndex[kn] = i
		}
		for _, cn := range sortedKeys(st.Columns) {
			col := st.Columns[cn]
			a, ok := attrs[cn]
			if !ok {
				return c.mismatch(name, "encrypted column %s does not exist", cn)
			}
			bytea := false
			switch a.typ {
			case "text", "character varying":
			case "bytea":
				bytea = true
			default:
				return c.mismatch(name, "encrypted column %s is stored as %s; store it as text (base64 cells) or bytea (raw cells) and declare its plaintext type in the schema map (type: %s)", cn, a.typ, a.typ)
			}
			if a.hasDef {
				return c.mismatch(name, "encrypted column %s has a default, which would be stored as plaintext; drop it", cn)
			}
			k := keyIndex[col.Key]
			rt.Encrypted[cn] = rewrite.EncColumn{Key: k, Bytea: bytea}
			rt.Keys[k].Columns = append(rt.Keys[k].Columns, cn)
			c.encAttr[[2]uint32{oid, uint32(a.num)}] = name + "." + cn
		}
		for i := range rt.Keys {
			sort.Strings(rt.Keys[i].Columns)
		}
		if len(st.PrimaryKey) == 1 {
			a := attrs[st.PrimaryKey[0]]
			switch {
			case a.identity == "a":
				rt.PKGen, rt.Sequence = rewrite.PKIdentityAlways, a.serialSeq
			case a.identity == "d":
				rt.PKGen, rt.Sequence = rewrite.PKIdentityByDefault, a.serialSeq
			case a.serialSeq != "":
				rt.PKGen, rt.Sequence = rewrite.PKSequence, a.serialSeq
			case nextvalRe.MatchString(a.defExp):
				rt.PKGen, rt.Sequence = rewrite.PKSequence, nextvalRe.FindStringSubmatch(a.defExp)[1]
			case a.typ == "uuid":
				rt.PKGen = rewrite.PKUUID
			}
		}
		c.tables[name] = ti
		c.byOID[oid] = ti
		// Views that read an encrypted column.
		vrows, err := conn.Query(ctx, `SELECT DISTINCT vn.nspname, v.relname, a.attname
			FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
			JOIN pg_class v ON v.oid = r.ev_class JOIN pg_namespace vn ON vn.oid = v.relnamespace
			JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
			WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
			  AND d.refobjid = $1 AND a.attname = ANY($2) AND v.oid <> $1`, oid, sortedKeys(st.Columns))
		if err != nil {
			return fmt.Errorf("kmspostgres: reading views over %s: %w", name, err)
		}
		for vrows.Next() {
			var vn, vr, col string
			if err := vrows.Scan(&vn, &vr, &col); err != nil {
				vrows.Close()
				return err
			}
			c.views[vr] = name + "." + col
			c.views[vn+"."+vr] = name + "." + col
		}
		if err := vrows.Err(); err != nil {
			return err
		}
	}
	return nil
}

// info returns the resolved table of a plan's table.
func (c *catalog) info(rt *rewrite.Table) *tableInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ti := c.tables[rt.Name]; ti != nil && ti.rt == rt {
		return ti
	}
	// The plan predates a reset: rebuild what decryption needs from the
	// plan itself.
	st := c.schema.Tables[rt.Name]
	return &tableInfo{rt: rt, st: st}
}

// encAt names the encrypted column at (table oid, attnum), or "".
func (c *catalog) encAt(oid uint32, attnum uint16) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.encAttr[[2]uint32{oid, uint32(attnum)}]
}

// colType is the declared plaintext type of an encrypted column.
func (ti *tableInfo) colType(col string) envelope.Type {
	return ti.st.Columns[col].Type
}

// key returns the schema key behind a plan key index.
func (ti *tableInfo) key(i int) *Key {
	return ti.st.Keys[ti.rt.Keys[i].Name]
}
