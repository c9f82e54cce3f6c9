package kmspostgres

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"

	"github.com/kmspostgres/kmspostgres/rewrite"
)

// planEntry is a cached plan, or the refusal of a SQL text.
type planEntry struct {
	plan *rewrite.Plan
	err  error
}

// plan returns the cached plan of a SQL text, making it on first use.
func (c *Conn) plan(ctx context.Context, query string) (*rewrite.Plan, error) {
	if e, ok := c.connector.plans.Get(query); ok {
		return e.plan, e.err
	}
	p, err := safeRewrite(query, boundCatalog{c: c.connector.catalog, ctx: ctx, conn: c.inner.Conn()})
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
	c.connector.plans.Put(query, planEntry{plan: p, err: err})
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
			enc = c.connector.catalog.encAt(f.TableOID, f.TableAttributeNumber)
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

// planArgs builds the arguments of a rewritten statement: each parameter
// takes the caller's argument or the value the driver computed for its
// slot, as the plan says.
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
