package kmspostgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/kmspostgres/kmspostgres/providers"
)

// Option configures a Connector or a Box. Options that do not apply to one
// of them are ignored there.
type Option func(*config)

type config struct {
	schema     *Schema
	provider   providers.Provider
	observers  []providers.Observer
	connConfig func(context.Context, *pgx.ConnConfig) error

	// Box only.
	version  int
	previous map[int]string
}

// WithSchema gives the Connector a schema map built in Go, instead of the
// kms_schema DSN parameter or KMSPOSTGRES_SCHEMA. It must be valid (see
// Schema.Validate).
func WithSchema(s *Schema) Option { return func(c *config) { c.schema = s } }

// WithProvider sends every key id to p instead of routing by key id: for
// custom clients, credentials or endpoints, and for tests.
func WithProvider(p providers.Provider) Option { return func(c *config) { c.provider = p } }

// WithObserver registers an audit observer that sees every wrap and unwrap.
func WithObserver(o providers.Observer) Option {
	return func(c *config) { c.observers = append(c.observers, o) }
}

// WithConnConfig lets f adjust pgx's connection config before each connect
// (TLS, tracers, runtime parameters).
func WithConnConfig(f func(context.Context, *pgx.ConnConfig) error) Option {
	return func(c *config) { c.connConfig = f }
}

// WithKeyVersion sets the version a Box writes (default 1).
func WithKeyVersion(v int) Option { return func(c *config) { c.version = v } }

// WithPreviousVersion lets a Box read data written under an older version
// and master key.
func WithPreviousVersion(version int, keyID string) Option {
	return func(c *config) {
		if c.previous == nil {
			c.previous = map[int]string{}
		}
		c.previous[version] = keyID
	}
}
