package kmspostgres

import (
	"context"
	"crypto/rand"
	"database/sql/driver"
	"fmt"
	"runtime"
	"slices"
	"strconv"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/rewrite"
)

// prepareInsert turns an INSERT plan into the SQL and arguments to run:
// primary keys the statement leaves out are taken, one data key per row
// and key is minted and wrapped, and every cell is sealed. Nothing is
// written if any step fails.
func (c *Conn) prepareInsert(ctx context.Context, p *rewrite.Plan, args []driver.NamedValue) (string, []driver.NamedValue, func(error) error, error) {
	if len(p.Insert.ConflictChecks) == 0 {
		gen, err := c.generatePKs(ctx, p.Insert)
		if err != nil {
			return "", nil, nil, err
		}
		q, a, _, err := c.sealRows(ctx, p, args, gen)
		return q, a, nil, err
	}
	// An upsert whose conflict a blind index decides: the rows it may
	// update are checked and locked in the same transaction first.
	finish, err := c.ensureTx(ctx)
	if err != nil {
		return "", nil, nil, err
	}
	gen, err := c.generatePKs(ctx, p.Insert)
	if err != nil {
		return "", nil, nil, finish(err)
	}
	q, a, slots, err := c.sealRows(ctx, p, args, gen)
	if err == nil {
		err = c.checkConflicts(ctx, p.Insert, args, slots)
	}
	if err != nil {
		return "", nil, nil, finish(err)
	}
	// The rows checked became known after the arguments were built.
	for i, pa := range p.Args {
		if pa.Lookup == 0 && (pa.Slot == p.Insert.CheckedCtidSlot || pa.Slot == p.Insert.CheckedTableoidSlot) {
			a[i].Value = slots[pa.Slot]
		}
	}
	return q, a, finish, nil
}

// sealRows is prepareInsert once the generated primary keys are known:
// it mints and wraps the keys, seals the cells and computes blind
// indexes. It does not use the connection, so CopyFrom runs it beside a
// COPY in flight.
func (c *Conn) sealRows(ctx context.Context, p *rewrite.Plan, args []driver.NamedValue, gen []any) (string, []driver.NamedValue, []any, error) {
	ip := p.Insert
	ti := c.connector.catalog.info(ip.Table)
	slots := make([]any, ip.Slots)
	// insertKeyJobs replaces primary-key arguments with the values their
	// contexts are built from: a copy, not the caller's slice.
	args = slices.Clone(args)
	jobs, err := insertKeyJobs(ip, args, slots, gen)
	if err != nil {
		return "", nil, nil, err
	}
	err = forEach(len(jobs), c.connector.kmsConcurrency, func(i int) error {
		j := jobs[i]
		var err error
		j.out, err = c.mint(ctx, ti, j.key, j.pk)
		return err
	})
	if err != nil {
		return "", nil, nil, err
	}
	if err := sealInsert(ti, ip, args, slots, jobs); err != nil {
		return "", nil, nil, err
	}
	c.sealedInsert(ctx, ip, slots)
	for _, row := range ip.Rows {
		if err := c.connector.indexCells(ip.Table, row.Indexes, false, args, slots); err != nil {
			return "", nil, nil, err
		}
		if err := c.connector.indexCells(ip.Table, row.Rotations, true, args, slots); err != nil {
			return "", nil, nil, err
		}
	}
	lk, err := c.planLookups(ctx, p, args)
	if err != nil {
		return "", nil, nil, err
	}
	a, err := planArgs(p.Args, args, slots, lk)
	return p.SQL, a, slots, err
}

// generatePKs makes the primary keys the statement leaves to the driver:
// uuids, or ids taken from the sequence in blocks.
func (c *Conn) generatePKs(ctx context.Context, ip *rewrite.Insert) ([]any, error) {
	need := 0
	for _, row := range ip.Rows {
		for _, s := range row.PKSlot {
			if s >= 0 {
				need++
			}
		}
	}
	if need == 0 {
		return nil, nil
	}
	gen := make([]any, 0, need)
	if ip.Table.PKGen == rewrite.PKUUID {
		for range need {
			var b [16]byte
			if _, err := rand.Read(b[:]); err != nil {
				return nil, err
			}
			b[6] = b[6]&0x0f | 0x40 // version 4
			b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
			s, _ := envelope.UUID.Decode(b[:])
			gen = append(gen, s)
		}
		return gen, nil
	}
	if ip.Table.Sequence == "" {
		return nil, fmt.Errorf("kmspostgres: %s: no sequence found for the primary key", ip.Table.Name)
	}
	ids, err := c.connector.ids.take(ctx, c.pc, ip.Table.Sequence, need)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		gen = append(gen, id)
	}
	return gen, nil
}

