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
	inner, err := t.inner.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return &Tx{session: t.session, inner: inner}, nil
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
	if !errors.Is(err, pgx.ErrTxClosed) {
		t.s.TxEnded()
	}
	if t.release != nil {
		t.release()
		t.release = nil
	}
	return err
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
