package kmspostgres

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/rewrite"
)

// BackfillOptions tunes Encrypt, Decrypt and Reencrypt.
type BackfillOptions struct {
	// BatchSize is how many rows are read, keyed and written per round
	// (default 500). Each round's write is one UPDATE statement.
	BatchSize int
	// Concurrency bounds the KMS calls in flight (default the connector's,
	// 16).
	Concurrency int
	// KMSRate caps KMS calls per second (0: no cap), so that a backfill
	// leaves the live service its share of the KMS quota.
	KMSRate float64
	// DryRun reads and counts what a run would change, without a KMS call
	// or a write. Encrypt also checks that every stored value reads as its
	// declared type.
	DryRun bool
	// Progress, when set, is called after every round (and once at the
	// start) with the counts so far. It runs on the caller's goroutine.
	Progress func(BackfillStats)
	// After resumes Reencrypt after this primary key (its values as text,
	// in primary-key order): BackfillStats.Last of an interrupted run.
	// Encrypt and Decrypt resume by themselves, since the rows they have
	// done no longer match what they look for.
	After []string
	// Writers is how many rounds are written at once, each on a
	// connection of its own (default 2); one more connection reads.
	Writers int
	// MaxFailures is how many rows may fail (a value that does not read as
	// its type, a key column that does not unwrap) before the table is
	// given up, default 100.
	MaxFailures int
}

// BackfillStats counts what Encrypt, Decrypt or Reencrypt did to one table.
// Nothing in it holds plaintext or key material.
type BackfillStats struct {
	Table string
	// Total is how many rows there were to do when the run started.
	Total int64
	// Done counts rows written (with DryRun: rows that would be).
	Done int64
	// Changed counts rows another writer changed between this run's read
	// and its write; they were left as the writer left them. Run again to
	// pick up any that still need it.
	Changed int64
	// Failed counts rows skipped; Failures holds the first
	// MaxRewrapFailures of them.
	Failed   int64
	Failures []RewrapFailure
	// KMSCalls counts wraps and unwraps made.
	KMSCalls int64
	// Last is the primary key (as text) of the last row read: where
	// BackfillOptions.After resumes Reencrypt.
	Last    []string
	Elapsed time.Duration
}

// backfillMode is what a backfill does to each row.
type backfillMode int

const (
	modeEncrypt   backfillMode = iota // plaintext beside a NULL key → a fresh key and cells
	modeDecrypt                       // key and cells → plaintext beside a NULL key
	modeReencrypt                     // key and cells → a fresh key and cells
)

func (m backfillMode) String() string {
	return [...]string{"encrypt", "decrypt", "reencrypt"}[m]
}

// Encrypt encrypts, under the current version of each key, every row of a
// table that holds values beside a NULL key column: the rows of a table
// that predates the driver (adopt it with migrating: true in the schema
// map, then Encrypt, then turn migrating off).
//
// It works online: each round reads a batch of rows in primary-key order
// without a lock, makes its KMS calls outside any transaction, and writes
// the batch in one UPDATE that changes a row only if its key column and
// every cell still hold what was read. A row another writer changed in
// between is counted in Changed and left alone: a write through the driver
// has encrypted it already. Encrypt is resumable (the rows done no longer
// match, so a second run picks up where an interrupted one stopped) and
// idempotent (on a finished table it finds nothing to do).
//
// A row whose stored value does not read as its declared type, or that
// looks like a cell beside a NULL key column (a cleared key column, not
// plaintext), is skipped and counted in Failed. A cancelled ctx stops the
// run after at most one round; what was written stays written.
func (c *Connector) Encrypt(ctx context.Context, table string, opts BackfillOptions) (BackfillStats, error) {
	return c.backfill(ctx, table, modeEncrypt, opts)
}

// Decrypt is the way back out: every row's cells are decrypted and
// written back as plaintext in their type's PostgreSQL text form (raw
// bytes for bytea), and its key column set to NULL. It works online and
// resumably like Encrypt. Readers through the driver need migrating: true
// to read the rows it has done.
func (c *Connector) Decrypt(ctx context.Context, table string, opts BackfillOptions) (BackfillStats, error) {
	return c.backfill(ctx, table, modeDecrypt, opts)
}

