package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/kmspostgres/kmspostgres"
)

// Exit code of a backfill stopped by a signal: what it wrote stays, and
// running the same command again goes on.
const exitInterrupted = 3

const backfillFlagsHelp = `
Each round reads -batch rows in primary-key order without a lock, makes its
KMS calls outside any transaction (at most -concurrency at once, at most
-kms-rps per second), and writes the round in one UPDATE that changes a row
only if its key column and cells still hold what was read: writes through
the driver meanwhile are never lost or done twice. The next rounds are read
and keyed while up to -writers rounds are written, on connections of their
own (-writers + 1 connections in all). Progress goes to stderr:
a bar on a terminal, a line every 10 s otherwise (-json: JSON lines on
stdout). Ctrl-C stops after the round in flight and exits 3.

Exit codes: 0 done, 1 a row was skipped or the command failed, 2 usage
error, 3 interrupted (what was written stays; run the command again).
`

const encryptHelp = `Usage: kmspostgres encrypt [-dsn DSN] [-dry-run] [-batch N] [-concurrency N] [-kms-rps R] [-json] TABLE...

Encrypts every row whose key column is NULL and that holds values in
encrypted columns: the plaintext rows of a table that predates the driver.
Each row gets a fresh data key under the current version of its key, and
each value (read in the text form of its type) is encrypted under it.
Deploy the application with migrating: true on the table first, so that it
reads both kinds of row while this runs; turn migrating off afterwards.
A run picks up where an interrupted one stopped; on a finished table it
does nothing. A value that does not read as its type, or that has the shape
of an encrypted cell beside a NULL key column, is reported and skipped.
` + backfillFlagsHelp + `
Examples:
  kmspostgres encrypt -dry-run users       # check every value reads as its type; no KMS call, no write
  kmspostgres encrypt -dsn "postgres://app@db/app?kms_schema=schema.yaml" users
  kmspostgres encrypt users orders -kms-rps 200 -concurrency 4   # leave KMS quota to the service
`

const decryptHelp = `Usage: kmspostgres decrypt [-dsn DSN] -yes [-dry-run] [-batch N] [-concurrency N] [-kms-rps R] [-json] TABLE...

The way back out: decrypts every row and writes its values back in
plaintext, in the text form of their type (cast the columns back with
ALTER TABLE … USING col::type), with the key column NULL. Readers through
the driver need migrating: true on the table while this runs. -yes is
required, since it puts plaintext in the database.
` + backfillFlagsHelp + `
Examples:
  kmspostgres decrypt -dry-run users
  kmspostgres decrypt -yes -dsn "postgres://app@db/app?kms_schema=schema.yaml" users
`

const reencryptHelp = `Usage: kmspostgres reencrypt [-dsn DSN] [-dry-run] [-after PK] [-batch N] [-concurrency N] [-kms-rps R] [-json] TABLE...

Gives every row a fresh data key, under the current version of its key,
and re-encrypts every cell under it (kms_encrypted's rotate_kms_key!): two
KMS calls per row. rewrap is the cheap path that re-wraps data keys without
touching cells. Every run goes over the whole table; an interrupted run
prints the -after value that resumes it.
` + backfillFlagsHelp + `
Examples:
  kmspostgres reencrypt -dsn "postgres://app@db/app?kms_schema=schema.yaml" users
  kmspostgres reencrypt users -after 120500   # resume after the row with id 120500
`

// backfillRun is what one backfill command calls per table.
type backfillRun func(*kmspostgres.Connector, context.Context, string, kmspostgres.BackfillOptions) (kmspostgres.BackfillStats, error)

func encryptFlags(fs *flag.FlagSet) func(context.Context, *cmdEnv) int {
	return backfillFlags(fs, "encrypted", (*kmspostgres.Connector).Encrypt)
}

func decryptFlags(fs *flag.FlagSet) func(context.Context, *cmdEnv) int {
	return backfillFlags(fs, "decrypted", (*kmspostgres.Connector).Decrypt)
}

