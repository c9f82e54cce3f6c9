package kmspostgres

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/providers"
)

// InspectOptions tunes Inspect.
type InspectOptions struct {
	// WrapOnly checks each key id with a wrap alone instead of a wrap and
	// unwrap round trip, for encrypt-only credentials.
	WrapOnly bool
	// KMSTimeout bounds each KMS call of the round trip (default 10 s).
	KMSTimeout time.Duration
	// Samples is how many primary keys a problem lists (default 5).
	Samples int
}

// Report is what Inspect found. Problems lists what needs attention, one
// sentence each; it is empty when all is well.
type Report struct {
	Schema   string         `json:"schema"`           // the schema map, summarized
	Layout   string         `json:"layout,omitempty"` // Check's mismatch, "" if the layout matches
	Tables   []*TableReport `json:"tables"`
	KeyIDs   []*KeyIDReport `json:"key_ids"`
	Problems []string       `json:"problems"`
}

// OK reports whether Inspect found nothing that needs attention.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// TableReport is one table of the schema map.
type TableReport struct {
	Table string       `json:"table"`
	Error string       `json:"error,omitempty"` // why the table could not be scanned
	Keys  []*KeyReport `json:"keys"`
	// Migrating is the table's migrating mode in the schema map: always a
	// problem, since it is meant to be on only while adopting.
	Migrating bool `json:"migrating"`
}

// KeyReport counts a table's rows by the state of one key column.
type KeyReport struct {
	Key            string   `json:"key"`
	Column         string   `json:"column"`
	Columns        []string `json:"columns"` // the encrypted columns under the key
	CurrentVersion int      `json:"current_version"`
	Rows           int64    `json:"rows"`     // rows in the table
	NullKey        int64    `json:"null_key"` // key column NULL (fine when every column under it is NULL too)
	// Unkeyed rows have values in encrypted columns but a NULL key column:
	// plaintext the driver refuses to read.
	Unkeyed       int64    `json:"unkeyed"`
	UnkeyedSample []string `json:"unkeyed_sample,omitempty"`
	// Malformed rows have a key column that is not v<version>:<base64>.
	Malformed       int64          `json:"malformed"`
	MalformedSample []string       `json:"malformed_sample,omitempty"`
	Versions        []VersionCount `json:"versions"`
	// Rewrap counts rows at a previous version: what rewrap would move.
	Rewrap int64 `json:"rewrap"`
	// Inactive counts rows at a version that is neither current nor in
	// previous_versions: they cannot be read.
	Inactive int64 `json:"inactive"`
}

// VersionCount is how many rows of a key are at one version.
type VersionCount struct {
	Version int    `json:"version"`
	Rows    int64  `json:"rows"`
	Status  string `json:"status"`           // "current", "previous" or "inactive"
	KeyID   string `json:"key_id,omitempty"` // the master key of the version, if active
}

// KeyIDReport is one master key id of the schema map.
type KeyIDReport struct {
	KeyID  string   `json:"key_id"`
	Kind   string   `json:"kind"`    // the provider family, or "custom" with WithProvider
	UsedBy []string `json:"used_by"` // "users.kms_key v2", …
	Linked bool     `json:"linked"`  // a provider serves it
	Wrap   string   `json:"wrap"`    // "ok", "skipped" or the error
	Unwrap string   `json:"unwrap"`  // "ok", "skipped" or the error
}

// checkContext is the encryption context of Inspect's throwaway data keys,
// so that a KMS audit log tells them from rows.
var checkContext = envelope.Context{"table": "kmspostgres-check"}

// wrappedKeyRe is the SQL form of what envelope.ParseWrappedKey accepts:
// v<positive decimal, at most 9 digits>:<non-empty padded base64>.
const wrappedKeyRe = `^v[1-9][0-9]{0,8}:([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$`

