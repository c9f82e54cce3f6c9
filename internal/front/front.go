// Package front connects the pgx front end (package kmspgx) to the
// engine in package kmspostgres without making the engine public API:
// kmspostgres fills in the functions at init, kmspgx calls them.
package front

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Engine is a kmspostgres connector seen from the pgx front end.
type Engine interface {
	// Session checks a new pgx connection and returns its engine state.
	Session(ctx context.Context, conn *pgx.Conn) (Session, error)
	// Hooks are the connector's BeforeConnect and AfterConnect options
	// (either may be nil).
	Hooks() (func(context.Context, *pgx.ConnConfig) error, func(context.Context, *pgx.Conn) error)
}

// Session runs statements through the engine on one pgx connection.
type Session interface {
	Exec(ctx context.Context, sql string, args []any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args []any) (pgx.Rows, error)
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error)
	// TxControl reports whether sql begins or ends a transaction, as the
	// SQL parser reads it (false for SQL the engine would refuse).
	TxControl(ctx context.Context, sql string) bool
	// EnsureTx begins a transaction when the connection is outside one;
	// finish commits it, or rolls it back on error (inside the caller's
	// transaction it only returns the error).
	EnsureTx(ctx context.Context) (finish func(error) error, err error)
	// TxEnded tells the engine a transaction begun through the front end
	// ended (settings a SET LOCAL changed are read again).
	TxEnded()
}

var (
	// SplitDSN takes the kms_* parameters out of a connection string.
	SplitDSN func(dsn string) (rest, schemaPath string, err error)
	// NewEngine makes a connector: opts are kmspostgres.Option values.
	NewEngine func(cfg *pgx.ConnConfig, schemaPath string, opts []any) (Engine, error)
)
