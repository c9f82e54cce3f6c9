package kmspostgres

import (
	"context"
	"database/sql/driver"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/rewrite"
)

// pgxRows is a decrypted result for the pgx front end. It implements
// pgx.Rows over the engine's rows: an encrypted column is described as
// its plaintext type (FieldDescriptions) and its cells are handed out as
// that type's wire encoding, so Scan, Values, RawValues,
// pgx.CollectRows and pgtype targets see what an unencrypted column would
// give. The other visible columns keep pgx's description and bytes; the
// driver's hidden columns (key columns, primary keys) are not shown.
type pgxRows struct {
	r      *rows
	src    *pgxSource
	conn   *pgx.Conn
	m      *pgtype.Map
	fds    []pgconn.FieldDescription // visible columns, plaintext types
	enc    []envelope.Type           // per visible column; 0: not encrypted
	dest   []driver.Value
	raw    [][]byte
	err    error
	closed bool

	scanPlans []pgtype.ScanPlan
	scanTypes []reflect.Type
}

var _ pgx.Rows = (*pgxRows)(nil)

func newPgxRows(ctx context.Context, c *Conn, p *rewrite.Plan, pr pgx.Rows, args []driver.NamedValue, finish func(error) error) (pgx.Rows, error) {
	all := pr.FieldDescriptions()
	src := &pgxSource{inner: pr, out: p.Out, fds: all}
	r := newRows(ctx, c, p.Out, src, finish)
	if err := c.attachChecks(r, p, args); err != nil {
		r.Close()
		return nil, err
	}
	visible := len(all)
	if p.Out != nil && visible >= p.Out.Visible {
		visible = p.Out.Visible
	}
	fds := slices.Clone(all[:visible])
	enc := make([]envelope.Type, visible)
	for i := range fds {
		if t, ok := r.encType(i); ok {
			enc[i] = t
			w := wireTypes[t]
			fds[i].DataTypeOID, fds[i].Format, fds[i].DataTypeSize, fds[i].TypeModifier = w.oid, w.format, w.size, -1
		}
	}
	return &pgxRows{r: r, src: src, conn: c.pc, m: pr.TypeMap(), fds: fds, enc: enc,
		dest: make([]driver.Value, len(all)), raw: make([][]byte, visible)}, nil
}

func (r *pgxRows) Close() {
	if r.closed {
		return
	}
	r.closed = true
	if err := r.r.Close(); err != nil {
		r.setErr(err)
	}
}

// setErr keeps the first error. pgx reports a statement's error with its
// rows, not from Query, so it goes through staleCheck here, as Query's
// does.
func (r *pgxRows) setErr(err error) {
	if r.err == nil {
		r.err = r.r.c.staleCheck(err)
	}
}

func (r *pgxRows) Err() error                                   { return r.err }
func (r *pgxRows) CommandTag() pgconn.CommandTag                { return r.src.inner.CommandTag() }
func (r *pgxRows) FieldDescriptions() []pgconn.FieldDescription { return r.fds }
func (r *pgxRows) RawValues() [][]byte                          { return r.raw }
func (r *pgxRows) Conn() *pgx.Conn                              { return r.conn }
func (r *pgxRows) TypeMap() *pgtype.Map                         { return r.m }

func (r *pgxRows) fatal(err error) {
	r.setErr(err)
	r.Close()
}

func (r *pgxRows) Next() bool {
	if r.closed {
		return false
	}
	if err := r.r.Next(r.dest); err != nil {
		if err != io.EOF {
			r.fatal(err)
		} else {
			r.Close()
		}
		return false
	}
	for i := range r.raw {
		v := r.dest[i]
		r.dest[i] = nil
		switch {
		case v == nil:
			r.raw[i] = nil
		case r.enc[i] == 0:
			r.raw[i] = v.([]byte)
		default:
			b, err := wireValue(r.enc[i], v)
			if err != nil {
				r.fatal(fmt.Errorf("kmspostgres: result column %s: %w", r.fds[i].Name, err))
				return false
			}
			r.raw[i] = b
		}
	}
	clear(r.dest)
	return true
}

// Scan is pgx's Rows.Scan over the plaintext values.
func (r *pgxRows) Scan(dest ...any) error {
	if len(dest) == 1 {
		if rs, ok := dest[0].(pgx.RowScanner); ok {
			if err := rs.ScanRow(r); err != nil {
				r.fatal(err)
				return err
			}
			return nil
		}
	}
	if len(dest) != len(r.fds) {
		err := fmt.Errorf("number of field descriptions must equal number of destinations, got %d and %d", len(r.fds), len(dest))
		r.fatal(err)
		return err
	}
	if r.scanPlans == nil {
		r.scanPlans = make([]pgtype.ScanPlan, len(dest))
		r.scanTypes = make([]reflect.Type, len(dest))
	}
	for i, d := range dest {
		if d == nil {
			continue
		}
		if t := reflect.TypeOf(d); r.scanPlans[i] == nil || r.scanTypes[i] != t {
			r.scanPlans[i] = r.m.PlanScan(r.fds[i].DataTypeOID, r.fds[i].Format, d)
			r.scanTypes[i] = t
		}
		if err := r.scanPlans[i].Scan(r.raw[i], d); err != nil {
			err = pgx.ScanArgError{ColumnIndex: i, FieldName: r.fds[i].Name, Err: err}
			r.fatal(err)
			return err
		}
	}
	return nil
}

