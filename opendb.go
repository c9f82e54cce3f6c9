package kmspostgres

import (
	"database/sql"
	"strconv"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// OpenDB is pgx's stdlib.OpenDB for kmspostgres: a *sql.DB over a pgx
// connection config you built. The schema map comes from WithSchema, else
// the file KMSPOSTGRES_SCHEMA names; the error is NewConnectorFromConfig's.
func OpenDB(cfg pgx.ConnConfig, opts ...Option) (*sql.DB, error) {
	c, err := NewConnectorFromConfig(&cfg, opts...)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(c), nil
}

var (
	registryMu sync.Mutex
	registry   = map[string]registered{}
	registryN  int
)

type registered struct {
	conn *pgx.ConnConfig
	opts []Option
}

// RegisterConnConfig is pgx's stdlib.RegisterConnConfig for kmspostgres:
// it returns a name that sql.Open("kmspostgres", name) accepts as a DSN,
// for code that can only pass strings. The options apply to every open.
func RegisterConnConfig(cfg *pgx.ConnConfig, opts ...Option) string {
	registryMu.Lock()
	defer registryMu.Unlock()
	registryN++
	name := "registeredConnConfig" + strconv.Itoa(registryN)
	registry[name] = registered{conn: cfg.Copy(), opts: opts}
	return name
}

// UnregisterConnConfig forgets a name RegisterConnConfig returned.
func UnregisterConnConfig(name string) {
	registryMu.Lock()
	delete(registry, name)
	registryMu.Unlock()
}

func registeredConfig(name string) (registered, bool) {
	registryMu.Lock()
	defer registryMu.Unlock()
	r, ok := registry[name]
	return r, ok
}

// OpenDBFromPool is pgx's stdlib.OpenDBFromPool for kmspostgres: a
// *sql.DB whose connections are taken from a pgxpool.Pool (each
// database/sql connection holds one pool connection until it is closed).
// The schema map comes from WithSchema, else the file KMSPOSTGRES_SCHEMA
// names. The pool's own hooks apply; WithConnConfig and WithAfterConnect
// do not, since the pool makes the connections.
func OpenDBFromPool(pool *pgxpool.Pool, opts ...Option) (*sql.DB, error) {
	c, err := newConnector(pool.Config().ConnConfig, "", opts)
	if err != nil {
		return nil, err
	}
	c.inner = stdlib.GetPoolConnector(pool)
	return sql.OpenDB(c), nil
}
