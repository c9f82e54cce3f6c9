package integration

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/kmspostgres/kmspostgres"
)

const accountsDDL = `CREATE TABLE accounts (id int PRIMARY KEY, iban text, note text, encrypted_kms_key text);`

const accountsV1 = "key_id: insecure-test-key\ntables:\n  accounts:\n    columns:\n      iban: {}\n      note: {}\n"

const accountsV2 = "key_id: insecure-test-key\ntables:\n  accounts:\n    keys:\n      kms_key: {version: 2, previous_versions: {1: {}}}\n    columns:\n      iban: {}\n      note: {}\n"

// accountsEnv has rows 1-3 at key version 1 and 4-5 at version 2, under
// the version 2 map.
func accountsEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t, accountsDDL, accountsV1)
	for i := 1; i <= 3; i++ {
		e.exec("INSERT INTO accounts (id, iban, note) VALUES ($1, 'DE89370400440532013000', 'n')", i)
	}
	e.setMap(accountsV2)
	for i := 4; i <= 5; i++ {
		e.exec("INSERT INTO accounts (id, iban, note) VALUES ($1, 'DE89370400440532013000', NULL)", i)
	}
	return e
}

// setMap rewrites the schema map and reopens e.db on it.
func (e *env) setMap(yaml string) {
	e.t.Helper()
	if err := os.WriteFile(e.schema, []byte(yaml), 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.db.Close()
	e.db = e.open()
}

func (e *env) rawExec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.raw.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func TestInspect(t *testing.T) {
	e := accountsEnv(t)
	ctx := context.Background()
	c := e.connector(kmspostgres.WithProvider(e.kms))
	r, err := c.Inspect(ctx, kmspostgres.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Layout != "" {
		t.Fatalf("clean table: %q", r.Problems)
	}
	k := r.Tables[0].Keys[0]
	if k.Rows != 5 || k.Rewrap != 3 || len(k.Versions) != 2 || k.Versions[0] != (kmspostgres.VersionCount{Version: 1, Rows: 3, Status: "previous", KeyID: "insecure-test-key"}) {
		t.Fatalf("counts: %+v", k)
	}
	if len(r.KeyIDs) != 1 || r.KeyIDs[0].Wrap != "ok" || r.KeyIDs[0].Unwrap != "ok" || !slices.Equal(r.KeyIDs[0].UsedBy, []string{"accounts.kms_key v2", "accounts.kms_key v1"}) {
		t.Fatalf("key ids: %+v", r.KeyIDs[0])
	}

	// Written around the driver: plaintext beside a NULL key, a row with
	// nothing (fine), garbage, a key at a version the map does not know,
	// and base64 of the wrong length.
	v3 := "v3:" + base64.StdEncoding.EncodeToString([]byte("sixteen bytes ok"))
	e.rawExec("INSERT INTO accounts (id, iban) VALUES (6, 'FR1420041010050500013M02606')")
	e.rawExec("INSERT INTO accounts (id) VALUES (7)")
	e.rawExec("INSERT INTO accounts (id, note, encrypted_kms_key) VALUES (8, 'x', 'garbage'), (9, 'x', $1), (10, 'x', 'v2:abc'), (11, 'x', 'v02:AAAA')", v3)
	r, err = c.Inspect(ctx, kmspostgres.InspectOptions{Samples: 2})
	if err != nil {
		t.Fatal(err)
	}
	k = r.Tables[0].Keys[0]
	if k.Rows != 11 || k.NullKey != 2 || k.Unkeyed != 1 || !slices.Equal(k.UnkeyedSample, []string{"id=6"}) ||
		k.Malformed != 3 || !slices.Equal(k.MalformedSample, []string{"id=8", "id=10"}) || k.Inactive != 1 || k.Rewrap != 3 {
		t.Fatalf("counts: %+v", k)
	}
	if got := k.Versions[2]; got != (kmspostgres.VersionCount{Version: 3, Rows: 1, Status: "inactive"}) {
		t.Fatalf("v3: %+v", got)
	}
	if len(r.Problems) != 3 || r.OK() {
		t.Fatalf("problems: %q", r.Problems)
	}
	want := []string{
		"accounts.kms_key: 1 row with values in iban, note but a NULL encrypted_kms_key (id=6)",
		"accounts.kms_key: 3 rows with a malformed encrypted_kms_key, not v<version>:<base64> (id=8; id=10; …): restore accounts.encrypted_kms_key of these rows from a backup; the encrypted cells are intact",
		"accounts.kms_key: 1 row at version 3, which is neither current (2) nor in previous_versions",
	}
	for i, w := range want {
		if !strings.Contains(r.Problems[i], w) {
			t.Errorf("problem %d:\n%s\nwant it to contain\n%s", i, r.Problems[i], w)
		}
	}
	for _, p := range r.Problems {
		if strings.Contains(p, "FR14") || strings.Contains(p, "garbage") || strings.Contains(p, "c2l4") {
			t.Errorf("a problem quotes stored values: %s", p)
		}
	}

	// A mapped column missing from the database, and a mapped table
	// missing: the layout names both, one problem each, and the report
	// still comes back.
	e.setMap(accountsV2 + "      bic: {}\n  ghosts:\n    columns: {name: {}}\n")
	r, err = e.connector(kmspostgres.WithProvider(e.kms)).Inspect(ctx, kmspostgres.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.Layout, "table accounts: the database does not match: encrypted column bic does not exist") || r.Tables[0].Error == "" || r.OK() {
		t.Fatalf("layout: %q, table: %q", r.Layout, r.Tables[0].Error)
	}
	if len(r.Problems) != 2 || !strings.Contains(r.Problems[0], "table ghosts: the database does not match: no such table") ||
		!strings.Contains(r.Problems[1], "table accounts: the database does not match: encrypted column bic does not exist") {
		t.Fatalf("problems: %q", r.Problems)
	}
}

func TestInspectKeyIDs(t *testing.T) {
	e := newEnv(t, accountsDDL+`CREATE TABLE cards (id int PRIMARY KEY, pan text, encrypted_kms_key text);`,
		"key_id: insecure-test-key/encrypt\ntables:\n  accounts:\n    columns: {iban: {}}\n  cards:\n    keys: {kms_key: {key_id: vault/nowhere}}\n    columns: {pan: {}}\n")
	// Unless another test built the Vault provider first, nothing listens
	// there; either way the key does not exist.
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1")
	t.Setenv("VAULT_TOKEN", "t")
	c := e.connector() // routed by key id, as the CLI does
	r, err := c.Inspect(context.Background(), kmspostgres.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.KeyIDs) != 2 || r.KeyIDs[0].KeyID != "insecure-test-key/encrypt" || r.KeyIDs[0].Wrap != "ok" || !strings.Contains(r.KeyIDs[0].Unwrap, "permission") {
		t.Fatalf("key ids: %+v", r.KeyIDs[0])
	}
	if len(r.Problems) != 2 || !strings.Contains(r.Problems[0], "key id insecure-test-key/encrypt (accounts.kms_key v1): ") ||
		!strings.Contains(r.Problems[0], "check with -wrap-only") ||
		!strings.Contains(r.Problems[1], "key id vault/nowhere (cards.kms_key v1): ") || r.KeyIDs[1].Wrap == "ok" || !r.KeyIDs[1].Linked {
		t.Fatalf("problems: %q\n%+v", r.Problems, r.KeyIDs[1])
	}
	r, err = c.Inspect(context.Background(), kmspostgres.InspectOptions{WrapOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != 1 || r.KeyIDs[0].Unwrap != "skipped" {
		t.Fatalf("wrap only: %q", r.Problems)
	}
}

func TestRewrapSkipsBadRows(t *testing.T) {
	e := accountsEnv(t)
	ctx := context.Background()
	// A key column of the right shape that does not unwrap, one that does
	// not parse, and one at a version the map does not know.
	e.rawExec("UPDATE accounts SET encrypted_kms_key = 'v1:AAAAAAAA' WHERE id = 1")
	e.rawExec("UPDATE accounts SET encrypted_kms_key = 'garbage' WHERE id = 2")
	e.rawExec("INSERT INTO accounts (id, note, encrypted_kms_key) VALUES (6, 'x', 'v7:AAAA')")
	c := e.connector(kmspostgres.WithProvider(e.kms))
	st, err := c.Rewrap(ctx, "accounts", kmspostgres.RewrapOptions{BatchSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if st.Rewrapped != 1 || st.Failed != 3 || len(st.Failures) != 3 {
		t.Fatalf("stats: %+v", st)
	}
	f := st.Failures
	if f[0].PK != "id=1" || !errors.Is(f[0].Err, kmspostgres.ErrDecrypt) || f[1].PK != "id=2" || !errors.Is(f[1].Err, kmspostgres.ErrFormat) ||
		f[2].PK != "id=6" || !errors.Is(f[2].Err, kmspostgres.ErrVersion) {
		t.Fatalf("failures: %+v", f)
	}
	if msg := f[1].Err.Error(); !strings.Contains(msg, "the key column is corrupt: restore accounts.encrypted_kms_key of this row from a backup; the encrypted cells are intact") {
		t.Fatalf("no way out: %s", msg)
	}
	if got := e.rawValues("SELECT left(encrypted_kms_key, 3) FROM accounts ORDER BY id"); strings.Join(got, ",") != "v1:,gar,v2:,v2:,v2:,v7:" {
		t.Fatalf("key columns: %v", got)
	}
	// Too many failures: the map is more likely wrong than the rows.
	st, err = c.Rewrap(ctx, "accounts", kmspostgres.RewrapOptions{MaxFailures: 1, BatchSize: 1})
	if err == nil || !strings.Contains(err.Error(), "gave up after 2 rows failed") || st.Failed != 2 {
		t.Fatalf("max failures: %+v %v", st, err)
	}
}
