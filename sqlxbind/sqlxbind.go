// Package sqlxbind tells sqlx that the "kmspostgres" driver takes $1-style
// parameters, as PostgreSQL does. sqlx chooses placeholders by driver name
// and does not know this one, so without it Rebind, In and the Named
// functions would keep "?". Import it once, for its side effect:
//
//	import _ "github.com/kmspostgres/kmspostgres/sqlxbind"
//
// It is the same as calling sqlx.BindDriver("kmspostgres", sqlx.DOLLAR); it
// lives in its own package so that the driver does not depend on sqlx.
package sqlxbind

import (
	"github.com/jmoiron/sqlx"

	"github.com/kmspostgres/kmspostgres"
)

func init() {
	sqlx.BindDriver(kmspostgres.DriverName, sqlx.DOLLAR)
}