// Inspect looks at the data as well as the layout: Check's layout check,
// then per table and key the rows with values but no key, malformed key
// columns and rows per key version (what Rewrap would move, and versions
// that cannot be read), then per master key id whether a provider serves
// it and whether a wrap and unwrap round trip of a throwaway data key
// works (wrap only with WrapOnly). Counting is done in SQL, one scan of
// each table per key. What it finds goes in the report; the error is for
// failing to inspect at all (the database unreachable). Nothing in the
// report holds plaintext or key material.
func (c *Connector) Inspect(ctx context.Context, opts InspectOptions) (*Report, error) {
	if opts.KMSTimeout <= 0 {
		opts.KMSTimeout = 10 * time.Second
	}
	if opts.Samples <= 0 {
		opts.Samples = 5
	}
	r := &Report{Schema: c.schema.String(), Tables: []*TableReport{}, KeyIDs: []*KeyIDReport{}, Problems: []string{}}
	if err := c.Check(ctx); err != nil {
		if !errors.Is(err, ErrSchema) {
			return nil, err
		}
		r.Layout = err.Error()
		// Check reports every mismatched table: one problem each.
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				r.Problems = append(r.Problems, e.Error())
			}
		} else {
			r.Problems = append(r.Problems, err.Error())
		}
	}
	dc, err := c.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer dc.Close()
	conn := dc.(*Conn).Conn()
	for _, tn := range slices.Sorted(maps.Keys(c.schema.Tables)) {
		tr, err := c.inspectTable(ctx, conn, c.schema.Tables[tn], opts, r)
		if err != nil {
			if ctx.Err() != nil || conn.IsClosed() {
				return nil, err
			}
			tr.Error = err.Error()
			// The layout check names every mismatched table: do not
			// name one twice.
			if !strings.Contains(r.Layout, "table "+tn+":") {
				r.Problems = append(r.Problems, fmt.Sprintf("table %s could not be scanned: %v", tn, err))
			}
		}
		r.Tables = append(r.Tables, tr)
	}
	c.inspectKeyIDs(ctx, opts, r)
	return r, nil
}