// Values is pgx's Rows.Values over the plaintext values.
func (r *pgxRows) Values() ([]any, error) {
	if r.closed {
		return nil, errors.New("rows is closed")
	}
	out := make([]any, len(r.fds))
	for i := range r.fds {
		if r.raw[i] == nil {
			continue
		}
		v, err := decodeWire(r.m, &r.fds[i], r.raw[i])
		if err != nil {
			r.fatal(err)
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// wireType is how the pgx front end presents a plaintext type.
type wireType struct {
	oid    uint32
	format int16
	size   int16
}

var wireTypes = map[envelope.Type]wireType{
	envelope.Text:        {pgtype.TextOID, pgx.BinaryFormatCode, -1},
	envelope.Bytea:       {pgtype.ByteaOID, pgx.BinaryFormatCode, -1},
	envelope.Smallint:    {pgtype.Int2OID, pgx.BinaryFormatCode, 2},
	envelope.Integer:     {pgtype.Int4OID, pgx.BinaryFormatCode, 4},
	envelope.Bigint:      {pgtype.Int8OID, pgx.BinaryFormatCode, 8},
	envelope.Real:        {pgtype.Float4OID, pgx.BinaryFormatCode, 4},
	envelope.Double:      {pgtype.Float8OID, pgx.BinaryFormatCode, 8},
	envelope.Numeric:     {pgtype.NumericOID, pgx.TextFormatCode, -1},
	envelope.Boolean:     {pgtype.BoolOID, pgx.BinaryFormatCode, 1},
	envelope.Date:        {pgtype.DateOID, pgx.BinaryFormatCode, 4},
	envelope.Timestamp:   {pgtype.TimestampOID, pgx.BinaryFormatCode, 8},
	envelope.Timestamptz: {pgtype.TimestamptzOID, pgx.BinaryFormatCode, 8},
	envelope.Time:        {pgtype.TimeOID, pgx.BinaryFormatCode, 8},
	envelope.UUID:        {pgtype.UUIDOID, pgx.BinaryFormatCode, 16},
	envelope.JSON:        {pgtype.JSONOID, pgx.TextFormatCode, -1},
	envelope.JSONB:       {pgtype.JSONBOID, pgx.TextFormatCode, -1},
}

// pgEpoch is 2000-01-01, from which PostgreSQL counts dates and
// timestamps.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// wireValue encodes a decrypted value (what envelope.Type.Decode returns)
// as PostgreSQL sends its type in the wireTypes format.
func wireValue(t envelope.Type, v any) ([]byte, error) {
	bad := func() ([]byte, error) { return nil, fmt.Errorf("%w: %T for %s", ErrFormat, v, t) }
	switch t {
	case envelope.Text, envelope.Numeric:
		s, ok := v.(string)
		if !ok {
			return bad()
		}
		return []byte(s), nil
	case envelope.Bytea, envelope.JSON, envelope.JSONB:
		b, ok := v.([]byte)
		if !ok {
			return bad()
		}
		return b, nil
	case envelope.Smallint, envelope.Integer, envelope.Bigint:
		i, ok := v.(int64)
		if !ok {
			return bad()
		}
		switch t {
		case envelope.Smallint:
			return binary.BigEndian.AppendUint16(nil, uint16(i)), nil
		case envelope.Integer:
			return binary.BigEndian.AppendUint32(nil, uint32(i)), nil
		}
		return binary.BigEndian.AppendUint64(nil, uint64(i)), nil
	case envelope.Real, envelope.Double:
		f, ok := v.(float64)
		if !ok {
			return bad()
		}
		if t == envelope.Real {
			return binary.BigEndian.AppendUint32(nil, math.Float32bits(float32(f))), nil
		}
		return binary.BigEndian.AppendUint64(nil, math.Float64bits(f)), nil
	case envelope.Boolean:
		b, ok := v.(bool)
		if !ok {
			return bad()
		}
		if b {
			return []byte{1}, nil
		}
		return []byte{0}, nil
	case envelope.Date, envelope.Timestamp, envelope.Timestamptz, envelope.Time:
		tm, ok := v.(time.Time)
		if !ok {
			return bad()
		}
		switch t {
		case envelope.Date:
			days := (tm.Unix() - pgEpoch.Unix()) / 86400
			return binary.BigEndian.AppendUint32(nil, uint32(int32(days))), nil
		case envelope.Time:
			us := tm.Sub(time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)).Microseconds()
			return binary.BigEndian.AppendUint64(nil, uint64(us)), nil
		}
		us := (tm.Unix()-pgEpoch.Unix())*1_000_000 + int64(tm.Nanosecond())/1000
		return binary.BigEndian.AppendUint64(nil, uint64(us)), nil
	case envelope.UUID:
		s, ok := v.(string)
		if !ok {
			return bad()
		}
		b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
		if err != nil || len(b) != 16 {
			return bad()
		}
		return b, nil
	}
	return bad()
}
