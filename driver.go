// Package kmspostgres is a database/sql driver for PostgreSQL that encrypts
// the columns listed in a schema map, with a data key per row wrapped by a
// key management service under the row's table and primary key.
//
//	db, err := sql.Open("kmspostgres", "postgres://app@db/app?kms_schema=schema.yaml")
//
// Queries are written as for pgx's own driver. INSERT and UPDATE encrypt
// the mapped columns, SELECT and RETURNING decrypt them, and statements
// that would need the database to read plaintext (WHERE, ORDER BY, GROUP BY
// or JOIN on an encrypted column) are refused with an error that names the
// column. Tables that are not in the schema map behave exactly as with
// github.com/jackc/pgx/v5/stdlib.
package kmspostgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
)

// DriverName is the name the driver registers with database/sql.
const DriverName = "kmspostgres"

func init() {
	sql.Register(DriverName, &Driver{})
}

// Driver is the database/sql driver. Use it through sql.Open("kmspostgres",
// dsn), or NewConnector and sql.OpenDB.
type Driver struct{}

var (
	_ driver.Driver        = (*Driver)(nil)
	_ driver.DriverContext = (*Driver)(nil)
)

// Open opens one connection. database/sql calls OpenConnector instead.
func (d *Driver) Open(dsn string) (driver.Conn, error) {
	c, err := d.OpenConnector(dsn)
	if err != nil {
		return nil, err
	}
	return c.Connect(context.Background())
}

// OpenConnector parses the DSN and loads the schema map once for a pool.
func (d *Driver) OpenConnector(dsn string) (driver.Connector, error) {
	return NewConnector(dsn)
}

// splitDSN removes kms_schema from a pgx connection string (URL or
// key=value) and returns it.
func splitDSN(dsn string) (rest, schemaPath string, err error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", "", fmt.Errorf("kmspostgres: parsing DSN: %w", err)
		}
		q := u.Query()
		schemaPath = q.Get("kms_schema")
		q.Del("kms_schema")
		u.RawQuery = q.Encode()
		return u.String(), schemaPath, nil
	}
	m := kvSchema.FindStringSubmatchIndex(dsn)
	if m == nil {
		return dsn, "", nil
	}
	val := dsn[m[4]:m[5]]
	if strings.HasPrefix(val, "'") {
		val = strings.NewReplacer(`\'`, `'`, `\\`, `\`).Replace(val[1 : len(val)-1])
	}
	return strings.TrimSpace(dsn[:m[0]] + " " + dsn[m[1]:]), val, nil
}

var kvSchema = regexp.MustCompile(`(?:^|\s)(kms_schema)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)`)

// schemaPathFromEnv is the fallback when the DSN names no schema map.
func schemaPathFromEnv() string { return os.Getenv("KMSPOSTGRES_SCHEMA") }
