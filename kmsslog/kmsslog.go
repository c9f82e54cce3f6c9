// Package kmsslog writes kmspostgres's audit events to a log/slog logger:
// one record per KMS call (and, with the data-key cache, per key it
// serves), per halt and resume of decryption, and per refused statement or
// read. Records carry the operation, provider, key id and version, the
// table and the encryption context (table and primary key), the duration,
// the outcome and the error kind; never plaintext, data keys or wrapped
// keys.
//
//	obs := kmsslog.New(slog.Default())
//	c, err := kmspostgres.NewConnector(dsn, kmspostgres.WithObserver(obs))
//
// Levels are chosen so that a service can leave the observer on at Info:
//
//   - a successful KMS call is logged at Debug (WithSuccessLevel changes
//     it). One is made per row read or written, so at Info a page of 1,000
//     rows would make 1,000 lines; the KMS's own audit log (CloudTrail,
//     Vault's audit device) keeps that trail, and the OpenTelemetry
//     metrics (package kmsotel) count it.
//   - a KMS call that failed because the KMS could not be reached in time
//     is logged at Warn (transient, retry later);
//   - any other failure (a key that does not decrypt under its context, a
//     permission denied, a malformed key column) at Error: each is a
//     tampering, revocation or configuration signal;
//   - decryption halting (kill switch, halt file, breaker) at Error, its
//     resuming at Warn, each read refused while halted at Warn, and a
//     statement refused as unsupported at Info.
package kmsslog

import (
	"context"
	"log/slog"
	"maps"
	"slices"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/providers"
)

// Observer is a kmspostgres observer (providers.Observer,
// kmspostgres.RefusalObserver, kmspostgres.HaltObserver) that logs to a
// slog.Logger. Give it to kmspostgres.WithObserver.
type Observer struct {
	l         *slog.Logger
	okLevel   slog.Level
	noContext bool
	hash      func(envelope.Context) (string, bool)
}

var (
	_ providers.Observer          = (*Observer)(nil)
	_ kmspostgres.RefusalObserver = (*Observer)(nil)
	_ kmspostgres.HaltObserver    = (*Observer)(nil)
)

// Option configures an Observer.
type Option func(*Observer)

// WithSuccessLevel sets the level of successful KMS calls (default
// slog.LevelDebug), for services that want every decryption in their own
// log too.
func WithSuccessLevel(l slog.Level) Option { return func(o *Observer) { o.okLevel = l } }

// WithoutContext leaves the encryption context (which holds primary-key
// values) out of the records, for tables whose primary keys are personal
// data (an email address as key). The table stays.
func WithoutContext() Option { return func(o *Observer) { o.noContext = true } }

// WithContextHash adds a context_hash field computed by f, for example a
// memoized (*vault.Provider).ContextHash, to match records with a Vault
// audit log. f runs on the statement's goroutine for every record, so it
// must be quick: it must not call Vault per record. ok false leaves the
// field out.
func WithContextHash(f func(envelope.Context) (hash string, ok bool)) Option {
	return func(o *Observer) { o.hash = f }
}

// New returns an Observer that logs to l (nil: slog.Default()).
func New(l *slog.Logger, opts ...Option) *Observer {
	if l == nil {
		l = slog.Default()
	}
	o := &Observer{l: l, okLevel: slog.LevelDebug}
	for _, f := range opts {
		f(o)
	}
	return o
}

// levelOf is the level of a KMS call's record.
func (o *Observer) levelOf(e providers.Event) slog.Level {
	switch e.ErrorKind() {
	case "":
		return o.okLevel
	case providers.ErrorKindUnavailable:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

// Observe logs one KMS call, or one key served by the data-key cache.
func (o *Observer) Observe(e providers.Event) {
	ctx := context.Background()
	level := o.levelOf(e)
	if !o.l.Enabled(ctx, level) {
		return
	}
	msg := "kmspostgres: KMS " + string(e.Op)
	if e.Cache == providers.CacheHit {
		msg = "kmspostgres: data key from cache"
	}
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs,
		slog.String("op", string(e.Op)),
		slog.String("provider", string(providers.KindOf(e.KeyID))),
		slog.String("key_id", e.KeyID),
		slog.Int("key_version", e.Version),
	)
	if t, ok := e.Context["table"]; ok {
		attrs = append(attrs, slog.String("table", t))
	}
	if !o.noContext && len(e.Context) > 0 {
		kv := make([]any, 0, len(e.Context))
		for _, k := range slices.Sorted(maps.Keys(e.Context)) {
			kv = append(kv, slog.String(k, e.Context[k]))
		}
		attrs = append(attrs, slog.Group("context", kv...))
	}
	if o.hash != nil {
		if h, ok := o.hash(e.Context); ok {
			attrs = append(attrs, slog.String("context_hash", h))
		}
	}
	if e.Cache != providers.CacheNone {
		attrs = append(attrs, slog.String("cache", string(e.Cache)))
	}
	attrs = append(attrs, slog.Duration("duration", e.Duration))
	if e.Err == nil {
		attrs = append(attrs, slog.String("outcome", "ok"))
	} else {
		attrs = append(attrs, slog.String("outcome", "error"), slog.String("error_kind", e.ErrorKind()), slog.String("error", e.Err.Error()))
	}
	o.l.LogAttrs(ctx, level, msg, attrs...)
}

// ObserveRefusal logs a refused read (decryption halted) at Warn and a
// refused statement at Info.
func (o *Observer) ObserveRefusal(ctx context.Context, r kmspostgres.Refusal) {
	level, msg := slog.LevelWarn, "kmspostgres: read refused, decryption halted"
	if r.Reason == kmspostgres.RefusedUnsupported {
		level, msg = slog.LevelInfo, "kmspostgres: statement refused"
	}
	if !o.l.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{slog.String("reason", string(r.Reason))}
	if r.Table != "" {
		attrs = append(attrs, slog.String("table", r.Table))
	}
	if r.Column != "" {
		attrs = append(attrs, slog.String("column", r.Column))
	}
	if r.Err != nil {
		attrs = append(attrs, slog.String("error", r.Err.Error()))
	}
	o.l.LogAttrs(ctx, level, msg, attrs...)
}

// ObserveHalt logs decryption halting at Error and resuming at Warn.
func (o *Observer) ObserveHalt(h kmspostgres.HaltEvent) {
	level, msg := slog.LevelError, "kmspostgres: decryption halted"
	if !h.Halted {
		level, msg = slog.LevelWarn, "kmspostgres: decryption resumed"
	}
	attrs := []slog.Attr{slog.String("source", string(h.Source)), slog.String("reason", h.Reason)}
	if !h.Until.IsZero() {
		attrs = append(attrs, slog.Time("until", h.Until))
	}
	o.l.LogAttrs(context.Background(), level, msg, attrs...)
}
