package kmspostgres

import (
	"context"
	"database/sql/driver"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kmspostgres/kmspostgres/internal/front"
	"github.com/kmspostgres/kmspostgres/rewrite"
)

// The pgx front end (package kmspgx) runs statements through the same
// engine as the database/sql driver: the same plans, refusals, keys and
// decryption, on a *pgx.Conn instead of pgx's database/sql connection.
// kmspgx reaches it through internal/front, so that none of it is public
// API of this package.

func init() {
	front.SplitDSN = splitDSN
	front.NewEngine = func(cfg *pgx.ConnConfig, schemaPath string, opts []any) (front.Engine, error) {
		os := make([]Option, 0, len(opts))
		for _, o := range opts {
			opt, ok := o.(Option)
			if !ok {
				return nil, fmt.Errorf("kmspostgres: %T is not an Option", o)
			}
			os = append(os, opt)
		}
		c, err := newConnector(cfg, schemaPath, os)
		if err != nil {
			return nil, err
		}
		return pgxEngine{c}, nil
	}
}

// pgxEngine is a Connector seen from the pgx front end.
type pgxEngine struct{ c *Connector }

func (e pgxEngine) Hooks() (func(context.Context, *pgx.ConnConfig) error, func(context.Context, *pgx.Conn) error) {
	return e.c.beforeConnect, e.c.afterConnect
}

// Session returns the engine's state for one pgx connection. It checks the
// connection as Connector.Connect does; kmspgx keeps one per connection.
func (e pgxEngine) Session(ctx context.Context, pc *pgx.Conn) (front.Session, error) {
	c := e.c
	if err := c.loadBlind(ctx); err != nil {
		return nil, err
	}
	conn := &Conn{pc: pc, connector: c}
	if err := conn.sessionCheck(""); err != nil {
		return nil, fmt.Errorf("kmspostgres: refusing the connection: %w", err)
	}
	if err := c.catalog.setBasePath(ctx, pc); err != nil {
		return nil, err
	}
	return pgxSession{conn}, nil
}

// pgxSession is one connection's engine for the pgx front end.
type pgxSession struct{ c *Conn }

func (s pgxSession) TxEnded() { s.c.txEnded() }

// EnsureTx is the engine's ensureTx; the engine then reads settings the
// transaction changed again.
func (s pgxSession) EnsureTx(ctx context.Context) (func(error) error, error) {
	finish, err := s.c.ensureTx(ctx)
	if err != nil {
		return nil, err
	}
	return func(err error) error {
		err = finish(err)
		s.c.txEnded()
		return err
	}, nil
}

// TxControl plans sql (without reporting a refusal: the statement is
// refused, and reported, when it runs) and says whether it begins or
// ends a transaction.
func (s pgxSession) TxControl(ctx context.Context, sql string) bool {
	p, err := s.c.planStatement(ctx, sql)
	return err == nil && p.TxControl
}

// splitOptions separates pgx's leading query options (an exec mode, result
// formats) from the arguments, and applies a QueryRewriter (pgx.NamedArgs)
// so that the engine plans the SQL the server will see.
func (s pgxSession) splitOptions(ctx context.Context, sql string, args []any) (string, []any, []any, error) {
	var opts []any
	for len(args) > 0 {
		switch a := args[0].(type) {
		case pgx.QueryExecMode:
			opts = append(opts, a)
		case pgx.QueryResultFormats, pgx.QueryResultFormatsByOID:
			opts = append(opts, a)
		case pgx.QueryRewriter:
			var err error
			if sql, args, err = a.RewriteQuery(ctx, s.c.pc, sql, args[1:]); err != nil {
				return "", nil, nil, err
			}
			continue
		default:
			return sql, opts, args, nil
		}
		args = args[1:]
	}
	return sql, opts, args, nil
}

// formatsAllowed refuses result-format options on a statement the engine
// decrypts: it reads the ciphertext and key columns itself.
func formatsAllowed(opts []any) error {
	for _, o := range opts {
		switch o.(type) {
		case pgx.QueryResultFormats, pgx.QueryResultFormatsByOID:
			return &rewrite.RefusalError{Reason: "pgx result-format options cannot be used on a statement that reads or writes encrypted columns: the driver chooses the formats it decrypts",
				Fix: "drop the QueryResultFormats argument"}
		}
	}
	return nil
}

