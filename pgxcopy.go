package kmspostgres

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kmspostgres/kmspostgres/rewrite"
)

// copyChunk is how many rows CopyFrom keys and seals at once: one block
// of ids, the KMS calls of the chunk in parallel, then one COPY.
const copyChunk = 1024

// CopyFrom is pgx's CopyFrom through the engine. Whether a COPY may run
// as it is, and what it must write, is decided as for the INSERT of one
// row with the same columns: the table is resolved by the server, and its
// plan refuses what an INSERT would refuse. A table the INSERT would pass
// through is copied as pgx copies. Into an encrypted table, rows are read
// in chunks: each chunk gets its primary keys, one data key per row and
// key (minted concurrently), sealed cells and blind-index values, then is
// sent with COPY. Outside a transaction the chunks run inside one, so a
// failure leaves nothing written.
func (s pgxSession) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	c := s.c
	if len(columns) == 0 {
		return 0, fmt.Errorf("kmspostgres: CopyFrom into %s: name the columns", table.Sanitize())
	}
	var b strings.Builder
	b.WriteString("INSERT INTO " + table.Sanitize() + " (")
	for i, col := range columns {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(pgx.Identifier{col}.Sanitize())
	}
	b.WriteString(") VALUES (")
	for i := range columns {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$" + strconv.Itoa(i+1))
	}
	b.WriteString(")")
	// What the plan is made against: the catalog as it is now (checked,
	// not taken from the cache) and the session's search_path. The COPY
	// must run against the same, checked again under the table's lock.
	gen, err := c.connector.catalog.fresh(ctx, c.pc, true)
	if err != nil {
		return 0, err
	}
	path := c.searchPath(ctx)
	p, err := c.plan(ctx, b.String())
	if err != nil {
		return 0, err
	}
	if p.Passthrough {
		return c.pc.CopyFrom(ctx, table, columns, src)
	}
	if p.Insert == nil || p.Out != nil || len(p.Insert.Rows) != 1 {
		return 0, fmt.Errorf("kmspostgres: internal: CopyFrom into %s has an unexpected plan; refusing", table.Sanitize())
	}
	for _, a := range p.Args {
		if a.Lookup > 0 {
			return 0, fmt.Errorf("kmspostgres: internal: CopyFrom into %s has an unexpected plan; refusing", table.Sanitize())
		}
	}
	cols, params, err := rewrite.InsertTargets(p.SQL)
	if err != nil {
		return 0, err
	}
	// COPY into the relation the plan resolved, not the caller's name
	// again: a search_path changed or a table created meanwhile would send
	// the sealed rows elsewhere.
	target := pgx.Identifier{p.Insert.Table.Schema, p.Insert.Table.Relname}
	if len(table) == 3 {
		// database.schema.table: the server checks the database's name.
		target = pgx.Identifier{table[0], target[0], target[1]}
	}
	finish, err := s.copyTx(ctx)
	if err != nil {
		return 0, err
	}
	// Under ROW EXCLUSIVE no other session can add a trigger, rule or
	// column to the table, its partitions or children until the
	// transaction ends; what changed before the lock, or what this
	// session changed itself (the source may run statements), is seen by
	// checking the catalog and the search_path before each COPY.
	check := func() error {
		g, err := c.connector.catalog.fresh(ctx, c.pc, true)
		if err != nil {
			return err
		}
		if g != gen || c.searchPath(ctx) != path {
			return &rewrite.RefusalError{Table: p.Insert.Table.Name,
				Reason: "the database's catalog or the session's search_path changed while CopyFrom ran, so its plan may no longer be what the COPY would do; nothing was written",
				Fix:    "run the CopyFrom again"}
		}
		return nil
	}
	_, err = c.pc.Exec(ctx, "LOCK TABLE "+target.Sanitize()+" IN ROW EXCLUSIVE MODE")
	var n int64
	if err == nil {
		n, err = s.copyChunks(ctx, p, target, len(columns), cols, params, src, check)
	}
	if err = finish(err); err != nil {
		return 0, c.staleCheck(err)
	}
	return n, nil
}

// copyTx makes a CopyFrom all or nothing: outside a transaction it runs
// in one; inside the caller's, in a savepoint, so that a CopyFrom that
// fails after some chunks went to the server leaves none of them for the
// caller's COMMIT.
func (s pgxSession) copyTx(ctx context.Context) (func(error) error, error) {
	c := s.c
	conn := c.pc
	if conn.PgConn().TxStatus() == 'I' {
		return c.ensureTx(ctx)
	}
	if _, err := conn.Exec(ctx, "SAVEPOINT kmspostgres_copy"); err != nil {
		return nil, err
	}
	return func(err error) error {
		if err == nil {
			if _, err = conn.Exec(ctx, "RELEASE SAVEPOINT kmspostgres_copy"); err == nil {
				return nil
			}
		}
		_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK TO SAVEPOINT kmspostgres_copy; RELEASE SAVEPOINT kmspostgres_copy")
		c.path = "" // the rollback undid whatever the source SET
		return err
	}, nil
}