// Reencrypt gives every row a fresh data key and re-encrypts its cells
// under it (kms_encrypted's rotate_kms_key!), online like Encrypt. Rewrap
// is the cheap path that re-wraps data keys without touching cells. Every
// run goes over the whole table; resume an interrupted one with
// BackfillOptions.After set to its BackfillStats.Last.
func (c *Connector) Reencrypt(ctx context.Context, table string, opts BackfillOptions) (BackfillStats, error) {
	return c.backfill(ctx, table, modeReencrypt, opts)
}

// backfiller runs one backfill of one table.
type backfiller struct {
	c      *Connector
	mode   backfillMode
	opts   BackfillOptions
	conn   *pgx.Conn   // reads
	wconns []*pgx.Conn // writes
	free   chan *pgx.Conn
	rt     *rewrite.Table
	ti     *tableInfo
	rel    string
	limit  *rateLimit
	stats  BackfillStats
	start  time.Time
	kms    atomic.Int64
}

func (c *Connector) backfill(ctx context.Context, table string, mode backfillMode, opts BackfillOptions) (BackfillStats, error) {
	b := &backfiller{c: c, mode: mode, opts: opts, start: time.Now()}
	b.stats.Table = table
	if b.opts.BatchSize <= 0 {
		b.opts.BatchSize = 500
	}
	if b.opts.Concurrency <= 0 {
		b.opts.Concurrency = c.kmsConcurrency
	}
	if b.opts.MaxFailures <= 0 {
		b.opts.MaxFailures = 100
	}
	if b.opts.Writers <= 0 {
		b.opts.Writers = 2
	}
	b.limit = newRateLimit(b.opts.KMSRate)
	st := c.schema.Table(splitTable(table))
	if st == nil {
		return b.stats, fmt.Errorf("kmspostgres: %s: table %s is not in the schema map (its tables: %s)", mode, table, strings.Join(slices.Sorted(maps.Keys(c.schema.Tables)), ", "))
	}
	if len(opts.After) != 0 && len(opts.After) != len(st.PrimaryKey) {
		return b.stats, fmt.Errorf("kmspostgres: %s: table %s: After has %d values for a primary key of %d columns", mode, table, len(opts.After), len(st.PrimaryKey))
	}
	dc, err := c.Connect(ctx)
	if err != nil {
		return b.stats, err
	}
	defer dc.Close()
	b.conn = dc.(*Conn).pc
	b.free = make(chan *pgx.Conn, b.opts.Writers)
	for range b.opts.Writers {
		wc, err := c.Connect(ctx)
		if err != nil {
			return b.stats, err
		}
		defer wc.Close()
		conn := wc.(*Conn).pc
		b.wconns = append(b.wconns, conn)
		b.free <- conn
	}
	b.rt, err = boundCatalog{c: c.catalog, ctx: ctx, conn: b.conn}.Encrypted(splitTable(table))
	if err != nil {
		return b.stats, err
	}
	b.ti = c.catalog.info(b.rt)
	b.rel = pgx.Identifier{b.rt.Schema, b.rt.Relname}.Sanitize()
	err = b.run(ctx)
	b.stats.KMSCalls = b.kms.Load()
	b.stats.Elapsed = time.Since(b.start)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("kmspostgres: %s %s: interrupted after %d rows (run again to go on): %w", mode, table, b.stats.Done, ctx.Err())
	}
	return b.stats, err
}

// filter is the WHERE clause of the rows key k still has to do.
func (b *backfiller) filter(k int) string {
	kc := pgx.Identifier{b.rt.Keys[k].Column}.Sanitize()
	if b.mode != modeEncrypt {
		return kc + " IS NOT NULL"
	}
	var some []string
	for _, col := range b.rt.Keys[k].Columns {
		some = append(some, pgx.Identifier{col}.Sanitize()+" IS NOT NULL")
	}
	return kc + " IS NULL AND (" + strings.Join(some, " OR ") + ")"
}

