// Package kmspgx is the pgx front end of kmspostgres: a pgxpool-backed
// pool and a single connection whose Exec, Query, QueryRow, CopyFrom,
// SendBatch and Begin run every statement through the same engine as the
// database/sql driver (the same plans, refusals, per-row keys, decryption,
// blind indexes and key cache). Code written for pgx, and the code sqlc
// generates with sql_package: pgx/v5, runs with only the construction
// changed:
//
//	pool, err := pgxpool.New(ctx, dsn)                       // before
//	pool, err := kmspgx.NewPool(ctx, dsn+"&kms_schema=schema.yaml") // after
//	q := db.New(pool)                                         // unchanged
//
// Decrypted columns are described as their plaintext type, so they scan
// into pgtype values, plain Go types and pgx.RowToStructByName as an
// unencrypted column would; Values and RawValues never hold ciphertext.
package kmspgx

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/internal/front"
	"github.com/kmspostgres/kmspostgres/providers"
)

// Option configures the engine: every kmspostgres.Option works here
// (kmspostgres.WithKeyCache, WithDecryptLimit, WithBlindIndexNormalizer,
// …). The functions below are the common ones, for convenience.
type Option = kmspostgres.Option

// WithSchema is kmspostgres.WithSchema: a schema map built in Go instead
// of kms_schema or KMSPOSTGRES_SCHEMA.
func WithSchema(s *kmspostgres.Schema) Option { return kmspostgres.WithSchema(s) }

// WithProvider is kmspostgres.WithProvider: every key id goes to p.
func WithProvider(p providers.Provider) Option { return kmspostgres.WithProvider(p) }

// WithObserver is kmspostgres.WithObserver: o sees every wrap and unwrap.
func WithObserver(o providers.Observer) Option { return kmspostgres.WithObserver(o) }

// WithKeyCache is kmspostgres.WithKeyCache.
func WithKeyCache(c *kmspostgres.CacheConfig) Option { return kmspostgres.WithKeyCache(c) }

// WithCatalogCheckInterval is kmspostgres.WithCatalogCheckInterval.
func WithCatalogCheckInterval(d time.Duration) Option {
	return kmspostgres.WithCatalogCheckInterval(d)
}

// BeforeConnect runs f on a copy of the connection config before each
// connection is made, as pgxpool.Config.BeforeConnect does (it is
// kmspostgres.WithConnConfig). A BeforeConnect already set on a
// pgxpool.Config given to NewPoolWithConfig runs first.
func BeforeConnect(f func(context.Context, *pgx.ConnConfig) error) Option {
	return kmspostgres.WithConnConfig(f)
}

// AfterConnect runs f on each new connection before the engine checks it
// and the pool hands it out, as pgxpool.Config.AfterConnect does (it is
// kmspostgres.WithAfterConnect). An AfterConnect already set on a
// pgxpool.Config given to NewPoolWithConfig runs first.
func AfterConnect(f func(context.Context, *pgx.Conn) error) Option {
	return kmspostgres.WithAfterConnect(f)
}

func engineOptions(opts []Option) []any {
	out := make([]any, len(opts))
	for i, o := range opts {
		out[i] = o
	}
	return out
}

// chainBefore runs a, then b; either may be nil.
func chainBefore(a, b func(context.Context, *pgx.ConnConfig) error) func(context.Context, *pgx.ConnConfig) error {
	if a == nil || b == nil {
		if a == nil {
			return b
		}
		return a
	}
	return func(ctx context.Context, cfg *pgx.ConnConfig) error {
		if err := a(ctx, cfg); err != nil {
			return err
		}
		return b(ctx, cfg)
	}
}

// NewPool parses a connection string (any pgxpool connection string,
// plus kms_schema=<path>; without it KMSPOSTGRES_SCHEMA or WithSchema
// gives the schema map) and returns a pool.
func NewPool(ctx context.Context, connString string, opts ...Option) (*Pool, error) {
	rest, path, err := front.SplitDSN(connString)
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(rest)
	if err != nil {
		return nil, err
	}
	return newPool(ctx, cfg, path, opts)
}

// NewPoolWithConfig is NewPool for a pgxpool config you built (its hooks
// are kept and run before the engine's). The schema map comes from
// WithSchema, else the file KMSPOSTGRES_SCHEMA names.
func NewPoolWithConfig(ctx context.Context, cfg *pgxpool.Config, opts ...Option) (*Pool, error) {
	return newPool(ctx, cfg.Copy(), "", opts)
}

// Connect opens one connection, as pgx.Connect does; the connection
// string takes kms_schema like NewPool's.
func Connect(ctx context.Context, connString string, opts ...Option) (*Conn, error) {
	rest, path, err := front.SplitDSN(connString)
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(rest)
	if err != nil {
		return nil, err
	}
	return connect(ctx, cfg, path, opts)
}

// ConnectConfig is Connect for a pgx connection config you built. The
// schema map comes from WithSchema, else the file KMSPOSTGRES_SCHEMA names.
func ConnectConfig(ctx context.Context, cfg *pgx.ConnConfig, opts ...Option) (*Conn, error) {
	return connect(ctx, cfg.Copy(), "", opts)
}