func reencryptFlags(fs *flag.FlagSet) func(context.Context, *cmdEnv) int {
	return backfillFlags(fs, "re-encrypted", (*kmspostgres.Connector).Reencrypt)
}

// backfillFlags declares the flags shared by encrypt, decrypt and
// reencrypt, and returns the command.
func backfillFlags(fs *flag.FlagSet, verb string, fn backfillRun) func(context.Context, *cmdEnv) int {
	dryRun := fs.Bool("dry-run", false, "read and count what would change; no KMS call, no write")
	batch := fs.Int("batch", 500, "rows per round (at least 1)")
	concurrency := fs.Int("concurrency", 16, "KMS calls in flight at most (at least 1)")
	rps := fs.Float64("kms-rps", 0, "KMS calls per second at most (0: no limit)")
	writers := fs.Int("writers", 2, "rounds written at once, each on its own connection (at least 1)")
	asJSON := fs.Bool("json", false, "progress and result as JSON lines on stdout")
	var yes *bool
	if fs.Name() == "decrypt" {
		yes = fs.Bool("yes", false, "confirm: decrypt writes plaintext into the database")
	}
	var after *string
	if fs.Name() == "reencrypt" {
		after = fs.String("after", "", "resume after this primary key (values comma-separated, in primary-key order)")
	}
	return func(ctx context.Context, e *cmdEnv) int {
		switch {
		case *batch <= 0:
			return e.usageErr("-batch must be at least 1, got %d", *batch)
		case *concurrency <= 0:
			return e.usageErr("-concurrency must be at least 1, got %d", *concurrency)
		case *writers <= 0:
			return e.usageErr("-writers must be at least 1, got %d", *writers)
		case *rps < 0:
			return e.usageErr("-kms-rps must be 0 (no limit) or positive, got %g", *rps)
		case len(e.args) == 0:
			return e.usageErr("name at least one table")
		case yes != nil && !*yes && !*dryRun:
			return e.usageErr("decrypt writes plaintext into the database: pass -yes to confirm (or -dry-run)")
		case after != nil && *after != "" && len(e.args) > 1:
			return e.usageErr("-after resumes one table; name only that table")
		}
		e.json = *asJSON
		c, code := e.connector()
		if c == nil {
			return code
		}
		if code := checkTables(e, c, e.args); code != exitOK {
			return code
		}
		// The layout first: a table missing from the database, or any
		// mismatch (a typed column not yet changed to text), is refused
		// before a row is touched.
		if err := c.Check(ctx); err != nil {
			if ctx.Err() != nil {
				fmt.Fprintln(e.stderr, "interrupted before any row was written")
				return exitInterrupted
			}
			return e.fail(err)
		}
		opts := kmspostgres.BackfillOptions{BatchSize: *batch, Concurrency: *concurrency, KMSRate: *rps, Writers: *writers, DryRun: *dryRun}
		if after != nil && *after != "" {
			opts.After = strings.Split(*after, ",")
		}
		var results []*tableResult
		code = exitOK
		for _, table := range e.args {
			p := newProgress(e, table)
			opts.Progress = p.update
			st, err := fn(c, ctx, table, opts)
			p.finish()
			res := &tableResult{Table: table, Stats: st, DryRun: *dryRun}
			results = append(results, res)
			for _, f := range st.Failures {
				fmt.Fprintf(e.stderr, "  skipped: %v\n", f.Err) // names the table, column, row and what to do; never a value
				res.Skipped = append(res.Skipped, f.Err.Error())
			}
			if more := st.Failed - int64(len(st.Failures)); more > 0 {
				fmt.Fprintf(e.stderr, "  … and %d more skipped rows\n", more)
			}
			if st.Failed > 0 {
				code = exitProblem
			}
			switch {
			case err != nil && ctx.Err() != nil:
				res.Interrupted = true
				res.Resume = resumeHint(e.name, table, st)
				if !e.json {
					fmt.Fprintln(e.stdout, summaryLine(table, verb, res))
				}
				fmt.Fprintf(e.stderr, "interrupted: what was written stays; %s\n", res.Resume)
				printJSONResult(e, results, false)
				return exitInterrupted
			case err != nil:
				res.Error = err.Error()
				if !e.json {
					fmt.Fprintln(e.stdout, summaryLine(table, verb, res))
				}
				fmt.Fprintln(e.stderr, err)
				printJSONResult(e, results, false)
				return exitProblem
			}
			if !e.json {
				fmt.Fprintln(e.stdout, summaryLine(table, verb, res))
			}
		}
		printJSONResult(e, results, code == exitOK)
		return code
	}
}