// after is the condition (and its arguments) of the rows past the
// primary key last, "" for none.
func (b *backfiller) after(last []string) (string, []any) {
	if last == nil {
		return "", nil
	}
	var cols, params []string
	var args []any
	for i, p := range b.rt.PrimaryKey {
		cols = append(cols, pgx.Identifier{p}.Sanitize())
		params = append(params, "$"+strconv.Itoa(i+1)+"::"+b.rt.PKTypes[i])
		args = append(args, last[i])
	}
	return " AND (" + strings.Join(cols, ", ") + ") > (" + strings.Join(params, ", ") + ")", args
}

func (b *backfiller) run(ctx context.Context) error {
	for k := range b.rt.Keys {
		var n int64
		cond, args := b.after(b.opts.After)
		if err := b.conn.QueryRow(ctx, "SELECT count(*) FROM "+b.rel+" WHERE "+b.filter(k)+cond, args...).Scan(&n); err != nil {
			return fmt.Errorf("kmspostgres: %s %s: counting rows: %w", b.mode, b.rt.Name, err)
		}
		b.stats.Total += n
	}
	b.progress()
	// A row changed between a round's read and its write is left to the
	// writer. Encrypt and Decrypt go over the table again (at most
	// maxPasses times) for those that still need it: a writer around the
	// driver may have left one in plaintext, and Decrypt races the
	// driver's own writes.
	for pass := 1; ; pass++ {
		changed := b.stats.Changed
		for k := range b.rt.Keys {
			if err := b.runKey(ctx, k, b.opts.After); err != nil {
				return err
			}
		}
		if b.mode == modeReencrypt || b.opts.DryRun || b.stats.Changed == changed || pass == maxPasses {
			return nil
		}
	}
}

// maxPasses bounds the passes of Encrypt and Decrypt over a table.
const maxPasses = 3

func (b *backfiller) progress() {
	if b.opts.Progress == nil {
		return
	}
	s := b.stats
	s.KMSCalls = b.kms.Load()
	s.Elapsed = time.Since(b.start)
	s.Failures = nil
	b.opts.Progress(s)
}

// bfRow is one row of a round: what was read, and what to write.
type bfRow struct {
	pk     []string
	oldKey *string
	old    []any // per column of the key: string, []byte or nil, as stored
	newKey *string
	new    []any
	ck     *envelope.CellKey // Decrypt, Reencrypt: the row's unwrapped data key
	err    error             // a failure of this row only
}

