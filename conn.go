package kmspostgres

import (
	"context"
	"database/sql/driver"
	"errors"

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
	// inner is pgx's database/sql connection, nil for the pgx front end
	// (kmspgx); pc is the pgx connection the engine runs on.
	inner     *stdlib.Conn
	pc        *pgx.Conn
	connector *Connector

	// path is the session's search_path as last read ("" = read it
	// again); localSet: a SET LOCAL ran in this transaction.
	path     string
	localSet bool
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
func (c *Conn) Conn() *pgx.Conn { return c.pc }

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
	t, err := c.inner.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &tx{inner: t, c: c}, nil
}

// Ping implements driver.Pinger.
func (c *Conn) Ping(ctx context.Context) error { return c.inner.Ping(ctx) }

// ResetSession implements driver.SessionResetter: a connection left inside
// a transaction is discarded.
func (c *Conn) ResetSession(ctx context.Context) error { return c.inner.ResetSession(ctx) }

// IsValid implements driver.Validator.
func (c *Conn) IsValid() bool { return !c.pc.IsClosed() }

// CheckNamedValue accepts every argument, as pgx does; pgx encodes plain
// columns' values and the driver encodes encrypted columns' values by
// their declared type.
func (c *Conn) CheckNamedValue(nv *driver.NamedValue) error { return c.inner.CheckNamedValue(nv) }

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
	c.afterStatement(p)
	if err != nil {
		return nil, c.staleCheck(err)
	}
	return res, nil
}

// staleCheck resets the caches when the database says a table or column
// the plan named is gone: the schema changed outside the driver, and the
// next run plans again. The error is returned as it is.
func (c *Conn) staleCheck(err error) error {
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "42703", "42P01", "42804": // undefined column, undefined table, datatype mismatch
			c.connector.invalidate()
		case "23505":
			return c.connector.uniqueError(pe)
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
	c.afterStatement(p)
	if err == nil {
		if err = c.attachChecks(rows, p, args); err != nil {
			rows.Close()
			return nil, err
		}
	}
	return rows, c.staleCheck(err)
}

// afterPassthrough resets the caches after DDL.
func (c *Conn) afterPassthrough(p *rewrite.Plan) {
	if p.Invalidates {
		c.connector.invalidate()
	}
	c.afterStatement(p)
}

// afterStatement notes that the session's search_path may have changed,
// so that plans are looked up under the path names now resolve through.
func (c *Conn) afterStatement(p *rewrite.Plan) {
	if p.DropsStatements {
		// pgx still believes in the statements the server just dropped;
		// the driver's own catalog queries would fail on them.
		_ = c.pc.DeallocateAll(context.Background())
	}
	// DDL may create the session's temporary schema, which then comes
	// first in the path.
	if p.SetsConfig || p.Invalidates || (p.EndsTx && c.localSet) || c.connector.catalog.callsUserFunction(p.Calls) {
		c.path = ""
	}
	// A setting changed inside a transaction (SET LOCAL, or a plain SET
	// that ROLLBACK or ROLLBACK TO undoes) must be read again when the
	// transaction or savepoint ends.
	if p.LocalConfig || (p.SetsConfig && c.pc.PgConn().TxStatus() != 'I') {
		c.localSet = true
	}
	if p.EndsTx && c.pc.PgConn().TxStatus() == 'I' {
		c.localSet = false
	}
}

// txEnded is afterStatement for a transaction ended through database/sql
// (Tx.Commit, Tx.Rollback), which does not pass through plan, or for a
// savepoint or transaction ended through kmspgx's pgx.Tx. A savepoint
// ends inside a transaction whose own settings (SET LOCAL, a SET that a
// later ROLLBACK undoes) still change when it ends: localSet stays until
// the connection is outside any transaction, as in afterStatement.
func (c *Conn) txEnded() {
	if c.localSet {
		c.path = ""
		if c.pc.PgConn().TxStatus() == 'I' {
			c.localSet = false
		}
	}
}

// searchPath returns the session's search_path, reading it after a
// statement that may have changed it. Plans are cached under it.
func (c *Conn) searchPath(ctx context.Context) string {
	if c.path != "" {
		return c.path
	}
	if c.pc.PgConn().TxStatus() == 'E' {
		return "?" // nothing but ROLLBACK runs; do not cache under it
	}
	// current_schemas(true) is what names resolve through: "$user"
	// expanded for the current role, and the session's temporary schema
	// when it has one (so plans over temporary tables are not shared with
	// other connections).
	var p string
	if err := c.pc.QueryRow(ctx, "SELECT current_schemas(true)::text").Scan(&p); err != nil {
		return "?"
	}
	c.path = "path:" + p
	return c.path
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