// inspectTable counts one table's rows per key.
func (c *Connector) inspectTable(ctx context.Context, conn *pgx.Conn, t *Table, opts InspectOptions, r *Report) (_ *TableReport, err error) {
	tr := &TableReport{Table: t.Name, Keys: []*KeyReport{}, Migrating: t.Migrating}
	if t.Migrating {
		defer func() { r.Problems = append(r.Problems, migratingProblem(tr, err != nil)) }()
	}
	var nsp, rel string
	err = conn.QueryRow(ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')`, t.Name).Scan(&nsp, &rel)
	if err == pgx.ErrNoRows {
		return tr, errors.New("no such table")
	}
	if err != nil {
		return tr, err
	}
	from := pgx.Identifier{nsp, rel}.Sanitize()
	pk := make([]string, len(t.PrimaryKey))
	pkText := make([]string, len(t.PrimaryKey))
	for i, p := range t.PrimaryKey {
		pk[i] = pgx.Identifier{p}.Sanitize()
		pkText[i] = pk[i] + "::text"
	}
	for _, kn := range slices.Sorted(maps.Keys(t.Keys)) {
		k := t.Keys[kn]
		kr := &KeyReport{Key: kn, Column: k.Column, CurrentVersion: k.Version, Versions: []VersionCount{}}
		var hasValue []string
		for _, cn := range slices.Sorted(maps.Keys(t.Columns)) {
			if t.Columns[cn].Key == kn {
				kr.Columns = append(kr.Columns, cn)
				hasValue = append(hasValue, pgx.Identifier{cn}.Sanitize()+" IS NOT NULL")
			}
		}
		anyValue := "false"
		if len(hasValue) > 0 {
			anyValue = strings.Join(hasValue, " OR ")
		}
		kc := pgx.Identifier{k.Column}.Sanitize()
		// -1: NULL key column, 0: malformed, else the version.
		q := `SELECT CASE WHEN ` + kc + ` IS NULL THEN -1 WHEN ` + kc + ` ~ $1 THEN substring(` + kc + ` from '^v([0-9]+):')::int ELSE 0 END,
			count(*), count(*) FILTER (WHERE ` + anyValue + `) FROM ` + from + ` GROUP BY 1 ORDER BY 1`
		rows, err := conn.Query(ctx, q, wrappedKeyRe)
		if err != nil {
			return tr, err
		}
		var v int
		var n, withValues int64
		_, err = pgx.ForEachRow(rows, []any{&v, &n, &withValues}, func() error {
			kr.Rows += n
			switch {
			case v == -1:
				kr.NullKey, kr.Unkeyed = n, withValues
			case v == 0:
				kr.Malformed = n
			default:
				vc := VersionCount{Version: v, Rows: n}
				keyID, _, ok := k.versionOf(v)
				switch {
				case v == k.Version:
					vc.Status, vc.KeyID = "current", keyID
				case ok:
					vc.Status, vc.KeyID = "previous", keyID
					kr.Rewrap += n
				default:
					vc.Status = "inactive"
					kr.Inactive += n
				}
				kr.Versions = append(kr.Versions, vc)
			}
			return nil
		})
		if err != nil {
			return tr, err
		}
		sample := func(where string, args ...any) ([]string, error) {
			rows, err := conn.Query(ctx, "SELECT concat_ws(', ', "+labelExprs(t.PrimaryKey, pkText)+") FROM "+from+
				" WHERE "+where+" ORDER BY "+strings.Join(pk, ", ")+" LIMIT "+strconv.Itoa(opts.Samples), args...)
			if err != nil {
				return nil, err
			}
			return pgx.CollectRows(rows, pgx.RowTo[string])
		}
		where := t.Name + "." + kn
		if kr.Unkeyed > 0 && t.Migrating {
			if kr.UnkeyedSample, err = sample(kc + " IS NULL AND (" + anyValue + ")"); err != nil {
				return tr, err
			}
		} else if kr.Unkeyed > 0 {
			if kr.UnkeyedSample, err = sample(kc + " IS NULL AND (" + anyValue + ")"); err != nil {
				return tr, err
			}
			r.Problems = append(r.Problems, fmt.Sprintf("%s: %s with values in %s but a NULL %s (%s): plaintext, which the driver refuses to read; rewrite each through the driver with one UPDATE that sets every column under the key (%s) to its value",
				where, rowsWord(kr.Unkeyed), strings.Join(kr.Columns, ", "), k.Column, sampleText(kr.UnkeyedSample, kr.Unkeyed), strings.Join(kr.Columns, ", ")))
		}
		if kr.Malformed > 0 {
			if kr.MalformedSample, err = sample(kc+" IS NOT NULL AND "+kc+" !~ $1", wrappedKeyRe); err != nil {
				return tr, err
			}
			r.Problems = append(r.Problems, fmt.Sprintf("%s: %s with a malformed %s, not v<version>:<base64> (%s): %s",
				where, rowsWord(kr.Malformed), k.Column, sampleText(kr.MalformedSample, kr.Malformed), restoreHint(t.Name, k.Column, rowsWhich(kr.Malformed))))
		}
		for _, vc := range kr.Versions {
			if vc.Status == "inactive" {
				r.Problems = append(r.Problems, fmt.Sprintf("%s: %s at version %d, which is neither current (%d) nor in previous_versions, so they cannot be read: add version %d to previous_versions with the key id it was written with",
					where, rowsWord(vc.Rows), vc.Version, k.Version, vc.Version))
			}
		}
		tr.Keys = append(tr.Keys, kr)
	}
	return tr, nil
}

// migratingProblem is the problem of a table left in migrating mode.
func migratingProblem(tr *TableReport, failed bool) string {
	var plain int64
	for _, k := range tr.Keys {
		plain += k.Unkeyed
	}
	if failed || plain > 0 {
		what := "rows not counted (see above)"
		if !failed {
			what = rowsWord(plain) + " still in plaintext"
		}
		return fmt.Sprintf("%s: migrating: true, with %s: run kmspostgres encrypt %s, then remove migrating from the schema map", tr.Table, what, tr.Table)
	}
	return fmt.Sprintf("%s: migrating: true, but every row is encrypted: remove migrating from the schema map (while it is on, whoever can clear a key column can have the driver read plaintext they wrote)", tr.Table)
}

// labelExprs renders SQL that labels a row by its primary key: id=42.
func labelExprs(names, texts []string) string {
	parts := make([]string, len(names))
	for i := range names {
		parts[i] = "'" + names[i] + "=' || " + texts[i] // names are plain identifiers (Validate)
	}
	return strings.Join(parts, ", ")
}

func sampleText(sample []string, n int64) string {
	s := strings.Join(sample, "; ")
	if int64(len(sample)) < n {
		s += "; …"
	}
	return s
}

func rowsWhich(n int64) string {
	if n == 1 {
		return "this row"
	}
	return "these rows"
}

func rowsWord(n int64) string {
	if n == 1 {
		return "1 row"
	}
	return strconv.FormatInt(n, 10) + " rows"
}

// inspectKeyIDs checks every master key id of the schema map: that a
// provider serves it, and a round trip of a throwaway data key.
func (c *Connector) inspectKeyIDs(ctx context.Context, opts InspectOptions, r *Report) {
	type use struct {
		version int
		label   string
	}
	uses := map[string][]use{}
	for _, tn := range slices.Sorted(maps.Keys(c.schema.Tables)) {
		t := c.schema.Tables[tn]
		for _, kn := range slices.Sorted(maps.Keys(t.Keys)) {
			k := t.Keys[kn]
			versions := []int{k.Version}
			for v := range k.PreviousVersions {
				versions = append(versions, v)
			}
			sort.Sort(sort.Reverse(sort.IntSlice(versions)))
			for _, v := range versions {
				keyID, _, _ := k.versionOf(v)
				uses[keyID] = append(uses[keyID], use{v, tn + "." + kn + " v" + strconv.Itoa(v)})
			}
		}
	}
	for _, keyID := range slices.Sorted(maps.Keys(uses)) {
		kr := &KeyIDReport{KeyID: keyID, Kind: string(providers.KindOf(keyID)), Wrap: "skipped", Unwrap: "skipped"}
		if c.keyring.provider != nil {
			kr.Kind = "custom"
		}
		for _, u := range uses[keyID] {
			kr.UsedBy = append(kr.UsedBy, u.label)
		}
		r.KeyIDs = append(r.KeyIDs, kr)
		problem := func(format string, args ...any) {
			r.Problems = append(r.Problems, fmt.Sprintf("key id %s (%s): ", keyID, strings.Join(kr.UsedBy, ", "))+fmt.Sprintf(format, args...))
		}
		// providerFor refuses key ids of unknown shape
		// (providers.ValidateKeyID) and those whose provider is not linked.
		if _, err := c.keyring.providerFor(keyID); err != nil {
			kr.Wrap = err.Error()
			problem("%v", err)
			continue
		}
		kr.Linked = true
		version := uses[keyID][0].version
		if err := c.roundTrip(ctx, keyID, version, opts, kr); err != nil {
			switch {
			case errors.Is(err, ErrPermission) && kr.Wrap == "ok":
				problem("%v; if these credentials are meant to be encrypt-only, check with -wrap-only (InspectOptions.WrapOnly)", err)
			default:
				problem("%v", err)
			}
		}
	}
}

// roundTrip wraps a throwaway data key under keyID and, unless WrapOnly,
// unwraps it again and compares.
func (c *Connector) roundTrip(ctx context.Context, keyID string, version int, opts InspectOptions, kr *KeyIDReport) error {
	dk, err := envelope.NewDataKey()
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, opts.KMSTimeout)
	w, err := c.keyring.wrap(wctx, keyID, version, checkContext, dk)
	cancel()
	if err != nil {
		kr.Wrap = err.Error()
		return err
	}
	kr.Wrap = "ok"
	if opts.WrapOnly {
		return nil
	}
	wk, err := envelope.ParseWrappedKey(w)
	if err != nil {
		kr.Unwrap = err.Error()
		return err
	}
	uctx, cancel := context.WithTimeout(ctx, opts.KMSTimeout)
	got, err := c.keyring.unwrap(uctx, keyID, version, checkContext, wk.Ciphertext)
	cancel()
	if err != nil {
		kr.Unwrap = err.Error()
		return err
	}
	if subtle.ConstantTimeCompare(got, dk) != 1 {
		err := fmt.Errorf("%w: unwrap returned another data key than was wrapped", ErrDecrypt)
		kr.Unwrap = err.Error()
		return err
	}
	kr.Unwrap = "ok"
	return nil
}