func namedArgs(args []any) []driver.NamedValue {
	out := make([]driver.NamedValue, len(args))
	for i, v := range args {
		out[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	return out
}

func plainArgs(opts []any, a []driver.NamedValue) []any {
	out := make([]any, 0, len(opts)+len(a))
	out = append(out, opts...)
	for _, v := range a {
		out = append(out, v.Value)
	}
	return out
}

// Exec runs a statement as Conn.ExecContext does.
func (s pgxSession) Exec(ctx context.Context, sql string, args []any) (pgconn.CommandTag, error) {
	c := s.c
	sql, opts, args, err := s.splitOptions(ctx, sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	p, err := c.plan(ctx, sql)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	if p.Passthrough {
		defer c.afterPassthrough(p)
		return c.pc.Exec(ctx, sql, append(opts, args...)...)
	}
	if err := formatsAllowed(opts); err != nil {
		return pgconn.CommandTag{}, err
	}
	q, a, finish, err := c.statement(ctx, p, namedArgs(args))
	if err != nil {
		return pgconn.CommandTag{}, c.staleCheck(err)
	}
	tag, err := c.pc.Exec(ctx, q, plainArgs(opts, a)...)
	if finish != nil {
		err = finish(err)
	}
	c.afterStatement(p)
	if err != nil {
		return pgconn.CommandTag{}, c.staleCheck(err)
	}
	return tag, nil
}

// Query runs a query as Conn.QueryContext does, and returns pgx rows
// whose encrypted columns read as plaintext of their declared type.
func (s pgxSession) Query(ctx context.Context, sql string, args []any) (pgx.Rows, error) {
	c := s.c
	sql, opts, args, err := s.splitOptions(ctx, sql, args)
	if err != nil {
		return nil, err
	}
	p, err := c.plan(ctx, sql)
	if err != nil {
		return nil, err
	}
	if p.Passthrough {
		defer c.afterPassthrough(p)
		return c.pc.Query(ctx, sql, append(opts, args...)...)
	}
	if err := formatsAllowed(opts); err != nil {
		return nil, err
	}
	nargs := namedArgs(args)
	q, a, finish, err := c.statement(ctx, p, nargs)
	if err != nil {
		return nil, c.staleCheck(err)
	}
	pr, err := c.pc.Query(ctx, q, plainArgs(opts, a)...)
	c.afterStatement(p)
	if err != nil {
		if finish != nil {
			err = finish(err)
		}
		return nil, c.staleCheck(err)
	}
	if p.Out == nil && finish == nil {
		return &staleRows{Rows: pr, c: c}, nil
	}
	return newPgxRows(ctx, c, p, pr, nargs, finish)
}

// staleRows are pgx's rows of a rewritten statement the engine does not
// decrypt. pgx reports a statement's error with its rows, not from Query
// (database/sql's driver reads the first row in QueryContext, so there
// it comes from Query): the error goes through staleCheck here, once, so
// that a stale plan is dropped and a unique violation is named as it is
// through database/sql.
type staleRows struct {
	pgx.Rows
	c       *Conn
	err     error
	checked bool
}

func (r *staleRows) Err() error {
	if !r.checked {
		if err := r.Rows.Err(); err != nil {
			r.err, r.checked = r.c.staleCheck(err), true
		}
	}
	return r.err
}

// pgxSource reads a pgx result as driver rows for the engine's decryption:
// the columns the engine reads (encrypted cells, key columns, primary keys,
// checks) as Go values, the plain visible columns as copies of their wire
// bytes, which pgxRows hands on as they came.
type pgxSource struct {
	inner pgx.Rows
	out   *rewrite.Output
	fds   []pgconn.FieldDescription
}

func (s *pgxSource) Columns() []string {
	names := make([]string, len(s.fds))
	for i, f := range s.fds {
		names[i] = f.Name
	}
	return names
}

func (s *pgxSource) Close() error {
	s.inner.Close()
	return s.inner.Err()
}

// plain reports whether result column i is a visible column the engine
// does not decrypt.
func (s *pgxSource) plain(i int) bool {
	return s.out == nil || (i < s.out.Visible && (i >= len(s.out.Cols) || s.out.Cols[i].Table == nil))
}

func (s *pgxSource) Next(dest []driver.Value) error {
	if !s.inner.Next() {
		if err := s.inner.Err(); err != nil {
			return err
		}
		return io.EOF
	}
	raw := s.inner.RawValues()
	m := s.inner.TypeMap()
	for i, b := range raw {
		if b == nil {
			dest[i] = nil
			continue
		}
		if s.plain(i) {
			dest[i] = append([]byte{}, b...)
			continue
		}
		f := &s.fds[i]
		switch f.DataTypeOID {
		case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID, pgtype.UnknownOID: // the same bytes in both formats
			dest[i] = string(b)
			continue
		case pgtype.ByteaOID:
			if f.Format == pgx.BinaryFormatCode {
				dest[i] = append([]byte{}, b...)
				continue
			}
		}
		v, err := decodeWire(m, f, b)
		if err != nil {
			return fmt.Errorf("kmspostgres: reading result column %s: %w", f.Name, err)
		}
		dest[i] = v
	}
	return nil
}

// decodeWire decodes one value as pgx's Rows.Values does.
func decodeWire(m *pgtype.Map, f *pgconn.FieldDescription, b []byte) (any, error) {
	if dt, ok := m.TypeForOID(f.DataTypeOID); ok {
		return dt.Codec.DecodeValue(m, f.DataTypeOID, f.Format, b)
	}
	if f.Format == pgx.TextFormatCode {
		return string(b), nil
	}
	return append([]byte{}, b...), nil
}
