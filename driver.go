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
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"slices"
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

// dsnParams are the parameters kmspostgres reads from a DSN and removes
// before handing the rest to pgx. Any other kms_* parameter is refused, so
// that a typo (kms_shema) cannot silently leave the schema map unread.
var dsnParams = []string{"kms_schema"}

// splitDSN removes kms_schema from a pgx connection string (URL or
// key=value) and returns it. A parameter named kms_* that is not one of
// dsnParams is an error naming it.
func splitDSN(dsn string) (rest, schemaPath string, err error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", "", fmt.Errorf("kmspostgres: parsing DSN: %w", err)
		}
		q := u.Query()
		for _, name := range slices.Sorted(maps.Keys(q)) {
			if err := checkDSNParam(name); err != nil {
				return "", "", err
			}
		}
		schemaPath = q.Get("kms_schema")
		q.Del("kms_schema")
		u.RawQuery = q.Encode()
		return u.String(), schemaPath, nil
	}
	params, err := kvParams(dsn)
	if err != nil {
		return "", "", err
	}
	rest = dsn
	// Backwards, so that earlier spans stay valid as later ones are cut.
	for i := len(params) - 1; i >= 0; i-- {
		p := params[i]
		if err := checkDSNParam(p.key); err != nil {
			return "", "", err
		}
		if p.key != "kms_schema" {
			continue
		}
		if schemaPath == "" {
			schemaPath = p.value // the last one wins, as in libpq
		}
		rest = strings.TrimSpace(strings.TrimRight(rest[:p.start], " \t\n\r") + " " + strings.TrimLeft(rest[p.end:], " \t\n\r"))
	}
	return rest, schemaPath, nil
}

// checkDSNParam refuses kms_* parameters kmspostgres does not know.
func checkDSNParam(name string) error {
	if !strings.HasPrefix(strings.ToLower(name), "kms_") || slices.Contains(dsnParams, name) {
		return nil
	}
	return fmt.Errorf("kmspostgres: unknown DSN parameter %s; kmspostgres knows: %s", name, strings.Join(dsnParams, ", "))
}

// kvParam is one key=value pair of a key=value DSN, with its span.
type kvParam struct {
	key, value string
	start, end int
}

// kvParams splits a key=value connection string as libpq does: keys up to
// '=', values bare up to whitespace or single-quoted with backslash
// escapes.
func kvParams(dsn string) ([]kvParam, error) {
	var out []kvParam
	i := 0
	for {
		for i < len(dsn) && isSpace(dsn[i]) {
			i++
		}
		if i == len(dsn) {
			return out, nil
		}
		p := kvParam{start: i}
		eq := strings.IndexByte(dsn[i:], '=')
		if eq < 0 {
			// Not quoted back: the rest may hold a password.
			return nil, errors.New("kmspostgres: parsing DSN: a key=value DSN has a word without \"=\"")
		}
		p.key = strings.TrimSpace(dsn[i : i+eq])
		i += eq + 1
		for i < len(dsn) && isSpace(dsn[i]) {
			i++
		}
		if i < len(dsn) && dsn[i] == '\'' {
			var b strings.Builder
			i++
			closed := false
			for i < len(dsn) {
				c := dsn[i]
				if c == '\\' && i+1 < len(dsn) {
					b.WriteByte(dsn[i+1])
					i += 2
					continue
				}
				i++
				if c == '\'' {
					closed = true
					break
				}
				b.WriteByte(c)
			}
			if !closed {
				return nil, fmt.Errorf("kmspostgres: parsing DSN: unterminated quoted value of %s", p.key)
			}
			p.value = b.String()
		} else {
			j := i
			for j < len(dsn) && !isSpace(dsn[j]) {
				j++
			}
			p.value = dsn[i:j]
			i = j
		}
		p.end = i
		out = append(out, p)
	}
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// schemaPathFromEnv is the fallback when the DSN names no schema map.
func schemaPathFromEnv() string { return os.Getenv("KMSPOSTGRES_SCHEMA") }