// rowFailure reports whether an error concerns one row's key column only
// (it does not parse, does not unwrap, or is at an inactive version), so
// that a table-wide job can skip the row and go on.
func rowFailure(err error) bool {
	return errors.Is(err, ErrFormat) || errors.Is(err, ErrDecrypt) || errors.Is(err, ErrVersion)
}

// keyColumnHint adds the way out to the error of a row whose key column
// cannot be read: the key column is the only thing to restore.
func keyColumnHint(err error, table, keyColumn string) error {
	switch {
	case errors.Is(err, ErrFormat):
		return fmt.Errorf("%w; the key column is corrupt: %s", err, restoreHint(table, keyColumn, "this row"))
	case errors.Is(err, ErrDecrypt):
		return fmt.Errorf("%w; either the row was written under another master key id or context than the schema map gives for its version (then add that key id and context to the key's previous_versions under the version in its key column, and rewrap), or its key column or primary key was altered (then %s)", err, restoreHint(table, keyColumn, "this row"))
	}
	return err
}

// restoreHint says how to recover rows whose key column is corrupt; which
// is "this row" or "these rows".
func restoreHint(table, keyColumn, which string) string {
	return "restore " + table + "." + keyColumn + " of " + which + " from a backup; the encrypted cells are intact and decrypt again once the key column holds its old value"
}
