// Command kmspostgres runs maintenance on databases written through the
// kmspostgres driver.
//
//	kmspostgres check  [-dsn DSN]
//	kmspostgres rewrap [-dsn DSN] [-all] [-batch N] TABLE...
//
// check resolves the schema map against the database and reports what
// does not match. rewrap moves rows to the current version of each key
// (after switching master keys, KMSs or contexts in the schema map), or
// with -all re-wraps every row (after rotating the master key in the KMS),
// without downtime and without touching encrypted cells.
//
// The DSN (flag -dsn, else DATABASE_URL) is a kmspostgres DSN: a pgx
// connection string with kms_schema=<schema map>, or with
// KMSPOSTGRES_SCHEMA set. All KMS providers are linked in.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/kmspostgres/kmspostgres"
	_ "github.com/kmspostgres/kmspostgres/providers/all"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	usage := func() int {
		fmt.Fprintln(stderr, "usage: kmspostgres check [-dsn DSN]\n       kmspostgres rewrap [-dsn DSN] [-all] [-batch N] TABLE...\n       kmspostgres reindex [-dsn DSN] [-all] [-batch N] TABLE...\n       kmspostgres blind-index-key KEY_ID")
		return 2
	}
	if len(args) == 0 {
		return usage()
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dsn := fs.String("dsn", os.Getenv("DATABASE_URL"), "kmspostgres DSN (default $DATABASE_URL)")
	all := fs.Bool("all", false, "rewrap: re-wrap every row, not only rows below the current key version; reindex: recompute every row's blind indexes, not only missing ones")
	batch := fs.Int("batch", 0, "rows per round (rewrap default 500, reindex default 100)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if args[0] == "blind-index-key" {
		if fs.NArg() != 1 {
			return usage()
		}
		w, err := kmspostgres.NewWrappedMasterKey(ctx, fs.Arg(0))
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintf(stdout, "blind_index_master_key: {wrapped: %q, key_id: %q}\n", w.Wrapped, w.KeyID)
		return 0
	}
	if *dsn == "" {
		fmt.Fprintln(stderr, "kmspostgres: no DSN: pass -dsn or set DATABASE_URL")
		return 2
	}
	c, err := kmspostgres.NewConnector(*dsn)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	switch args[0] {
	case "check":
		if err := c.Check(ctx); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintf(stdout, "ok: %s\n", c.Schema())
		infos, err := c.BlindIndexes(ctx)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		for _, b := range infos {
			unique := "UNIQUE index"
			if !b.Unique {
				unique = "no UNIQUE index (if the values are unique: CREATE UNIQUE INDEX ON " + b.Table + " (" + b.IndexColumn + "))"
			}
			fmt.Fprintf(stdout, "blind index %s.%s: column %s, %s, %s\n", b.Table, b.Column, b.IndexColumn, b.Algorithm, unique)
		}
		return 0
	case "rewrap":
		if fs.NArg() == 0 {
			return usage()
		}
		for _, table := range fs.Args() {
			st, err := c.Rewrap(ctx, table, kmspostgres.RewrapOptions{All: *all, BatchSize: *batch})
			fmt.Fprintf(stdout, "%s: %d rewrapped, %d changed meanwhile (run again)\n", table, st.Rewrapped, st.Changed)
			if err != nil {
				fmt.Fprintln(stderr, err)
				return 1
			}
		}
		return 0
	case "reindex":
		if fs.NArg() == 0 {
			return usage()
		}
		for _, table := range fs.Args() {
			n, err := c.Reindex(ctx, table, kmspostgres.ReindexOptions{All: *all, BatchSize: *batch,
				Progress: func(done int) { fmt.Fprintf(stderr, "%s: %d rows reindexed\n", table, done) }})
			fmt.Fprintf(stdout, "%s: %d rows reindexed\n", table, n)
			if err != nil {
				fmt.Fprintln(stderr, err)
				return 1
			}
		}
		return 0
	}
	return usage()
}
