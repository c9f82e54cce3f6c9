package kmspostgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kmspostgres/kmspostgres/providers"
)

// Option configures a Connector (NewConnector). Box options are another
// type, so passing one here is a compile error rather than silently
// ignored.
type Option interface{ applyConnector(*connectorConfig) }

// BoxOption configures a Box (NewBox).
type BoxOption interface{ applyBox(*boxConfig) }

// CommonOption configures both a Connector and a Box: the KMS side they
// share (WithProvider, WithObserver).
type CommonOption interface {
	Option
	BoxOption
}

// kmsConfig is what a Connector and a Box share: how they reach the KMS.
type kmsConfig struct {
	provider  providers.Provider
	observers []providers.Observer
}

type connectorConfig struct {
	kms        kmsConfig
	schema     *Schema
	connConfig func(context.Context, *pgx.ConnConfig) error
	afterConn  func(context.Context, *pgx.Conn) error
	catalogTTL time.Duration
	cache      *CacheConfig
	cacheSet   bool // WithKeyCache was given: it wins over the schema map
	kmsCalls   int  // KMS calls in flight per connector
	limit      DecryptLimit
	haltFile   *string
	normalize  map[[2]string]func(string) string // blind-index normalizers by table and column
	// rotateNormalize: those of the indexes' rotations.
	rotateNormalize map[[2]string]func(string) string
}

type boxConfig struct {
	kms      kmsConfig
	version  int
	previous map[int]string
}

type connectorOption func(*connectorConfig)

func (o connectorOption) applyConnector(c *connectorConfig) { o(c) }

type boxOption func(*boxConfig)

func (o boxOption) applyBox(c *boxConfig) { o(c) }

type commonOption func(*kmsConfig)

func (o commonOption) applyConnector(c *connectorConfig) { o(&c.kms) }
func (o commonOption) applyBox(c *boxConfig)             { o(&c.kms) }

// WithSchema gives the Connector a schema map built in Go, instead of the
// kms_schema DSN parameter or KMSPOSTGRES_SCHEMA. It must be valid (see
// Schema.Validate).
func WithSchema(s *Schema) Option {
	return connectorOption(func(c *connectorConfig) { c.schema = s })
}

// WithConnConfig lets f adjust pgx's connection config before each connect
// (TLS, tracers, runtime parameters).
func WithConnConfig(f func(context.Context, *pgx.ConnConfig) error) Option {
	return connectorOption(func(c *connectorConfig) { c.connConfig = f })
}

// WithAfterConnect runs f on each new pgx connection before the driver
// uses it (to register types, say), as pgx's stdlib.OptionAfterConnect
// and pgxpool's AfterConnect do. An error closes the connection.
func WithAfterConnect(f func(context.Context, *pgx.Conn) error) Option {
	return connectorOption(func(c *connectorConfig) { c.afterConn = f })
}

// DefaultCatalogCheckInterval is how long a connector trusts its view of
// the catalog for statements it has planned before; see
// WithCatalogCheckInterval.
const DefaultCatalogCheckInterval = time.Second

// WithCatalogCheckInterval sets how long cached plans are trusted before
// the catalog is checked again for DDL run by other processes (one cheap
// query, at most once per interval per connector). A statement the
// connector has not planned before always checks first. Zero checks before
// every statement, at the cost of one round trip each.
func WithCatalogCheckInterval(d time.Duration) Option {
	return connectorOption(func(c *connectorConfig) { c.catalogTTL = max(d, 0) })
}

// DefaultKMSConcurrency is how many KMS calls a connector has in flight at
// most, across its connections, unless WithKMSConcurrency says otherwise:
// at 10 ms a call, 128 in flight is 12,800 calls a second, within the
// default request quotas of AWS KMS in most regions for one process. One
// statement uses up to StatementKMSConcurrency of them, so that 1,000
// rows on a 1 ms KMS take 8 rounds of calls rather than 63.
const (
	DefaultKMSConcurrency   = 128
	StatementKMSConcurrency = 128
)

// WithKMSConcurrency bounds the KMS calls a connector has in flight at
// once, across all its connections (default DefaultKMSConcurrency): keep
// it within your KMS request quota divided by the number of processes and
// multiplied by the call latency. A statement uses up to
// min(n, StatementKMSConcurrency). Calls beyond the bound wait, within
// the statement's context.
func WithKMSConcurrency(n int) Option {
	return connectorOption(func(c *connectorConfig) { c.kmsCalls = n })
}

// WithDecryptLimit sets the connector's decrypt-rate breaker (see
// DecryptLimit). Without it, no rate is enforced.
func WithDecryptLimit(l DecryptLimit) Option {
	return connectorOption(func(c *connectorConfig) { c.limit = l })
}

// WithHaltFile halts decryption while a file exists at path, for operators
// who cannot redeploy: create it to halt, remove it to resume. The file is
// looked for at most once a second, by the reads of encrypted columns. An
// error other than "does not exist" halts too. Without this option, the
// KMSPOSTGRES_HALT_FILE environment variable names the file; an empty
// path turns it off.
func WithHaltFile(path string) Option {
	return connectorOption(func(c *connectorConfig) { c.haltFile = &path })
}

// WithProvider sends every key id to p instead of routing by key id: for
// custom clients, credentials or endpoints, and for tests.
func WithProvider(p providers.Provider) CommonOption {
	return commonOption(func(c *kmsConfig) { c.provider = p })
}

// WithObserver registers an audit observer that sees every wrap and unwrap.
func WithObserver(o providers.Observer) CommonOption {
	return commonOption(func(c *kmsConfig) { c.observers = append(c.observers, o) })
}

// WithKeyVersion sets the version a Box writes (default 1).
func WithKeyVersion(v int) BoxOption {
	return boxOption(func(c *boxConfig) { c.version = v })
}

// WithPreviousVersion lets a Box read data written under an older version
// and master key.
func WithPreviousVersion(version int, keyID string) BoxOption {
	return boxOption(func(c *boxConfig) {
		if c.previous == nil {
			c.previous = map[int]string{}
		}
		c.previous[version] = keyID
	})
}
