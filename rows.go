package kmspostgres

import (
	"context"
	"database/sql/driver"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/rewrite"
)

// rows decrypts a result set. It reads ahead a bounded window of rows,
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
	pos  int
	eof  bool
	err  error
	keys map[string]*envelope.CellKey // unwrapped in this result set
	done bool
}

var (
	_ driver.Rows                           = (*rows)(nil)
	_ driver.RowsColumnTypeDatabaseTypeName = (*rows)(nil)
	_ driver.RowsColumnTypeScanType         = (*rows)(nil)
	_ driver.RowsColumnTypeLength           = (*rows)(nil)
	_ driver.RowsColumnTypePrecisionScale   = (*rows)(nil)
)

func newRows(ctx context.Context, c *Conn, out *rewrite.Output, inner driver.Rows, finish func(error) error) *rows {
	return &rows{ctx: ctx, c: c, out: out, inner: inner, finish: finish, keys: map[string]*envelope.CellKey{}}
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
	row := r.buf[r.pos]
	r.buf[r.pos] = nil
	r.pos++
	copy(dest, row)
	return nil
}

func (r *rows) fill() error {
	r.buf, r.pos = r.buf[:0], 0
	n := len(r.inner.Columns())
	window := r.c.c.window
	if r.out == nil {
		window = 1
	}
	for len(r.buf) < window {
		row := make([]driver.Value, n)
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

// decrypt unwraps the window's keys and replaces every encrypted cell with
// its plaintext value.
func (r *rows) decrypt() error {
	out := r.out
	infos := make([]*tableInfo, len(out.Sources))
	for i, s := range out.Sources {
		infos[i] = r.c.c.cat.info(s.Table)
	}
	// firstCol names a source's column in errors.
	firstCol := make([]string, len(out.Sources))
	for _, oc := range out.Cols {
		if oc.Table != nil && firstCol[oc.Source] == "" {
			firstCol[oc.Source] = oc.Column
		}
	}
	fail := func(si int, pk []string, err error) error {
		ti := infos[si]
		return fmt.Errorf("kmspostgres: %s.%s (%s): %w", ti.rt.Name, firstCol[si], pkLabel(ti.rt, pk), err)
	}
	// Which key each (row, source) needs.
	ids := make([][]string, len(r.buf))
	pending := make(map[string]*unwrapItem, len(r.buf))
	var items []*unwrapItem
	pks := make([][][]string, len(r.buf))
	for ri, row := range r.buf {
		ids[ri] = make([]string, len(out.Sources))
		pks[ri] = make([][]string, len(out.Sources))
		for si, s := range out.Sources {
			pk := make([]string, len(s.PKAt))
			for j, at := range s.PKAt {
				pk[j], _ = row[at].(string)
			}
			pks[ri][si] = pk
			kv := row[s.KeyAt]
			if kv == nil {
				continue
			}
			text, ok := kv.(string)
			if !ok {
				return fail(si, pk, fmt.Errorf("%w: the key column is not text", ErrFormat))
			}
			// Table, key, wrapped key (which carries the version) and
			// primary key determine the context: no need to build it for
			// keys already unwrapped.
			id := s.Table.Name + "\x00" + strconv.Itoa(s.Key) + "\x00" + text + "\x00" + strings.Join(pk, "\x00")
			ids[ri][si] = id
			if _, ok := r.keys[id]; ok {
				continue
			}
			if _, ok := pending[id]; ok {
				continue
			}
			ti := infos[si]
			wk, err := envelope.ParseWrappedKey(text)
			if err != nil {
				return fail(si, pk, err)
			}
			keyID, ectx, err := ti.st.contextFor(ti.key(s.Key), wk.Version, pk)
			if err != nil {
				return fail(si, pk, err)
			}
			it := &unwrapItem{keyID: keyID, version: wk.Version, ctx: ectx, wrapped: wk.Ciphertext}
			pending[id] = it
			items = append(items, it)
		}
	}
	if len(items) > 0 {
		r.c.c.kr.unwrapAll(r.ctx, items, r.c.c.parallelism)
		for id, it := range pending {
			if it.err != nil {
				continue
			}
			ck, err := envelope.NewCellKey(it.key)
			if err != nil {
				it.err = err
				continue
			}
			r.keys[id] = ck
		}
	}
	for ri, row := range r.buf {
		for i, oc := range out.Cols {
			if oc.Table == nil || row[i] == nil {
				continue
			}
			si := oc.Source
			ti := infos[si]
			pk := pks[ri][si]
			id := ids[ri][si]
			if id == "" {
				return fail(si, pk, fmt.Errorf("%w: %s has a value but the row has no data key (key column %s is NULL)", ErrDecrypt, oc.Column, ti.rt.Keys[out.Sources[si].Key].Column))
			}
			ck := r.keys[id]
			if ck == nil {
				return fmt.Errorf("kmspostgres: %s.%s (%s): %w", ti.rt.Name, oc.Column, pkLabel(ti.rt, pk), pending[id].err)
			}
			var cell []byte
			switch v := row[i].(type) {
			case string:
				b, err := envelope.DecodeBase64(v)
				if err != nil {
					return fmt.Errorf("kmspostgres: %s.%s (%s): %w", ti.rt.Name, oc.Column, pkLabel(ti.rt, pk), err)
				}
				cell = b
			case []byte:
				cell = v
			default:
				return fmt.Errorf("kmspostgres: %s.%s (%s): %w: stored as %T", ti.rt.Name, oc.Column, pkLabel(ti.rt, pk), ErrFormat, v)
			}
			pt, err := ck.Open(envelope.CellAAD(ti.rt.Name, oc.Column), cell)
			if err != nil {
				return fmt.Errorf("kmspostgres: %s.%s (%s): %w", ti.rt.Name, oc.Column, pkLabel(ti.rt, pk), err)
			}
			if row[i], err = ti.colType(oc.Column).Decode(pt); err != nil {
				return fmt.Errorf("kmspostgres: %s.%s (%s): %w", ti.rt.Name, oc.Column, pkLabel(ti.rt, pk), err)
			}
		}
	}
	return nil
}

// encType returns the declared type of visible column i when it is
// encrypted.
func (r *rows) encType(i int) (envelope.Type, bool) {
	if r.out == nil || i >= len(r.out.Cols) || r.out.Cols[i].Table == nil {
		return 0, false
	}
	oc := r.out.Cols[i]
	return r.c.c.cat.info(oc.Table).colType(oc.Column), true
}

var dbTypeNames = map[envelope.Type]string{
	envelope.Text: "TEXT", envelope.Bytea: "BYTEA", envelope.Smallint: "INT2", envelope.Integer: "INT4",
	envelope.Bigint: "INT8", envelope.Real: "FLOAT4", envelope.Double: "FLOAT8", envelope.Numeric: "NUMERIC",
	envelope.Boolean: "BOOL", envelope.Date: "DATE", envelope.Timestamp: "TIMESTAMP", envelope.Timestamptz: "TIMESTAMPTZ",
	envelope.Time: "TIME", envelope.UUID: "UUID", envelope.JSON: "JSON", envelope.JSONB: "JSONB",
}

var scanTypes = map[envelope.Type]reflect.Type{
	envelope.Text: reflect.TypeFor[string](), envelope.Bytea: reflect.TypeFor[[]byte](),
	envelope.Smallint: reflect.TypeFor[int64](), envelope.Integer: reflect.TypeFor[int64](), envelope.Bigint: reflect.TypeFor[int64](),
	envelope.Real: reflect.TypeFor[float64](), envelope.Double: reflect.TypeFor[float64](), envelope.Numeric: reflect.TypeFor[string](),
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

// ColumnTypeScanType reports the Go type an encrypted column decodes to.
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
