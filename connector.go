package kmspostgres

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/kmspostgres/kmspostgres/internal/lru"
	"github.com/kmspostgres/kmspostgres/providers"
)

// Connector opens connections that share one schema map, one plan cache
// and one catalog. Use it with sql.OpenDB.
type Connector struct {
	inner   driver.Connector
	schema  *Schema
	keyring *keyring
	plans   *lru.Cache[planKey, planEntry]
	catalog *catalog
	ids     *idCache
	blind   blindIndexes // per-index keys, by table and column; nil until loadBlind
	blindMu sync.Mutex

	// kmsConcurrency bounds the KMS calls one statement makes at once.
	kmsConcurrency int
	// window is how many rows a result set reads ahead to unwrap their
	// keys together.
	window int

	events  *events  // the driver's own events (observe.go)
	halt    *halt    // the kill switch (halt.go)
	breaker *breaker // nil without WithDecryptLimit (breaker.go)

	// The connection hooks, for the pgx front end's pool.
	beforeConnect func(context.Context, *pgx.ConnConfig) error
	afterConnect  func(context.Context, *pgx.Conn) error
}

var (
	_ driver.Connector = (*Connector)(nil)
)

// NewConnector parses a DSN (any pgx connection string, plus kms_schema)
// and returns a connector. Options: WithSchema, WithProvider, WithObserver,
// WithConnConfig, WithCatalogCheckInterval, WithDecryptLimit, WithHaltFile.
func NewConnector(dsn string, opts ...Option) (*Connector, error) {
	if cfg, ok := registeredConfig(dsn); ok {
		return NewConnectorFromConfig(cfg.conn, append(append([]Option(nil), cfg.opts...), opts...)...)
	}
	rest, path, err := splitDSN(dsn)
	if err != nil {
		return nil, err
	}
	pgcfg, err := pgx.ParseConfig(rest)
	if err != nil {
		return nil, fmt.Errorf("kmspostgres: %w", err)
	}
	return newConnector(pgcfg, path, opts)
}

// NewConnectorFromConfig is NewConnector for a pgx connection config you
// built (pgx's stdlib.OpenDB takes one): the schema map comes from
// WithSchema, else the file KMSPOSTGRES_SCHEMA names.
func NewConnectorFromConfig(cfg *pgx.ConnConfig, opts ...Option) (*Connector, error) {
	return newConnector(cfg.Copy(), "", opts)
}

func newConnector(pgcfg *pgx.ConnConfig, schemaPath string, opts []Option) (*Connector, error) {
	cfg := connectorConfig{catalogTTL: DefaultCatalogCheckInterval, kmsCalls: DefaultKMSConcurrency}
	for _, o := range opts {
		o.applyConnector(&cfg)
	}
	schema := cfg.schema
	if schema == nil {
		path := schemaPath
		if path == "" {
			path = schemaPathFromEnv()
		}
		if path == "" {
			return nil, errors.New("kmspostgres: no schema map: add kms_schema=<path> to the DSN, set KMSPOSTGRES_SCHEMA, or pass WithSchema")
		}
		var err error
		if schema, err = LoadSchema(path); err != nil {
			return nil, err
		}
	} else if schema.byName == nil {
		if err := schema.Validate(); err != nil {
			return nil, err
		}
	}
	if cfg.kms.provider == nil {
		if err := validateKeyIDs(schema); err != nil {
			return nil, err
		}
	}
	blind, err := newBlindIndexes(schema, cfg.normalize, cfg.rotateNormalize)
	if err != nil {
		return nil, err
	}
	var stdOpts []stdlib.OptionOpenDB
	if cfg.connConfig != nil {
		stdOpts = append(stdOpts, stdlib.OptionBeforeConnect(cfg.connConfig))
	}
	if cfg.afterConn != nil {
		stdOpts = append(stdOpts, stdlib.OptionAfterConnect(cfg.afterConn))
	}
	cacheCfg := schema.Cache
	if cfg.cacheSet {
		cacheCfg = cfg.cache
	}
	if err := cacheCfg.validate(); err != nil {
		return nil, fmt.Errorf("kmspostgres: WithKeyCache: %w", err)
	}
	if cfg.kmsCalls < 1 {
		return nil, fmt.Errorf("kmspostgres: WithKMSConcurrency(%d): at least one KMS call must be allowed", cfg.kmsCalls)
	}
	kr := newKeyring(cfg.kms)
	kr.cache = newKeyCache(cacheCfg)
	kr.inflight = make(chan struct{}, cfg.kmsCalls)
	c := &Connector{
		inner:          stdlib.GetConnector(*pgcfg, stdOpts...),
		schema:         schema,
		keyring:        kr,
		plans:          lru.New[planKey, planEntry](2048),
		catalog:        newCatalog(schema, cfg.catalogTTL),
		ids:            newIDCache(32),
		blind:          blind,
		kmsConcurrency: min(cfg.kmsCalls, StatementKMSConcurrency),
		window:         256,
		beforeConnect:  cfg.connConfig,
		afterConnect:   cfg.afterConn,
	}
	if err := c.setupGuards(cfg); err != nil {
		return nil, err
	}
	return c, nil
}

