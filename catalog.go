package kmspostgres

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/rewrite"
)

// tableInfo joins a relation that holds encrypted rows (a mapped table, or
// one of its partitions or inheritance children) with its schema-map
// entry.
type tableInfo struct {
	table *rewrite.Table // as resolved for the rewriter
	entry *Table         // the schema-map entry
	aads  map[string][]byte
}

// aad returns the associated data that binds a cell to the table's column
// (envelope.CellAAD), made once per column when the relation is loaded.
// It is shared: callers must not modify it.
func (ti *tableInfo) aad(col string) []byte {
	if a, ok := ti.aads[col]; ok {
		return a
	}
	return envelope.CellAAD(ti.table.Name, col)
}

// catalog resolves the schema map against the database and answers the
// rewriter's questions, by relation OID as the server resolves names:
//
//   - every mapped table, and its partitions and inheritance children at
//     any depth, which are encrypted and decrypted as the mapped table
//     (same context and cell binding);
//   - relations that reach an encrypted column through a rule: views at
//     any depth (whole-row references included) and tables with rules that
//     write one; statements on them are refused;
//   - mapped tables that do not match the map, or on which the database
//     computes on an encrypted column (generated columns, indexes,
//     constraints, triggers, policies): statements on them are refused,
//     other tables are served.
//
// The snapshot is checked against a fingerprint of the catalog rows it was
// built from before every new plan, and at most ttl apart for cached plans;
// when the fingerprint changed (DDL by any process), the snapshot is
// rebuilt and every cached plan dropped.
type catalog struct {
	schema *Schema
	ttl    time.Duration
	// basePath is the search_path a new connection starts with (without
	// pg_temp): unqualified map entries resolve through it, whatever a
	// session later sets or creates.
	basePath []string

	mu          sync.Mutex
	loaded      bool
	generation  uint64 // bumped by every (re)load; plans remember theirs
	fingerprint string
	checkedAt   time.Time

	tables  map[string]*tableInfo // mapped tables by schema-map name
	byOID   map[uint32]*tableInfo // mapped tables, partitions and children
	byPlan  map[*rewrite.Table]*tableInfo
	broken  map[uint32]error     // mapped relations that do not match the map
	missing map[string]error     // map entries with no relation
	encAttr map[[2]uint32]string // (relation oid, attnum) of encrypted columns → table.column
	reach   map[uint32]string    // relations that reach an encrypted column → table.column
	watch   []uint32             // every oid above, for the fingerprint
	names   []string             // their relation names, and the map entries'
	builtin map[string]bool      // functions in pg_catalog, by name

	cols map[uint32][]string // other relations' columns
}

func newCatalog(s *Schema, ttl time.Duration) *catalog { return &catalog{schema: s, ttl: ttl} }

// setBasePath records, from the first connection, the search_path new
// connections start with.
func (c *catalog) setBasePath(ctx context.Context, conn *pgx.Conn) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.basePath != nil {
		return nil
	}
	var path []string
	if err := conn.QueryRow(ctx, "SELECT current_schemas(false)").Scan(&path); err != nil {
		return fmt.Errorf("kmspostgres: reading the search_path: %w", err)
	}
	c.basePath = append(path, "pg_catalog")[:len(path)]
	if c.basePath == nil {
		c.basePath = []string{}
	}
	return nil
}

// reset forgets the snapshot: the next question reloads it.
func (c *catalog) reset() {
	c.mu.Lock()
	c.loaded = false
	c.mu.Unlock()
}

// fresh makes sure the snapshot matches the database: loaded, and checked
// against the fingerprint within ttl (always when force is set). It
// returns the snapshot's generation.
func (c *catalog) fresh(ctx context.Context, conn *pgx.Conn, force bool) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loaded && !force && time.Since(c.checkedAt) < c.ttl {
		return c.generation, nil
	}
	if c.loaded {
		fp, err := c.probe(ctx, conn)
		if err != nil {
			return 0, fmt.Errorf("kmspostgres: checking the catalog for changes: %w", err)
		}
		if fp == c.fingerprint {
			c.checkedAt = time.Now()
			return c.generation, nil
		}
		c.loaded = false
	}
	if err := c.ensure(ctx, conn); err != nil {
		return 0, err
	}
	return c.generation, nil
}

