package kmspgx

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Tx is a transaction whose statements run through the engine. It
// implements pgx.Tx, so sqlc's Queries.WithTx takes it.
type Tx struct {
	session
	inner   pgx.Tx
	release func() // the pool's connection, given back when the outermost transaction ends
	parent  *Tx    // the enclosing transaction of a savepoint
	closed  bool   // committed or rolled back: statements get pgx.ErrTxClosed, as from pgx
}

// done reports whether the transaction, or one that encloses it, ended.
// pgx's own transactions refuse statements then; running them anyway
// would run them outside the transaction (autocommitted after a
// Rollback), on a connection the pool may have handed to someone else.
func (t *Tx) done() bool {
	for ; t != nil; t = t.parent {
		if t.closed {
			return true
		}
	}
	return false
}

var _ pgx.Tx = (*Tx)(nil)

func beginTx(ctx context.Context, s session, opts pgx.TxOptions, release func()) (*Tx, error) {
	inner, err := s.pc.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &Tx{session: s, inner: inner, release: release}, nil
}

// Begin starts a pseudo-nested transaction (a savepoint).
func (t *Tx) Begin(ctx context.Context) (pgx.Tx, error) {
	if t.done() {
		return nil, pgx.ErrTxClosed
	}
	inner, err := t.inner.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return &Tx{session: t.session, inner: inner, parent: t}, nil
}

// Commit commits the transaction, or releases the savepoint.
func (t *Tx) Commit(ctx context.Context) error {
	return t.end(t.inner.Commit(ctx))
}

// Rollback rolls the transaction back, or back to the savepoint.
func (t *Tx) Rollback(ctx context.Context) error {
	return t.end(t.inner.Rollback(ctx))
}

// end lets the engine re-read settings the transaction changed and gives
// a pooled connection back.
func (t *Tx) end(err error) error {
	t.closed = true
	if !errors.Is(err, pgx.ErrTxClosed) {
		t.s.TxEnded()
	}
	if t.release != nil {
		t.release()
		t.release = nil
	}
	return err
}

// Exec runs a statement in the transaction; after Commit or Rollback,
// statements fail with pgx.ErrTxClosed, as pgx's own transactions do.
func (t *Tx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if t.done() {
		return pgconn.CommandTag{}, pgx.ErrTxClosed
	}
	return t.session.Exec(ctx, sql, args...)
}

// Query runs a query in the transaction.
func (t *Tx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if t.done() {
		return errRows{pgx.ErrTxClosed}, pgx.ErrTxClosed
	}
	return t.session.Query(ctx, sql, args...)
}

// QueryRow runs a query that returns at most one row.
func (t *Tx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, err := t.Query(ctx, sql, args...)
	return &row{rows: rows, err: err}
}

// CopyFrom copies rows into a table in the transaction.
func (t *Tx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if t.done() {
		return 0, pgx.ErrTxClosed
	}
	return t.session.CopyFrom(ctx, table, columns, src)
}

// SendBatch runs a batch in the transaction.
func (t *Tx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if t.done() {
		return &batchResults{ctx: ctx, b: b, err: pgx.ErrTxClosed}
	}
	return sendBatch(ctx, t.session, b, nil)
}

// LargeObjects is pgx's: large objects are not table columns and are not
// encrypted.
func (t *Tx) LargeObjects() pgx.LargeObjects { return t.inner.LargeObjects() }

// Prepare is refused: pgx already prepares and caches every statement the
// engine runs (the rewritten ones included), and a statement prepared by
// name would run past the engine.
func (t *Tx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	return nil, errPrepare
}

var errPrepare = errors.New("kmspgx: Prepare by name is not supported: statements run by name would bypass the driver; pgx already prepares and caches every statement it runs, including the driver's rewritten ones")
