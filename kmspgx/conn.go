package kmspgx

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kmspostgres/kmspostgres/internal/front"
)

// session is the engine on one pgx connection, with the methods a
// connection, a transaction and a pooled call share.
type session struct {
	s  front.Session
	pc *pgx.Conn
}

// Exec runs a statement, as pgx's Exec does.
func (s session) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return s.s.Exec(ctx, sql, args)
}

// Query runs a query, as pgx's Query does; encrypted columns read as
// plaintext. The rows must be closed before the connection is used again.
func (s session) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	rows, err := s.s.Query(ctx, sql, args)
	if err != nil {
		return errRows{err}, err
	}
	return rows, nil
}

// QueryRow runs a query that returns at most one row, as pgx's QueryRow
// does (pgx.ErrNoRows when there is none).
func (s session) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, err := s.Query(ctx, sql, args...)
	return &row{rows: rows, err: err}
}

// CopyFrom copies rows into a table, as pgx's CopyFrom does: into an
// encrypted table, every row gets its own data key and sealed cells
// (see the README, "pgx and pgxpool").
func (s session) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	return s.s.CopyFrom(ctx, table, columns, src)
}

// SendBatch runs a batch: every queued statement is planned, rewritten and
// decrypted as if sent alone. See Pool.SendBatch.
func (s session) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return sendBatch(ctx, s, b, nil)
}

// Conn returns the underlying pgx connection. Statements run on it
// directly bypass encryption: keep it for administration.
func (s session) Conn() *pgx.Conn { return s.pc }

// Conn is one connection, as *pgx.Conn, whose statements run through the
// engine. It is not safe for concurrent use.
type Conn struct {
	session
}

func connect(ctx context.Context, cfg *pgx.ConnConfig, schemaPath string, opts []Option) (*Conn, error) {
	eng, err := front.NewEngine(cfg, schemaPath, engineOptions(opts))
	if err != nil {
		return nil, err
	}
	before, after := eng.Hooks()
	if before != nil {
		if err := before(ctx, cfg); err != nil {
			return nil, err
		}
	}
	pc, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if after != nil {
		if err := after(ctx, pc); err != nil {
			pc.Close(ctx)
			return nil, err
		}
	}
	s, err := eng.Session(ctx, pc)
	if err != nil {
		pc.Close(ctx)
		return nil, err
	}
	return &Conn{session{s: s, pc: pc}}, nil
}

// Close closes the connection.
func (c *Conn) Close(ctx context.Context) error { return c.pc.Close(ctx) }

// Ping checks the connection.
func (c *Conn) Ping(ctx context.Context) error { return c.pc.Ping(ctx) }

// IsClosed reports whether the connection is closed.
func (c *Conn) IsClosed() bool { return c.pc.IsClosed() }

// Begin starts a transaction.
func (c *Conn) Begin(ctx context.Context) (pgx.Tx, error) {
	return c.BeginTx(ctx, pgx.TxOptions{})
}

// BeginTx starts a transaction with pgx's options.
func (c *Conn) BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error) {
	return beginTx(ctx, c.session, opts, nil)
}

// errRows is the rows of a query that failed, as pgx returns them.
type errRows struct{ err error }

func (r errRows) Close()                                       {}
func (r errRows) Err() error                                   { return r.err }
func (r errRows) CommandTag() pgconn.CommandTag                { return pgconn.CommandTag{} }
func (r errRows) FieldDescriptions() []pgconn.FieldDescription { return nil }
func (r errRows) Next() bool                                   { return false }
func (r errRows) Scan(...any) error                            { return r.err }
func (r errRows) Values() ([]any, error)                       { return nil, r.err }
func (r errRows) RawValues() [][]byte                          { return nil }
func (r errRows) Conn() *pgx.Conn                              { return nil }
func (r errRows) TypeMap() *pgtype.Map                         { return nil }

// row is QueryRow's result.
type row struct {
	rows pgx.Rows
	err  error
}

func (r *row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	rows := r.rows
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	rows.Close()
	return rows.Err()
}