// ensure loads the snapshot if it is not loaded. Called with c.mu held.
// Errors are not kept: a migration in another process may fix them.
func (c *catalog) ensure(ctx context.Context, conn *pgx.Conn) error {
	if c.loaded {
		return nil
	}
	if err := c.load(ctx, conn); err != nil {
		return err
	}
	fp, err := c.probe(ctx, conn)
	if err != nil {
		return fmt.Errorf("kmspostgres: fingerprinting the catalog: %w", err)
	}
	c.fingerprint, c.checkedAt, c.loaded = fp, time.Now(), true
	c.generation++
	return nil
}

// probe fingerprints the catalog rows the snapshot depends on: what each
// map entry resolves to, every row of pg_class, pg_attribute, pg_inherits,
// pg_depend, pg_rewrite and pg_trigger about a watched relation, and every
// relation that has a watched relation's name in any schema. A new view,
// rule, partition, child, column, trigger or dependent of any of them
// changes it, and so does a relation that shadows one through a
// search_path, or stops shadowing one, created, dropped or renamed.
func (c *catalog) probe(ctx context.Context, conn *pgx.Conn) (string, error) {
	var rels, paths []string
	for _, name := range slices.Sorted(maps.Keys(c.schema.Tables)) {
		rel, path := c.entryPath(name)
		rels, paths = append(rels, rel), append(paths, strings.Join(path, ","))
	}
	var fp string
	err := conn.QueryRow(ctx, `SELECT md5(coalesce(string_agg(x, ',' ORDER BY x), '')) FROM (
		SELECT 'r' || e.rel || '@' || e.path || '=' || coalesce((SELECT c.oid::text FROM pg_class c
			JOIN pg_namespace n ON n.oid = c.relnamespace
			JOIN unnest(string_to_array(e.path, ',')) WITH ORDINALITY AS p(nsp, ord) ON p.nsp = n.nspname
			WHERE c.relname = e.rel ORDER BY p.ord LIMIT 1), '-') AS x
		FROM unnest($1::text[], $3::text[]) AS e(rel, path)
		UNION ALL SELECT 'c' || oid || ':' || xmin FROM pg_class WHERE oid = ANY($2)
		UNION ALL SELECT 'a' || attrelid || ':' || attnum || ':' || xmin FROM pg_attribute WHERE attrelid = ANY($2) AND attnum > 0
		UNION ALL SELECT 'i' || inhrelid || ':' || inhparent FROM pg_inherits WHERE inhparent = ANY($2) OR inhrelid = ANY($2)
		UNION ALL SELECT 'd' || classid || ':' || objid || ':' || objsubid || ':' || refobjid || ':' || refobjsubid FROM pg_depend
			WHERE refclassid = 'pg_class'::regclass AND refobjid = ANY($2)
		UNION ALL SELECT 'w' || oid || ':' || xmin FROM pg_rewrite WHERE ev_class = ANY($2)
		UNION ALL SELECT 't' || oid || ':' || xmin FROM pg_trigger WHERE tgrelid = ANY($2)
		UNION ALL SELECT 'n' || oid || ':' || relnamespace || ':' || xmin FROM pg_class WHERE relname = ANY($4::name[])) s`,
		rels, c.watch, paths, c.names).Scan(&fp)
	return fp, err
}

// boundCatalog answers the rewriter through one connection. names holds
// the relation names of the statement being planned, resolved on the
// server under the session's search_path.
type boundCatalog struct {
	c     *catalog
	ctx   context.Context
	conn  *pgx.Conn
	names map[rewrite.RelName]uint32
}

// Prefetch resolves every relation name of a statement in one round trip,
// as the server would resolve them now.
func (b boundCatalog) Prefetch(names []rewrite.RelName) error {
	if len(names) == 0 {
		return nil
	}
	idents := make([]string, len(names))
	for i, n := range names {
		idents[i] = relIdent(n.Schema, n.Name)
	}
	rows, err := b.conn.Query(b.ctx, `SELECT coalesce(to_regclass(n)::oid, 0) FROM unnest($1::text[]) WITH ORDINALITY AS u(n, i) ORDER BY i`, idents)
	if err != nil {
		return fmt.Errorf("kmspostgres: resolving relation names: %w", err)
	}
	oids, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		return fmt.Errorf("kmspostgres: resolving relation names: %w", err)
	}
	for i, n := range names {
		b.names[n] = oids[i]
	}
	return nil
}

