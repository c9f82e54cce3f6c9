package kmspostgres

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/kmspostgres/kmspostgres/rewrite"
)

// prepareUpdate finds the rows an UPDATE of encrypted columns will change,
// keys each one (a fresh data key when the UPDATE sets every column under
// the key or the row has none, else the row's own key, unwrapped), locks
// them, and returns the rewritten UPDATE with per-row arrays. KMS calls
// happen before the rows are locked; a row that changed in between is
// keyed again under the lock. finish ends the transaction the driver
// opened, if it opened one.
func (c *Conn) prepareUpdate(ctx context.Context, p *rewrite.Plan, args []driver.NamedValue) (string, []driver.NamedValue, func(error) error, error) {
	finish, err := c.ensureTx(ctx)
	if err != nil {
		return "", nil, nil, err
	}
	u, err := c.newUpdateKeyer(ctx, p, args)
	if err != nil {
		return "", nil, nil, finish(err)
	}
	q, a, err := u.run()
	if err != nil {
		return "", nil, nil, finish(err)
	}
	return q, a, finish, nil
}

// ensureTx opens a transaction when the connection is outside one, so that
// an UPDATE's lock and write are atomic. finish commits it (or rolls it
// back on error); inside the caller's transaction it only returns err.
func (c *Conn) ensureTx(ctx context.Context) (finish func(error) error, err error) {
	conn := c.pc
	if conn.PgConn().TxStatus() != 'I' {
		return func(err error) error { return err }, nil
	}
	if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
		return nil, err
	}
	return func(err error) error {
		if err == nil {
			if _, err = conn.Exec(ctx, "COMMIT"); err == nil {
				return nil
			}
		}
		_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		return err
	}, nil
}

// updRow is a row an UPDATE will change: its ctid, primary key and the
// current text of each key column the UPDATE writes under.
type updRow struct {
	ctid string
	toid string // tableoid: with the ctid, it names the row exactly
	pk   []string
	id   string // pk joined, to match a row across the two reads
	keys []*string
	// others, per key: the columns under it that the UPDATE leaves alone
	// hold values.
	others []bool
	// checks per up.Checks: the key column and the stored cell.
	checks []checkCell
}

// updateKeyer keys the rows of one UPDATE: read them, key each, lock them,
// key again what changed in between, then seal the cells.
type updateKeyer struct {
	c    *Conn
	ctx  context.Context
	p    *rewrite.Plan
	up   *rewrite.Update
	ti   *tableInfo
	args []driver.NamedValue

	selArgs []any
	lk      []any  // the plan's lookups, prechecked once for both statements
	vals    []any  // the value of each cell, the same for every row
	skip    []bool // per up.Keys: a fresh key whose cells are all NULL: key NULL, no KMS call
}

func (c *Conn) newUpdateKeyer(ctx context.Context, p *rewrite.Plan, args []driver.NamedValue) (*updateKeyer, error) {
	up := p.Update
	u := &updateKeyer{c: c, ctx: ctx, p: p, up: up, ti: c.connector.catalog.info(up.Table), args: args}
	lk, err := c.planLookups(ctx, p, args)
	if err != nil {
		return nil, err
	}
	u.lk = lk
	sargs, err := planArgs(up.SelectArgs, args, nil, lk)
	if err != nil {
		return nil, err
	}
	u.selArgs = make([]any, len(sargs))
	for i, a := range sargs {
		u.selArgs[i] = a.Value
	}
	u.vals = make([]any, len(up.Cells))
	for i, cell := range up.Cells {
		if u.vals[i], err = valueOf(cell.Value, args); err != nil {
			return nil, err
		}
	}
	u.skip = make([]bool, len(up.Keys))
	for i, k := range up.Keys {
		if !k.Fresh {
			continue
		}
		allNull := true
		for j, cell := range up.Cells {
			if cell.Key == k.Key && u.vals[j] != nil {
				allNull = false
			}
		}
		u.skip[i] = allNull
	}
	return u, nil
}

