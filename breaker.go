package kmspostgres

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// DecryptLimit is the decrypt-rate breaker of a connector
// (WithDecryptLimit): "someone is dumping the users table", caught in the
// process. A row counts once per encrypted table it reads from whose key
// column is not NULL (a row of a join of two encrypted tables counts for
// both). When a window of rows would take a count over its limit, the
// breaker trips: that read fails with ErrDecryptHalted, and so does every
// read of an encrypted column on the connector until ResumeDecryption or,
// if CoolDown is set, until the cool-down is over. Writes keep working.
type DecryptLimit struct {
	// Rows bounds the rows decrypted per Per, all tables together; 0: no
	// overall limit.
	Rows int
	// Tables bounds the rows decrypted per Per of single tables, named as
	// in the schema map.
	Tables map[string]int
	// Per is the interval the limits apply to, as a sliding window.
	Per time.Duration
	// CoolDown, if set, resumes decryption this long after the breaker
	// tripped; zero keeps it halted until ResumeDecryption.
	CoolDown time.Duration
}

// breaker counts decrypted rows in a sliding window: the count of the
// previous interval, weighted by how much of it the window still covers,
// plus the current interval's.
type breaker struct {
	lim DecryptLimit

	mu         sync.Mutex
	start      time.Time // start of the current interval
	cur, prev  map[string]int
	curN, prvN int
}

func newBreaker(l DecryptLimit, s *Schema) (*breaker, error) {
	if l.Rows == 0 && len(l.Tables) == 0 {
		return nil, nil
	}
	if l.Per <= 0 || l.Rows < 0 || l.CoolDown < 0 {
		return nil, fmt.Errorf("kmspostgres: WithDecryptLimit: Per must be positive and Rows and CoolDown not negative (Per %v, Rows %d, CoolDown %v)", l.Per, l.Rows, l.CoolDown)
	}
	for _, t := range slices.Sorted(maps.Keys(l.Tables)) {
		if _, ok := s.Tables[t]; !ok {
			return nil, fmt.Errorf("%w: WithDecryptLimit: table %q is not in the schema map (tables are named as there)", ErrSchema, t)
		}
		if l.Tables[t] <= 0 {
			return nil, fmt.Errorf("kmspostgres: WithDecryptLimit: table %s: the limit must be positive, not %d", t, l.Tables[t])
		}
	}
	l.Tables = maps.Clone(l.Tables)
	return &breaker{lim: l, cur: map[string]int{}, prev: map[string]int{}}, nil
}

// reset forgets every count.
func (b *breaker) reset() {
	b.mu.Lock()
	b.start, b.curN, b.prvN = time.Time{}, 0, 0
	clear(b.cur)
	clear(b.prev)
	b.mu.Unlock()
}

// advance moves the window to now. The caller holds b.mu.
func (b *breaker) advance(now time.Time) float64 {
	per := b.lim.Per
	switch el := now.Sub(b.start); {
	case b.start.IsZero() || el >= 2*per:
		b.start, b.curN, b.prvN = now, 0, 0
		clear(b.cur)
		clear(b.prev)
	case el >= per:
		b.start = b.start.Add(per)
		b.prev, b.cur = b.cur, b.prev
		clear(b.cur)
		b.prvN, b.curN = b.curN, 0
	}
	return 1 - float64(now.Sub(b.start))/float64(per) // weight of the previous interval
}

// admit counts rows decrypted per table, or, if that would take a count
// over its limit, counts nothing and returns why. The caller holds h.mu, so
// that no read is admitted once the breaker tripped.
func (b *breaker) admit(now time.Time, rows []tableRows) (why, table string, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	w := b.advance(now)
	total := 0
	for _, tr := range rows {
		t, n := tr.table, tr.n
		total += n
		lim, ok := b.lim.Tables[t]
		if !ok {
			continue
		}
		if used := int(float64(b.prev[t])*w) + b.cur[t]; used+n > lim {
			return fmt.Sprintf("table %s: %d rows decrypted in %v would exceed the limit of %d", t, used+n, b.lim.Per, lim), t, false
		}
	}
	if b.lim.Rows > 0 {
		if used := int(float64(b.prvN)*w) + b.curN; used+total > b.lim.Rows {
			return fmt.Sprintf("%d rows decrypted in %v would exceed the limit of %d", used+total, b.lim.Per, b.lim.Rows), "", false
		}
	}
	for _, tr := range rows {
		b.cur[tr.table] += tr.n
	}
	b.curN += total
	return "", "", true
}

// admitWindow is the gate of a window of rows before its keys are
// unwrapped: it refuses it while decryption is halted, and counts its rows
// against the breaker, which it trips when they would exceed a limit.
func (c *Connector) admitWindow(ctx context.Context, w *windowKeys) error {
	h := c.halt
	if err := h.check(); err != nil {
		c.refuseRead(ctx, "", err)
		return err
	}
	if c.breaker == nil {
		return nil
	}
	rows := windowRows(w)
	if len(rows) == 0 {
		return nil
	}
	h.mu.Lock()
	if h.state.Load() != nil {
		h.mu.Unlock()
		err := h.current()
		c.refuseRead(ctx, "", err)
		return err
	}
	now := time.Now()
	why, table, ok := c.breaker.admit(now, rows)
	if ok {
		h.mu.Unlock()
		return nil
	}
	s := &haltState{source: HaltLimit, reason: "decrypt-rate breaker tripped: " + why}
	if d := c.breaker.lim.CoolDown; d > 0 {
		s.until = now.Add(d)
	}
	h.setLocked(s)
	h.mu.Unlock()
	err := h.current()
	c.refuseRead(ctx, table, err)
	return err
}

// refuseRead reports a read refused while decryption is halted.
func (c *Connector) refuseRead(ctx context.Context, table string, err error) {
	r := Refusal{Reason: RefusedHalted, Table: table, Err: err}
	if s := c.halt.state.Load(); s != nil {
		r.Reason = refusalReason(s.source)
	}
	c.events.refusal(ctx, r)
}

// tableRows is how many rows of a window one table's key decrypts.
type tableRows struct {
	table string
	n     int
}

// windowRows counts the rows of a window per table, those whose key
// column is not NULL; a table read twice (a self-join) counts twice.
func windowRows(w *windowKeys) []tableRows {
	var out []tableRows
	for si, ti := range w.infos {
		n := 0
		for _, ids := range w.ids {
			if ids[si] != (rowKeyID{}) {
				n++
			}
		}
		if n == 0 {
			continue
		}
		name := ti.table.Name
		if i := slices.IndexFunc(out, func(tr tableRows) bool { return tr.table == name }); i >= 0 {
			out[i].n += n
		} else {
			out = append(out, tableRows{name, n})
		}
	}
	return out
}