func relIdent(schema, name string) string {
	if schema != "" {
		return pgx.Identifier{schema, name}.Sanitize()
	}
	return pgx.Identifier{name}.Sanitize()
}

// resolve returns the oid a name resolves to now, 0 if none.
func (b boundCatalog) resolve(schema, name string) (uint32, error) {
	n := rewrite.RelName{Schema: schema, Name: name}
	if oid, ok := b.names[n]; ok {
		return oid, nil
	}
	var oid uint32
	if err := b.conn.QueryRow(b.ctx, `SELECT coalesce(to_regclass($1)::oid, 0)`, relIdent(schema, name)).Scan(&oid); err != nil {
		return 0, fmt.Errorf("kmspostgres: resolving %s: %w", relIdent(schema, name), err)
	}
	if b.names != nil {
		b.names[n] = oid
	}
	return oid, nil
}

func (b boundCatalog) Encrypted(schema, name string) (*rewrite.Table, error) {
	oid, err := b.resolve(schema, name)
	if err != nil {
		return nil, err
	}
	c := b.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.ensure(b.ctx, b.conn); err != nil {
		return nil, err
	}
	if oid == 0 {
		// A mapped table that does not exist yet: say so rather than
		// let the server say "does not exist" about a name it may later
		// resolve differently.
		if st := c.schema.Table(schema, name); st != nil {
			return nil, c.missing[st.Name]
		}
		return nil, nil
	}
	if err := c.broken[oid]; err != nil {
		return nil, err
	}
	if ti := c.byOID[oid]; ti != nil {
		return ti.table, nil
	}
	return nil, nil
}

