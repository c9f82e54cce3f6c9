package kmspostgres

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/rewrite"
)

// tableInfo joins a schema-map table with what pg_catalog says of it.
type tableInfo struct {
	table *rewrite.Table // as resolved for the rewriter
	entry *Table         // the schema-map entry
}

// catalog resolves the schema map against the database once per
// connector, and answers the rewriter's questions about other relations.
// DDL run through the driver resets it.
type catalog struct {
	schema *Schema

	mu      sync.Mutex
	loaded  bool
	tables  map[string]*tableInfo // by schema-map name
	encAttr map[[2]uint32]string  // (table oid, attnum) of encrypted columns → table.column
	views   map[string]string     // view name (and schema.name) → table.column it exposes
	cols    map[string][]string   // other relations' columns; nil: none
}

func newCatalog(s *Schema) *catalog { return &catalog{schema: s} }

func (c *catalog) reset() {
	c.mu.Lock()
	c.loaded = false
	c.tables, c.encAttr, c.views, c.cols = nil, nil, nil, nil
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
	return b.c.tables[st.Name].table, nil
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
	c.encAttr = map[[2]uint32]string{}
	c.views = map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(c.schema.Tables)) {
		ti, err := c.loadTable(ctx, conn, c.schema.Tables[name])
		if err != nil {
			return err
		}
		c.tables[name] = ti
	}
	return nil
}

// attr is one column of a mapped table as pg_catalog describes it.
type attr struct {
	num               int16
	name, typ         string
	identity          string
	hasDef            bool
	serialSeq, defExp string
}

// loadTable resolves one schema-map table: the relation, its columns, and
// the views that read its encrypted columns.
func (c *catalog) loadTable(ctx context.Context, conn *pgx.Conn, entry *Table) (*tableInfo, error) {
	name := entry.Name
	var oid uint32
	var nsp, relname string
	err := conn.QueryRow(ctx, `SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')`, name).Scan(&oid, &nsp, &relname)
	if err == pgx.ErrNoRows {
		return nil, c.mismatch(name, "no such table")
	}
	if err != nil {
		return nil, fmt.Errorf("kmspostgres: resolving table %s: %w", name, err)
	}
	attrs, order, err := readAttrs(ctx, conn, oid, pgx.Identifier{nsp, relname}.Sanitize())
	if err != nil {
		return nil, fmt.Errorf("kmspostgres: reading columns of %s: %w", name, err)
	}
	t := &rewrite.Table{Name: name, Schema: nsp, Relname: relname, PrimaryKey: entry.PrimaryKey, Columns: order, Encrypted: map[string]rewrite.EncColumn{}}
	if err := c.checkPrimaryKey(t, attrs); err != nil {
		return nil, err
	}
	if err := c.checkKeys(t, entry, attrs); err != nil {
		return nil, err
	}
	if err := c.checkColumns(t, entry, attrs, oid); err != nil {
		return nil, err
	}
	if len(entry.PrimaryKey) == 1 {
		t.PKGen, t.Sequence = pkGenerator(attrs[entry.PrimaryKey[0]])
	}
	if err := c.loadViews(ctx, conn, t, oid); err != nil {
		return nil, err
	}
	return &tableInfo{table: t, entry: entry}, nil
}

