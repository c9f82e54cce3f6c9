package kmspgx

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kmspostgres/kmspostgres/internal/front"
)

// Pool is a pgxpool.Pool whose statements run through the engine. It is
// safe for concurrent use; each call takes a connection from the pool for
// as long as it needs one (a Query until its rows are closed, a
// transaction until it ends).
type Pool struct {
	pool     *pgxpool.Pool
	eng      front.Engine
	sessions sync.Map // *pgx.Conn → front.Session
}

func newPool(ctx context.Context, cfg *pgxpool.Config, schemaPath string, opts []Option) (*Pool, error) {
	eng, err := front.NewEngine(cfg.ConnConfig, schemaPath, engineOptions(opts))
	if err != nil {
		return nil, err
	}
	p := &Pool{eng: eng}
	before, after := eng.Hooks()
	cfg.BeforeConnect = chainBefore(cfg.BeforeConnect, before)
	userAfter, userClose := cfg.AfterConnect, cfg.BeforeClose
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		for _, f := range []func(context.Context, *pgx.Conn) error{userAfter, after} {
			if f != nil {
				if err := f(ctx, conn); err != nil {
					return err
				}
			}
		}
		s, err := eng.Session(ctx, conn)
		if err != nil {
			return err
		}
		p.sessions.Store(conn, s)
		return nil
	}
	cfg.BeforeClose = func(conn *pgx.Conn) {
		p.sessions.Delete(conn)
		if userClose != nil {
			userClose(conn)
		}
	}
	if p.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, err
	}
	return p, nil
}

// Pool returns the underlying pgxpool.Pool. Statements run on it directly
// bypass encryption: keep it for administration and for pool statistics.
func (p *Pool) Pool() *pgxpool.Pool { return p.pool }

// Close closes every connection of the pool.
func (p *Pool) Close() { p.pool.Close() }

// Ping takes a connection and pings it.
func (p *Pool) Ping(ctx context.Context) error { return p.pool.Ping(ctx) }

// Stat returns the pool's statistics.
func (p *Pool) Stat() *pgxpool.Stat { return p.pool.Stat() }

// acquire takes a connection and its session.
func (p *Pool) acquire(ctx context.Context) (*pgxpool.Conn, session, error) {
	c, err := p.pool.Acquire(ctx)
	if err != nil {
		return nil, session{}, err
	}
	s, ok := p.sessions.Load(c.Conn())
	if !ok {
		c.Release()
		return nil, session{}, fmt.Errorf("kmspgx: internal: a pooled connection has no engine session")
	}
	return c, session{s: s.(front.Session), pc: c.Conn()}, nil
}

// Exec runs a statement on a connection from the pool.
func (p *Pool) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	c, s, err := p.acquire(ctx)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	defer c.Release()
	return s.Exec(ctx, sql, args...)
}

// Query runs a query on a connection from the pool, which goes back to the
// pool when the rows are closed (or read to the end).
func (p *Pool) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	c, s, err := p.acquire(ctx)
	if err != nil {
		return errRows{err}, err
	}
	rows, err := s.Query(ctx, sql, args...)
	if err != nil {
		c.Release()
		return rows, err
	}
	return &poolRows{Rows: rows, c: c}, nil
}

// QueryRow runs a query that returns at most one row.
func (p *Pool) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, err := p.Query(ctx, sql, args...)
	return &row{rows: rows, err: err}
}

// CopyFrom copies rows into a table on a connection from the pool; see
// Conn.CopyFrom.
func (p *Pool) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	c, s, err := p.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Release()
	return s.CopyFrom(ctx, table, columns, src)
}

// SendBatch runs a batch on a connection from the pool, which goes back
// to the pool when the results are closed. Every queued statement is
// planned, rewritten and decrypted as if sent alone, in order, and a
// refusal is reported as that statement's error. Outside a transaction,
// and unless the batch has transaction statements of its own, the batch
// runs in one transaction as pgx's does: an error rolls all of it back.
func (p *Pool) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	c, s, err := p.acquire(ctx)
	if err != nil {
		return pgx.FailedBatchResults(b, err)
	}
	return sendBatch(ctx, s, b, c.Release)
}

// Begin starts a transaction on a connection from the pool, which goes
// back to the pool when the transaction ends.
func (p *Pool) Begin(ctx context.Context) (pgx.Tx, error) {
	return p.BeginTx(ctx, pgx.TxOptions{})
}

// BeginTx starts a transaction with pgx's options.
func (p *Pool) BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error) {
	c, s, err := p.acquire(ctx)
	if err != nil {
		return nil, err
	}
	tx, err := beginTx(ctx, s, opts, c.Release)
	if err != nil {
		c.Release()
		return nil, err
	}
	return tx, nil
}

// poolRows gives the connection back when the rows close.
type poolRows struct {
	pgx.Rows
	c *pgxpool.Conn
}

func (r *poolRows) Close() {
	r.Rows.Close()
	if r.c != nil {
		r.c.Release()
		r.c = nil
	}
}

func (r *poolRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *poolRows) Scan(dest ...any) error {
	err := r.Rows.Scan(dest...)
	if err != nil {
		r.Close()
	}
	return err
}

// Acquire takes a connection from the pool for several statements on one
// session (SET, temporary tables, advisory locks); Release gives it back.
func (p *Pool) Acquire(ctx context.Context) (*PoolConn, error) {
	c, s, err := p.acquire(ctx)
	if err != nil {
		return nil, err
	}
	return &PoolConn{Conn: Conn{s}, c: c}, nil
}

// PoolConn is a connection taken from a Pool: a Conn whose Release gives
// it back (Close is not for it).
type PoolConn struct {
	Conn
	c *pgxpool.Conn
}

// Release gives the connection back to the pool; a connection left in a
// transaction is closed by the pool instead.
func (c *PoolConn) Release() {
	if c.c != nil {
		c.c.Release()
		c.c = nil
	}
}
