package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/kmspostgres/kmspostgres"
)

const checkHelp = `Usage: kmspostgres check [-dsn DSN] [-json] [-wrap-only] [-kms-timeout D]

Checks the schema map against the database and its data, and reports:
  - the layout: every table, primary key, key column and encrypted column
    exists with a supported type;
  - per table and key: rows with values in encrypted columns but a NULL key
    column (plaintext), malformed key columns, rows per key version (those
    at a previous version are what rewrap moves; those at a version neither
    current nor in previous_versions cannot be read);
  - per master key id: whether its provider is linked in, and whether a
    throwaway data key wraps and unwraps under the context
    {"table":"kmspostgres-check"} (with -wrap-only it is only wrapped, for
    encrypt-only credentials).
It reads every row of every mapped table once per key (counting in SQL).

Exit codes: 0 no problem found, 1 problems found (or the check could not
run), 2 usage error. With -json the report goes to stdout as one JSON object
({"ok": …, "problems": […], "tables": […], "key_ids": […], …}); an error that
stops the check before a report (the database or the schema map) is printed
as {"ok": false, "error": "…"}.

Examples:
  kmspostgres check -dsn "postgres://app@db/app?kms_schema=schema.yaml"
  kmspostgres check -json -wrap-only > check.json || exit 1
`

func checkFlags(fs *flag.FlagSet) func(context.Context, *cmdEnv) int {
	asJSON := fs.Bool("json", false, "print the report as JSON")
	wrapOnly := fs.Bool("wrap-only", false, "check key ids with a wrap only, not a wrap and unwrap (encrypt-only credentials)")
	timeout := fs.Duration("kms-timeout", 10*time.Second, "bound of each KMS call of the check")
	return func(ctx context.Context, e *cmdEnv) int {
		if len(e.args) > 0 {
			return e.usageErr("check takes no arguments, got %q", e.args[0])
		}
		if *timeout <= 0 {
			return e.usageErr("-kms-timeout must be positive")
		}
		e.json = *asJSON
		c, code := e.connector()
		if c == nil {
			return code
		}
		r, err := c.Inspect(ctx, kmspostgres.InspectOptions{WrapOnly: *wrapOnly, KMSTimeout: *timeout})
		if err != nil {
			return e.fail(err)
		}
		if *asJSON {
			if err := writeJSON(e.stdout, struct {
				OK bool `json:"ok"`
				*kmspostgres.Report
			}{r.OK(), r}); err != nil {
				fmt.Fprintln(e.stderr, err)
				return exitProblem
			}
		} else {
			printReport(e.stdout, r)
			if code := printBlindIndexes(ctx, e, c); code != exitOK {
				return code
			}
		}
		if !r.OK() {
			return exitProblem
		}
		return exitOK
	}
}

// printReport writes a report for people: per table and key, a table of
// row counts; per key id, what the round trip said; then the problems.
func printReport(w io.Writer, r *kmspostgres.Report) {
	fmt.Fprintf(w, "schema map: %s\n", r.Schema)
	if r.Layout == "" {
		fmt.Fprintln(w, "layout: ok")
	} else {
		fmt.Fprintln(w, "layout: does not match (see problems)")
	}
	for _, t := range r.Tables {
		fmt.Fprintf(w, "\ntable %s\n", t.Table)
		if t.Migrating {
			fmt.Fprintln(w, "  migrating: true (plaintext beside a NULL key column is read; encrypt, then turn it off)")
		}
		if t.Error != "" {
			fmt.Fprintf(w, "  not scanned: %s\n", t.Error)
			continue
		}
		for _, k := range t.Keys {
			fmt.Fprintf(w, "  key %s: column %s, current version %d, encrypts %s\n", k.Key, k.Column, k.CurrentVersion, strings.Join(k.Columns, ", "))
			line := func(label string, n int64, note string) {
				fmt.Fprintln(w, strings.TrimRight(fmt.Sprintf("    %-16s %10d  %s", label, n, note), " "))
			}
			line("rows", k.Rows, "")
			for _, v := range k.Versions {
				note := ""
				switch v.Status {
				case "previous":
					note = "rewrap moves these"
				case "inactive":
					note = "cannot be read: not in previous_versions"
				}
				line(fmt.Sprintf("v%d (%s)", v.Version, v.Status), v.Rows, note)
			}
			line("NULL key", k.NullKey, unkeyedNote(k))
			line("malformed key", k.Malformed, "")
		}
	}
	if len(r.KeyIDs) > 0 {
		fmt.Fprintln(w, "\nkey ids")
	}
	for _, k := range r.KeyIDs {
		fmt.Fprintf(w, "  %s (%s; %s): ", k.KeyID, k.Kind, strings.Join(k.UsedBy, ", "))
		switch {
		case !k.Linked:
			fmt.Fprintln(w, "no provider")
		default:
			fmt.Fprintf(w, "wrap %s, unwrap %s\n", short(k.Wrap), short(k.Unwrap))
		}
	}
	fmt.Fprintln(w)
	if r.OK() {
		fmt.Fprintln(w, "ok: no problems found")
		return
	}
	if len(r.Problems) == 1 {
		fmt.Fprintln(w, "1 problem:")
	} else {
		fmt.Fprintf(w, "%d problems:\n", len(r.Problems))
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  - %s\n", p)
	}
}

func unkeyedNote(k *kmspostgres.KeyReport) string {
	if k.Unkeyed == 0 {
		return ""
	}
	return fmt.Sprintf("%d with values in encrypted columns (plaintext)", k.Unkeyed)
}

// short keeps "ok" and "skipped" and calls anything else failed (the
// error is among the problems).
func short(s string) string {
	if s == "ok" || s == "skipped" {
		return s
	}
	return "FAILED"
}
