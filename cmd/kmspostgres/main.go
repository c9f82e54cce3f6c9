// Command kmspostgres runs maintenance on databases written through the
// kmspostgres driver.
//
//	kmspostgres check  [-dsn DSN] [-json] [-wrap-only] [-kms-timeout D]
//	kmspostgres rewrap [-dsn DSN] [-all] [-batch N] TABLE...
//	kmspostgres encrypt [-dsn DSN] [-dry-run] [-batch N] [-concurrency N] [-kms-rps R] [-json] TABLE...
//	kmspostgres decrypt [-dsn DSN] -yes [flags as encrypt] TABLE...
//	kmspostgres reencrypt [-dsn DSN] [-after PK] [flags as encrypt] TABLE...
//	kmspostgres context-hash [-dsn DSN] [-key NAME] [-device PATH] TABLE PK
//	kmspostgres reindex [-dsn DSN] [-all] [-rotate] [-batch N] TABLE...
//	kmspostgres blind-index-key KEY_ID
//	kmspostgres help [COMMAND]
//
// check resolves the schema map against the database, looks at the data
// (rows with values but no key, malformed key columns, rows per key
// version) and tries each master key id with a throwaway data key; it
// exits 1 when it finds a problem, so a deploy pipeline can gate on it.
// rewrap moves rows to the current version of each key (after switching
// master keys, KMSs or contexts in the schema map), or with -all re-wraps
// every row (after rotating the master key in the KMS), without downtime
// and without touching encrypted cells.
//
// The DSN (flag -dsn, else DATABASE_URL) is a kmspostgres DSN: a pgx
// connection string with kms_schema=<schema map>, or with
// KMSPOSTGRES_SCHEMA set. All KMS providers are linked in.
//
// encrypt, decrypt and reencrypt are online backfills: encrypt the rows of
// a table that predates the driver, decrypt them all back out, or give
// every row a fresh data key. context-hash prints the Vault audit HMAC of a
// row's encryption context.
//
// Exit codes: 0 all good, 1 problems found or the command failed, 2 usage
// error, 3 a backfill was interrupted (run it again to go on).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/kmspostgres/kmspostgres"
	_ "github.com/kmspostgres/kmspostgres/providers/all"
)

// Exit codes.
const (
	exitOK      = 0 // all good
	exitProblem = 1 // problems found, or the command failed
	exitUsage   = 2 // the command line is wrong
)

const usage = `kmspostgres runs maintenance on databases written through the kmspostgres driver.

Usage:
  kmspostgres check        [-dsn DSN] [-json] [-wrap-only] [-kms-timeout D]
  kmspostgres rewrap       [-dsn DSN] [-all] [-batch N] TABLE...
  kmspostgres encrypt      [-dsn DSN] [-dry-run] [-batch N] [-concurrency N] [-kms-rps R] [-json] TABLE...
  kmspostgres decrypt      [-dsn DSN] -yes [-dry-run] [-batch N] [-concurrency N] [-kms-rps R] [-json] TABLE...
  kmspostgres reencrypt    [-dsn DSN] [-dry-run] [-after PK] [-batch N] [-concurrency N] [-kms-rps R] [-json] TABLE...
  kmspostgres context-hash [-dsn DSN] [-key NAME] [-device PATH] TABLE PK
  kmspostgres reindex      [-dsn DSN] [-all] [-rotate] [-batch N] TABLE...
  kmspostgres blind-index-key KEY_ID
  kmspostgres help [COMMAND]

Commands:
  check         check the schema map against the database and its data, and
                every master key id against its KMS
  rewrap        move rows to the current version of each key, without
                touching cells
  encrypt       encrypt the plaintext rows of a table adopted with
                migrating: true, online and resumable
  decrypt       the way back out: every row back to plaintext, online
  reencrypt     a fresh data key for every row, every cell re-encrypted
  context-hash  the Vault audit HMAC of a row's encryption context
  reindex       fill or recompute blind-index columns, in locked batches
  blind-index-key
                make a blind-index master key wrapped by a KMS key

The DSN comes from -dsn, else DATABASE_URL: a pgx connection string with
kms_schema=<schema map file> (or KMSPOSTGRES_SCHEMA set). Flags may come
before or after table names. Run 'kmspostgres COMMAND -h' for a command's
flags.

Exit codes: 0 all good, 1 problems found or the command failed, 2 usage error,
3 interrupted (encrypt, decrypt, reencrypt: what was written stays; run the
command again to go on).

Examples:
  kmspostgres check -dsn "postgres://app@db/app?kms_schema=schema.yaml"
  kmspostgres check -json -wrap-only      # DSN from DATABASE_URL; encrypt-only credentials
  kmspostgres rewrap users orders -dsn "postgres://app@db/app?kms_schema=schema.yaml"
  kmspostgres rewrap -all users           # after rotating the master key in the KMS
  kmspostgres encrypt users -dry-run      # adopting: what encrypt would do
  kmspostgres encrypt users -kms-rps 200  # adopting: encrypt the plaintext rows
  kmspostgres decrypt -yes users          # the way back out
  kmspostgres context-hash users 42       # find row 42 in a Vault audit log
  kmspostgres reindex users               # fill a new blind index
`