// copyChunks reads, keys and copies the rows chunk by chunk, sealing the
// next chunk while the server takes the current one: the ids of a chunk
// are taken (on the connection) before the COPY before it starts, and the
// keys and cells made (off the connection) while it runs.
func (s pgxSession) copyChunks(ctx context.Context, p *rewrite.Plan, table pgx.Identifier, k int, cols []string, params []int, src pgx.CopyFromSource, check func() error) (int64, error) {
	cur, err := s.readChunk(ctx, p, table, k, src)
	if err != nil || cur == nil {
		return 0, err
	}
	if err := s.sealChunk(ctx, p, params, cur); err != nil {
		return 0, err
	}
	var total int64
	for {
		var next *copyBatch
		if cur.n == copyChunk {
			if next, err = s.readChunk(ctx, p, table, k, src); err != nil {
				return 0, err
			}
		}
		// The source ran since the last check (it may run statements on
		// this session): check again before anything is copied.
		if err := check(); err != nil {
			return 0, err
		}
		sealed := make(chan error, 1)
		if next != nil {
			go func() { sealed <- s.sealChunk(ctx, p, params, next) }()
		} else {
			sealed <- nil
		}
		copied, err := s.c.pc.CopyFrom(ctx, table, cols, pgx.CopyFromRows(cur.rows))
		serr := <-sealed
		if err != nil {
			return 0, err
		}
		if serr != nil {
			return 0, serr
		}
		total += copied
		if next == nil {
			return total, nil
		}
		cur = next
	}
}

// copyBatch is one chunk of COPY rows: the caller's values, the plan that
// keys them, the generated primary keys, then the rows to send.
type copyBatch struct {
	n    int
	args []any
	plan *rewrite.Plan
	gen  []any
	rows [][]any
}

// readChunk reads up to copyChunk rows and takes their generated primary
// keys (the one step on the connection); nil when the source is done.
func (s pgxSession) readChunk(ctx context.Context, p *rewrite.Plan, table pgx.Identifier, k int, src pgx.CopyFromSource) (*copyBatch, error) {
	b := &copyBatch{args: make([]any, 0, copyChunk*k)}
	for b.n < copyChunk && src.Next() {
		vals, err := src.Values()
		if err != nil {
			return nil, err
		}
		if len(vals) != k {
			return nil, fmt.Errorf("kmspostgres: CopyFrom into %s: a row has %d values for %d columns", table.Sanitize(), len(vals), k)
		}
		for _, v := range vals {
			b.args = append(b.args, copyValue(v))
		}
		b.n++
	}
	if err := src.Err(); err != nil {
		return nil, err
	}
	if b.n == 0 {
		return nil, nil
	}
	b.plan = rewrite.CopyPlan(p, b.n, k)
	var err error
	if b.gen, err = s.c.generatePKs(ctx, b.plan.Insert); err != nil {
		return nil, err
	}
	return b, nil
}

// sealChunk keys and seals a chunk as one INSERT of its rows would, and
// lays it out as COPY rows in the rewritten column order.
func (s pgxSession) sealChunk(ctx context.Context, p *rewrite.Plan, params []int, b *copyBatch) error {
	_, a, _, err := s.c.sealRows(ctx, b.plan, namedArgs(b.args), b.gen)
	if err != nil {
		return err
	}
	m, n := len(p.Args), b.n
	if len(a) != n*m {
		return fmt.Errorf("kmspostgres: internal: CopyFrom sealed %d values for %d rows of %d; refusing", len(a), n, m)
	}
	b.rows = make([][]any, n)
	flat := make([]any, n*len(params))
	for r := range n {
		row := flat[r*len(params) : (r+1)*len(params) : (r+1)*len(params)]
		for i, pi := range params {
			if pi >= 0 {
				row[i] = a[r*m+pi].Value
			}
		}
		b.rows[r] = row
	}
	return nil
}

// copyValue keeps what a source's value stands for when it is read: pgx
// encodes each row before it asks for the next, so a source may hand out
// the same pointers or buffers on every row, but CopyFrom holds a chunk
// of rows before sealing and sending them. Byte slices and other slices
// are copied, and pointers are followed where pgx would encode the value
// they point to (the pointer type has no methods of its own); anything
// else is kept as it is.
func copyValue(v any) any {
	switch x := v.(type) {
	case nil, string, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64, time.Time:
		return v
	case []byte:
		return bytes.Clone(x)
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer:
		if !rv.IsNil() && rv.Type().NumMethod() == rv.Elem().Type().NumMethod() {
			return copyValue(rv.Elem().Interface())
		}
	case reflect.Slice:
		if !rv.IsNil() {
			c := reflect.MakeSlice(rv.Type(), rv.Len(), rv.Len())
			reflect.Copy(c, rv)
			return c.Interface()
		}
	}
	return v
}
