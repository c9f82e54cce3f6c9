package kmspostgres

import (
	"context"
	"database/sql/driver"
	"io"
	"reflect"
	"time"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/rewrite"
)

// rows decrypts a result set.
//
// It implements driver.Rows and not Go 1.27's driver.RowsColumnScanner, on
// purpose: database/sql then reads every row through Next, which decrypts.
// Forwarding ScanColumn to pgx for plain columns is not possible here,
// since the rows were read ahead (pgx's current row is a later one), and a
// ScanColumn that reached pgx for an encrypted column would hand out
// ciphertext. It reads ahead a bounded window of rows,
// unwraps the window's distinct data keys together (in batches or
// concurrently), decrypts the cells, and hands the rows out one by one, so
// memory stays bounded however large the result.
type rows struct {
	ctx    context.Context
	c      *Conn
	out    *rewrite.Output // nil: no decryption, only finish
	inner  driver.Rows
	finish func(error) error

	buf  [][]driver.Value
	slab []driver.Value // backing array of buf's rows, reused each window
	pos  int
	eof  bool
	err  error
	keys map[rowKeyID]*envelope.CellKey // unwrapped for the current window
	done bool
	// checks are the operands of the plan's blind-index checks.
	checks blindChecks
}

var (
	_ driver.Rows                           = (*rows)(nil)
	_ driver.RowsColumnTypeDatabaseTypeName = (*rows)(nil)
	_ driver.RowsColumnTypeScanType         = (*rows)(nil)
	_ driver.RowsColumnTypeLength           = (*rows)(nil)
	_ driver.RowsColumnTypePrecisionScale   = (*rows)(nil)
)

func newRows(ctx context.Context, c *Conn, out *rewrite.Output, inner driver.Rows, finish func(error) error) *rows {
	return &rows{ctx: ctx, c: c, out: out, inner: inner, finish: finish, keys: map[rowKeyID]*envelope.CellKey{}}
}

func (r *rows) Columns() []string {
	cols := r.inner.Columns()
	if r.out != nil && len(cols) >= r.out.Visible {
		return cols[:r.out.Visible]
	}
	return cols
}

func (r *rows) Close() error {
	if r.done {
		return nil
	}
	r.done = true
	err := r.inner.Close()
	if r.err != nil {
		err = r.err
	}
	if r.finish != nil {
		return r.finish(err)
	}
	return err
}

func (r *rows) Next(dest []driver.Value) error {
	if r.err != nil {
		return r.err
	}
	if r.pos >= len(r.buf) {
		if r.eof {
			return io.EOF
		}
		if err := r.fill(); err != nil {
			r.err = err
			return err
		}
		if len(r.buf) == 0 {
			return io.EOF
		}
	}
	if r.out != nil {
		// A halt stops a result set at its next row, read ahead or not.
		if err := r.c.connector.halt.refuseRow(); err != nil {
			r.err = err
			return err
		}
	}
	row := r.buf[r.pos]
	r.buf[r.pos] = nil
	r.pos++
	copy(dest, row)
	return nil
}

func (r *rows) fill() error {
	r.buf, r.pos = r.buf[:0], 0
	n := len(r.inner.Columns())
	window := r.c.connector.window
	if r.out == nil {
		window = 1
	}
	// The window's rows share one array, grown as rows come (a point
	// read needs one row, not a window): Next copies a row out before the
	// next fill overwrites it.
	off := 0
	for len(r.buf) < window {
		if off+n > len(r.slab) {
			r.slab, off = make([]driver.Value, min(max(2*len(r.slab), n), n*window)), 0
		}
		row := r.slab[off : off+n : off+n]
		off += n
		err := r.inner.Next(row)
		if err == io.EOF {
			r.eof = true
			break
		}
		if err != nil {
			return err
		}
		r.buf = append(r.buf, row)
	}
	if r.out == nil || len(r.buf) == 0 {
		return nil
	}
	return r.decrypt()
}

// encType returns the declared type of visible column i when it is
// encrypted.
func (r *rows) encType(i int) (envelope.Type, bool) {
	if r.out == nil || i >= len(r.out.Cols) || r.out.Cols[i].Table == nil {
		return 0, false
	}
	oc := r.out.Cols[i]
	return r.c.connector.catalog.info(oc.Table).colType(oc.Column), true
}

var dbTypeNames = map[envelope.Type]string{
	envelope.Text: "TEXT", envelope.Bytea: "BYTEA", envelope.Smallint: "INT2", envelope.Integer: "INT4",
	envelope.Bigint: "INT8", envelope.Real: "FLOAT4", envelope.Double: "FLOAT8", envelope.Numeric: "NUMERIC",
	envelope.Boolean: "BOOL", envelope.Date: "DATE", envelope.Timestamp: "TIMESTAMP", envelope.Timestamptz: "TIMESTAMPTZ",
	envelope.Time: "TIME", envelope.UUID: "UUID", envelope.JSON: "JSON", envelope.JSONB: "JSONB",
}

var scanTypes = map[envelope.Type]reflect.Type{
	envelope.Text: reflect.TypeFor[string](), envelope.Bytea: reflect.TypeFor[[]byte](),
	envelope.Smallint: reflect.TypeFor[int16](), envelope.Integer: reflect.TypeFor[int32](), envelope.Bigint: reflect.TypeFor[int64](),
	envelope.Real: reflect.TypeFor[float32](), envelope.Double: reflect.TypeFor[float64](), envelope.Numeric: reflect.TypeFor[string](),
	envelope.Boolean: reflect.TypeFor[bool](), envelope.Date: reflect.TypeFor[time.Time](), envelope.Timestamp: reflect.TypeFor[time.Time](),
	envelope.Timestamptz: reflect.TypeFor[time.Time](), envelope.Time: reflect.TypeFor[time.Time](), envelope.UUID: reflect.TypeFor[string](),
	envelope.JSON: reflect.TypeFor[[]byte](), envelope.JSONB: reflect.TypeFor[[]byte](),
}

// ColumnTypeDatabaseTypeName reports the plaintext type of an encrypted
// column, and pgx's answer for the others.
func (r *rows) ColumnTypeDatabaseTypeName(i int) string {
	if t, ok := r.encType(i); ok {
		return dbTypeNames[t]
	}
	if x, ok := r.inner.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return x.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

// ColumnTypeScanType reports, for an encrypted column, the type pgx's own
// driver reports for its plaintext type (int32 for integer, float32 for
// real), and pgx's answer for the others.
func (r *rows) ColumnTypeScanType(i int) reflect.Type {
	if t, ok := r.encType(i); ok {
		return scanTypes[t]
	}
	if x, ok := r.inner.(driver.RowsColumnTypeScanType); ok {
		return x.ColumnTypeScanType(i)
	}
	return reflect.TypeFor[any]()
}

// ColumnTypeLength is unknown for encrypted columns.
func (r *rows) ColumnTypeLength(i int) (int64, bool) {
	if _, ok := r.encType(i); ok {
		return 0, false
	}
	if x, ok := r.inner.(driver.RowsColumnTypeLength); ok {
		return x.ColumnTypeLength(i)
	}
	return 0, false
}

// ColumnTypePrecisionScale is unknown for encrypted columns.
func (r *rows) ColumnTypePrecisionScale(i int) (int64, int64, bool) {
	if _, ok := r.encType(i); ok {
		return 0, 0, false
	}
	if x, ok := r.inner.(driver.RowsColumnTypePrecisionScale); ok {
		return x.ColumnTypePrecisionScale(i)
	}
	return 0, 0, false
}