// runKey does the rows of one key, round after round.
func (b *backfiller) runKey(ctx context.Context, k int, last []string) error {
	rk := b.rt.Keys[k]
	var pkCols, pkText []string
	for i, p := range b.rt.PrimaryKey {
		id := pgx.Identifier{p}.Sanitize()
		pkCols = append(pkCols, id)
		// Aliased: ORDER BY "id" would otherwise sort the text output.
		pkText = append(pkText, id+"::text AS __kmspg_pk"+strconv.Itoa(i))
	}
	sel := []string{pgx.Identifier{rk.Column}.Sanitize()}
	for _, col := range rk.Columns {
		sel = append(sel, pgx.Identifier{col}.Sanitize())
	}
	// A reader reads and keys the next round while this goroutine writes
	// the current one, on a connection of its own.
	ctx, cancel := context.WithCancel(ctx)
	rounds := make(chan round, 1)
	go func() {
		defer close(rounds)
		for {
			cond, args := b.after(last)
			q := "SELECT " + strings.Join(pkText, ", ") + ", " + strings.Join(sel, ", ") + " FROM " + b.rel + " WHERE " + b.filter(k) + cond
			q += " ORDER BY " + strings.Join(pkCols, ", ") + " LIMIT " + strconv.Itoa(b.opts.BatchSize)
			batch, err := b.read(ctx, q, args, len(rk.Columns))
			if err == nil && len(batch) == 0 {
				return
			}
			if err == nil {
				last = batch[len(batch)-1].pk
				err = b.key(ctx, k, batch)
			}
			select {
			case rounds <- round{batch: batch, err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		cancel()
		for range rounds { // wait for the reader: the connection is reused
		}
	}()
	// Up to Writers rounds are written at once, each on a connection of
	// its own, and accounted for in order, so that Last is always a row
	// before which every round is written.
	var inflight []*pendingWrite
	settle := func() error { // waits for the oldest write
		w := inflight[0]
		inflight = inflight[1:]
		<-w.done
		if w.err != nil {
			return w.err
		}
		b.stats.Done += w.n
		b.stats.Changed += w.sent - w.n
		b.stats.Last = w.last
		b.progress()
		return nil
	}
	settleAll := func(err error) error {
		for len(inflight) > 0 {
			if e := settle(); e != nil && err == nil {
				err = e
			}
		}
		return err
	}
	for r := range rounds {
		if r.err != nil {
			return settleAll(r.err)
		}
		var ok []*bfRow
		for _, row := range r.batch {
			if row.err == nil {
				ok = append(ok, row)
				continue
			}
			b.stats.Failed++
			if len(b.stats.Failures) < MaxRewrapFailures {
				b.stats.Failures = append(b.stats.Failures, RewrapFailure{Key: rk.Name, PK: pkLabel(b.rt, row.pk), Err: row.err})
			}
		}
		if len(inflight) == len(b.wconns) {
			if err := settle(); err != nil {
				return settleAll(err)
			}
		}
		w := &pendingWrite{done: make(chan struct{}), sent: int64(len(ok)), last: r.batch[len(r.batch)-1].pk}
		inflight = append(inflight, w)
		if b.opts.DryRun || len(ok) == 0 {
			w.n = w.sent
			close(w.done)
		} else {
			go func() {
				defer close(w.done)
				conn := <-b.free
				defer func() { b.free <- conn }()
				// Not cancelled with ctx: an interrupted run finishes the
				// rounds it is writing (one short statement each), so that
				// what it reports written is exactly what is.
				w.n, w.err = b.write(context.WithoutCancel(ctx), conn, k, ok)
			}()
		}
		if b.stats.Failed > int64(b.opts.MaxFailures) {
			return settleAll(fmt.Errorf("kmspostgres: %s %s: gave up after %d rows failed; if they all fail alike, check the schema map (key ids, contexts, column types)", b.mode, b.rt.Name, b.stats.Failed))
		}
	}
	// The reader stops early only when ctx is done.
	return settleAll(ctx.Err())
}

// pendingWrite is a round being written.
type pendingWrite struct {
	done    chan struct{}
	sent, n int64    // rows sent, rows written
	last    []string // the round's last primary key
	err     error
}

// round is one batch the reader has read and keyed.
type round struct {
	batch []*bfRow
	err   error
}

// adopt encrypts the given rows (primary keys as text) of key k if they
// are still legacy rows: one round of Encrypt on b.conn, in whatever
// transaction it is in. A row that fails to encrypt fails the call.
func (b *backfiller) adopt(ctx context.Context, k int, pks [][]string) error {
	rk := b.rt.Keys[k]
	sel := []string{pgx.Identifier{rk.Column}.Sanitize()}
	for _, col := range rk.Columns {
		sel = append(sel, pgx.Identifier{col}.Sanitize())
	}
	var pkText, pkCols, unnest, casts []string
	var args []any
	for i, p := range b.rt.PrimaryKey {
		id := pgx.Identifier{p}.Sanitize()
		pkCols = append(pkCols, id)
		pkText = append(pkText, id+"::text AS __kmspg_pk"+strconv.Itoa(i))
		unnest = append(unnest, "$"+strconv.Itoa(i+1)+"::text[]")
		casts = append(casts, "u.v"+strconv.Itoa(i)+"::"+b.rt.PKTypes[i])
		vals := make([]string, len(pks))
		for j, pk := range pks {
			vals[j] = pk[i]
		}
		args = append(args, vals)
	}
	names := make([]string, len(b.rt.PrimaryKey))
	for i := range names {
		names[i] = "v" + strconv.Itoa(i)
	}
	q := "SELECT " + strings.Join(pkText, ", ") + ", " + strings.Join(sel, ", ") + " FROM " + b.rel + " WHERE " + b.filter(k) +
		" AND (" + strings.Join(pkCols, ", ") + ") IN (SELECT " + strings.Join(casts, ", ") + " FROM unnest(" + strings.Join(unnest, ", ") + ") AS u(" + strings.Join(names, ", ") + "))"
	batch, err := b.read(ctx, q, args, len(rk.Columns))
	if err != nil || len(batch) == 0 {
		return err
	}
	if err := b.key(ctx, k, batch); err != nil {
		return err
	}
	for _, r := range batch {
		if r.err != nil {
			return r.err
		}
	}
	_, err = b.write(ctx, b.conn, k, batch)
	return err
}

// read runs one round's SELECT.
func (b *backfiller) read(ctx context.Context, q string, args []any, ncols int) ([]*bfRow, error) {
	rows, err := b.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("kmspostgres: %s %s: %w", b.mode, b.rt.Name, err)
	}
	npk := len(b.rt.PrimaryKey)
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*bfRow, error) {
		r := &bfRow{pk: make([]string, npk), old: make([]any, ncols)}
		dest := make([]any, 0, npk+1+ncols)
		for i := range r.pk {
			dest = append(dest, &r.pk[i])
		}
		dest = append(dest, &r.oldKey)
		for i := range r.old {
			dest = append(dest, &r.old[i])
		}
		return r, row.Scan(dest...)
	})
	if err != nil {
		return nil, fmt.Errorf("kmspostgres: %s %s: %w", b.mode, b.rt.Name, err)
	}
	return out, nil
}

