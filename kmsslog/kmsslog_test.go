package kmsslog_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/kmsslog"
	"github.com/kmspostgres/kmspostgres/providers"
)

func logTo(level slog.Level, opts ...kmsslog.Option) (*kmsslog.Observer, *bytes.Buffer) {
	var buf bytes.Buffer
	return kmsslog.New(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level})), opts...), &buf
}

func records(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	buf.Reset()
	return out
}

func TestLevels(t *testing.T) {
	ev := providers.Event{Op: providers.OpUnwrap, KeyID: "alias/app", Version: 2, Context: envelope.Context{"table": "users", "id": "7"}, Duration: time.Millisecond}
	cases := []struct {
		err   error
		level string
		kind  string
	}{
		{nil, "DEBUG", ""},
		{fmt.Errorf("x: %w", providers.ErrUnavailable), "WARN", "unavailable"},
		{&providers.Error{Op: providers.OpUnwrap, Err: providers.ErrDecrypt}, "ERROR", "decrypt"},
		{providers.ErrPermission, "ERROR", "permission"},
		{envelope.ErrFormat, "ERROR", "format"},
		{fmt.Errorf("something else"), "ERROR", "other"},
	}
	o, buf := logTo(slog.LevelDebug)
	for _, c := range cases {
		e := ev
		e.Err = c.err
		o.Observe(e)
		recs := records(t, buf)
		if len(recs) != 1 {
			t.Fatalf("%v: %d records", c.err, len(recs))
		}
		r := recs[0]
		if r["level"] != c.level || r["provider"] != "aws" || r["table"] != "users" || r["key_version"] != float64(2) {
			t.Errorf("%v: %v", c.err, r)
		}
		if k, _ := r["error_kind"].(string); k != c.kind {
			t.Errorf("%v: error_kind %q, want %q", c.err, k, c.kind)
		}
	}
	// At Info, a successful call is not even formatted.
	o, buf = logTo(slog.LevelInfo)
	o.Observe(ev)
	if buf.Len() != 0 {
		t.Fatalf("success at Info: %s", buf)
	}
	o, buf = logTo(slog.LevelInfo, kmsslog.WithSuccessLevel(slog.LevelInfo))
	o.Observe(ev)
	if recs := records(t, buf); len(recs) != 1 || recs[0]["level"] != "INFO" {
		t.Fatalf("WithSuccessLevel(Info): %v", recs)
	}
}

func TestContextOptions(t *testing.T) {
	ev := providers.Event{Op: providers.OpUnwrap, KeyID: "vault/app", Context: envelope.Context{"table": "users", "email": "ada@example.com"}, Cache: providers.CacheHit}
	o, buf := logTo(slog.LevelDebug, kmsslog.WithoutContext(), kmsslog.WithContextHash(func(c envelope.Context) (string, bool) {
		return "hmac-sha256:" + c["table"], true
	}))
	o.Observe(ev)
	recs := records(t, buf)
	if len(recs) != 1 {
		t.Fatal(recs)
	}
	r := recs[0]
	if _, ok := r["context"]; ok || strings.Contains(fmt.Sprint(r), "ada@") {
		t.Errorf("WithoutContext logged the context: %v", r)
	}
	if r["context_hash"] != "hmac-sha256:users" || r["cache"] != "hit" || r["msg"] != "kmspostgres: data key from cache" || r["provider"] != "vault" {
		t.Errorf("%v", r)
	}
}

func TestHaltAndRefusal(t *testing.T) {
	o, buf := logTo(slog.LevelInfo)
	o.ObserveHalt(kmspostgres.HaltEvent{Halted: true, Source: kmspostgres.HaltLimit, Reason: "table users: 1001 rows", Until: time.Unix(1e9, 0)})
	o.ObserveHalt(kmspostgres.HaltEvent{Halted: false, Source: kmspostgres.HaltLimit})
	o.ObserveRefusal(t.Context(), kmspostgres.Refusal{Reason: kmspostgres.RefusedDecryptLimit, Table: "users", Err: kmspostgres.ErrDecryptHalted})
	recs := records(t, buf)
	want := []string{"ERROR kmspostgres: decryption halted", "WARN kmspostgres: decryption resumed", "WARN kmspostgres: read refused, decryption halted"}
	if len(recs) != len(want) {
		t.Fatalf("%v", recs)
	}
	for i, r := range recs {
		if got := fmt.Sprint(r["level"], " ", r["msg"]); got != want[i] {
			t.Errorf("record %d: %q, want %q", i, got, want[i])
		}
	}
	if recs[0]["until"] == nil || recs[2]["reason"] != "decrypt_limit" || recs[2]["table"] != "users" {
		t.Errorf("%v", recs)
	}
}
