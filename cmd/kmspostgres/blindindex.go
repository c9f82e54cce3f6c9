package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/kmspostgres/kmspostgres"
)

const reindexHelp = `Usage: kmspostgres reindex [-dsn DSN] [-all] [-rotate] [-batch N] TABLE...

Fills the blind-index columns of the tables (see "Searching encrypted
columns" in the README): rows whose index column is NULL while the
encrypted column has a value, or with -all every row (after changing an
index's algorithm, expression or master key). With -rotate it fills the
rotation columns (blind_index rotate) instead, while lookups keep using
the current ones: the backfill of a zero-downtime rotation. Rows are
read, decrypted and written back in locked batches.

Exit codes: 0 done, 1 failed, 2 usage error.

Examples:
  kmspostgres reindex -dsn "postgres://app@db/app?kms_schema=schema.yaml" users
  kmspostgres reindex -all users   # DSN from DATABASE_URL
  kmspostgres reindex -rotate users   # fill email_bidx_v2 before switching the map to it
`

func reindexFlags(fs *flag.FlagSet) func(context.Context, *cmdEnv) int {
	all := fs.Bool("all", false, "recompute every row's blind indexes, not only missing ones")
	rotate := fs.Bool("rotate", false, "fill the rotation columns (blind_index rotate), not the current ones")
	batch := fs.Int("batch", 100, "rows per round (at least 1)")
	return func(ctx context.Context, e *cmdEnv) int {
		c, code := e.tablesConnector(*batch)
		if c == nil {
			return code
		}
		for _, table := range e.args {
			n, err := c.Reindex(ctx, table, kmspostgres.ReindexOptions{All: *all, Rotate: *rotate, BatchSize: *batch,
				Progress: func(done int) { fmt.Fprintf(e.stderr, "%s: %d rows reindexed\n", table, done) }})
			fmt.Fprintf(e.stdout, "%s: %d rows reindexed\n", table, n)
			if err != nil {
				return e.fail(err)
			}
		}
		return exitOK
	}
}

const blindIndexKeyHelp = `Usage: kmspostgres blind-index-key KEY_ID

Makes a blind-index master key, wraps it with the KMS master key KEY_ID,
and prints the schema-map entry that holds it:

  blind_index_master_key: {wrapped: "v1:…", key_id: "…"}

A connector unwraps it once when it opens (an audited KMS call), so
cutting KMS access cuts new connectors.

Example:
  kmspostgres blind-index-key alias/app
`

func blindIndexKeyFlags(fs *flag.FlagSet) func(context.Context, *cmdEnv) int {
	return func(ctx context.Context, e *cmdEnv) int {
		if len(e.args) != 1 {
			return e.usageErr("name one master key id")
		}
		w, err := kmspostgres.NewWrappedMasterKey(ctx, e.args[0])
		if err != nil {
			return e.fail(err)
		}
		fmt.Fprintf(e.stdout, "blind_index_master_key: {wrapped: %q, key_id: %q}\n", w.Wrapped, w.KeyID)
		return exitOK
	}
}

// printBlindIndexes lists each blind index and whether it has a UNIQUE
// index, after check's report.
func printBlindIndexes(ctx context.Context, e *cmdEnv, c *kmspostgres.Connector) int {
	infos, err := c.BlindIndexes(ctx)
	if err != nil {
		return e.fail(err)
	}
	for _, b := range infos {
		unique := "UNIQUE index"
		if !b.Unique {
			unique = "no UNIQUE index (if the values are unique: CREATE UNIQUE INDEX ON " + b.Table + " (" + b.IndexColumn + "))"
		}
		rotating := ""
		if b.RotateColumn != "" {
			rotating = ", rotating to column " + b.RotateColumn + " (" + b.RotateAlgorithm + ")"
		}
		fmt.Fprintf(e.stdout, "blind index %s.%s: column %s, %s, %s%s\n", b.Table, b.Column, b.IndexColumn, b.Algorithm, unique, rotating)
	}
	return exitOK
}
