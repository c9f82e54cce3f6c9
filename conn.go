package kmspostgres

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/kmspostgres/kmspostgres/rewrite"
)

// Conn is one connection. It wraps pgx's database/sql connection: what
// touches no encrypted table goes to it unchanged.
//
// Through sql.Conn.Raw, Conn() reaches the *pgx.Conn, as with pgx's stdlib.
type Conn struct {
	inner *stdlib.Conn
	c     *Connector
}

var (
	_ driver.Conn               = (*Conn)(nil)
	_ driver.ConnPrepareContext = (*Conn)(nil)
	_ driver.ConnBeginTx        = (*Conn)(nil)
	_ driver.ExecerContext      = (*Conn)(nil)
	_ driver.QueryerContext     = (*Conn)(nil)
	_ driver.Pinger             = (*Conn)(nil)
	_ driver.SessionResetter    = (*Conn)(nil)
	_ driver.Validator          = (*Conn)(nil)
	_ driver.NamedValueChecker  = (*Conn)(nil)
)

// Conn returns the underlying pgx connection. Statements run on it
// directly bypass encryption.
func (c *Conn) Conn() *pgx.Conn { return c.inner.Conn() }

// Prepare implements driver.Conn.
func (c *Conn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

// Close closes the connection.
func (c *Conn) Close() error { return c.inner.Close() }

// Begin implements driver.Conn.
func (c *Conn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

// BeginTx starts a transaction with pgx's handling of isolation levels and
// read-only mode.
func (c *Conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.inner.BeginTx(ctx, opts)
}

// Ping implements driver.Pinger.
func (c *Conn) Ping(ctx context.Context) error { return c.inner.Ping(ctx) }

// ResetSession implements driver.SessionResetter: a connection left inside
// a transaction is discarded.
func (c *Conn) ResetSession(ctx context.Context) error { return c.inner.ResetSession(ctx) }

// IsValid implements driver.Validator.
func (c *Conn) IsValid() bool { return !c.inner.Conn().IsClosed() }

// CheckNamedValue accepts every argument, as pgx does; pgx encodes plain
// columns' values and the driver encodes encrypted columns' values by
// their declared type.
func (c *Conn) CheckNamedValue(nv *driver.NamedValue) error { return c.inner.CheckNamedValue(nv) }

// plan returns the cached plan of a SQL text, making it on first use.
func (c *Conn) plan(ctx context.Context, query string) (*rewrite.Plan, error) {
	if e, ok := c.c.plans.get(query); ok {
		return e.plan, e.err
	}
	p, err := safeRewrite(query, boundCatalog{c: c.c.cat, ctx: ctx, conn: c.inner.Conn()})
	var pe *rewrite.ParseError
	switch {
	case errors.As(err, &pe):
		// The server has the same parser: let it report the error itself.
		p, err = &rewrite.Plan{Passthrough: true, SQL: query}, nil
	case err != nil && !errors.Is(err, rewrite.ErrUnsupported):
		return nil, err // catalog or connection trouble: do not cache
	case err == nil && p.Out != nil:
		if err = c.crossCheck(ctx, p); err != nil && !errors.Is(err, rewrite.ErrUnsupported) {
			return nil, err
		}
	}
	if err == nil && p.Invalidates {
		// Never cached: it runs rarely and resets the caches when it does.
		return p, nil
	}
	c.c.plans.put(query, planEntry{plan: p, err: err})
	return p, err
}

// safeRewrite contains a panic in the rewriter: the statement is refused
// rather than the application crashing or the statement running unchecked.
func safeRewrite(query string, cat rewrite.Catalog) (p *rewrite.Plan, err error) {
	defer func() {
		if r := recover(); r != nil {
			p, err = nil, fmt.Errorf("kmspostgres: internal error planning a statement (%v); it was not run", r)
		}
	}()
	return rewrite.Rewrite(query, cat)
}

// crossCheck asks the server to describe a rewritten query and checks its
// result columns against the plan: a column that the server says comes
// from an encrypted column must be one the plan decrypts. The rewriter's
// analysis is the guard; this catches what it might miss.
func (c *Conn) crossCheck(ctx context.Context, p *rewrite.Plan) error {
	if c.inner.Conn().PgConn().TxStatus() == 'E' {
		return nil // the statement will fail anyway
	}
	sd, err := c.inner.Conn().PgConn().Prepare(ctx, "", p.SQL, nil)
	if err != nil {
		return err
	}
	hidden := 0
	for _, s := range p.Out.Sources {
		hidden += 1 + len(s.PKAt)
	}
	if len(sd.Fields) != p.Out.Visible+hidden {
		return fmt.Errorf("kmspostgres: internal: the server describes %d result columns, the plan expects %d; refusing to run", len(sd.Fields), p.Out.Visible+hidden)
	}
	for i, oc := range p.Out.Cols {
		f := sd.Fields[i]
		enc := ""
		if f.TableOID != 0 {
			enc = c.c.cat.encAt(f.TableOID, f.TableAttributeNumber)
		}
		switch {
		case oc.Table == nil && enc != "":
			return &rewrite.RefusalError{Reason: fmt.Sprintf("result column %d (%s) comes from the encrypted column %s, which the driver could not trace", i+1, f.Name, enc),
				Fix: "select the encrypted column directly from its table"}
		case oc.Table != nil && enc != "" && enc != oc.Table.Name+"."+oc.Column:
			return fmt.Errorf("kmspostgres: internal: result column %d: the plan decrypts %s.%s but the server says %s; refusing to run", i+1, oc.Table.Name, oc.Column, enc)
		}
	}
	return nil
}

// args maps a plan's parameters to values.
func planArgs(p []rewrite.Arg, args []driver.NamedValue, slots []any) ([]driver.NamedValue, error) {
	out := make([]driver.NamedValue, len(p))
	for i, a := range p {
		var v any
		if a.Slot >= 0 {
			v = slots[a.Slot]
		} else {
			if a.Orig >= len(args) {
				return nil, fmt.Errorf("kmspostgres: the statement uses $%d but %d arguments were given", a.Orig+1, len(args))
			}
			v = args[a.Orig].Value
		}
		out[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	return out, nil
}

// statement turns a rewritten plan into the SQL and arguments to run:
// keys minted and cells sealed for an INSERT, rows keyed and locked for an
// UPDATE. finish, when not nil, ends the transaction the driver opened.
func (c *Conn) statement(ctx context.Context, p *rewrite.Plan, args []driver.NamedValue) (string, []driver.NamedValue, func(error) error, error) {
	switch {
	case p.Insert != nil:
		q, a, err := c.prepareInsert(ctx, p, args)
		return q, a, nil, err
	case p.Update != nil:
		return c.prepareUpdate(ctx, p, args)
	}
	a, err := planArgs(p.Args, args, nil)
	return p.SQL, a, nil, err
}

// ExecContext runs a statement.
func (c *Conn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	p, err := c.plan(ctx, query)
	if err != nil {
		return nil, err
	}
	if p.Passthrough {
		defer c.afterPassthrough(p)
		return c.inner.ExecContext(ctx, query, args)
	}
	q, a, finish, err := c.statement(ctx, p, args)
	if err != nil {
		return nil, c.staleCheck(err)
	}
	res, err := c.inner.ExecContext(ctx, q, a)
	if finish != nil {
		err = finish(err)
	}
	if err != nil {
		return nil, c.staleCheck(err)
	}
	return res, nil
}

// staleCheck resets the caches when the database says a table or column
// the plan named is gone: the schema changed outside the driver, and the
// next run plans again. The error is returned as it is.
func (c *Conn) staleCheck(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "42703", "42P01", "42804": // undefined column, undefined table, datatype mismatch
			c.c.invalidate()
		}
	}
	return err
}

// QueryContext runs a query and decrypts its encrypted result columns.
func (c *Conn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	p, err := c.plan(ctx, query)
	if err != nil {
		return nil, err
	}
	if p.Passthrough {
		defer c.afterPassthrough(p)
		return c.inner.QueryContext(ctx, query, args)
	}
	q, a, finish, err := c.statement(ctx, p, args)
	if err != nil {
		return nil, c.staleCheck(err)
	}
	rows, err := c.query(ctx, p.Out, q, a, finish)
	return rows, c.staleCheck(err)
}

// afterPassthrough resets the caches after DDL.
func (c *Conn) afterPassthrough(p *rewrite.Plan) {
	if p.Invalidates {
		c.c.invalidate()
	}
}

// query runs q and wraps its rows to decrypt them. finish, if not nil,
// ends a transaction the driver opened, once the rows are closed, with the
// error that ended them.
func (c *Conn) query(ctx context.Context, out *rewrite.Output, q string, a []driver.NamedValue, finish func(error) error) (driver.Rows, error) {
	r, err := c.inner.QueryContext(ctx, q, a)
	if err != nil {
		if finish != nil {
			err = finish(err)
		}
		return nil, err
	}
	if out == nil && finish == nil {
		return r, nil
	}
	return newRows(ctx, c, out, r, finish), nil
}