// command is one subcommand: its help text, and a run function that gets
// its flags already parsed.
type command struct {
	help  string
	flags func(fs *flag.FlagSet) func(ctx context.Context, e *cmdEnv) int
}

// cmdEnv is what a parsed command runs with.
type cmdEnv struct {
	name           string
	dsn            string
	args           []string // positional arguments
	json           bool     // -json: errors too go to stdout as JSON
	stdout, stderr io.Writer
}

// usageErr reports a command-line mistake in one line, with a hint.
func (e *cmdEnv) usageErr(format string, args ...any) int {
	fmt.Fprintf(e.stderr, "kmspostgres %s: %s; run 'kmspostgres %s -h'\n", e.name, fmt.Sprintf(format, args...), e.name)
	return exitUsage
}

// connector opens the connector of the DSN, or says why not.
func (e *cmdEnv) connector() (*kmspostgres.Connector, int) {
	if e.dsn == "" {
		e.dsn = os.Getenv("DATABASE_URL")
	}
	if e.dsn == "" {
		return nil, e.usageErr("no DSN: pass -dsn or set DATABASE_URL")
	}
	c, err := kmspostgres.NewConnector(e.dsn)
	if err != nil {
		return nil, e.fail(err)
	}
	return c, exitOK
}

// fail reports an error that stopped the command on stderr, and with
// -json also as {"ok": false, "error": …} on stdout, so that a pipeline
// reading stdout always gets an object.
func (e *cmdEnv) fail(err error) int {
	fmt.Fprintln(e.stderr, err)
	if e.json {
		writeJSON(e.stdout, struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		}{false, err.Error()})
	}
	return exitProblem
}

// writeJSONLine writes v as one line of JSON (progress and results of the
// backfill commands).
func writeJSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

var commands = map[string]command{
	"check":           {help: checkHelp, flags: checkFlags},
	"rewrap":          {help: rewrapHelp, flags: rewrapFlags},
	"encrypt":         {help: encryptHelp, flags: encryptFlags},
	"decrypt":         {help: decryptHelp, flags: decryptFlags},
	"reencrypt":       {help: reencryptHelp, flags: reencryptFlags},
	"context-hash":    {help: contextHashHelp, flags: contextHashFlags},
	"reindex":         {help: reindexHelp, flags: reindexFlags},
	"blind-index-key": {help: blindIndexKeyHelp, flags: blindIndexKeyFlags},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills at once
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		if name == "help" && len(args) > 1 {
			if _, ok := commands[args[1]]; ok {
				return runCommand(ctx, args[1], []string{"-h"}, stdout, stderr)
			}
			fmt.Fprintf(stderr, "kmspostgres: unknown command %q; run 'kmspostgres help'\n", args[1])
			return exitUsage
		}
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	if _, ok := commands[name]; !ok {
		if strings.HasPrefix(name, "-") {
			fmt.Fprintf(stderr, "kmspostgres: the command comes first (check, rewrap, encrypt, …), then flags such as %s; run 'kmspostgres help'\n", name)
		} else {
			fmt.Fprintf(stderr, "kmspostgres: unknown command %q (commands: check, rewrap, encrypt, decrypt, reencrypt, context-hash, reindex, blind-index-key); run 'kmspostgres help'\n", name)
		}
		return exitUsage
	}
	return runCommand(ctx, name, args[1:], stdout, stderr)
}

// runCommand parses a command's flags (anywhere among its arguments) and
// runs it.
func runCommand(ctx context.Context, name string, args []string, stdout, stderr io.Writer) int {
	cmd := commands[name]
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	e := &cmdEnv{name: name, stdout: stdout, stderr: stderr}
	// No default value: help would print $DATABASE_URL, password and all.
	fs.StringVar(&e.dsn, "dsn", "", "kmspostgres DSN: a pgx connection string with kms_schema=<file> (default $DATABASE_URL)")
	runFn := cmd.flags(fs)
	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, cmd.help)
		fmt.Fprintln(stdout, "\nFlags:")
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return exitOK
	}
	if err != nil {
		return e.usageErr("%v", err)
	}
	e.args = pos
	return runFn(ctx, e)
}

// parseInterleaved parses flags wherever they stand among the positional
// arguments (rewrap users -dsn …), which the flag package alone stops at:
// it parses flags, takes one positional argument, and parses flags again.
// After "--" everything is positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}