// run reads, keys, locks and re-keys the rows, and returns the UPDATE to
// run with its arguments.
func (u *updateKeyer) run() (string, []driver.NamedValue, error) {
	peek, err := u.selectRows(u.up.SelectSQL)
	if err != nil {
		return "", nil, err
	}
	if u.ti.entry.Migrating {
		adopted, err := u.adoptLegacy(peek)
		if err != nil {
			return "", nil, err
		}
		if adopted {
			if peek, err = u.selectRows(u.up.SelectSQL); err != nil {
				return "", nil, err
			}
		}
	}
	peekKeys, err := u.keyRows(peek, nil, nil)
	if err != nil {
		return "", nil, err
	}
	prior := make(map[string]*updRow, len(peek))
	for i := range peek {
		prior[peek[i].id] = &peek[i]
	}
	locked, err := u.selectRows(u.up.LockSQL)
	if err != nil {
		return "", nil, err
	}
	keys, err := u.keyRows(locked, prior, peekKeys)
	if err != nil {
		return "", nil, err
	}
	if err := u.verify(locked, keys); err != nil {
		return "", nil, err
	}
	slots, err := u.slots(locked, keys)
	if err != nil {
		return "", nil, err
	}
	u.c.sealedUpdate(u.ctx, u.up, slots)
	if err := u.c.connector.indexCells(u.up.Table, u.up.Indexes, false, u.args, slots); err != nil {
		return "", nil, err
	}
	if err := u.c.connector.indexCells(u.up.Table, u.up.Rotations, true, u.args, slots); err != nil {
		return "", nil, err
	}
	a, err := planArgs(u.p.Args, u.args, slots, u.lk)
	return u.p.SQL, a, err
}

func (u *updateKeyer) selectRows(sql string) ([]updRow, error) {
	rows, err := u.c.pc.Query(u.ctx, sql, u.selArgs...)
	if err != nil {
		return nil, err
	}
	npk, nk := len(u.up.Table.PrimaryKey), len(u.up.Keys)
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (updRow, error) {
		r := updRow{pk: make([]string, npk), keys: make([]*string, nk), others: make([]bool, nk), checks: make([]checkCell, len(u.up.Checks))}
		dest := make([]any, 0, 2+npk+2*nk+3*len(r.checks))
		dest = append(dest, &r.ctid, &r.toid)
		for i := range r.pk {
			dest = append(dest, &r.pk[i])
		}
		for i := range r.keys {
			dest = append(dest, &r.keys[i])
		}
		for i := range r.others {
			dest = append(dest, &r.others[i])
		}
		dest = checkDest(dest, r.checks, u.up.Checks)
		err := row.Scan(dest...)
		r.id = strings.Join(r.pk, "\x00")
		return r, err
	})
}

