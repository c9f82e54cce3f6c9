package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"

	"github.com/kmspostgres/kmspostgres"
)

const rewrapHelp = `Usage: kmspostgres rewrap [-dsn DSN] [-all] [-batch N] TABLE...

Moves each row of the tables to the current version of each key: its data
key is unwrapped under the version it was written with and wrapped under
the current version's key id and context. With -all every row is
re-wrapped, after rotating the master key in the KMS. Cells are not
touched, no lock is held across KMS calls, and a row changed meanwhile is
left for the next run. A row whose key column cannot be read (malformed,
not unwrapping, at an inactive version) is reported and skipped; the rest of
the table goes on. Every table must be in the schema map and the database
before anything is done.

Exit codes: 0 done, 1 a row was skipped or the command failed, 2 usage
error.

Examples:
  kmspostgres rewrap -dsn "postgres://app@db/app?kms_schema=schema.yaml" users
  kmspostgres rewrap users orders -batch 1000   # DSN from DATABASE_URL
`

func rewrapFlags(fs *flag.FlagSet) func(context.Context, *cmdEnv) int {
	all := fs.Bool("all", false, "re-wrap every row, not only rows below the current key version")
	batch := fs.Int("batch", 500, "rows per round (at least 1)")
	return func(ctx context.Context, e *cmdEnv) int {
		c, code := e.tablesConnector(*batch)
		if c == nil {
			return code
		}
		// The layout first: a table missing from the database, or any
		// mismatch, is refused before a row is touched.
		if err := c.Check(ctx); err != nil {
			fmt.Fprintln(e.stderr, err)
			return exitProblem
		}
		code = exitOK
		for _, table := range e.args {
			st, err := c.Rewrap(ctx, table, kmspostgres.RewrapOptions{All: *all, BatchSize: *batch})
			fmt.Fprintln(e.stdout, rewrapLine(table, st))
			for _, f := range st.Failures {
				fmt.Fprintf(e.stderr, "  skipped: %v\n", f.Err) // it names the table, row and key
			}
			if more := st.Failed - len(st.Failures); more > 0 {
				fmt.Fprintf(e.stderr, "  … and %d more skipped rows\n", more)
			}
			if st.Failed > 0 {
				code = exitProblem
			}
			if err != nil {
				fmt.Fprintln(e.stderr, err)
				return exitProblem
			}
		}
		return code
	}
}

// rewrapLine summarizes one table's run.
func rewrapLine(table string, st kmspostgres.RewrapStats) string {
	if st.Rewrapped == 0 && st.Changed == 0 && st.Failed == 0 {
		return table + ": nothing to rewrap"
	}
	parts := []string{fmt.Sprintf("%d rewrapped", st.Rewrapped)}
	if st.Changed > 0 {
		parts = append(parts, fmt.Sprintf("%d changed meanwhile (run again)", st.Changed))
	}
	if st.Failed > 0 {
		parts = append(parts, fmt.Sprintf("%d skipped (their key column cannot be read, see below)", st.Failed))
	}
	return table + ": " + strings.Join(parts, ", ")
}

func sorted(s []string) []string {
	slices.Sort(s)
	return s
}
