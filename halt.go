package kmspostgres

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// HaltFileEnv names the environment variable that gives the halt file's
// path when WithHaltFile is not used.
const HaltFileEnv = "KMSPOSTGRES_HALT_FILE"

// haltFilePoll is how often, at most, the halt file is looked for.
const haltFilePoll = time.Second

// halt is a connector's kill switch. Decryption is halted by the
// application (HaltDecryption), by the presence of a file, or by the
// decrypt-rate breaker; while it is, every unwrap of the connector fails
// with ErrDecryptHalted, and so does every read of an encrypted column.
// Wraps are never refused, so writes keep working.
type halt struct {
	state atomic.Pointer[haltState] // nil: decryption allowed
	mu    sync.Mutex                // serializes changes of state

	file     string       // "" when there is no halt file
	nextStat atomic.Int64 // unix nanoseconds before which the file is not looked for

	events *events
	// onResume runs on every resume (the breaker's counts start over).
	onResume func()
	// purge runs on every halt: the data-key cache drops (and zeroes)
	// every key it holds, so that a halt stops decryption from cached keys
	// at once. Nil without a cache.
	purge func()
}

type haltState struct {
	source HaltSource
	reason string
	until  time.Time // end of a breaker's cool-down; zero: until resumed
	err    error
}

func newHalt(file string, ev *events) *halt {
	return &halt{file: file, events: ev}
}

// setLocked halts decryption unless a halt is in force already (the
// first cause stays, so that lifting it lifts the halt). The caller holds
// h.mu.
func (h *halt) setLocked(s *haltState) {
	if h.state.Load() != nil {
		return
	}
	s.err = fmt.Errorf("%w (%s): %s", ErrDecryptHalted, s.source, s.reason)
	h.state.Store(s)
	if h.purge != nil {
		h.purge()
	}
	h.events.halt(HaltEvent{Halted: true, Source: s.source, Reason: s.reason, Until: s.until})
}

func (h *halt) set(s *haltState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.setLocked(s)
}

// resume lifts the halt in force if it is old (nil: whatever halt is in
// force), and reports whether it did.
func (h *halt) resume(old *haltState) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	cur := h.state.Load()
	if cur == nil || (old != nil && cur != old) {
		return false
	}
	h.state.Store(nil)
	h.nextStat.Store(0) // look for the halt file at the next check
	if h.onResume != nil {
		h.onResume()
	}
	h.events.halt(HaltEvent{Halted: false, Source: cur.source, Reason: cur.reason})
	return true
}

// check returns the halt error in force, or nil. It lifts a breaker halt
// whose cool-down is over and looks for the halt file, at most once per
// haltFilePoll but at once after a halt was lifted, so that the file
// always wins.
func (h *halt) check() error {
	if s := h.state.Load(); s != nil && !s.until.IsZero() && !time.Now().Before(s.until) {
		h.resume(s)
	}
	if h.file != "" {
		h.pollFile()
	}
	return h.current()
}

// refuseRow is check for every row handed out: as cheap as an atomic load
// while decryption is not halted (the halt file is looked for per window,
// by admitWindow).
func (h *halt) refuseRow() error {
	if h.state.Load() == nil {
		return nil
	}
	return h.check()
}

// current returns the halt error in force, without polling.
func (h *halt) current() error {
	if s := h.state.Load(); s != nil {
		return s.err
	}
	return nil
}

// pollFile halts while the file exists and resumes a halt it caused once
// the file is gone. One caller per interval pays for the stat.
func (h *halt) pollFile() {
	now := time.Now().UnixNano()
	next := h.nextStat.Load()
	if now < next || !h.nextStat.CompareAndSwap(next, now+int64(haltFilePoll)) {
		return
	}
	_, err := os.Stat(h.file)
	switch {
	case err == nil:
		h.set(&haltState{source: HaltFile, reason: "the halt file " + h.file + " exists"})
	case os.IsNotExist(err):
		if s := h.state.Load(); s != nil && s.source == HaltFile {
			h.resume(s)
		}
	default:
		// Cannot tell (permissions, I/O): fail closed.
		h.set(&haltState{source: HaltFile, reason: "the halt file " + h.file + " cannot be checked: " + err.Error()})
	}
}

// HaltDecryption stops decryption on this connector at once: reads of
// encrypted columns fail with ErrDecryptHalted (a result set being read
// fails at its next row), and so does every other unwrap of a data key
// (an UPDATE that keeps a row's key, Rewrap). Writes that mint new keys
// keep working. It lasts until ResumeDecryption. reason is reported in the
// error and to observers; it must not contain secrets.
func (c *Connector) HaltDecryption(reason string) {
	c.halt.set(&haltState{source: HaltManual, reason: reason})
}

// ResumeDecryption lifts a halt, whatever caused it (HaltDecryption, the
// decrypt-rate breaker, which also starts counting afresh), except the
// halt file: while it exists, decryption stays halted.
func (c *Connector) ResumeDecryption() {
	c.halt.resume(nil)
	c.halt.check()
}

// DecryptionHalted reports whether decryption is halted and why, for
// health checks.
func (c *Connector) DecryptionHalted() (reason string, halted bool) {
	c.halt.check()
	if s := c.halt.state.Load(); s != nil {
		return string(s.source) + ": " + s.reason, true
	}
	return "", false
}

// refusalReason maps what halted decryption to the reason reported for
// the reads it refuses.
func refusalReason(src HaltSource) RefusalReason {
	switch src {
	case HaltFile:
		return RefusedHaltFile
	case HaltLimit:
		return RefusedDecryptLimit
	default:
		return RefusedHalted
	}
}

// setupGuards makes the connector's events, kill switch and breaker, and
// gates its keyring on the kill switch.
func (c *Connector) setupGuards(cfg connectorConfig) error {
	c.events = newEvents(cfg.kms.observers)
	file := os.Getenv(HaltFileEnv)
	if cfg.haltFile != nil {
		file = *cfg.haltFile
	}
	c.halt = newHalt(file, c.events)
	if kc := c.keyring.cache; kc != nil {
		c.halt.purge = kc.Purge
	}
	b, err := newBreaker(cfg.limit, c.schema)
	if err != nil {
		return err
	}
	if b != nil {
		c.breaker = b
		c.halt.onResume = b.reset
	}
	c.keyring.gate = c.halt.check
	return nil
}
