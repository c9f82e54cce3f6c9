package kmspostgres

import (
	"context"
	"database/sql/driver"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/kmspostgres/kmspostgres/rewrite"
)

// ReindexOptions tunes Reindex.
type ReindexOptions struct {
	// All recomputes every row's index values, not only those of rows with
	// a value and no index value: after a new master key, a new
	// normalizer, or a new index column.
	All bool
	// Rotate fills the rotation columns (blind_index rotate) instead of
	// the index columns: of the rows with a value and no value in the
	// rotation column, or with All of every row. Lookups keep using the
	// current index columns meanwhile.
	Rotate bool
	// BatchSize is how many rows are read, locked and rewritten per
	// transaction (default 100: with argon2id, about a second of locks).
	BatchSize int
	// Progress, when set, is called after each batch with the rows done.
	Progress func(done int)
}

// Reindex fills the blind-index columns of a table from its encrypted
// columns: it reads each batch of rows through the driver (decrypting,
// so it needs decrypt rights), locks them (FOR UPDATE) in a transaction,
// computes their index values and writes them, then commits. It runs
// beside the application: rows are locked one batch at a time, and a row
// the application writes meanwhile is written with its index by the
// driver anyway. It returns the number of rows rewritten.
func (c *Connector) Reindex(ctx context.Context, table string, opts ReindexOptions) (int, error) {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 100
	}
	st := c.schema.Table(splitTable(table))
	if st == nil {
		return 0, fmt.Errorf("kmspostgres: reindex: table %s is not in the schema map", table)
	}
	var cols []string // indexed encrypted columns
	for _, cn := range slices.Sorted(maps.Keys(st.Columns)) {
		if b := st.Columns[cn].BlindIndex; b != nil && (!opts.Rotate || b.Rotate != nil) {
			cols = append(cols, cn)
		}
	}
	if len(cols) == 0 && opts.Rotate {
		return 0, fmt.Errorf("kmspostgres: reindex: table %s has no blind index with a rotate in the schema map; add blind_index: {rotate: {column: …}} to the column to rotate", table)
	}
	if len(cols) == 0 {
		return 0, fmt.Errorf("kmspostgres: reindex: table %s has no blind index in the schema map", table)
	}
	dc, err := c.Connect(ctx)
	if err != nil {
		return 0, err
	}
	defer dc.Close()
	conn := dc.(*Conn)
	pc := conn.pc
	rt, err := boundCatalog{c: c.catalog, ctx: ctx, conn: pc}.Encrypted(splitTable(table))
	if err != nil {
		return 0, err
	}
	if rt == nil {
		return 0, fmt.Errorf("kmspostgres: reindex: table %s not found", table)
	}
	r := reindexer{c: c, conn: conn, pc: pc, rt: rt, cols: cols, opts: opts}
	r.build()
	done := 0
	var last []string
	for {
		n, next, err := r.batch(ctx, last)
		done += n
		if err != nil {
			return done, err
		}
		if opts.Progress != nil {
			opts.Progress(done)
		}
		if next == nil {
			return done, nil
		}
		last = next
	}
}

// reindexer holds the SQL of one Reindex.
type reindexer struct {
	c    *Connector
	conn *Conn
	pc   *pgx.Conn
	rt   *rewrite.Table
	cols []string
	opts ReindexOptions
	// targets are the index columns the UPDATE sets, in its parameter
	// order.
	targets []indexTarget

	selectFirst, selectAfter, update string
}

// indexTarget is an index column a reindex writes: of the encrypted
// column enc, its current index or with rotate its rotation.
type indexTarget struct {
	enc, column string
	rotate      bool
}

// build writes the batch query (through the driver: it decrypts) and the
// UPDATE of one row's index columns (on the raw connection: the driver
// refuses writes to index columns).
func (r *reindexer) build() {
	rt := r.rt
	rel := pgx.Identifier{rt.Schema, rt.Relname}.Sanitize()
	var pkText, pkCols, pkArgs, pkCmp []string
	for i, p := range rt.PrimaryKey {
		id := pgx.Identifier{p}.Sanitize()
		pkCols = append(pkCols, id)
		pkText = append(pkText, id+"::text AS __kmspg_pk"+strconv.Itoa(i))
		pkArgs = append(pkArgs, "$"+strconv.Itoa(i+1)+"::"+rt.PKTypes[i])
	}
	var out, filter, set []string
	for _, cn := range r.cols {
		bi := rt.Blind[cn]
		ec := pgx.Identifier{cn}.Sanitize()
		out = append(out, ec)
		// The current index column (and its rotation's, written beside
		// it as every write does), or with Rotate the rotation's alone.
		written := []indexTarget{{cn, bi.Column, false}}
		if r.opts.Rotate {
			written = nil
		}
		if bi.Rotate != "" {
			written = append(written, indexTarget{cn, bi.Rotate, true})
		}
		ic := pgx.Identifier{written[0].column}.Sanitize()
		filter = append(filter, "("+ic+" IS NULL AND "+ec+" IS NOT NULL)")
		for _, w := range written {
			r.targets = append(r.targets, w)
			set = append(set, pgx.Identifier{w.column}.Sanitize()+" = $"+strconv.Itoa(len(r.targets)))
		}
	}
	for i := range rt.PrimaryKey {
		pkCmp = append(pkCmp, pkCols[i]+" = $"+strconv.Itoa(len(r.targets)+i+1)+"::"+rt.PKTypes[i])
	}
	where := "(" + strings.Join(filter, " OR ") + ")"
	if r.opts.All {
		where = "true"
	}
	head := "SELECT " + strings.Join(pkText, ", ") + ", " + strings.Join(out, ", ") + " FROM " + rel + " WHERE " + where
	tail := " ORDER BY " + strings.Join(pkCols, ", ") + " LIMIT " + strconv.Itoa(r.opts.BatchSize) + " FOR UPDATE"
	r.selectFirst = head + tail
	r.selectAfter = head + " AND (" + strings.Join(pkCols, ", ") + ") > (" + strings.Join(pkArgs, ", ") + ")" + tail
	r.update = "UPDATE " + rel + " SET " + strings.Join(set, ", ") + " WHERE " + strings.Join(pkCmp, " AND ")
}