// tablesConnector checks the command line of a command that works on
// tables in batches (-batch, at least one table, every table in the
// schema map) and opens the connector; nil with the exit code otherwise.
func (e *cmdEnv) tablesConnector(batch int) (*kmspostgres.Connector, int) {
	if batch <= 0 {
		return nil, e.usageErr("-batch must be at least 1, got %d", batch)
	}
	if len(e.args) == 0 {
		return nil, e.usageErr("name at least one table")
	}
	c, code := e.connector()
	if c == nil {
		return nil, code
	}
	if code := checkTables(e, c, e.args); code != 0 {
		return nil, code
	}
	return c, exitOK
}

// checkTables refuses, as a usage error, a table not in the schema map.
func checkTables(e *cmdEnv, c *kmspostgres.Connector, tables []string) int {
	for _, table := range tables {
		schema, name := "", table
		if i := strings.IndexByte(table, '.'); i >= 0 {
			schema, name = table[:i], table[i+1:]
		}
		if c.Schema().Table(schema, name) == nil {
			var names []string
			for n := range c.Schema().Tables {
				names = append(names, n)
			}
			return e.usageErr("table %s is not in the schema map (its tables: %s)", table, strings.Join(sorted(names), ", "))
		}
	}
	return exitOK
}

// tableResult is one table's outcome, as printed with -json.
type tableResult struct {
	Table       string                    `json:"table"`
	Stats       kmspostgres.BackfillStats `json:"-"`
	Total       int64                     `json:"total"`
	Done        int64                     `json:"done"`
	Changed     int64                     `json:"changed"`
	Failed      int64                     `json:"failed"`
	KMSCalls    int64                     `json:"kms_calls"`
	Seconds     float64                   `json:"seconds"`
	RowsPerSec  float64                   `json:"rows_per_second"`
	DryRun      bool                      `json:"dry_run,omitempty"`
	Interrupted bool                      `json:"interrupted,omitempty"`
	Resume      string                    `json:"resume,omitempty"`
	Skipped     []string                  `json:"skipped,omitempty"`
	Error       string                    `json:"error,omitempty"`
}

func (r *tableResult) fill() {
	st := r.Stats
	r.Total, r.Done, r.Changed, r.Failed, r.KMSCalls = st.Total, st.Done, st.Changed, st.Failed, st.KMSCalls
	r.Seconds = st.Elapsed.Seconds()
	r.RowsPerSec = rate(st.Done, st.Elapsed)
}

func printJSONResult(e *cmdEnv, results []*tableResult, ok bool) {
	if !e.json {
		return
	}
	for _, r := range results {
		r.fill()
	}
	writeJSONLine(e.stdout, struct {
		Event  string         `json:"event"`
		OK     bool           `json:"ok"`
		Tables []*tableResult `json:"tables"`
	}{"result", ok, results})
}

// resumeHint says how to go on after an interruption.
func resumeHint(cmd, table string, st kmspostgres.BackfillStats) string {
	if cmd == "reencrypt" && len(st.Last) > 0 {
		return fmt.Sprintf("resume with: kmspostgres reencrypt %s -after %s", table, strings.Join(st.Last, ","))
	}
	return fmt.Sprintf("run 'kmspostgres %s %s' again to go on", cmd, table)
}