// key does the KMS work and the cell work of a round, outside any
// transaction: per row, at most Concurrency at once.
func (b *backfiller) key(ctx context.Context, k int, batch []*bfRow) error {
	cols := b.rt.Keys[k].Columns
	if b.mode != modeEncrypt && !b.opts.DryRun {
		if err := b.unwrap(ctx, k, batch); err != nil {
			return err
		}
	}
	if b.opts.DryRun && b.mode != modeEncrypt {
		return nil
	}
	return forEach(len(batch), b.opts.Concurrency, func(i int) error {
		r := batch[i]
		if r.err != nil {
			return nil
		}
		pts := make([][]byte, len(cols)) // nil: NULL
		for j, col := range cols {
			if r.old[j] == nil {
				continue
			}
			var err error
			if b.mode == modeEncrypt {
				pts[j], err = legacyPlaintext(b.ti, col, b.rt.Keys[k].Column, r.old[j])
			} else {
				pts[j], err = b.open(r, col, r.old[j])
			}
			if err != nil {
				r.err = cellError(b.ti, col, r.pk, err)
				return nil
			}
		}
		if b.opts.DryRun {
			return nil
		}
		r.new = make([]any, len(cols))
		if b.mode == modeDecrypt {
			for j, col := range cols {
				if pts[j] == nil {
					continue
				}
				v, err := plainStored(b.ti, col, pts[j])
				if err != nil {
					r.err = cellError(b.ti, col, r.pk, err)
					return nil
				}
				r.new[j] = v
			}
			return nil
		}
		allNull := true
		for _, pt := range pts {
			allNull = allNull && pt == nil
		}
		if allNull {
			return nil // no values: no key, as the driver writes such rows
		}
		ck, wrapped, err := b.mint(ctx, k, r.pk)
		if err != nil {
			return err
		}
		r.newKey = &wrapped
		for j, col := range cols {
			if pts[j] == nil {
				continue
			}
			cell, err := ck.Seal(b.ti.aad(col), pts[j])
			if err != nil {
				return err
			}
			if b.rt.Encrypted[col].Bytea {
				r.new[j] = cell
			} else {
				r.new[j] = base64.StdEncoding.EncodeToString(cell)
			}
		}
		return nil
	})
}

