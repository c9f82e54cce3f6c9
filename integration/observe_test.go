package integration

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/kmsslog"
	"github.com/kmspostgres/kmspostgres/providers"
)

const obsDDL = `
CREATE TABLE people (id bigserial PRIMARY KEY, name text, email text, phone text, encrypted_kms_key text);
CREATE TABLE notes (id bigserial PRIMARY KEY, body text, encrypted_kms_key text);`

const obsMap = `key_id: insecure-test-key
tables:
  people:
    columns:
      email: {}
      phone: {}
  notes:
    columns:
      body: {}
`

// observed opens a connector on the environment with the test provider,
// the recorder and opts, and a *sql.DB on it.
func (e *env) observed(opts ...kmspostgres.Option) (*kmspostgres.Connector, *sql.DB) {
	e.t.Helper()
	c, err := kmspostgres.NewConnector(e.dsn(), append([]kmspostgres.Option{kmspostgres.WithProvider(e.kms), kmspostgres.WithObserver(e.events)}, opts...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	db := sql.OpenDB(c)
	e.t.Cleanup(func() { db.Close() })
	return c, db
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(s.b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		m["_line"] = line
		out = append(out, m)
	}
	return out
}

// secrets returns every form in which a secret of the table's rows could
// show up in a log: the plaintexts, each row's key column text and the
// base64 of its wrapped key, and its data key (unwrapped here with the
// test provider) as hex, base64 and raw bytes.
func (e *env) secrets(table string, plaintexts []string) []string {
	e.t.Helper()
	out := append([]string(nil), plaintexts...)
	rows, err := e.raw.Query(context.Background(), "SELECT id::text, encrypted_kms_key FROM "+table)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, text string
		if err := rows.Scan(&id, &text); err != nil {
			e.t.Fatal(err)
		}
		wk, err := envelope.ParseWrappedKey(text)
		if err != nil {
			e.t.Fatal(err)
		}
		dk, err := e.kms.Unwrap(context.Background(), "insecure-test-key", wk.Ciphertext, envelope.Context{"table": table, "id": id})
		if err != nil {
			e.t.Fatal(err)
		}
		b64 := base64.StdEncoding.EncodeToString(wk.Ciphertext)
		out = append(out, text, b64, b64[:24], hex.EncodeToString(dk), base64.StdEncoding.EncodeToString(dk), base64.RawStdEncoding.EncodeToString(dk)[:24], string(dk))
	}
	return out
}

// scanNoSecret fails if a record holds one of the secrets. It first
// checks that it would catch each of them.
func scanNoSecret(t *testing.T, recs []map[string]any, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if s == "" {
			t.Fatal("empty secret")
		}
		if _, ok := leaked([]map[string]any{{"_line": `{"x":"` + s + `"}`}}, secrets); !ok {
			t.Fatalf("the scan would miss %q", s)
		}
	}
	if s, ok := leaked(recs, secrets); ok {
		t.Fatalf("a log record holds a secret: %s", s)
	}
}

func leaked(recs []map[string]any, secrets []string) (string, bool) {
	for _, r := range recs {
		line := r["_line"].(string)
		for _, s := range secrets {
			if strings.Contains(line, s) {
				return fmt.Sprintf("%q in %s", s, line), true
			}
		}
	}
	return "", false
}