// keyRows returns each row's keys, per up.Keys. A row seen in prior whose
// key column has not changed reuses the key found then (priorKeys).
func (u *updateKeyer) keyRows(rows []updRow, prior map[string]*updRow, priorKeys map[string][]rowKey) (map[string][]rowKey, error) {
	out := make(map[string][]rowKey, len(rows))
	type job struct {
		r *updRow
		i int
	}
	var jobs []job
	for ri := range rows {
		r := &rows[ri]
		out[r.id] = make([]rowKey, len(u.up.Keys))
		for i, k := range u.up.Keys {
			if u.skip[i] {
				continue
			}
			if pr, ok := prior[r.id]; ok && (k.Fresh || sameKey(pr.keys[i], r.keys[i])) {
				out[r.id][i] = priorKeys[r.id][i]
				continue
			}
			jobs = append(jobs, job{r: r, i: i})
		}
	}
	err := forEach(len(jobs), u.c.connector.kmsConcurrency, func(n int) error {
		j := jobs[n]
		rk, err := u.keyRow(j.r, j.i)
		out[j.r.id][j.i] = rk
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// keyRow mints a fresh key for a row, or unwraps its own.
func (u *updateKeyer) keyRow(r *updRow, i int) (rowKey, error) {
	k := u.up.Keys[i]
	if !k.Fresh && r.keys[i] == nil && r.others[i] {
		return rowKey{}, u.halfEncrypted(r, k.Key)
	}
	if k.Fresh || r.keys[i] == nil {
		return u.c.mint(u.ctx, u.ti, k.Key, r.pk)
	}
	rk, err := u.c.openKey(u.ctx, u.ti, k.Key, r.pk, *r.keys[i])
	if errors.Is(err, ErrPermission) {
		err = fmt.Errorf("%w (this UPDATE keeps the row's data key because it does not set every column under key %s; an encrypt-only server must set them all, so that the driver can mint a new key)", err, u.ti.table.Keys[k.Key].Name)
	}
	return rk, err
}

// slots fills the per-row arrays: ctids and tableoids, sealed cells,
// wrapped keys.
func (u *updateKeyer) slots(locked []updRow, keys map[string][]rowKey) ([]any, error) {
	up, ti := u.up, u.ti
	slots := make([]any, up.Slots)
	ctids := make([]string, len(locked))
	toids := make([]string, len(locked))
	for i, r := range locked {
		ctids[i], toids[i] = r.ctid, r.toid
	}
	slots[up.CtidSlot], slots[up.TableoidSlot] = ctids, toids
	keyIndex := map[int]int{}
	for i, k := range up.Keys {
		keyIndex[k.Key] = i
	}
	for ci, cell := range up.Cells {
		bytea := ti.table.Encrypted[cell.Column].Bytea
		texts := make([]*string, len(locked))
		raws := make([][]byte, len(locked))
		for ri, r := range locked {
			rk := keys[r.id][keyIndex[cell.Key]]
			if u.vals[ci] == nil || rk.ck == nil {
				continue
			}
			v, err := seal(ti, cell.Column, rk.ck, u.vals[ci])
			if err != nil {
				return nil, err
			}
			if bytea {
				raws[ri] = v.([]byte)
			} else {
				s := v.(string)
				texts[ri] = &s
			}
		}
		if bytea {
			slots[cell.Slot] = raws
		} else {
			slots[cell.Slot] = texts
		}
	}
	for i, k := range up.Keys {
		col := make([]*string, len(locked))
		for ri, r := range locked {
			if rk := keys[r.id][i]; rk.ck != nil {
				w := rk.wrapped
				col[ri] = &w
			}
		}
		slots[k.Slot] = col
	}
	return slots, nil
}

// halfEncrypted refuses to key a row that has values under a key but no
// data key (a legacy row, or one written around the driver): encrypting
// only the columns this UPDATE sets would leave the others in plaintext
// beside a new key, and the row unreadable.
func (u *updateKeyer) halfEncrypted(r *updRow, k int) error {
	t := u.ti.table
	var set, rest []string
	for _, c := range u.up.Cells {
		if c.Key == k {
			set = append(set, c.Column)
		}
	}
	for _, c := range t.Keys[k].Columns {
		if !slices.Contains(set, c) {
			rest = append(rest, c)
		}
	}
	return &RefusalError{Table: t.Name, Column: set[0],
		Reason: fmt.Sprintf("the row %s has values under key %s but no data key (%s is NULL): encrypting %s alone would leave %s in plaintext beside a new key",
			pkLabel(t, r.pk), t.Keys[k].Name, t.Keys[k].Column, strings.Join(set, ", "), strings.Join(rest, ", ")),
		Fix: "set every column under key " + t.Keys[k].Name + " (" + strings.Join(t.Keys[k].Columns, ", ") + ") in the same UPDATE, so that the driver encrypts them all; kmspostgres check lists such rows"}
}

// adoptLegacy encrypts, in migrating mode, the legacy rows (values under
// a key but no data key) that an UPDATE setting only some of the columns
// under that key would otherwise refuse: each gets a fresh data key and
// every column under the key encrypted from its stored plaintext, as
// Encrypt does, in the statement's transaction and with Encrypt's
// compare-and-set, before the UPDATE keys its rows. It reports whether it
// looked at any row; one changed meanwhile stays legacy, and the UPDATE
// then refuses it.
func (u *updateKeyer) adoptLegacy(rows []updRow) (bool, error) {
	b := &backfiller{c: u.c.connector, mode: modeEncrypt, rt: u.up.Table, ti: u.ti,
		rel: pgx.Identifier{u.up.Table.Schema, u.up.Table.Relname}.Sanitize(), conn: u.c.pc,
		opts: BackfillOptions{Concurrency: u.c.connector.kmsConcurrency}}
	found := false
	for i, k := range u.up.Keys {
		var legacy [][]string
		for _, r := range rows {
			if !k.Fresh && r.keys[i] == nil && r.others[i] {
				legacy = append(legacy, r.pk)
			}
		}
		if len(legacy) == 0 {
			continue
		}
		found = true
		if err := b.adopt(u.ctx, k.Key, legacy); err != nil {
			return true, err
		}
	}
	return found, nil
}

func sameKey(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