// pkArg is the argument that makes PostgreSQL store a primary key's
// context text: an int64 for integer columns, the text otherwise.
func pkArg(text, typ string) any {
	switch typ {
	case "smallint", "integer", "bigint":
		if i, err := strconv.ParseInt(text, 10, 64); err == nil {
			return i
		}
	}
	return text
}

// insertKey is one data key an INSERT mints: for a row and a key.
type insertKey struct {
	row, key int
	pk       []string
	out      rowKey
}

// insertKeyJobs renders each row's primary key (placing generated ones in
// their slots) and lists the data keys to mint: one per row and key that
// has a non-NULL value to encrypt.
func insertKeyJobs(ip *rewrite.Insert, args []driver.NamedValue, slots, gen []any) ([]*insertKey, error) {
	var jobs []*insertKey
	for ri, row := range ip.Rows {
		pk := make([]string, len(row.PK))
		for pi, val := range row.PK {
			if s := row.PKSlot[pi]; s >= 0 {
				slots[s], gen = gen[0], gen[1:]
				pk[pi], _ = pkText(slots[s], ip.Table.PKTypes[pi])
				continue
			}
			v, err := valueOf(val, args)
			if err != nil {
				return nil, err
			}
			col := ip.Table.PrimaryKey[pi]
			if v == nil {
				return nil, fmt.Errorf("kmspostgres: %s.%s: the primary key is NULL; it is part of the encryption context", ip.Table.Name, col)
			}
			if pk[pi], err = pkText(v, ip.Table.PKTypes[pi]); err != nil {
				return nil, &CellError{Table: ip.Table.Name, Column: col, Err: err}
			}
			if err := pkFits(pk[pi], ip.Table.PKTypes[pi]); err != nil {
				return nil, &CellError{Table: ip.Table.Name, Column: col, Err: err}
			}
			if val.Kind == rewrite.ValParam {
				// PostgreSQL must store what the context says: pgx would
				// encode the argument its own way ([]byte into a uuid as
				// binary, a pgx TextValuer before driver.Valuer), so it
				// gets the value the context was rendered from.
				args[val.Param].Value = pkArg(pk[pi], ip.Table.PKTypes[pi])
			}
		}
		for k, ks := range row.KeySlot {
			if ks < 0 {
				continue
			}
			nonNull := false
			for _, cell := range row.Cells {
				if cell.Key == k {
					v, err := valueOf(cell.Value, args)
					if err != nil {
						return nil, err
					}
					nonNull = nonNull || v != nil
				}
			}
			if nonNull {
				jobs = append(jobs, &insertKey{row: ri, key: k, pk: pk})
			}
		}
	}
	return jobs, nil
}

// sealInsert places the wrapped keys and sealed cells in their slots.
// Rows write disjoint slots: from parallelOpen rows on, two goroutines
// seal half each (AES-GCM is CPU work; a COPY chunk is hundreds of rows).
func sealInsert(ti *tableInfo, ip *rewrite.Insert, args []driver.NamedValue, slots []any, jobs []*insertKey) error {
	keys := make(map[[2]int]rowKey, len(jobs))
	for _, j := range jobs {
		keys[[2]int{j.row, j.key}] = j.out
		slots[ip.Rows[j.row].KeySlot[j.key]] = j.out.wrapped
	}
	sealRange := func(lo, hi int) error {
		for ri := lo; ri < hi; ri++ {
			for _, cell := range ip.Rows[ri].Cells {
				v, _ := valueOf(cell.Value, args)
				rk, ok := keys[[2]int{ri, cell.Key}]
				if v == nil || !ok {
					slots[cell.Slot] = nil
					continue
				}
				var err error
				if slots[cell.Slot], err = seal(ti, cell.Column, rk.ck, v); err != nil {
					return err
				}
			}
		}
		return nil
	}
	n := len(ip.Rows)
	if n < parallelOpen || runtime.GOMAXPROCS(0) < 2 {
		return sealRange(0, n)
	}
	errc := make(chan error, 1)
	go func() { errc <- sealRange(n/2, n) }()
	first := sealRange(0, n/2)
	if second := <-errc; first == nil {
		return second
	}
	return first
}
