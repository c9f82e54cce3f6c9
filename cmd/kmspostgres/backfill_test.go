package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kmspostgres/kmspostgres/internal/testenv"
)

// cancelAfter is a progress writer that cancels a run at its nth line.
type cancelAfter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	lines  int
	n      int
	cancel context.CancelFunc
}

func (w *cancelAfter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lines += bytes.Count(p, []byte("\n"))
	if w.lines >= w.n {
		w.cancel()
	}
	return w.buf.Write(p)
}

func TestCLIAdopt(t *testing.T) {
	base := testenv.DatabaseURL(t)
	raw, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	exec := func(q string) {
		t.Helper()
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec("DROP SCHEMA IF EXISTS cli_adopt CASCADE")
	exec("CREATE SCHEMA cli_adopt")
	t.Cleanup(func() { raw.Exec("DROP SCHEMA IF EXISTS cli_adopt CASCADE") })
	exec(`CREATE TABLE cli_adopt.members (id int PRIMARY KEY, email text, joined date)`)
	exec(`INSERT INTO cli_adopt.members SELECT i, 'm' || i || '@example.com', date '2000-01-01' + i FROM generate_series(1, 100) i`)
	schema := filepath.Join(t.TempDir(), "schema.yaml")
	if err := os.WriteFile(schema, []byte("key_id: insecure-test-key\ntables:\n  members:\n    migrating: true\n    columns:\n      email: {}\n      joined: {type: date}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dsn := base + "&search_path=cli_adopt&kms_schema=" + schema
	cli := func(ctx context.Context, args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(ctx, args, &out, &errb)
		return code, out.String(), errb.String()
	}
	ctx := context.Background()
	count := func(where string) int {
		t.Helper()
		var n int
		if err := raw.QueryRow("SELECT count(*) FROM cli_adopt.members WHERE " + where).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Before the migration: check and encrypt give the exact ALTER.
	exec("ALTER TABLE cli_adopt.members ADD COLUMN encrypted_kms_key text")
	want := `ALTER TABLE "cli_adopt"."members" ALTER COLUMN "joined" TYPE text USING "joined"::text`
	if code, out, _ := cli(ctx, "check", "-dsn", dsn); code != 1 || !strings.Contains(out, want) {
		t.Fatalf("check before ALTER: %d %s", code, out)
	}
	if code, _, errs := cli(ctx, "encrypt", "members", "-dsn", dsn); code != 1 || !strings.Contains(errs, want) {
		t.Fatalf("encrypt before ALTER: %d %s", code, errs)
	}
	exec(`ALTER TABLE cli_adopt.members ALTER COLUMN joined TYPE text USING joined::text`)
	if code, out, _ := cli(ctx, "check", "-dsn", dsn); code != 1 || !strings.Contains(out, "members: migrating: true, with 100 rows still in plaintext: run kmspostgres encrypt members") {
		t.Fatalf("check while migrating: %d %s", code, out)
	}
	if code, out, _ := cli(ctx, "encrypt", "-dry-run", "members", "-dsn", dsn); code != 0 || out != "members: 100 rows would be encrypted (dry run: no KMS call, nothing written)\n" {
		t.Fatalf("dry run: %d %q", code, out)
	}
	if n := count("encrypted_kms_key IS NULL"); n != 100 {
		t.Fatalf("dry run wrote: %d rows left", n)
	}

	// Interrupted at the third progress line (after two rounds of 10),
	// then run again.
	plainEvery = 0
	defer func() { plainEvery = defaultPlainEvery }()
	cctx, cancel := context.WithCancel(ctx)
	w := &cancelAfter{n: 3, cancel: cancel}
	var out bytes.Buffer
	code := run(cctx, []string{"encrypt", "members", "-batch", "10", "-dsn", dsn}, &out, w)
	cancel()
	if code != exitInterrupted || !strings.Contains(w.buf.String(), "interrupted: what was written stays; run 'kmspostgres encrypt members' again to go on") {
		t.Fatalf("interrupted: %d\n%s\n%s", code, out.String(), w.buf.String())
	}
	if !strings.HasPrefix(w.buf.String(), "members: 0/100 rows, 0 rows/s, ETA ?, 0 KMS calls, 0 changed meanwhile, 0 skipped\nmembers: 10/100 rows") {
		t.Fatalf("progress lines:\n%s", w.buf.String())
	}
	done := count("encrypted_kms_key IS NOT NULL")
	if done < 20 || done == 100 {
		t.Fatalf("after the interruption %d rows are encrypted", done)
	}
	code, outs, _ := cli(ctx, "encrypt", "members", "-dsn", dsn)
	if code != 0 || !strings.HasPrefix(outs, "members: "+itoa(100-done)+" of "+itoa(100-done)+" rows encrypted, "+itoa(100-done)+" KMS calls in ") {
		t.Fatalf("encrypt again: %d %s", code, outs)
	}
	if code, outs, _ := cli(ctx, "encrypt", "members", "-dsn", dsn); code != 0 || outs != "members: nothing to do\n" {
		t.Fatalf("encrypt a third time: %d %s", code, outs)
	}
	if n := count("email LIKE '%@%' OR joined LIKE '2000-%' OR encrypted_kms_key IS NULL"); n != 0 {
		t.Fatalf("%d rows still in plaintext", n)
	}
	if code, out, _ := cli(ctx, "check", "-dsn", dsn); code != 1 || !strings.Contains(out, "members: migrating: true, but every row is encrypted: remove migrating from the schema map") {
		t.Fatalf("check after encrypt: %d %s", code, out)
	}

	// reencrypt, -json.
	code, outs, _ = cli(ctx, "reencrypt", "members", "-json", "-dsn", dsn)
	var res struct {
		Event  string `json:"event"`
		OK     bool   `json:"ok"`
		Tables []struct {
			Table    string `json:"table"`
			Done     int64  `json:"done"`
			KMSCalls int64  `json:"kms_calls"`
		} `json:"tables"`
	}
	lines := strings.Split(strings.TrimSpace(outs), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); code != 0 || err != nil || !res.OK || res.Event != "result" || len(res.Tables) != 1 || res.Tables[0].Done != 100 || res.Tables[0].KMSCalls != 200 {
		t.Fatalf("reencrypt -json: %d %v %s", code, err, outs)
	}

	// And back out.
	if code, _, errs := cli(ctx, "decrypt", "members", "-dsn", dsn); code != 2 || !strings.Contains(errs, "pass -yes") {
		t.Fatalf("decrypt without -yes: %d %s", code, errs)
	}
	if code, outs, _ := cli(ctx, "decrypt", "-yes", "members", "-dsn", dsn); code != 0 || !strings.HasPrefix(outs, "members: 100 of 100 rows decrypted") {
		t.Fatalf("decrypt: %d %s", code, outs)
	}
	if n := count("email = 'm' || id || '@example.com' AND joined::date = date '2000-01-01' + id AND encrypted_kms_key IS NULL"); n != 100 {
		t.Fatalf("after decrypt %d rows are as they were", n)
	}

	// context-hash needs a Vault key.
	if code, _, errs := cli(ctx, "context-hash", "members", "7", "-dsn", dsn); code != 1 || !strings.Contains(errs, "not a Vault key") {
		t.Fatalf("context-hash: %d %s", code, errs)
	}
	if code, _, errs := cli(ctx, "context-hash", "members", "7,8", "-dsn", dsn); code != 2 || !strings.Contains(errs, "2 primary-key values") {
		t.Fatalf("context-hash composite: %d %s", code, errs)
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