// batch reindexes the next batch of rows after last (nil: from the
// start) in one transaction, and returns the last primary key done, nil
// when no rows were left.
func (r *reindexer) batch(ctx context.Context, last []string) (n int, next []string, err error) {
	if _, err := r.pc.Exec(ctx, "BEGIN"); err != nil {
		return 0, nil, err
	}
	defer func() {
		if err != nil {
			_, _ = r.pc.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}()
	q, args := r.selectFirst, []driver.NamedValue(nil)
	if last != nil {
		q = r.selectAfter
		for i, v := range last {
			args = append(args, driver.NamedValue{Ordinal: i + 1, Value: v})
		}
	}
	rows, err := r.conn.QueryContext(ctx, q, args)
	if err != nil {
		return 0, nil, err
	}
	npk := len(r.rt.PrimaryKey)
	var batch [][]driver.Value
	for {
		row := make([]driver.Value, npk+len(r.cols))
		if err := rows.Next(row); err == io.EOF {
			break
		} else if err != nil {
			rows.Close()
			return 0, nil, err
		}
		batch = append(batch, row)
	}
	if err := rows.Close(); err != nil {
		return 0, nil, err
	}
	for _, row := range batch {
		args := make([]any, 0, len(r.targets)+npk)
		for _, w := range r.targets {
			iv, err := r.c.storedIndex(r.rt, w.enc, w.rotate, row[npk+slices.Index(r.cols, w.enc)])
			if err != nil {
				return 0, nil, err
			}
			args = append(args, iv)
		}
		for i := range npk {
			args = append(args, row[i])
		}
		if _, err := r.pc.Exec(ctx, r.update, args...); err != nil {
			return 0, nil, err
		}
	}
	if _, err := r.pc.Exec(ctx, "COMMIT"); err != nil {
		return 0, nil, err
	}
	if len(batch) == 0 {
		return 0, nil, nil
	}
	lastRow := batch[len(batch)-1]
	next = make([]string, npk)
	for i := range npk {
		next[i], _ = lastRow[i].(string)
	}
	return len(batch), next, nil
}

// BlindIndexInfo describes one blind index of the map as the database has
// it, for `kmspostgres check`.
type BlindIndexInfo struct {
	Table, Column string // the encrypted column, as in the map
	IndexColumn   string
	Algorithm     string
	// Unique: a UNIQUE index (without predicate) is on the index column
	// alone, so that duplicates are refused and ON CONFLICT (column) works.
	Unique bool
	// RotateColumn and RotateAlgorithm: the index is rotating to this
	// column (blind_index rotate); empty otherwise.
	RotateColumn, RotateAlgorithm string
}

// BlindIndexes lists the map's blind indexes and whether each has a
// UNIQUE index in the database.
func (c *Connector) BlindIndexes(ctx context.Context) ([]BlindIndexInfo, error) {
	var out []BlindIndexInfo
	for _, tn := range slices.Sorted(maps.Keys(c.schema.Tables)) {
		t := c.schema.Tables[tn]
		for _, cn := range slices.Sorted(maps.Keys(t.Columns)) {
			if b := t.Columns[cn].BlindIndex; b != nil {
				info := BlindIndexInfo{Table: tn, Column: cn, IndexColumn: b.Column, Algorithm: b.Algorithm.String()}
				if b.Rotate != nil {
					info.RotateColumn, info.RotateAlgorithm = b.Rotate.Column, b.Rotate.Algorithm.String()
				}
				out = append(out, info)
			}
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	dc, err := c.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer dc.Close()
	pc := dc.(*Conn).pc
	for i := range out {
		err := pc.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
			WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indnkeyatts = 1 AND i.indpred IS NULL AND a.attname = $2)`,
			out[i].Table, out[i].IndexColumn).Scan(&out[i].Unique)
		if err != nil {
			return nil, fmt.Errorf("kmspostgres: reading the indexes of %s: %w", out[i].Table, err)
		}
	}
	return out, nil
}
