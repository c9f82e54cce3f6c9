package kmsslog_test

import (
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/kmsslog"
	"github.com/kmspostgres/kmspostgres/providers"
)

// A failed unwrap, as the driver reports it, logged at Error (the time is
// left out here to keep the output stable).
func ExampleNew() {
	h := slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}})
	obs := kmsslog.New(slog.New(h)) // kmspostgres.WithObserver(obs)
	obs.Observe(providers.Event{
		Op: providers.OpUnwrap, KeyID: "alias/app", Version: 1,
		Context:  envelope.Context{"table": "users", "id": "42"},
		Duration: 3 * time.Millisecond,
		Err:      &providers.Error{Op: providers.OpUnwrap, KeyID: "alias/app", Err: errors.Join(providers.ErrDecrypt)},
	})
	// Output:
	// {"level":"ERROR","msg":"kmspostgres: KMS unwrap","op":"unwrap","provider":"aws","key_id":"alias/app","key_version":1,"table":"users","context":{"id":"42","table":"users"},"duration":3000000,"outcome":"error","error_kind":"decrypt","error":"kmspostgres: unwrap with key alias/app: decryption failed"}
}
