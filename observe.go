package kmspostgres

import (
	"context"
	"errors"
	"time"

	"github.com/kmspostgres/kmspostgres/providers"
	"github.com/kmspostgres/kmspostgres/rewrite"
)

// The driver's own events, beside the KMS calls' providers.Event: an
// Observer given to WithObserver may also implement CellObserver,
// RefusalObserver and HaltObserver (packages kmsslog and kmsotel do).
// Like Observe, their methods run synchronously on the statement's
// goroutine and must be quick and safe for concurrent use. No event
// carries plaintext, ciphertext or key material.

// CellOp says whether cells were encrypted or decrypted.
type CellOp string

// The values of CellOp.
const (
	CellsEncrypted CellOp = "encrypt"
	CellsDecrypted CellOp = "decrypt"
)

// CellObserver counts cells: ObserveCells reports n non-NULL cells of
// table (as named in the schema map) sealed for one INSERT or UPDATE, or
// opened for one window of a result set.
type CellObserver interface {
	ObserveCells(ctx context.Context, table string, op CellOp, n int)
}

// RefusalReason is a small, fixed set of reasons, for metric attributes.
type RefusalReason string

// The values of RefusalReason.
const (
	// RefusedUnsupported: a statement the driver refuses (ErrUnsupported);
	// Table and Column name the column when the refusal is about one.
	RefusedUnsupported RefusalReason = "unsupported"
	// RefusedHalted: a read refused while decryption is halted by
	// HaltDecryption.
	RefusedHalted RefusalReason = "decrypt_halted"
	// RefusedHaltFile: a read refused while the halt file exists.
	RefusedHaltFile RefusalReason = "halt_file"
	// RefusedDecryptLimit: a read refused by the decrypt-rate breaker,
	// the one that tripped it and those while it is open.
	RefusedDecryptLimit RefusalReason = "decrypt_limit"
)

// Refusal is a statement or read the driver refused.
type Refusal struct {
	Reason RefusalReason
	Table  string // the table concerned, when known
	Column string // the column concerned, when known
	Err    error  // the error returned to the application
}

// RefusalObserver is told of every refused statement and read.
type RefusalObserver interface {
	ObserveRefusal(ctx context.Context, r Refusal)
}

// HaltSource says what halted decryption.
type HaltSource string

// The values of HaltSource.
const (
	HaltManual HaltSource = "manual" // (*Connector).HaltDecryption
	HaltFile   HaltSource = "file"   // the halt file (WithHaltFile)
	HaltLimit  HaltSource = "limit"  // the decrypt-rate breaker (WithDecryptLimit)
)

// HaltEvent reports that decryption halted (Halted) or resumed on a
// connector.
type HaltEvent struct {
	Halted bool
	Source HaltSource // what halted it (for a resume: what had halted it)
	Reason string
	Until  time.Time // a breaker's cool-down end; zero: until resumed
}

// HaltObserver is told when decryption halts and resumes.
type HaltObserver interface {
	ObserveHalt(HaltEvent)
}

// events dispatches the driver's own events to the observers that want
// them.
type events struct {
	cells    []CellObserver
	refusals []RefusalObserver
	halts    []HaltObserver
}

func newEvents(obs []providers.Observer) *events {
	e := &events{}
	for _, o := range obs {
		if x, ok := o.(CellObserver); ok {
			e.cells = append(e.cells, x)
		}
		if x, ok := o.(RefusalObserver); ok {
			e.refusals = append(e.refusals, x)
		}
		if x, ok := o.(HaltObserver); ok {
			e.halts = append(e.halts, x)
		}
	}
	return e
}

func (e *events) cellsDone(ctx context.Context, table string, op CellOp, n int) {
	if n == 0 {
		return
	}
	for _, o := range e.cells {
		o.ObserveCells(ctx, table, op, n)
	}
}

func (e *events) refusal(ctx context.Context, r Refusal) {
	for _, o := range e.refusals {
		o.ObserveRefusal(ctx, r)
	}
}

// refused reports a statement refusal, if err is one, and returns err.
func (e *events) refused(ctx context.Context, err error) error {
	if len(e.refusals) == 0 || !errors.Is(err, ErrUnsupported) {
		return err
	}
	r := Refusal{Reason: RefusedUnsupported, Err: err}
	var re *rewrite.RefusalError
	if errors.As(err, &re) {
		r.Table, r.Column = re.Table, re.Column
	}
	e.refusal(ctx, r)
	return err
}

func (e *events) halt(h HaltEvent) {
	for _, o := range e.halts {
		o.ObserveHalt(h)
	}
}

// plan reports refusals of the statements it plans; planStatement
// (plan.go) does the work.
func (c *Conn) plan(ctx context.Context, query string) (*rewrite.Plan, error) {
	p, err := c.planStatement(ctx, query)
	if err != nil {
		c.connector.events.refused(ctx, err)
	}
	return p, err
}

// openedCells reports the cells a window of rows opened, per table.
func (r *rows) openedCells() {
	ev := r.c.connector.events
	if len(ev.cells) == 0 {
		return
	}
	n := make([]int, len(r.out.Sources))
	for _, row := range r.buf {
		for i, oc := range r.out.Cols {
			if oc.Table != nil && row[i] != nil {
				n[oc.Source]++
			}
		}
	}
	for si, s := range r.out.Sources {
		ev.cellsDone(r.ctx, s.Table.Name, CellsDecrypted, n[si])
	}
}

// sealedInsert reports the cells an INSERT sealed.
func (c *Conn) sealedInsert(ctx context.Context, ip *rewrite.Insert, slots []any) {
	if len(c.connector.events.cells) == 0 {
		return
	}
	n := 0
	for _, row := range ip.Rows {
		for _, cell := range row.Cells {
			if slots[cell.Slot] != nil {
				n++
			}
		}
	}
	c.connector.events.cellsDone(ctx, ip.Table.Name, CellsEncrypted, n)
}

// sealedUpdate reports the cells an UPDATE sealed: its cell slots hold
// one array per column, an element per row.
func (c *Conn) sealedUpdate(ctx context.Context, up *rewrite.Update, slots []any) {
	if len(c.connector.events.cells) == 0 {
		return
	}
	n := 0
	for _, cell := range up.Cells {
		switch v := slots[cell.Slot].(type) {
		case []*string:
			for _, s := range v {
				if s != nil {
					n++
				}
			}
		case [][]byte:
			for _, b := range v {
				if b != nil {
					n++
				}
			}
		}
	}
	c.connector.events.cellsDone(ctx, up.Table.Name, CellsEncrypted, n)
}

// KeyCacheStats is what a connector's data-key cache did so far.
type KeyCacheStats struct {
	Hits      int64 // data keys served from the cache
	Misses    int64 // data keys the cache had to have unwrapped
	Evictions int64 // keys dropped: expired, used up, least recently used, or purged by a halt
	Keys      int   // keys held now
}

// KeyCacheStats reports the connector's data-key cache counters (all zero
// without a cache), for metrics that are read rather than pushed
// (kmsotel's ObserveConnector).
func (c *Connector) KeyCacheStats() KeyCacheStats {
	kc := c.keyring.cache
	if kc == nil {
		return KeyCacheStats{}
	}
	s := kc.Stats()
	return KeyCacheStats{Hits: s.Hits, Misses: s.Misses, Evictions: s.Evictions, Keys: kc.Len()}
}