// summaryLine is the final line of one table.
func summaryLine(table, verb string, r *tableResult) string {
	st := r.Stats
	if r.DryRun {
		s := fmt.Sprintf("%s: %d rows would be %s (dry run: no KMS call, nothing written)", table, st.Done, verb)
		if st.Failed > 0 {
			s += fmt.Sprintf(", %d would be skipped (see below)", st.Failed)
		}
		return s
	}
	if st.Done == 0 && st.Changed == 0 && st.Failed == 0 && !r.Interrupted && r.Error == "" {
		return table + ": nothing to do"
	}
	parts := []string{fmt.Sprintf("%d of %d rows %s", st.Done, st.Total, verb)}
	if st.Changed > 0 {
		parts = append(parts, fmt.Sprintf("%d changed meanwhile by other writers (left as they wrote them)", st.Changed))
	}
	if st.Failed > 0 {
		parts = append(parts, fmt.Sprintf("%d skipped (see below)", st.Failed))
	}
	parts = append(parts, fmt.Sprintf("%d KMS calls in %s (%.0f rows/s)", st.KMSCalls, st.Elapsed.Round(time.Millisecond), rate(st.Done, st.Elapsed)))
	if r.Interrupted {
		parts = append(parts, "interrupted")
	}
	return table + ": " + strings.Join(parts, ", ")
}

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// progress reports a table's progress: a bar redrawn in place on a
// terminal, a plain line every plainEvery otherwise, JSON lines with -json.
type progress struct {
	e        *cmdEnv
	table    string
	terminal bool
	last     time.Time
	drawn    bool
}

// plainEvery spaces progress lines when stderr is not a terminal.
var plainEvery = defaultPlainEvery

const defaultPlainEvery = 10 * time.Second

func newProgress(e *cmdEnv, table string) *progress {
	return &progress{e: e, table: table, terminal: isTerminal(e.stderr), last: time.Now()}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func (p *progress) update(st kmspostgres.BackfillStats) {
	every := plainEvery
	if p.terminal && !p.e.json {
		every = 200 * time.Millisecond
	}
	if time.Since(p.last) < every {
		return
	}
	p.last = time.Now()
	r := rate(st.Done, st.Elapsed)
	eta := "?"
	if r > 0 && st.Total >= st.Done {
		eta = (time.Duration(float64(st.Total-st.Done)/r) * time.Second).Round(time.Second).String()
	}
	switch {
	case p.e.json:
		writeJSONLine(p.e.stdout, struct {
			Event    string  `json:"event"`
			Table    string  `json:"table"`
			Done     int64   `json:"done"`
			Total    int64   `json:"total"`
			Changed  int64   `json:"changed"`
			Failed   int64   `json:"failed"`
			KMSCalls int64   `json:"kms_calls"`
			Rate     float64 `json:"rows_per_second"`
		}{"progress", p.table, st.Done, st.Total, st.Changed, st.Failed, st.KMSCalls, r})
	case p.terminal:
		const width = 30
		filled := width
		pct := 100.0
		if st.Total > 0 {
			pct = min(100, 100*float64(st.Done)/float64(st.Total))
			filled = int(pct / 100 * width)
		}
		fmt.Fprintf(p.e.stderr, "\r%s [%s%s] %3.0f%% %d/%d rows  %.0f rows/s  ETA %s  %d KMS calls \033[K",
			p.table, strings.Repeat("#", filled), strings.Repeat("-", width-filled), pct, st.Done, st.Total, r, eta, st.KMSCalls)
		p.drawn = true
	default:
		fmt.Fprintf(p.e.stderr, "%s: %d/%d rows, %.0f rows/s, ETA %s, %d KMS calls, %d changed meanwhile, %d skipped\n",
			p.table, st.Done, st.Total, r, eta, st.KMSCalls, st.Changed, st.Failed)
	}
}

// finish ends the bar's line.
func (p *progress) finish() {
	if p.drawn {
		fmt.Fprint(p.e.stderr, "\r\033[K")
	}
}