// Connect opens a connection.
func (c *Connector) Connect(ctx context.Context) (driver.Conn, error) {
	if err := c.loadBlind(ctx); err != nil {
		return nil, err
	}
	ic, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	sc, ok := ic.(*stdlib.Conn)
	if !ok {
		ic.Close()
		return nil, fmt.Errorf("kmspostgres: unexpected inner connection %T", ic)
	}
	conn := &Conn{inner: sc, pc: sc.Conn(), connector: c}
	if err := conn.sessionCheck(""); err != nil {
		sc.Close()
		return nil, fmt.Errorf("kmspostgres: refusing the connection: %w", err)
	}
	if err := c.catalog.setBasePath(ctx, sc.Conn()); err != nil {
		sc.Close()
		return nil, err
	}
	return conn, nil
}

// validateKeyIDs refuses, at open, a schema map whose key ids (current or
// previous versions) have no known shape: such an id would otherwise fail
// only on the first row that needs it.
func validateKeyIDs(s *Schema) error {
	for _, tn := range slices.Sorted(maps.Keys(s.Tables)) {
		t := s.Tables[tn]
		for _, kn := range slices.Sorted(maps.Keys(t.Keys)) {
			k := t.Keys[kn]
			ids := []string{k.KeyID}
			for _, v := range slices.Sorted(maps.Keys(k.PreviousVersions)) {
				ids = append(ids, k.PreviousVersions[v].KeyID)
			}
			for _, id := range ids {
				if err := providers.ValidateKeyID(id); err != nil {
					return fmt.Errorf("%w: %s: table %s, key %s: %w", ErrSchema, s.source, tn, kn, err)
				}
			}
		}
	}
	return nil
}

// Driver returns the kmspostgres driver.
func (c *Connector) Driver() driver.Driver { return &Driver{} }

// Schema returns the schema map the connector uses.
func (c *Connector) Schema() *Schema { return c.schema }

// invalidate drops cached plans and catalog answers after DDL.
func (c *Connector) invalidate() {
	c.plans.Clear()
	c.catalog.reset()
	c.ids.clear()
}

// Check connects and resolves the whole schema map against the database:
// every table, its partitions and children, columns, key columns and
// primary keys must exist with a supported type, and nothing in the
// database may compute on an encrypted column. It reports the problems
// found (ErrSchema), joined.
func (c *Connector) Check(ctx context.Context) error {
	dc, err := c.Connect(ctx)
	if err != nil {
		return err
	}
	defer dc.Close()
	if _, err := c.catalog.fresh(ctx, dc.(*Conn).pc, true); err != nil {
		return err
	}
	return errors.Join(c.catalog.problems()...)
}