func TestSlogRecordPerKMSCall(t *testing.T) {
	e := newEnv(t, obsDDL, obsMap)
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	_, db := e.observed(kmspostgres.WithObserver(kmsslog.New(log)))

	const n = 20
	var plaintexts []string
	for i := range n {
		email, phone := fmt.Sprintf("secret-person%02d@example.com", i), fmt.Sprintf("+1-555-77%02d", i)
		plaintexts = append(plaintexts, email, phone)
		if _, err := db.Exec("INSERT INTO people (name, email, phone) VALUES ($1, $2, $3)", "p", email, phone); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := db.Query("SELECT id, email, phone FROM people ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for rows.Next() {
		got++
	}
	if err := rows.Err(); err != nil || got != n {
		t.Fatalf("%d rows, %v", got, err)
	}
	rows.Close()

	recs := buf.records(t)
	events := e.events.Events()
	if len(events) != 2*n {
		t.Fatalf("%d audit events, want %d", len(events), 2*n)
	}
	perOp := map[string]int{}
	for _, r := range recs {
		if r["msg"] != "kmspostgres: KMS "+fmt.Sprint(r["op"]) {
			continue
		}
		perOp[r["op"].(string)]++
		if r["level"] != "DEBUG" || r["outcome"] != "ok" || r["provider"] != "test" || r["key_id"] != "insecure-test-key" ||
			r["key_version"] != float64(1) || r["table"] != "people" || r["duration"] == nil {
			t.Errorf("record: %s", r["_line"])
		}
		ctxGroup, _ := r["context"].(map[string]any)
		if ctxGroup["table"] != "people" || ctxGroup["id"] == nil {
			t.Errorf("record without its context: %s", r["_line"])
		}
		if _, ok := r["error_kind"]; ok {
			t.Errorf("error_kind on success: %s", r["_line"])
		}
	}
	if perOp["wrap"] != n || perOp["unwrap"] != n {
		t.Fatalf("records per op: %v, want %d wraps and %d unwraps (one per KMS call)", perOp, n, n)
	}

	secrets := e.secrets("people", plaintexts)
	if len(secrets) != 2*n+7*n {
		t.Fatalf("%d secrets, want %d", len(secrets), 9*n)
	}
	// A failed unwrap: row 2 given row 1's key. Logged at Error with its
	// kind, still without secrets.
	if _, err := e.raw.Exec(context.Background(), "UPDATE people SET encrypted_kms_key = (SELECT encrypted_kms_key FROM people WHERE id = 1) WHERE id = 2"); err != nil {
		t.Fatal(err)
	}
	var email string
	err = db.QueryRow("SELECT email FROM people WHERE id = 2").Scan(&email)
	mustErrIs(t, err, kmspostgres.ErrDecrypt)
	var failed []map[string]any
	for _, r := range buf.records(t) {
		if r["outcome"] == "error" {
			failed = append(failed, r)
		}
	}
	if len(failed) != 1 || failed[0]["level"] != "ERROR" || failed[0]["error_kind"] != providers.ErrorKindDecrypt {
		t.Fatalf("failure records: %v", failed)
	}

	// A refused statement is logged at Info, with its table and column.
	if _, err := db.Query("SELECT id FROM people ORDER BY email"); err == nil {
		t.Fatal("ORDER BY an encrypted column ran")
	}
	refused := 0
	for _, r := range buf.records(t) {
		if r["msg"] == "kmspostgres: statement refused" && r["level"] == "INFO" && r["table"] == "people" && r["column"] == "email" && r["reason"] == "unsupported" {
			refused++
		}
	}
	if refused != 1 {
		t.Fatalf("%d refusal records, want 1", refused)
	}
	scanNoSecret(t, buf.records(t), secrets)
}

// TestSlogLevels: at Info, successful calls make no record.
func TestSlogLevels(t *testing.T) {
	e := newEnv(t, obsDDL, obsMap)
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	_, db := e.observed(kmspostgres.WithObserver(kmsslog.New(log)))
	if _, err := db.Exec("INSERT INTO notes (body) VALUES ('hello')"); err != nil {
		t.Fatal(err)
	}
	var body string
	if err := db.QueryRow("SELECT body FROM notes").Scan(&body); err != nil || body != "hello" {
		t.Fatal(body, err)
	}
	if recs := buf.records(t); len(recs) != 0 {
		t.Fatalf("records at Info for successful calls: %v", recs)
	}
	e.kms.SetUnavailable(true)
	_, err := db.Exec("INSERT INTO notes (body) VALUES ('hello')")
	mustErrIs(t, err, kmspostgres.ErrUnavailable)
	recs := buf.records(t)
	if len(recs) != 1 || recs[0]["level"] != "WARN" || recs[0]["error_kind"] != providers.ErrorKindUnavailable {
		t.Fatalf("records: %v", recs)
	}
}
