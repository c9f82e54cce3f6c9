package kmsslog_test

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/kmsslog"
	"github.com/kmspostgres/kmspostgres/providers"
)

// BenchmarkObserve is what a successful KMS call costs the observer: at
// Info (the record is not made) and at Debug (a JSON record to
// io.Discard).
func BenchmarkObserve(b *testing.B) {
	ev := providers.Event{Op: providers.OpUnwrap, KeyID: "alias/app", Version: 1, Context: envelope.Context{"table": "users", "id": "42"}, Duration: time.Millisecond}
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		o := kmsslog.New(slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: level})))
		b.Run(level.String(), func(b *testing.B) {
			for b.Loop() {
				o.Observe(ev)
			}
		})
	}
}
