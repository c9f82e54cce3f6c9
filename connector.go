package kmspostgres

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/kmspostgres/kmspostgres/rewrite"
)

// Connector opens connections that share one schema map, one plan cache
// and one catalog. Use it with sql.OpenDB.
type Connector struct {
	inner  driver.Connector
	schema *Schema
	kr     *keyring
	plans  *planCache
	cat    *catalog
	ids    *idCache

	// Parallelism bounds concurrent KMS calls per statement.
	parallelism int
	// window is how many rows a result set reads ahead to unwrap their
	// keys together.
	window int
}

var (
	_ driver.Connector = (*Connector)(nil)
)

// NewConnector parses a DSN (any pgx connection string, plus kms_schema)
// and returns a connector. Options: WithSchema, WithProvider, WithObserver,
// WithConnConfig.
func NewConnector(dsn string, opts ...Option) (*Connector, error) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	rest, path, err := splitDSN(dsn)
	if err != nil {
		return nil, err
	}
	schema := cfg.schema
	if schema == nil {
		if path == "" {
			path = schemaPathFromEnv()
		}
		if path == "" {
			return nil, errors.New("kmspostgres: no schema map: add kms_schema=<path> to the DSN, set KMSPOSTGRES_SCHEMA, or pass WithSchema")
		}
		if schema, err = LoadSchema(path); err != nil {
			return nil, err
		}
	} else if schema.byName == nil {
		if err := schema.Validate(); err != nil {
			return nil, err
		}
	}
	pgcfg, err := pgx.ParseConfig(rest)
	if err != nil {
		return nil, fmt.Errorf("kmspostgres: %w", err)
	}
	var stdOpts []stdlib.OptionOpenDB
	if cfg.connConfig != nil {
		stdOpts = append(stdOpts, stdlib.OptionBeforeConnect(cfg.connConfig))
	}
	c := &Connector{
		inner:       stdlib.GetConnector(*pgcfg, stdOpts...),
		schema:      schema,
		kr:          &keyring{provider: cfg.provider, observers: cfg.observers},
		plans:       newPlanCache(2048),
		ids:         &idCache{blocks: map[string]*idBlock{}, size: 32},
		parallelism: 16,
		window:      256,
	}
	c.cat = newCatalog(schema)
	return c, nil
}

// Connect opens a connection.
func (c *Connector) Connect(ctx context.Context) (driver.Conn, error) {
	ic, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	sc, ok := ic.(*stdlib.Conn)
	if !ok {
		ic.Close()
		return nil, fmt.Errorf("kmspostgres: unexpected inner connection %T", ic)
	}
	return &Conn{inner: sc, c: c}, nil
}

// Driver returns the kmspostgres driver.
func (c *Connector) Driver() driver.Driver { return &Driver{} }

// Schema returns the schema map the connector uses.
func (c *Connector) Schema() *Schema { return c.schema }

// invalidate drops cached plans and catalog answers after DDL.
func (c *Connector) invalidate() {
	c.plans.clear()
	c.cat.reset()
	c.ids.clear()
}

// planCache is a bounded map of SQL text to plan (or refusal).
type planCache struct {
	mu  sync.RWMutex
	max int
	m   map[string]planEntry
}

type planEntry struct {
	plan *rewrite.Plan
	err  error
}

func newPlanCache(max int) *planCache { return &planCache{max: max, m: map[string]planEntry{}} }

func (p *planCache) get(sql string) (planEntry, bool) {
	p.mu.RLock()
	e, ok := p.m[sql]
	p.mu.RUnlock()
	return e, ok
}

func (p *planCache) put(sql string, e planEntry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.m) >= p.max {
		// Evict an arbitrary tenth: map order is random, so this is a
		// cheap random eviction.
		n := p.max / 10
		for k := range p.m {
			delete(p.m, k)
			if n--; n <= 0 {
				break
			}
		}
	}
	p.m[sql] = e
}

func (p *planCache) clear() {
	p.mu.Lock()
	p.m = map[string]planEntry{}
	p.mu.Unlock()
}

// Check connects and resolves the whole schema map against the database:
// every table, column, key column and primary key must exist with a
// supported type. It reports the first mismatch (ErrSchema).
func (c *Connector) Check(ctx context.Context) error {
	dc, err := c.Connect(ctx)
	if err != nil {
		return err
	}
	defer dc.Close()
	b := boundCatalog{c: c.cat, ctx: ctx, conn: dc.(*Conn).inner.Conn()}
	c.cat.mu.Lock()
	defer c.cat.mu.Unlock()
	return b.ensure()
}