func (b boundCatalog) Columns(schema, name string) ([]string, error) {
	if t, err := b.Encrypted(schema, name); t != nil || err != nil {
		if t == nil {
			return nil, err
		}
		return t.Columns, nil
	}
	oid, err := b.resolve(schema, name)
	if err != nil || oid == 0 {
		return nil, err
	}
	c := b.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if cols, ok := c.cols[oid]; ok {
		return cols, nil
	}
	rows, err := b.conn.Query(b.ctx, `SELECT attname FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, oid)
	if err != nil {
		return nil, fmt.Errorf("kmspostgres: reading the columns of %s: %w", relIdent(schema, name), err)
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("kmspostgres: reading the columns of %s: %w", relIdent(schema, name), err)
	}
	c.cols[oid] = cols
	return cols, nil
}

func (b boundCatalog) ProtectedView(schema, name string) (string, error) {
	oid, err := b.resolve(schema, name)
	if err != nil || oid == 0 {
		return "", err
	}
	c := b.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.ensure(b.ctx, b.conn); err != nil {
		return "", err
	}
	return c.reach[oid], nil
}

var nextvalRe = regexp.MustCompile(`^nextval\('([^']+)'::regclass\)$`)

func (c *catalog) mismatch(t string, format string, args ...any) error {
	where := c.schema.source
	if where == "" {
		where = "schema map"
	}
	return fmt.Errorf("%w: %s: table %s: the database does not match: %s", ErrSchema, where, t, fmt.Sprintf(format, args...))
}

// load resolves every schema-map table. A table that is missing or does
// not match is recorded, not fatal: statements on it are refused, the
// others served. Called with c.mu held.
func (c *catalog) load(ctx context.Context, conn *pgx.Conn) error {
	c.tables = map[string]*tableInfo{}
	c.byOID = map[uint32]*tableInfo{}
	c.byPlan = map[*rewrite.Table]*tableInfo{}
	c.broken = map[uint32]error{}
	c.missing = map[string]error{}
	c.encAttr = map[[2]uint32]string{}
	c.reach = map[uint32]string{}
	c.cols = map[uint32][]string{}
	c.watch, c.names = nil, nil
	for _, name := range slices.Sorted(maps.Keys(c.schema.Tables)) {
		if err := c.loadTable(ctx, conn, c.schema.Tables[name]); err != nil {
			return err
		}
	}
	if err := c.loadReach(ctx, conn); err != nil {
		return err
	}
	if err := c.loadBuiltins(ctx, conn); err != nil {
		return err
	}
	return c.loadNames(ctx, conn)
}

// loadBuiltins records the names of the functions in pg_catalog, once.
func (c *catalog) loadBuiltins(ctx context.Context, conn *pgx.Conn) error {
	if c.builtin != nil {
		return nil
	}
	rows, err := conn.Query(ctx, `SELECT DISTINCT proname::text FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace`)
	if err != nil {
		return fmt.Errorf("kmspostgres: reading built-in functions: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("kmspostgres: reading built-in functions: %w", err)
	}
	c.builtin = make(map[string]bool, len(names))
	for _, n := range names {
		c.builtin[n] = true
	}
	return nil
}

// callsUserFunction reports whether a statement calls a function outside
// pg_catalog (which may change settings, search_path among them, as
// set_config does), or whether that cannot be told yet.
func (c *catalog) callsUserFunction(calls []string) bool {
	if len(calls) == 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.builtin == nil {
		return true
	}
	for _, f := range calls {
		schema, _, qualified := strings.Cut(f, ".")
		if qualified && schema != "pg_catalog" || !qualified && !c.builtin[f] {
			return true
		}
	}
	return false
}

// loadNames records the names of every watched relation and map entry:
// a relation of that name appearing, going or renamed anywhere can change
// what a statement's name resolves to.
func (c *catalog) loadNames(ctx context.Context, conn *pgx.Conn) error {
	rows, err := conn.Query(ctx, `SELECT DISTINCT relname::text FROM pg_class WHERE oid = ANY($1)`, c.watch)
	if err != nil {
		return fmt.Errorf("kmspostgres: reading relation names: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("kmspostgres: reading relation names: %w", err)
	}
	for name := range c.schema.Tables {
		rel, _ := c.entryPath(name)
		names = append(names, rel)
	}
	slices.Sort(names)
	c.names = slices.Compact(names)
	return nil
}

// resolveEntrySQL finds the first relation named $1 in the schemas $2, in
// order, as the server resolves an unqualified name.
const resolveEntrySQL = `SELECT c.oid, n.nspname, c.relname, c.relkind::text FROM pg_class c
	JOIN pg_namespace n ON n.oid = c.relnamespace
	JOIN unnest($2::text[]) WITH ORDINALITY AS p(nsp, ord) ON p.nsp = n.nspname
	WHERE c.relname = $1::name ORDER BY p.ord LIMIT 1`

// entryPath splits a map entry into its relation name and the schemas it
// resolves through: its own schema, or the base search_path.
func (c *catalog) entryPath(name string) (string, []string) {
	if schema, rel, ok := strings.Cut(name, "."); ok {
		return truncIdent(strings.ToLower(rel)), []string{truncIdent(strings.ToLower(schema))}
	}
	return truncIdent(strings.ToLower(name)), c.basePath
}

// truncIdent cuts an identifier to the 63 bytes PostgreSQL keeps, at a
// character boundary, as the server does with every name it reads.
func truncIdent(s string) string {
	const max = 63
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

// relation is a resolved relation: oid, schema and name.
type relation struct {
	oid          uint32
	nsp, relname string
}

// loadTable resolves one schema-map table, its partitions and inheritance
// children. Only connection trouble is returned; mismatches are recorded.
func (c *catalog) loadTable(ctx context.Context, conn *pgx.Conn, entry *Table) error {
	name := entry.Name
	var top relation
	rel, path := c.entryPath(name)
	var kind string
	err := conn.QueryRow(ctx, resolveEntrySQL, rel, path).Scan(&top.oid, &top.nsp, &top.relname, &kind)
	if err == pgx.ErrNoRows {
		c.missing[name] = c.mismatch(name, "no such table")
		return nil
	}
	if err != nil {
		return fmt.Errorf("kmspostgres: resolving table %s: %w", name, err)
	}
	if kind != "r" && kind != "p" && kind != "f" {
		c.missing[name] = c.mismatch(name, "%s.%s is not a table (relkind %s)", top.nsp, top.relname, kind)
		return nil
	}
	rels := []relation{top}
	rows, err := conn.Query(ctx, `WITH RECURSIVE ch(oid) AS (
			SELECT inhrelid FROM pg_inherits WHERE inhparent = $1
			UNION SELECT i.inhrelid FROM pg_inherits i JOIN ch ON i.inhparent = ch.oid)
		SELECT c.oid, n.nspname, c.relname FROM ch JOIN pg_class c ON c.oid = ch.oid JOIN pg_namespace n ON n.oid = c.relnamespace
		ORDER BY c.oid`, top.oid)
	if err != nil {
		return fmt.Errorf("kmspostgres: reading partitions and children of %s: %w", name, err)
	}
	children, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (relation, error) {
		var rel relation
		err := r.Scan(&rel.oid, &rel.nsp, &rel.relname)
		return rel, err
	})
	if err != nil {
		return fmt.Errorf("kmspostgres: reading partitions and children of %s: %w", name, err)
	}
	rels = append(rels, children...)
	var infos []*tableInfo
	var bad error
	for _, rel := range rels {
		c.watch = append(c.watch, rel.oid)
		ti, err := c.loadRelation(ctx, conn, entry, rel, rel == top)
		if err != nil {
			return err
		}
		if ti == nil {
			if bad == nil {
				bad = c.broken[rel.oid]
			}
			continue
		}
		infos = append(infos, ti)
	}
	if bad != nil {
		// One relation of the family does not match: refuse them all,
		// since rows move between them.
		for _, rel := range rels {
			c.broken[rel.oid] = bad
		}
		return nil
	}
	for _, ti := range infos {
		c.byPlan[ti.table] = ti
	}
	c.tables[name] = infos[0]
	return nil
}

// loadRelation checks one relation of a mapped table's family against the
// entry and records it. A mismatch goes to c.broken.
func (c *catalog) loadRelation(ctx context.Context, conn *pgx.Conn, entry *Table, rel relation, top bool) (*tableInfo, error) {
	name := entry.Name
	attrs, order, err := readAttrs(ctx, conn, rel.oid, pgx.Identifier{rel.nsp, rel.relname}.Sanitize())
	if err != nil {
		return nil, fmt.Errorf("kmspostgres: reading columns of %s: %w", name, err)
	}
	t := &rewrite.Table{Name: name, Schema: rel.nsp, Relname: rel.relname, PrimaryKey: entry.PrimaryKey, Columns: order, Encrypted: map[string]rewrite.EncColumn{}}
	fail := func(err error) (*tableInfo, error) {
		c.broken[rel.oid] = err
		return nil, nil
	}
	if err := c.checkPrimaryKey(t, attrs); err != nil {
		return fail(err)
	}
	// The mapped table's own unique index covers its partitions; an
	// inheritance child's rows are not kept unique with the parent's by
	// PostgreSQL at all (a known limit, see the README).
	if top {
		if err := c.checkUnique(ctx, conn, t, rel.oid, attrs); err != nil {
			if _, ok := err.(computedError); ok {
				return fail(err.(computedError).error)
			}
			return nil, err
		}
	}
	if err := c.checkKeys(t, entry, attrs); err != nil {
		return fail(err)
	}
	if err := c.checkColumns(t, entry, attrs, rel.oid); err != nil {
		return fail(err)
	}
	if err := c.checkBlindIndexes(t, entry, attrs); err != nil {
		return fail(err)
	}
	if err := c.checkComputed(ctx, conn, t, rel, attrs); err != nil {
		if _, ok := err.(computedError); ok {
			return fail(err.(computedError).error)
		}
		return nil, err
	}
	if len(entry.PrimaryKey) == 1 {
		t.PKGen, t.Sequence = pkGenerator(attrs[entry.PrimaryKey[0]])
	}
	ti := &tableInfo{table: t, entry: entry, aads: map[string][]byte{}}
	for col := range t.Encrypted {
		ti.aads[col] = envelope.CellAAD(name, col)
	}
	c.byOID[rel.oid] = ti
	return ti, nil
}

// attr is one column of a mapped table as pg_catalog describes it.
type attr struct {
	num               int16
	name, typ         string
	identity          string
	generated         string
	hasDef            bool
	serialSeq, defExp string
}

// readAttrs returns a relation's columns by name, and their names in
// table order.
func readAttrs(ctx context.Context, conn *pgx.Conn, oid uint32, ident string) (map[string]attr, []string, error) {
	rows, err := conn.Query(ctx, `SELECT a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attidentity::text, a.attgenerated::text, a.atthasdef,
			COALESCE(pg_get_serial_sequence($2, a.attname), ''), COALESCE(pg_get_expr(d.adbin, d.adrelid), '')
		FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, oid, ident)
	if err != nil {
		return nil, nil, err
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (attr, error) {
		var a attr
		err := r.Scan(&a.num, &a.name, &a.typ, &a.identity, &a.generated, &a.hasDef, &a.serialSeq, &a.defExp)
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
		switch {
		case a.typ == "smallint", a.typ == "integer", a.typ == "bigint", a.typ == "uuid", a.typ == "text", a.typ == "character varying":
		case strings.HasPrefix(a.typ, "character varying("):
		default:
			return c.mismatch(t.Name, "primary-key column %s is %s; supported: smallint, integer, bigint, uuid, text, varchar", p, a.typ)
		}
		t.PKTypes = append(t.PKTypes, a.typ)
	}
	return nil
}

// checkUnique makes sure the database keeps the map's primary key unique:
// a PRIMARY KEY or UNIQUE index (not partial, not on expressions) whose
// key columns are all primary-key columns. Rows that shared a primary key
// would share a data key's context, and one row's cells would decrypt in
// the other's.
func (c *catalog) checkUnique(ctx context.Context, conn *pgx.Conn, t *rewrite.Table, oid uint32, attrs map[string]attr) error {
	nums := make([]int16, len(t.PrimaryKey))
	for i, p := range t.PrimaryKey {
		nums[i] = attrs[p].num
	}
	var ok bool
	err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL
		AND i.indexprs IS NULL AND (SELECT bool_and(k = ANY($2::int2[])) FROM unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) k))`, oid, nums).Scan(&ok)
	if err != nil {
		return fmt.Errorf("kmspostgres: reading the unique indexes of %s: %w", t.Name, err)
	}
	if !ok {
		return computedError{c.mismatch(t.Name, "its primary_key (%s) is not unique in the database: rows with one primary key would share their data key's context; add a PRIMARY KEY or UNIQUE constraint on those columns, or list the table's real primary-key columns (a partitioned table's include the partition key) in primary_key", strings.Join(t.PrimaryKey, ", "))}
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
		if a.hasDef {
			return c.mismatch(t.Name, "key column %s has a default or is generated; drop it, the driver writes key columns", k.Column)
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
			col := pgx.Identifier{cn}.Sanitize()
			return c.mismatch(t.Name, "encrypted column %s is stored as %s; store it as text (base64 cells) or bytea (raw cells) and declare its plaintext type in the schema map (type: %s); to keep its values for kmspostgres encrypt: ALTER TABLE %s ALTER COLUMN %s TYPE text USING %s::text", cn, a.typ, a.typ, relIdent(t.Schema, t.Relname), col, col)
		}
		if a.hasDef {
			return c.mismatch(t.Name, "encrypted column %s has a default or is generated, which would be stored as plaintext; drop it", cn)
		}
		k := keyIndex[entry.Columns[cn].Key]
		t.Encrypted[cn] = rewrite.EncColumn{Key: k, Bytea: bytea}
		t.Keys[k].Columns = append(t.Keys[k].Columns, cn) // sorted: cn comes in order
		c.encAttr[[2]uint32{oid, uint32(a.num)}] = t.Name + "." + cn
	}
	return nil
}

// computedError marks a relation on which the database computes on an
// encrypted column.
type computedError struct{ error }

// checkComputed refuses a relation on which the database itself computes
// on an encrypted column: a generated column, an index, a constraint, a
// rule (copying the column elsewhere), a trigger (its WHEN clause, its
// column list, or a function whose source names the column) or a
// row-level security policy. Each would see only
// ciphertext: wrong answers at best.
func (c *catalog) checkComputed(ctx context.Context, conn *pgx.Conn, t *rewrite.Table, rel relation, attrs map[string]attr) error {
	var nums []int16
	var names []string
	for cn := range t.Encrypted {
		nums = append(nums, attrs[cn].num)
		names = append(names, cn)
	}
	slices.Sort(nums)
	slices.Sort(names)
	var what, col string
	err := conn.QueryRow(ctx, `SELECT what, col FROM (
		SELECT CASE d.classid
				WHEN 'pg_attrdef'::regclass THEN 'a generated column or default'
				WHEN 'pg_class'::regclass THEN CASE WHEN d.objid = d.refobjid THEN 'a generated column' ELSE 'an index (' || d.objid::regclass::text || ')' END
				WHEN 'pg_constraint'::regclass THEN 'a constraint (' || (SELECT conname FROM pg_constraint WHERE oid = d.objid) || ')'
				WHEN 'pg_trigger'::regclass THEN 'a trigger (' || (SELECT tgname FROM pg_trigger WHERE oid = d.objid) || ')'
				WHEN 'pg_policy'::regclass THEN 'a row-level security policy (' || (SELECT polname FROM pg_policy WHERE oid = d.objid) || ')'
				ELSE 'another object (' || d.classid::regclass::text || ')' END AS what,
			a.attname::text AS col
		FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
		WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = $1 AND d.refobjsubid = ANY($2)
		  AND d.classid NOT IN ('pg_rewrite'::regclass, 'pg_statistic_ext'::regclass)
		  AND NOT (d.classid = 'pg_class'::regclass AND d.objid = d.refobjid AND d.objsubid = d.refobjsubid)
		UNION ALL
		SELECT 'a rule (' || r.rulename || ')', coalesce(a.attname::text, 'the whole row')
		FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
		LEFT JOIN pg_attribute a ON d.refclassid = 'pg_class'::regclass AND a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
		WHERE r.ev_class = $1 AND r.rulename <> '_RETURN'
		  AND ((d.refclassid = 'pg_class'::regclass AND d.refobjid = $1 AND d.refobjsubid = ANY($2))
		    OR (d.refclassid = 'pg_type'::regclass AND d.refobjid = (SELECT reltype FROM pg_class WHERE oid = $1)))
		UNION ALL
		SELECT 'a trigger (' || tg.tgname || ', its function ' || p.proname || ')', n.name
		FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid, unnest($3::text[]) n(name)
		WHERE tg.tgrelid = $1 AND NOT tg.tgisinternal AND p.prosrc ~* ('\m' || n.name || '\M')
	) s ORDER BY 1, 2 LIMIT 1`, rel.oid, nums, names).Scan(&what, &col)
	if err == pgx.ErrNoRows {
		return nil
	}
	if err != nil {
		return fmt.Errorf("kmspostgres: reading what depends on %s: %w", t.Name, err)
	}
	return computedError{c.mismatch(t.Name, "%s computes on the encrypted column %s, which holds only ciphertext; drop it (for lookups by value, use a blind-index column)", what, col)}
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

// loadReach finds every relation whose rules (a view's query, or a rule
// on a table) read or write an encrypted column, at any depth: a rule that
// depends on an encrypted column, on a whole row of an encrypted
// relation, or on anything of a relation already found.
func (c *catalog) loadReach(ctx context.Context, conn *pgx.Conn) error {
	// What each relation exposes: encrypted attnums, or everything (0).
	type exposure struct {
		name  string         // table.column, for messages
		attrs map[int16]bool // nil: every column
	}
	exposed := map[uint32]exposure{}
	for k, name := range c.encAttr {
		e := exposed[k[0]]
		if e.attrs == nil {
			e = exposure{name: name, attrs: map[int16]bool{}}
		}
		e.attrs[int16(k[1])] = true
		exposed[k[0]] = e
	}
	frontier := slices.Collect(maps.Keys(exposed))
	for len(frontier) > 0 {
		// A whole-row reference (row_to_json(u), u::text) depends on the
		// relation's row type rather than on its columns.
		rows, err := conn.Query(ctx, `SELECT DISTINCT r.ev_class, c.oid, CASE WHEN d.refclassid = 'pg_type'::regclass THEN 0 ELSE d.refobjsubid END
			FROM pg_class c
			JOIN pg_depend d ON (d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid) OR (d.refclassid = 'pg_type'::regclass AND d.refobjid = c.reltype)
			JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid
			WHERE c.oid = ANY($1) AND r.ev_class <> c.oid`, frontier)
		if err != nil {
			return fmt.Errorf("kmspostgres: reading views and rules over encrypted tables: %w", err)
		}
		var next []uint32
		var owner, ref uint32
		var sub int16
		plainOnly := map[uint32]string{} // owners that read only plain columns so far
		mark := func(owner uint32, name string) {
			if _, seen := exposed[owner]; seen {
				return
			}
			exposed[owner] = exposure{name: name}
			c.reach[owner] = name
			c.watch = append(c.watch, owner)
			next = append(next, owner)
		}
		_, err = pgx.ForEachRow(rows, []any{&owner, &ref, &sub}, func() error {
			e := exposed[ref]
			if e.attrs != nil && sub != 0 && !e.attrs[sub] {
				plainOnly[owner] = e.name // a plain column of an encrypted table
				return nil
			}
			name := e.name
			if n := c.encAttr[[2]uint32{ref, uint32(sub)}]; sub != 0 && n != "" {
				name = n // the column the rule reads
			}
			mark(owner, name)
			return nil
		})
		if err != nil {
			return fmt.Errorf("kmspostgres: reading views and rules over encrypted tables: %w", err)
		}
		// pg_depend records no column for a whole-row reference
		// (row_to_json(u)): read the definitions of the rules that seem to
		// read plain columns only.
		for _, owner := range slices.Sorted(maps.Keys(plainOnly)) {
			if _, seen := exposed[owner]; seen {
				continue
			}
			whole, err := c.wholeRowRule(ctx, conn, owner)
			if err != nil {
				return err
			}
			if whole {
				table, _, _ := strings.Cut(plainOnly[owner], ".")
				mark(owner, table+".* (a whole row)")
			}
		}
		frontier = next
	}
	return nil
}

// wholeRowRule reports whether a rule of the relation (a view's query, or
// a rule on a table) passes a whole row to an expression. A definition the
// parser cannot read counts as one.
func (c *catalog) wholeRowRule(ctx context.Context, conn *pgx.Conn, owner uint32) (bool, error) {
	rows, err := conn.Query(ctx, `SELECT pg_get_ruledef(oid) FROM pg_rewrite WHERE ev_class = $1`, owner)
	if err != nil {
		return false, fmt.Errorf("kmspostgres: reading rule definitions: %w", err)
	}
	defs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return false, fmt.Errorf("kmspostgres: reading rule definitions: %w", err)
	}
	for _, def := range defs {
		if whole, err := rewrite.WholeRowRef(def); whole || err != nil {
			return true, nil
		}
	}
	return false, nil
}

// info returns the resolved table of a plan's table.
func (c *catalog) info(rt *rewrite.Table) *tableInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ti := c.byPlan[rt]; ti != nil {
		return ti
	}
	// The plan predates a reload: rebuild what decryption needs from the
	// plan itself.
	return &tableInfo{table: rt, entry: c.schema.Tables[rt.Name]}
}

// encAt names the encrypted column at (relation oid, attnum), or "".
func (c *catalog) encAt(oid uint32, attnum uint16) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.encAttr[[2]uint32{oid, uint32(attnum)}]
}

// problems lists the mapped tables that are missing or do not match, for
// Check.
func (c *catalog) problems() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []error
	for _, name := range slices.Sorted(maps.Keys(c.missing)) {
		out = append(out, c.missing[name])
	}
	seen := map[string]bool{}
	for _, oid := range slices.Sorted(maps.Keys(c.broken)) {
		if msg := c.broken[oid].Error(); !seen[msg] {
			seen[msg] = true
			out = append(out, c.broken[oid])
		}
	}
	return out
}

// colType is the declared plaintext type of an encrypted column.
func (ti *tableInfo) colType(col string) envelope.Type {
	return ti.entry.Columns[col].Type
}

// key returns the schema key behind a plan key index.
func (ti *tableInfo) key(i int) *Key {
	return ti.entry.Keys[ti.table.Keys[i].Name]
}