// unwrap unwraps the round's data keys together (one batch request where
// the provider supports it), after waiting for the rate limit.
func (b *backfiller) unwrap(ctx context.Context, k int, batch []*bfRow) error {
	var items []*unwrapItem
	var owners []*bfRow
	for _, r := range batch {
		it, err := unwrapItemFor(b.ti, rewrite.Source{Key: k}, *r.oldKey, r.pk)
		if err != nil {
			r.err = keyColumnHint(keyError(b.ti, k, r.pk, "", err), b.rt.Name, b.rt.Keys[k].Column)
			continue
		}
		items = append(items, it)
		owners = append(owners, r)
	}
	if err := b.limit.wait(ctx, len(items)); err != nil {
		return err
	}
	b.c.keyring.openItems(ctx, items, b.opts.Concurrency)
	for i, it := range items {
		r := owners[i]
		if !it.cached {
			b.kms.Add(1)
		}
		if it.err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !rowFailure(it.err) {
				return keyError(b.ti, k, r.pk, it.keyID, it.err)
			}
			r.err = keyColumnHint(keyError(b.ti, k, r.pk, it.keyID, it.err), b.rt.Name, b.rt.Keys[k].Column)
			continue
		}
		r.ck = it.ck
	}
	return nil
}

// mint makes a fresh data key for a row and wraps it under the key's
// current version, after waiting for the rate limit.
func (b *backfiller) mint(ctx context.Context, k int, pk []string) (*envelope.CellKey, string, error) {
	key := b.ti.key(k)
	keyID, ectx, err := b.ti.entry.contextFor(key, key.Version, pk)
	if err != nil {
		return nil, "", err
	}
	dk, err := envelope.NewDataKey()
	if err != nil {
		return nil, "", err
	}
	ck, err := envelope.NewCellKey(dk)
	if err != nil {
		return nil, "", err
	}
	if err := b.limit.wait(ctx, 1); err != nil {
		return nil, "", err
	}
	b.kms.Add(1)
	w, err := b.c.keyring.wrap(ctx, keyID, key.Version, ectx, dk)
	if err != nil {
		return nil, "", keyError(b.ti, k, pk, keyID, err)
	}
	return ck, w, nil
}

// open decrypts one stored cell of a row to its plaintext bytes.
func (b *backfiller) open(r *bfRow, col string, stored any) ([]byte, error) {
	var cell []byte
	switch v := stored.(type) {
	case string:
		c, err := envelope.DecodeBase64(v)
		if err != nil {
			return nil, err
		}
		cell = c
	case []byte:
		cell = v
	default:
		return nil, fmt.Errorf("%w: stored as %T", ErrFormat, v)
	}
	return r.ck.Open(b.ti.aad(col), cell)
}

// write writes a round in one UPDATE, row by row only where the key
// column and every cell still hold what was read, and returns how many
// rows it changed.
func (b *backfiller) write(ctx context.Context, conn *pgx.Conn, k int, batch []*bfRow) (int64, error) {
	rk := b.rt.Keys[k]
	var arrays []any
	var names, types, set, where []string
	add := func(name, typ string, v any) {
		arrays = append(arrays, v)
		names = append(names, name)
		types = append(types, "$"+strconv.Itoa(len(arrays))+"::"+typ+"[]")
	}
	for i, p := range b.rt.PrimaryKey {
		vals := make([]string, len(batch))
		for ri, r := range batch {
			vals[ri] = r.pk[i]
		}
		n := "p" + strconv.Itoa(i)
		add(n, "text", vals)
		where = append(where, "t."+pgx.Identifier{p}.Sanitize()+" = v."+n+"::"+b.rt.PKTypes[i])
	}
	oldKeys := make([]*string, len(batch))
	newKeys := make([]*string, len(batch))
	for ri, r := range batch {
		oldKeys[ri], newKeys[ri] = r.oldKey, r.newKey
	}
	kc := pgx.Identifier{rk.Column}.Sanitize()
	add("ok", "text", oldKeys)
	add("nk", "text", newKeys)
	set = append(set, kc+" = v.nk")
	where = append(where, "t."+kc+" IS NOT DISTINCT FROM v.ok")
	for j, col := range rk.Columns {
		typ := "text"
		if b.rt.Encrypted[col].Bytea {
			typ = "bytea"
		}
		olds, news := columnArrays(batch, j, typ == "bytea")
		o, n := "o"+strconv.Itoa(j), "n"+strconv.Itoa(j)
		add(o, typ, olds)
		add(n, typ, news)
		id := pgx.Identifier{col}.Sanitize()
		set = append(set, id+" = v."+n)
		where = append(where, "t."+id+" IS NOT DISTINCT FROM v."+o)
	}
	q := "UPDATE " + b.rel + " AS t SET " + strings.Join(set, ", ") +
		" FROM unnest(" + strings.Join(types, ", ") + ") AS v(" + strings.Join(names, ", ") + ")" +
		" WHERE " + strings.Join(where, " AND ")
	tag, err := conn.Exec(ctx, q, arrays...)
	if err != nil {
		return 0, fmt.Errorf("kmspostgres: %s %s: writing %d rows: %w", b.mode, b.rt.Name, len(batch), err)
	}
	return tag.RowsAffected(), nil
}

