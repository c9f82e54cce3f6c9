package kmspostgres

import "database/sql/driver"

// tx is a transaction begun through database/sql. It ends pgx's, then lets
// the connection re-read settings a rolled-back SET may have changed.
type tx struct {
	inner driver.Tx
	c     *Conn
}

var _ driver.Tx = (*tx)(nil)

func (t *tx) Commit() error {
	defer t.c.txEnded()
	return t.inner.Commit()
}

func (t *tx) Rollback() error {
	defer t.c.txEnded()
	return t.inner.Rollback()
}