// readAttrs returns a relation's columns by name, and their names in
// table order.
func readAttrs(ctx context.Context, conn *pgx.Conn, oid uint32, ident string) (map[string]attr, []string, error) {
	rows, err := conn.Query(ctx, `SELECT a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attidentity::text, a.atthasdef,
			COALESCE(pg_get_serial_sequence($2, a.attname), ''), COALESCE(pg_get_expr(d.adbin, d.adrelid), '')
		FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, oid, ident)
	if err != nil {
		return nil, nil, err
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (attr, error) {
		var a attr
		err := r.Scan(&a.num, &a.name, &a.typ, &a.identity, &a.hasDef, &a.serialSeq, &a.defExp)
		return a, err
	})
	if err != nil {
		return nil, nil, err
	}
	attrs := make(map[string]attr, len(list))
	order := make([]string, len(list))
	for i, a := range list {
		attrs[a.name] = a
		order[i] = a.name
	}
	return attrs, order, nil
}

// checkPrimaryKey checks that the primary-key columns exist with a type
// whose text form the driver renders as PostgreSQL does.
func (c *catalog) checkPrimaryKey(t *rewrite.Table, attrs map[string]attr) error {
	for _, p := range t.PrimaryKey {
		a, ok := attrs[p]
		if !ok {
			return c.mismatch(t.Name, "primary-key column %s does not exist", p)
		}
		switch a.typ {
		case "smallint", "integer", "bigint", "uuid", "text", "character varying":
		default:
			if !strings.HasPrefix(a.typ, "character varying(") {
				return c.mismatch(t.Name, "primary-key column %s is %s; supported: smallint, integer, bigint, uuid, text, varchar", p, a.typ)
			}
		}
		t.PKTypes = append(t.PKTypes, a.typ)
	}
	return nil
}

// checkKeys checks the key columns and adds the table's keys, sorted by
// name.
func (c *catalog) checkKeys(t *rewrite.Table, entry *Table, attrs map[string]attr) error {
	for _, kn := range slices.Sorted(maps.Keys(entry.Keys)) {
		k := entry.Keys[kn]
		a, ok := attrs[k.Column]
		if !ok {
			return c.mismatch(t.Name, "key column %s (key %s) does not exist; add it: ALTER TABLE %s ADD COLUMN %s text", k.Column, kn, t.Name, k.Column)
		}
		if a.typ != "text" && a.typ != "character varying" {
			return c.mismatch(t.Name, "key column %s is %s; it must be text", k.Column, a.typ)
		}
		t.Keys = append(t.Keys, rewrite.Key{Name: kn, Column: k.Column})
	}
	return nil
}

// checkColumns checks the encrypted columns' storage and records them
// under their keys and in c.encAttr.
func (c *catalog) checkColumns(t *rewrite.Table, entry *Table, attrs map[string]attr, oid uint32) error {
	keyIndex := map[string]int{}
	for i, k := range t.Keys {
		keyIndex[k.Name] = i
	}
	for _, cn := range slices.Sorted(maps.Keys(entry.Columns)) {
		a, ok := attrs[cn]
		if !ok {
			return c.mismatch(t.Name, "encrypted column %s does not exist", cn)
		}
		bytea := false
		switch a.typ {
		case "text", "character varying":
		case "bytea":
			bytea = true
		default:
			return c.mismatch(t.Name, "encrypted column %s is stored as %s; store it as text (base64 cells) or bytea (raw cells) and declare its plaintext type in the schema map (type: %s)", cn, a.typ, a.typ)
		}
		if a.hasDef {
			return c.mismatch(t.Name, "encrypted column %s has a default, which would be stored as plaintext; drop it", cn)
		}
		k := keyIndex[entry.Columns[cn].Key]
		t.Encrypted[cn] = rewrite.EncColumn{Key: k, Bytea: bytea}
		t.Keys[k].Columns = append(t.Keys[k].Columns, cn) // sorted: cn comes in order
		c.encAttr[[2]uint32{oid, uint32(a.num)}] = t.Name + "." + cn
	}
	return nil
}

// pkGenerator says how the driver makes a single-column primary key an
// INSERT leaves out.
func pkGenerator(a attr) (rewrite.PKGen, string) {
	switch {
	case a.identity == "a":
		return rewrite.PKIdentityAlways, a.serialSeq
	case a.identity == "d":
		return rewrite.PKIdentityByDefault, a.serialSeq
	case a.serialSeq != "":
		return rewrite.PKSequence, a.serialSeq
	case nextvalRe.MatchString(a.defExp):
		return rewrite.PKSequence, nextvalRe.FindStringSubmatch(a.defExp)[1]
	case a.typ == "uuid":
		return rewrite.PKUUID, ""
	}
	return rewrite.PKNone, ""
}

// loadViews records the views that read an encrypted column of t.
func (c *catalog) loadViews(ctx context.Context, conn *pgx.Conn, t *rewrite.Table, oid uint32) error {
	rows, err := conn.Query(ctx, `SELECT DISTINCT vn.nspname, v.relname, a.attname
		FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
		JOIN pg_class v ON v.oid = r.ev_class JOIN pg_namespace vn ON vn.oid = v.relnamespace
		JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
		WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
		  AND d.refobjid = $1 AND a.attname = ANY($2) AND v.oid <> $1`, oid, slices.Sorted(maps.Keys(t.Encrypted)))
	if err != nil {
		return fmt.Errorf("kmspostgres: reading views over %s: %w", t.Name, err)
	}
	var vn, vr, col string
	_, err = pgx.ForEachRow(rows, []any{&vn, &vr, &col}, func() error {
		c.views[vr] = t.Name + "." + col
		c.views[vn+"."+vr] = t.Name + "." + col
		return nil
	})
	if err != nil {
		return fmt.Errorf("kmspostgres: reading views over %s: %w", t.Name, err)
	}
	return nil
}

// info returns the resolved table of a plan's table.
func (c *catalog) info(rt *rewrite.Table) *tableInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ti := c.tables[rt.Name]; ti != nil && ti.table == rt {
		return ti
	}
	// The plan predates a reset: rebuild what decryption needs from the
	// plan itself.
	return &tableInfo{table: rt, entry: c.schema.Tables[rt.Name]}
}

// encAt names the encrypted column at (table oid, attnum), or "".
func (c *catalog) encAt(oid uint32, attnum uint16) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.encAttr[[2]uint32{oid, uint32(attnum)}]
}

// colType is the declared plaintext type of an encrypted column.
func (ti *tableInfo) colType(col string) envelope.Type {
	return ti.entry.Columns[col].Type
}

// key returns the schema key behind a plan key index.
func (ti *tableInfo) key(i int) *Key {
	return ti.entry.Keys[ti.table.Keys[i].Name]
}