// columnArrays returns the old and new values of column j of a round, as
// the array type of the column's storage.
func columnArrays(batch []*bfRow, j int, bytea bool) (any, any) {
	if bytea {
		olds, news := make([][]byte, len(batch)), make([][]byte, len(batch))
		for ri, r := range batch {
			olds[ri], _ = r.old[j].([]byte)
			news[ri], _ = r.new[j].([]byte)
		}
		return olds, news
	}
	olds, news := make([]*string, len(batch)), make([]*string, len(batch))
	for ri, r := range batch {
		if s, ok := r.old[j].(string); ok {
			olds[ri] = &s
		}
		if s, ok := r.new[j].(string); ok {
			news[ri] = &s
		}
	}
	return olds, news
}

// looksLikeCell reports whether a stored value has the shape of a cell:
// base64 text (or raw bytes) of at least a cell's overhead that starts with
// the cell format version. Beside a NULL key column such a value is not
// plaintext from before encryption but a cell whose key column was
// cleared, and is never read as plaintext.
func looksLikeCell(stored any) bool {
	var b []byte
	switch v := stored.(type) {
	case string:
		if len(v) < base64.StdEncoding.EncodedLen(envelope.CellOverhead) {
			return false
		}
		d, err := envelope.DecodeBase64(v)
		if err != nil {
			return false
		}
		b = d
	case []byte:
		b = v
	default:
		return false
	}
	return len(b) >= envelope.CellOverhead && b[0] == envelope.CellVersion1
}

// legacyPlaintext turns a value stored beside a NULL key column (plaintext
// in its type's text form, or raw bytes in a bytea column) into the
// plaintext bytes its type encodes to, refusing values shaped like cells.
// Errors never quote the value.
func legacyPlaintext(ti *tableInfo, col, keyCol string, stored any) ([]byte, error) {
	if looksLikeCell(stored) {
		return nil, fmt.Errorf("%w: the value has the shape of an encrypted cell but key column %s is NULL: the key column was cleared, this is not plaintext from before encryption; restore the key column from a backup (or, if the value really is plaintext, rewrite the row through the driver with one UPDATE that sets every column under the key)", ErrDecrypt, keyCol)
	}
	typ := ti.colType(col)
	if b, ok := stored.([]byte); ok {
		switch typ {
		case envelope.Text, envelope.Bytea, envelope.JSON, envelope.JSONB, envelope.UUID:
		default:
			stored = string(b) // the text form, in a bytea column
		}
	}
	pt, err := typ.Encode(stored)
	if err != nil {
		return nil, fmt.Errorf("%w (a value beside a NULL key column %s is read as plaintext in the text form of its type, %s)", err, keyCol, typ)
	}
	return pt, nil
}

// legacyValue reads a value stored beside a NULL key column, for a table
// in migrating mode: the typed value of its plaintext.
func legacyValue(ti *tableInfo, col, keyCol string, stored any) (any, error) {
	pt, err := legacyPlaintext(ti, col, keyCol, stored)
	if err != nil {
		return nil, err
	}
	return ti.colType(col).Decode(pt)
}

