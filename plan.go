package kmspostgres

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"regexp"

	"github.com/kmspostgres/kmspostgres/rewrite"
)

// planKey is what plans are cached by: the search_path names resolve
// through, and the SQL text.
type planKey struct{ path, sql string }

// planEntry is a cached plan, or the refusal of a SQL text, and the
// catalog generation it was made against.
type planEntry struct {
	plan *rewrite.Plan
	err  error
	gen  uint64
}

// planStatement returns the plan of a SQL text (plan, which reports
// refusals, calls it). Plans are cached by search_path and
// SQL text, and used only while the catalog they were made against is
// current: a statement not planned before checks the catalog for changes
// first, a cached plan at most the connector's check interval apart.
func (c *Conn) planStatement(ctx context.Context, query string) (*rewrite.Plan, error) {
	if err := c.sessionCheck(query); err != nil {
		return nil, err
	}
	conn := c.pc
	cat := c.connector.catalog
	// In a failed transaction nothing runs but ROLLBACK; do not query.
	usable := conn.PgConn().TxStatus() != 'E'
	var gen uint64
	if usable {
		var err error
		if gen, err = cat.fresh(ctx, conn, false); err != nil {
			return nil, err
		}
	}
	key := planKey{path: c.searchPath(ctx), sql: query}
	if e, ok := c.connector.plans.Get(key); ok && (e.gen == gen || !usable) {
		return e.plan, e.err
	}
	if usable {
		var err error
		if gen, err = cat.fresh(ctx, conn, true); err != nil {
			return nil, err
		}
	}
	p, err := safeRewrite(query, boundCatalog{c: cat, ctx: ctx, conn: conn, names: map[rewrite.RelName]uint32{}})
	var pe *rewrite.ParseError
	switch {
	case errors.As(err, &pe):
		if p, err = nil, c.unparsable(ctx, query, pe); !errors.Is(err, rewrite.ErrUnsupported) {
			return nil, err
		}
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
	c.connector.plans.Put(key, planEntry{plan: p, err: err, gen: gen})
	return p, err
}

// unparsable decides about SQL the driver's parser rejects. The server
// parses it without running it: if the server rejects it too, its error
// is returned (nothing ran); if it accepts it, the two parsers disagree,
// and the statement is refused, since the driver cannot show what it
// reaches.
func (c *Conn) unparsable(ctx context.Context, query string, pe *rewrite.ParseError) error {
	if _, err := c.pc.PgConn().Prepare(ctx, "", query, nil); err != nil {
		return err
	}
	return &rewrite.RefusalError{Reason: "the server accepts this statement but the driver's SQL parser cannot read it (" + causeText(pe.Err) + "), so the driver cannot show that it leaves encrypted columns alone",
		Fix: "write it in a form the PostgreSQL 17 grammar accepts (quote identifiers that later versions reserve, such as \"system_user\"), or run it with sql.Conn.Raw as an administrator"}
}

// sessionFix matches the statements that set a session's parsing
// settings back, which run even when sessionCheck refuses the others.
var sessionFix = regexp.MustCompile(`(?is)^\s*(SET\s+(SESSION\s+)?(standard_conforming_strings\s*(=|TO)\s*'?on'?|client_encoding\s*(=|TO)\s*'?utf-?8'?)|RESET\s+(standard_conforming_strings|client_encoding|ALL)|ROLLBACK|COMMIT|END|ABORT)\s*;?\s*$`)

// sessionCheck refuses statements on a session whose settings make the
// server read SQL differently from the driver's parser.
func (c *Conn) sessionCheck(query string) error {
	pc := c.pc.PgConn()
	scs, enc := pc.ParameterStatus("standard_conforming_strings"), pc.ParameterStatus("client_encoding")
	if (scs == "" || scs == "on") && (enc == "" || enc == "UTF8") {
		return nil
	}
	if query != "" && sessionFix.MatchString(query) {
		return nil // the way back
	}
	if v := scs; v != "" && v != "on" {
		return &rewrite.RefusalError{Reason: "standard_conforming_strings is off on this connection: the server would read backslashes in string literals differently from the driver",
			Fix: "SET standard_conforming_strings = on (the default since PostgreSQL 9.1); the connection is unusable through the driver until then"}
	}
	if v := enc; v != "" && v != "UTF8" {
		return &rewrite.RefusalError{Reason: "client_encoding is " + v + " on this connection: the driver reads SQL as UTF-8",
			Fix: "SET client_encoding = 'UTF8'"}
	}
	return nil
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
	if c.pc.PgConn().TxStatus() == 'E' {
		return nil // the statement will fail anyway
	}
	sd, err := c.pc.PgConn().Prepare(ctx, "", p.SQL, nil)
	if err != nil {
		return err
	}
	hidden := p.Out.Hidden()
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
func planArgs(p []rewrite.Arg, args []driver.NamedValue, slots, lookups []any) ([]driver.NamedValue, error) {
	out := make([]driver.NamedValue, len(p))
	for i, a := range p {
		var v any
		if a.Lookup > 0 {
			v = lookups[a.Lookup-1]
		} else if a.Slot >= 0 {
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
		return c.prepareInsert(ctx, p, args)
	case p.Update != nil:
		return c.prepareUpdate(ctx, p, args)
	case p.Verify != nil:
		return c.prepareVerified(ctx, p, args)
	}
	lk, err := c.planLookups(ctx, p, args)
	if err != nil {
		return "", nil, nil, err
	}
	a, err := planArgs(p.Args, args, nil, lk)
	return p.SQL, a, nil, err
}
