package kmspostgres

import (
	"context"
	"database/sql/driver"
)

// stmt is a prepared statement. Its plan is made (and any refusal
// reported) at prepare time. A statement that touches no encrypted table is
// prepared on the server by pgx; the others run through the connection,
// where pgx's statement cache prepares the rewritten SQL once.
type stmt struct {
	c     *Conn
	query string
	inner driver.Stmt // passthrough only
}

var (
	_ driver.Stmt             = (*stmt)(nil)
	_ driver.StmtExecContext  = (*stmt)(nil)
	_ driver.StmtQueryContext = (*stmt)(nil)
)

// PrepareContext plans the statement; refusals surface here.
func (c *Conn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	p, err := c.plan(ctx, query)
	if err != nil {
		return nil, err
	}
	s := &stmt{c: c, query: query}
	if p.Passthrough && !p.Invalidates {
		if s.inner, err = c.inner.PrepareContext(ctx, query); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *stmt) Close() error {
	if s.inner != nil {
		return s.inner.Close()
	}
	return nil
}

// NumInput is -1: the rewritten statement takes other arguments than the
// caller's, and the server checks the caller's count.
func (s *stmt) NumInput() int {
	if s.inner != nil {
		return s.inner.NumInput()
	}
	return -1
}

func (s *stmt) Exec(args []driver.Value) (driver.Result, error) {
	return s.ExecContext(context.Background(), named(args))
}

func (s *stmt) Query(args []driver.Value) (driver.Rows, error) {
	return s.QueryContext(context.Background(), named(args))
}

func (s *stmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	if ok, err := s.stillPassthrough(ctx); err != nil {
		return nil, err
	} else if ok {
		return s.inner.(driver.StmtExecContext).ExecContext(ctx, args)
	}
	return s.c.ExecContext(ctx, s.query, args)
}

func (s *stmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	if ok, err := s.stillPassthrough(ctx); err != nil {
		return nil, err
	} else if ok {
		return s.inner.(driver.StmtQueryContext).QueryContext(ctx, args)
	}
	return s.c.QueryContext(ctx, s.query, args)
}

// stillPassthrough reports whether the statement prepared on the server
// may run as it is: the catalog may have changed since it was prepared (a
// view over an encrypted table in its place, say), and then it runs
// through the connection, planned again.
func (s *stmt) stillPassthrough(ctx context.Context) (bool, error) {
	if s.inner == nil {
		return false, nil
	}
	p, err := s.c.plan(ctx, s.query)
	if err != nil {
		return false, err
	}
	return p.Passthrough && !p.Invalidates, nil
}

func named(args []driver.Value) []driver.NamedValue {
	out := make([]driver.NamedValue, len(args))
	for i, v := range args {
		out[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	return out
}