// plainStored turns plaintext bytes into what Decrypt stores: the text
// form of the value (raw bytes for a bytea plaintext in a bytea column),
// which legacyPlaintext reads back to the same bytes.
func plainStored(ti *tableInfo, col string, pt []byte) (any, error) {
	typ := ti.colType(col)
	v, err := typ.Decode(pt)
	if err != nil {
		return nil, err
	}
	bytea := ti.table.Encrypted[col].Bytea
	if typ == envelope.Bytea {
		if bytea {
			return v.([]byte), nil
		}
		return `\x` + hex.EncodeToString(v.([]byte)), nil
	}
	s, err := textForm(typ, v)
	if err != nil {
		return nil, err
	}
	if bytea {
		return []byte(s), nil
	}
	return s, nil
}

// textForm renders a decoded value in PostgreSQL's text output form for
// its type (DateStyle ISO, timestamptz in UTC), so that the column can be
// cast back to its type after Decrypt.
func textForm(typ envelope.Type, v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case []byte:
		return string(x), nil // json, jsonb
	case int64:
		return strconv.FormatInt(x, 10), nil
	case bool:
		if x {
			return "true", nil
		}
		return "false", nil
	case float64:
		switch {
		case math.IsNaN(x):
			return "NaN", nil
		case math.IsInf(x, 1):
			return "Infinity", nil
		case math.IsInf(x, -1):
			return "-Infinity", nil
		}
		bits := 64
		if typ == envelope.Real {
			bits = 32
		}
		return strconv.FormatFloat(x, 'g', -1, bits), nil
	case time.Time:
		switch typ {
		case envelope.Date:
			return x.Format("2006-01-02"), nil
		case envelope.Timestamp:
			return x.UTC().Format("2006-01-02 15:04:05.999999"), nil
		case envelope.Timestamptz:
			return x.UTC().Format("2006-01-02 15:04:05.999999-07:00"), nil
		case envelope.Time:
			if x.Day() == 2 {
				return "24:00:00", nil
			}
			return x.Format("15:04:05.999999"), nil
		}
	}
	return "", fmt.Errorf("%w: no text form for a %s value", ErrFormat, typ)
}

// rateLimit spaces calls at least 1/rate seconds apart on average.
type rateLimit struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time
}

func newRateLimit(rate float64) *rateLimit {
	if rate <= 0 {
		return nil
	}
	return &rateLimit{interval: time.Duration(float64(time.Second) / rate)}
}

// wait blocks until n more calls may be made, or ctx is done.
func (l *rateLimit) wait(ctx context.Context, n int) error {
	if l == nil || n == 0 {
		return ctx.Err()
	}
	l.mu.Lock()
	now := time.Now()
	at := l.next
	if at.Before(now) {
		at = now
	}
	l.next = at.Add(time.Duration(n) * l.interval)
	l.mu.Unlock()
	d := time.Until(at)
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// RowContext returns the master key id and encryption context under which
// the current version of a key wraps a row's data key, for a primary key
// given as text in primary-key order: what a KMS audit log records for
// the row. key "" means the table's only key.
func (c *Connector) RowContext(table, key string, pk []string) (keyID string, ctx map[string]string, err error) {
	t := c.schema.Table(splitTable(table))
	if t == nil {
		return "", nil, fmt.Errorf("kmspostgres: table %s is not in the schema map (its tables: %s)", table, strings.Join(slices.Sorted(maps.Keys(c.schema.Tables)), ", "))
	}
	if key == "" && len(t.Keys) == 1 {
		for name := range t.Keys {
			key = name
		}
	}
	k := t.Keys[key]
	if k == nil {
		return "", nil, fmt.Errorf("kmspostgres: table %s has no key %q (its keys: %s)", table, key, strings.Join(slices.Sorted(maps.Keys(t.Keys)), ", "))
	}
	if len(pk) != len(t.PrimaryKey) {
		return "", nil, fmt.Errorf("kmspostgres: table %s: %d primary-key values for its primary key (%s)", table, len(pk), strings.Join(t.PrimaryKey, ", "))
	}
	keyID, ec, err := t.contextFor(k, k.Version, pk)
	return keyID, ec, err
}
